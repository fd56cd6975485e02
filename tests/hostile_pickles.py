"""Hand-assembled hostile pickles for the loader's fuzz test (``tests/test_hostile_pickles.py``).

Every file here is built from raw pickle opcodes -- not by the project's own writer -- out of the
pieces a feature file legitimately uses (numpy arrays, dtypes and scalars, ``_codecs.encode``,
builtin containers).  With ``pickle.load`` (even restricted to those globals) they crash the
interpreter (SIGSEGV), read process memory, or blow up memory or the C stack; ``safe_load`` must
turn each into a ``FeatureFileError``.  ``HOSTILE`` maps a name to the file's bytes and the key
path the refusal must name (``None``: the file has no key path, e.g. the top level is hostile).
"""
import struct

CORE = "numpy._core.multiarray"
CORE1 = "numpy.core.multiarray"


# ------------------------------------------------------------------ opcode assembly
def U(s: str) -> bytes:
    b = s.encode()
    return (b"\x8c" + bytes([len(b)]) if len(b) < 256 else b"X" + struct.pack("<I", len(b))) + b


def I(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def B(data: bytes) -> bytes:
    return b"\x8e" + struct.pack("<Q", len(data)) + data


def G(module: str, name: str) -> bytes:
    return U(module) + U(name) + b"\x93"


def T(*parts: bytes) -> bytes:
    return b"(" + b"".join(parts) + b"t"


def L(*parts: bytes) -> bytes:
    return b"](" + b"".join(parts) + b"e"


def D(**items: bytes) -> bytes:
    return b"}(" + b"".join(U(k) + v for k, v in items.items()) + b"u"


def call(func: bytes, *args: bytes) -> bytes:
    return func + T(*args) + b"R"


NONE, TRUE, FALSE, EMPTY_TUPLE = b"N", b"\x88", b"\x89", b")"


def dtype(code: str, order="<", elsize=-1, flags=0, names=NONE, fields=NONE, sub=NONE) -> bytes:
    return call(G("numpy", "dtype"), U(code), FALSE, TRUE) + T(
        I(3), U(order), sub, names, fields, I(elsize), I(-1), I(flags)) + b"b"


def array(shape, dt: bytes, data: bytes, fortran=FALSE, core=CORE) -> bytes:
    return (call(G(core, "_reconstruct"), G("numpy", "ndarray"), T(I(0)), B(b"b"))
            + T(I(1), T(*map(I, shape)), dt, fortran, data) + b"b")


def feature_file(value: bytes, split="train", key="audio", proto=4) -> bytes:
    """``{split: {key: value}}``: a refusal inside ``value`` must name ``[split][key]``."""
    return b"\x80" + bytes([proto]) + b"}" + U(split) + b"}" + U(key) + value + b"ss."


def top(value: bytes, proto=4) -> bytes:
    return b"\x80" + bytes([proto]) + value + b"."


# ------------------------------------------------------------------ the hostile files
def hostile() -> dict:
    f32 = dtype("f4")
    obj = dtype("O8", "|", flags=63)
    obj_noflags = dtype("O8", "|", flags=0)  # object dtype with flags cleared: bytes read as pointers
    address = struct.pack("<Q", 0x4141414141414141)
    big = B(b"\x00" * 20000)
    out = {
        # object arrays whose state lists fewer (or more) elements than the shape declares
        "object array, 1 element for 1000": (array((1000,), obj, L(U("a"))), True),
        "object array, 0 elements for 10": (array((10,), obj, b"]"), True),
        "object array, 3 elements for 2": (array((2,), obj, L(U("a"), U("b"), U("c"))), True),
        "object array declaring 1e12 elements": (array((10**6, 10**6), obj, L(U("a"))), True),
        "object array declaring 2**62 elements": (array((2**62,), obj, L()), True),
        "fortran object array, short list": (array((4, 4), obj, L(U("a")), fortran=TRUE), True),
        # dtypes whose flags are cleared, then raw bytes numpy would read as object pointers
        "object dtype, flags 0, raw bytes (array)": (array((1,), obj_noflags, B(address)), True),
        "object dtype, flags 63, raw bytes (array)": (array((2,), obj, B(address * 2)), True),
        "object dtype, flags 0 (numpy scalar)": (call(G(CORE, "scalar"), obj_noflags, B(address)), True),
        "object dtype (numpy scalar, numpy 1.x name)": (call(G(CORE1, "scalar"), obj, B(address)), True),
        "object dtype via _frombuffer": (call(G("numpy._core.numeric", "_frombuffer"), B(address), obj,
                                              T(I(1)), U("C")), True),
        "structured dtype hiding an object field": (array((1,), dtype(
            "V8", "|", elsize=8, names=T(U("p")), fields=D(p=T(obj_noflags, I(0)))), B(address)), True),
        "structured field beyond the item size": (array((1,), dtype(
            "V4", "|", elsize=4, names=T(U("p")), fields=D(p=T(dtype("f8"), I(100)))), B(b"\x00" * 4)), True),
        "dtype elsize larger than the type": (array((1,), dtype("U1", elsize=4096), B(b"\x00" * 4096)), True),
        "dtype datetime": (array((1,), dtype("M8"), B(b"\x00" * 8)), True),
        "dtype with a zero item size": (array((10**9,), dtype("S0", "|", elsize=0), B(b"")), True),
        # state given (BUILD) to something that is not an array/dtype being made
        "OrderedDict with __array_interface__": (call(G("collections", "OrderedDict"), ) + D(
            __array_interface__=D(shape=T(I(10**6)), typestr=U("<f4"), version=I(3),
                                  data=T(I(0x7F0000000000), FALSE))) + b"b", True),
        "dict with __array_interface__ (BUILD)": (b"}" + D(__array_interface__=D(typestr=U("<f4"))) + b"b", True),
        "list BUILD": (b"]" + D(x=I(1)) + b"b", True),
        "array BUILD twice": (array((1,), f32, B(b"\x00" * 4)) + T(I(1), T(I(10**6)), f32, FALSE, B(b"")) + b"b",
                              True),
        "dtype BUILD after use": (b"(" + dtype("f4") + b"\x94" + b"1" + b"h\x00" + T(
            I(3), U("<"), NONE, NONE, NONE, I(-1), I(-1), I(0)) + b"b", True),
        "array used before its BUILD": (call(G(CORE, "_reconstruct"), G("numpy", "ndarray"), T(I(0)), B(b"b"))
                                        + b"\x85", True),
        # numpy.ndarray as a constructor: zero strides, arbitrary buffers
        "ndarray constructor, zero strides": (call(G("numpy", "ndarray"), T(I(60000), I(50), I(768)), f32,
                                                   B(b"\x00" * 4), I(0), T(I(0), I(0), I(0))), True),
        "ndarray constructor, 35.8 GiB": (call(G("numpy", "ndarray"), T(I(60000), I(50), I(3200)), f32), True),
        "_reconstruct of a subclass": (call(G(CORE, "_reconstruct"), G("numpy", "matrix"), T(I(0)), B(b"b")),
                                       True),
        "_frombuffer with a short buffer": (call(G("numpy._core.numeric", "_frombuffer"), B(b"\x00" * 4), f32,
                                                 T(I(1000)), U("C")), True),
        "array with a short buffer": (array((1000, 1000), f32, B(b"\x00" * 16)), True),
        "array with a negative shape": (array((-1,), f32, B(b"")), True),
        "array with a float shape": (call(G(CORE, "_reconstruct"), G("numpy", "ndarray"), T(I(0)), B(b"b"))
                                     + T(I(1), T(b"G" + struct.pack(">d", 1e9)), f32, FALSE, B(b"")) + b"b", True),
        "array shape of 40 dimensions": (array((1,) * 40, f32, B(b"\x00" * 4)), True),
        "numeric array from a list": (array((2,), f32, L(I(1), I(2))), True),
        "scalar with 1 byte for float32": (call(G(CORE, "scalar"), f32, B(b"\x00")), True),
        # amplification
        "memo reference repeated 5000 times": (big + b"\x94" + b"](" + b"h\x00" * 5000 + b"e", True),
        "array memo reference repeated 5000 times": (array((5000,), f32, big) + b"\x94" + b"](" +
                                                     b"h\x00" * 5000 + b"e", True),
        "billion laughs (nested doubling)": (U("x" * 100) + b"\x94" + b"".join(
            b"](h" + bytes([i]) + b"h" + bytes([i]) + b"e\x94" for i in range(40)), True),
        "bytes(10**10)": (call(G("builtins", "bytes"), I(10**10)), True),
        "bytearray(10**10)": (call(G("__builtin__", "bytearray"), I(10**10)), True),
        "_codecs.encode with zlib": (call(G("_codecs", "encode"), U("x"), U("zlib_codec")), True),
        "BINBYTES8 longer than the file": (b"\x8e" + struct.pack("<Q", 2**40) + b"x", True),
        "BINUNICODE8 longer than the file": (b"\x8d" + struct.pack("<Q", 10**12) + b"x", True),
        "huge LONG4": (b"\x8b" + struct.pack("<i", 10**8) + b"\x01" * 100, True),
        "int with 100000 digits": (b"L" + b"9" * 100000 + b"L\n", True),
        # depth and cycles
        "tuple key nested 10**6 deep": (b"}" + U("x") + b"\x85" * 10**6 + I(1) + b"s", True),
        "tuple key nested 10**5 deep": (b"}" + U("x") + b"\x85" * 10**5 + I(1) + b"s", True),
        "list nested 10**5 deep": (b"]" * 100000 + b"a" * 99999, True),
        "list containing itself": (b"]\x94h\x00a", True),
        "two lists containing each other": (b"]\x94]\x94h\x01a\x94" + b"h\x00h\x01a", True),
        "unhashable dict key": (b"}" + b"]" + I(1) + b"s", True),
        "set of lists": (b"\x8f(" + b"]" + b"\x90", True),
        # code
        "os.system": (call(G("os", "system"), U("echo pwned")), True),
        "posix.system (protocol 0 GLOBAL)": (b"cposix\nsystem\n(Vecho pwned\ntR", True),
        "builtins.eval": (call(G("builtins", "eval"), U("1+1")), True),
        "builtins.getattr": (call(G("builtins", "getattr"), G("builtins", "dict"), U("fromkeys")), True),
        "functools.partial": (call(G("functools", "partial"), G("builtins", "print")), True),
        "numpy.load": (call(G("numpy", "load"), U("/etc/passwd")), True),
        "INST opcode": (b"(ios\nsystem\nVecho\n", True),
        "NEWOBJ opcode": (G("builtins", "dict") + EMPTY_TUPLE + b"\x81", True),
        "persistent id": (b"\x8c\x01x" + b"Q", True),
        "extension code": (b"\x82\x01", True),
        "out-of-band buffer": (b"\x97", True),
    }
    return {name: (feature_file(value), ["train", "audio"] if named else None)
            for name, (value, named) in out.items()}


HOSTILE = hostile()
if __name__ == "__main__":  # pragma: no cover - writes the files for a manual look
    import sys
    from pathlib import Path
    for i, (name, (raw, _)) in enumerate(HOSTILE.items()):
        Path(sys.argv[1], f"{i:02d}.pkl").write_bytes(raw)
        print(i, name)
