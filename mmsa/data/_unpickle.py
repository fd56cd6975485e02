"""A pickle interpreter for feature files that never hands state from the file to numpy.

``pickle.Unpickler`` -- even one whose ``find_class`` allows only numpy and builtins -- passes
what the file says to numpy's reconstruction routines (``ndarray.__setstate__``,
``dtype.__setstate__``, ``multiarray.scalar``, the ``ndarray`` constructor) and to
``obj.__dict__`` (BUILD): a file made of allowed pieces alone can still crash the interpreter
(an object array with fewer elements than its shape, a dtype whose flags are cleared so raw
bytes are read as object pointers) or read process memory (an ``__array_interface__`` given to
an allowed container, zero strides).  This module walks the opcodes itself and recognises only
what ``pickle.dump`` of dicts, lists and numpy arrays writes (protocols 0-5):

* arrays: ``multiarray._reconstruct(ndarray, (0,), b'b')`` + BUILD ``(version, shape, dtype,
  is_fortran, data)``, or protocol 5's ``numeric._frombuffer(buffer, dtype, shape, order)``.
  The array is made here, with ``np.frombuffer(data, dtype).reshape(shape)``, only when ``data``
  holds exactly ``prod(shape) * itemsize`` bytes; an object array only from a list of exactly
  ``prod(shape)`` values this module has already built (strings, numbers, None, arrays, ...);
* dtypes: ``numpy.dtype(str, align, copy)`` + BUILD state, for booleans, integers, floats,
  complex numbers, ``S``/``U`` strings, ``V`` blobs, structured dtypes whose fields are such
  dtypes, and ``O`` (object arrays only).  The dtype is made from the validated type string,
  byte order, size and fields; flags, alignment and metadata in the file are ignored;
* scalars: ``multiarray.scalar(dtype, bytes)`` with exactly ``itemsize`` bytes (no object dtype);
* plain values and containers: None, bools, ints (at most 64 bytes), floats, complex, str,
  bytes, bytearray, tuple, list, dict, set, frozenset, ``collections.OrderedDict``; BUILD is
  refused on anything but a numpy array or dtype in the making.

Bounds: containers nest at most ``MAX_DEPTH`` deep (a hash or repr of a deeper tuple overflows
the C stack); a length read from the file never exceeds what is left of the file; the values
built -- with every memo reference counted as a full copy -- total at most
``2 * file size + 1 MiB`` (no "billion laughs"), so what the file's consumer can expand it to
is bounded by the file's size.  A violation raises ``Refused`` (the file holds something a
feature file does not) or ``Corrupt`` (it is not a complete pickle), each with a message and
the path of dict keys at which it happened; ``UnsafeGlobal`` names a refused global.
"""
from __future__ import annotations

import codecs
import collections
import io
import struct

import numpy as np

MAX_DEPTH = 32
MAX_NDIM = 32
MAX_DIM = 2**31 - 1
MAX_ITEMSIZE = 1 << 26
MAX_INT_BYTES = 64
SLACK = 1 << 20

_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
             "int", "float", "bool", "complex")
_NUMPY_HELPERS = (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
SAFE_GLOBALS = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("collections", "OrderedDict")}
    | {(mod, name) for mod in ("builtins", "__builtin__") for name in _BUILTINS}
    | {(f"numpy.{core}.{mod}", name) for core in ("core", "_core") for mod, name in _NUMPY_HELPERS}
)


class Refused(Exception):
    """The file holds something no feature file holds; ``args = (what, where)``."""


class Corrupt(Exception):
    """The bytes are not a (complete) pickle; ``args = (what, where)``."""


class UnsafeGlobal(Exception):
    """A global outside ``SAFE_GLOBALS``; ``args = ("module.name", where)``."""


# ----------------------------------------------------------------------------- stand-ins
class _Global:
    """An allowed global: only a token, called (REDUCE) through ``_Loader._call``."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _PendingArray:
    """What ``_reconstruct`` returns: an array waiting for its BUILD state."""
    __slots__ = ("value",)

    def __init__(self):
        self.value = None


class _DtypeStub:
    """What ``numpy.dtype(str, align, copy)`` returns: a dtype waiting for its BUILD state."""
    __slots__ = ("code", "dtype", "built", "used")

    def __init__(self, code, dtype):
        self.code, self.dtype, self.built, self.used = code, dtype, False, False


class _Payload:
    """Raw bytes read from the file (BINBYTES*, BYTEARRAY8, ``_codecs.encode``).

    The first array made from it uses its buffer without a copy (a writable array, as numpy's own
    unpickling gives); as a plain value it becomes ``bytes`` (or the ``bytearray``)."""
    __slots__ = ("buf", "kind", "used", "value")

    def __init__(self, buf: bytearray, kind: str):
        self.buf, self.kind, self.used, self.value = buf, kind, False, None


class _RawTuple(tuple):
    """A tuple holding stand-ins (globals, payloads): usable only as REDUCE arguments or state."""


# dtype codes accepted from a file: kind -> allowed sizes (None: any size 1..MAX_ITEMSIZE)
_KINDS = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8), "c": (8, 16),
          "S": None, "U": None, "V": None, "O": (4, 8)}
_ALIASES = {"?": "b1", "O": "O8", "bool": "b1"}


def _product(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class _Loader:
    def __init__(self, f, size: int):
        self.f = f
        self.size = size
        self.pos = 0
        self.limit = 2 * size + SLACK
        self.built = 0  # bytes of values made so far (every array, string copy, element)
        self.stack: list = []
        self.metastack: list = []
        self.memo: dict = {}
        self.meta: dict = {}  # id(container) -> [obj, depth, size, sealed]
        self.op_pos = 0
        self.dispatch = {
            b"(": self.op_mark, b".": None, b"0": self.op_pop, b"1": self.op_pop_mark, b"2": self.op_dup,
            b"F": self.op_float, b"I": self.op_int, b"J": self.op_binint, b"K": self.op_binint1,
            b"L": self.op_long, b"M": self.op_binint2, b"N": self.op_none, b"R": self.op_reduce,
            b"S": self.op_string, b"T": self.op_binstring, b"U": self.op_short_binstring,
            b"V": self.op_unicode, b"X": self.op_binunicode, b"a": self.op_append, b"b": self.op_build,
            b"c": self.op_global, b"d": self.op_dict, b"}": self.op_empty_dict, b"e": self.op_appends,
            b"g": self.op_get, b"h": self.op_binget, b"j": self.op_long_binget, b"l": self.op_list,
            b"]": self.op_empty_list, b"p": self.op_put, b"q": self.op_binput, b"r": self.op_long_binput,
            b"s": self.op_setitem, b"t": self.op_tuple, b")": self.op_empty_tuple, b"u": self.op_setitems,
            b"G": self.op_binfloat, b"\x80": self.op_proto, b"\x85": self.op_tuple1,
            b"\x86": self.op_tuple2, b"\x87": self.op_tuple3, b"\x88": self.op_true, b"\x89": self.op_false,
            b"\x8a": self.op_long1, b"\x8b": self.op_long4, b"B": self.op_binbytes,
            b"C": self.op_short_binbytes, b"\x8c": self.op_short_binunicode, b"\x8d": self.op_binunicode8,
            b"\x8e": self.op_binbytes8, b"\x8f": self.op_empty_set, b"\x90": self.op_additems,
            b"\x91": self.op_frozenset, b"\x93": self.op_stack_global, b"\x94": self.op_memoize,
            b"\x95": self.op_frame, b"\x96": self.op_bytearray8,
        }
        self.refused_ops = {
            b"P": "a persistent id (PERSID)", b"Q": "a persistent id (BINPERSID)", b"i": "INST (a class instance)",
            b"o": "OBJ (a class instance)", b"\x81": "NEWOBJ (a class instance)",
            b"\x92": "NEWOBJ_EX (a class instance)", b"\x82": "an extension code (EXT1)",
            b"\x83": "an extension code (EXT2)", b"\x84": "an extension code (EXT4)",
            b"\x97": "an out-of-band buffer (NEXT_BUFFER)", b"\x98": "READONLY_BUFFER",
        }

    # ------------------------------------------------------------------ errors and context
    def where(self) -> str:
        """The dict keys leading to the value being built, e.g. "['train']['audio']" (best effort)."""
        frames = self.metastack + [self.stack]
        path = []
        for i, frame in enumerate(frames):
            for j, item in enumerate(frame):
                if not isinstance(item, dict) or self.filled(item):
                    continue
                rest = frame[j + 1:]
                if rest:  # SETITEM: dict, key, value being built
                    key = rest[0]
                elif i + 1 < len(frames):  # SETITEMS: MARK, then key, value pairs; the last one unfinished
                    pairs, k = frames[i + 1], 0
                    while k + 2 < len(pairs) and not self.in_progress(pairs[k + 1]):
                        k += 2
                    key = pairs[k] if k < len(pairs) else None
                else:
                    key = None
                if isinstance(key, (str, int)):
                    path.append(key)
        return "".join(f"[{k!r}]" for k in path)

    def filled(self, d) -> bool:
        m = self.meta.get(id(d))
        return m is not None and m[0] is d and m[4]

    def in_progress(self, x) -> bool:
        t = type(x)
        return (t in (_Global, _RawTuple) or (t is _PendingArray and x.value is None)
                or (t is _DtypeStub and not x.built) or (isinstance(x, dict) and not self.filled(x)))

    def refuse(self, what: str):
        raise Refused(f"{what} (at byte {self.op_pos})", self.where())

    def corrupt(self, what: str):
        raise Corrupt(f"{what} (at byte {self.op_pos})", self.where())

    def count(self, nbytes: int):
        self.built += nbytes
        if self.built > self.limit:
            self.refuse(f"the values built so far take {self.built} bytes, more than twice the file's "
                        f"{self.size} bytes (repeated references expand it)")

    # ------------------------------------------------------------------ reading
    def read(self, n: int) -> bytes:
        if n < 0 or n > self.size - self.pos:
            self.corrupt(f"a length of {n} bytes where only {self.size - self.pos} remain")
        data = self.f.read(n)
        if len(data) != n:
            self.corrupt("the file ends early")
        self.pos += n
        return data

    def read_into(self, n: int, kind: str) -> _Payload:
        if n < 0 or n > self.size - self.pos:
            self.corrupt(f"a length of {n} bytes where only {self.size - self.pos} remain")
        buf = bytearray(n)
        got = self.f.readinto(buf) if n else 0
        if got != n:
            self.corrupt("the file ends early")
        self.pos += n
        return _Payload(buf, kind)

    def readline(self) -> bytes:
        line = self.f.readline(self.size - self.pos + 1)
        self.pos += len(line)
        if not line.endswith(b"\n"):
            self.corrupt("the file ends early (inside a text opcode)")
        return line[:-1]

    # ------------------------------------------------------------------ the loop
    def load(self):
        read = self.f.read
        dispatch = self.dispatch
        while True:
            self.op_pos = self.pos
            code = read(1)
            if not code:
                self.corrupt("the file ends before the pickle's STOP")
            self.pos += 1
            op = dispatch.get(code)
            if op is None:
                if code == b".":
                    break
                if code in self.refused_ops:
                    self.refuse(f"{self.refused_ops[code]}; a feature file holds only arrays and plain values")
                self.corrupt(f"unknown opcode {code!r}")
            op()
        if not self.stack:
            self.corrupt("STOP with an empty stack")
        return self.plain(self.stack.pop())

    # ------------------------------------------------------------------ values
    def plain(self, x):
        """``x`` as the value the caller sees (stand-ins resolved); refuses unfinished ones."""
        t = type(x)
        if t is _PendingArray:
            if x.value is None:
                self.refuse("an array used before its BUILD state")
            return x.value
        if t is _DtypeStub:
            x.used = True
            return x.dtype
        if t is _Payload:
            if x.value is None:
                if x.kind == "bytearray" and not x.used:
                    x.value = x.buf
                else:
                    self.count(len(x.buf))
                    x.value = (bytearray if x.kind == "bytearray" else bytes)(x.buf)
            return x.value
        if t is _RawTuple:
            items = tuple(self.plain(i) for i in x)
            self.new_tuple_meta(items)
            return items
        if t is _Global:
            self.refuse(f"the global {x.name} used as a value")
        return x

    def measure(self, x) -> tuple:
        """(nesting depth, size in bytes counting shared parts once per reference) of a plain value."""
        m = self.meta.get(id(x))
        if m is not None and m[0] is x:
            return m[1], m[2]
        t = type(x)
        if t is str or t is bytes or t is bytearray:
            return 0, len(x) + 8
        if t is int:
            return 0, 8 + x.bit_length() // 8
        if t is np.ndarray:
            return 1, x.nbytes + 8
        if isinstance(x, np.generic):
            return 0, x.nbytes + 8
        return 0, 8

    def new_container(self, obj, depth=1, size=8):
        self.meta[id(obj)] = [obj, depth, size, False, False]  # sealed, filled
        return obj

    def new_tuple_meta(self, items: tuple):
        depth, size = 1, 8
        for it in items:
            d, s = self.measure(it)
            self.seal(it)
            depth, size = max(depth, d + 1), size + s
        self.check(depth, size, "a tuple")
        if items:  # the empty tuple is a singleton: nothing to record
            self.new_container(items, depth, size)

    def check(self, depth, size, what):
        if depth > MAX_DEPTH:
            self.refuse(f"{what} nested more than {MAX_DEPTH} deep")
        if size > self.limit:
            self.refuse(f"{what} that expands to {size} bytes through repeated references, more than "
                        f"twice the file's {self.size} bytes")

    def seal(self, x):
        m = self.meta.get(id(x))
        if m is not None and m[0] is x:
            m[3] = True

    def add_to(self, container, items):
        """Account for ``items`` (plain) going into ``container``; returns nothing, raises on a violation."""
        m = self.meta.get(id(container))
        if m is None or m[0] is not container:
            self.refuse(f"items added to a {type(container).__name__}")
        depth, size = m[1], m[2]
        for it in items:
            d, s = self.measure(it)
            self.seal(it)
            depth, size = max(depth, d + 1), size + s + 8
        if m[3]:
            self.refuse(f"items added to a {type(container).__name__} after it was placed in another value "
                        f"(a cycle, or a value changed after use)")
        self.check(depth, size, f"a {type(container).__name__}")
        m[1], m[2] = depth, size

    def push_tuple(self, items):
        if any(type(i) in (_Global, _Payload, _RawTuple) for i in items):
            raw = _RawTuple(self.plain(i) if type(i) in (_PendingArray, _DtypeStub) else i for i in items)
            self.stack.append(raw)
        else:
            items = tuple(self.plain(i) for i in items)
            self.new_tuple_meta(items)
            self.stack.append(items)

    def pop(self):
        if not self.stack:
            self.corrupt("an opcode with too few values on the stack")
        return self.stack.pop()

    def pop_mark(self) -> list:
        if not self.metastack:
            self.corrupt("a MARK expected")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    # ------------------------------------------------------------------ opcodes: structure
    def op_mark(self):
        self.metastack.append(self.stack)
        self.stack = []

    def op_pop(self):
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    def op_pop_mark(self):
        self.pop_mark()

    def op_dup(self):
        if not self.stack:
            self.corrupt("DUP on an empty stack")
        self.stack.append(self.stack[-1])

    def op_proto(self):
        proto = self.read(1)[0]
        if proto > 5:
            self.corrupt(f"unsupported pickle protocol {proto}")

    def op_frame(self):
        self.read(8)  # frames only group opcodes for buffering; the stream is read in order anyway

    def op_stop(self):  # pragma: no cover - handled in load()
        pass

    # ------------------------------------------------------------------ opcodes: numbers
    def op_none(self):
        self.stack.append(None)

    def op_true(self):
        self.stack.append(True)

    def op_false(self):
        self.stack.append(False)

    def op_int(self):
        line = self.readline()
        if line == b"00":
            self.stack.append(False)
        elif line == b"01":
            self.stack.append(True)
        else:
            self.stack.append(self.parse_int(line))

    def op_long(self):
        line = self.readline()
        self.stack.append(self.parse_int(line[:-1] if line.endswith(b"L") else line))

    def parse_int(self, text: bytes) -> int:
        if len(text) > 2 * MAX_INT_BYTES + 2:
            self.refuse(f"an integer of {len(text)} digits")
        try:
            return int(text)
        except ValueError:
            self.corrupt(f"a malformed integer {text[:40]!r}")

    def op_binint(self):
        self.stack.append(struct.unpack("<i", self.read(4))[0])

    def op_binint1(self):
        self.stack.append(self.read(1)[0])

    def op_binint2(self):
        self.stack.append(struct.unpack("<H", self.read(2))[0])

    def op_long1(self):
        self.push_long(self.read(1)[0])

    def op_long4(self):
        n = struct.unpack("<i", self.read(4))[0]
        if n < 0:
            self.corrupt("LONG4 with a negative length")
        self.push_long(n)

    def push_long(self, n: int):
        if n > MAX_INT_BYTES:
            self.refuse(f"an integer of {n} bytes (at most {MAX_INT_BYTES})")
        self.stack.append(int.from_bytes(self.read(n), "little", signed=True))

    def op_float(self):
        line = self.readline()
        try:
            self.stack.append(float(line[:64]) if len(line) <= 64 else float("x"))
        except ValueError:
            self.corrupt(f"a malformed float {line[:40]!r}")

    def op_binfloat(self):
        self.stack.append(struct.unpack(">d", self.read(8))[0])

    # ------------------------------------------------------------------ opcodes: strings
    def push_str(self, data: bytes, encoding: str):
        try:
            s = data.decode(encoding)
        except UnicodeDecodeError:
            self.corrupt(f"a string that is not valid {encoding}")
        self.count(len(s))
        self.stack.append(s)

    def op_string(self):
        line = self.readline()
        if len(line) < 2 or line[:1] != line[-1:] or line[:1] not in (b"'", b'"'):
            self.corrupt("a STRING opcode without quotes")
        try:
            data = codecs.escape_decode(line[1:-1])[0]
        except ValueError:
            self.corrupt("a STRING opcode with a bad escape")
        self.push_str(data, "ascii")

    def op_binstring(self):
        n = struct.unpack("<i", self.read(4))[0]
        self.push_str(self.read(n), "ascii")

    def op_short_binstring(self):
        self.push_str(self.read(self.read(1)[0]), "ascii")

    def op_unicode(self):
        self.push_str(self.readline(), "raw-unicode-escape")

    def op_binunicode(self):
        self.push_str(self.read(struct.unpack("<I", self.read(4))[0]), "utf-8")

    def op_short_binunicode(self):
        self.push_str(self.read(self.read(1)[0]), "utf-8")

    def op_binunicode8(self):
        self.push_str(self.read(struct.unpack("<Q", self.read(8))[0]), "utf-8")

    def op_binbytes(self):
        self.stack.append(self.read_into(struct.unpack("<I", self.read(4))[0], "bytes"))

    def op_short_binbytes(self):
        self.stack.append(self.read_into(self.read(1)[0], "bytes"))

    def op_binbytes8(self):
        self.stack.append(self.read_into(struct.unpack("<Q", self.read(8))[0], "bytes"))

    def op_bytearray8(self):
        self.stack.append(self.read_into(struct.unpack("<Q", self.read(8))[0], "bytearray"))

    # ------------------------------------------------------------------ opcodes: memo
    def memo_get(self, key):
        if key not in self.memo:
            self.corrupt(f"a memo reference {key} to nothing")
        self.stack.append(self.memo[key])

    def memo_put(self, key):
        if not self.stack:
            self.corrupt("a memo store with an empty stack")
        self.memo[key] = self.stack[-1]

    def op_get(self):
        self.memo_get(self.parse_int(self.readline()))

    def op_binget(self):
        self.memo_get(self.read(1)[0])

    def op_long_binget(self):
        self.memo_get(struct.unpack("<I", self.read(4))[0])

    def op_put(self):
        self.memo_put(self.parse_int(self.readline()))

    def op_binput(self):
        self.memo_put(self.read(1)[0])

    def op_long_binput(self):
        self.memo_put(struct.unpack("<I", self.read(4))[0])

    def op_memoize(self):
        self.memo_put(len(self.memo))

    # ------------------------------------------------------------------ opcodes: containers
    def op_empty_tuple(self):
        self.stack.append(())

    def op_tuple(self):
        self.push_tuple(self.pop_mark())

    def op_tuple1(self):
        self.push_tuple([self.pop()])

    def op_tuple2(self):
        b = self.pop()
        a = self.pop()
        self.push_tuple([a, b])

    def op_tuple3(self):
        c = self.pop()
        b = self.pop()
        a = self.pop()
        self.push_tuple([a, b, c])

    def op_empty_list(self):
        self.stack.append(self.new_container([]))

    def op_list(self):
        items = [self.plain(i) for i in self.pop_mark()]
        lst = self.new_container([])
        self.add_to(lst, items)
        lst.extend(items)
        self.stack.append(lst)

    def op_empty_dict(self):
        self.stack.append(self.new_container({}))

    def op_dict(self):
        items = self.pop_mark()
        d = self.new_container({})
        self.set_items(d, items)
        self.stack.append(d)

    def op_empty_set(self):
        self.stack.append(self.new_container(set()))

    def op_frozenset(self):
        items = [self.plain(i) for i in self.pop_mark()]
        tmp = self.new_container([])
        self.add_to(tmp, items)
        fs = frozenset(self.hashable(i) for i in items)
        self.new_container(fs, self.meta[id(tmp)][1], self.meta[id(tmp)][2])
        self.stack.append(fs)

    def target(self, kinds, what):
        if not self.stack:
            self.corrupt(f"{what} with nothing to add to")
        obj = self.stack[-1]
        if type(obj) not in kinds:
            self.refuse(f"{what} on {self.kind(obj)} (only plain containers take items)")
        return obj

    def op_append(self):
        item = self.plain(self.pop())
        lst = self.target((list,), "APPEND")
        self.add_to(lst, [item])
        lst.append(item)

    def op_appends(self):
        items = [self.plain(i) for i in self.pop_mark()]
        lst = self.target((list,), "APPENDS")
        self.add_to(lst, items)
        lst.extend(items)

    def op_additems(self):
        items = [self.plain(i) for i in self.pop_mark()]
        s = self.target((set,), "ADDITEMS")
        self.add_to(s, items)
        for i in items:
            s.add(self.hashable(i))

    def op_setitem(self):
        value = self.pop()
        key = self.pop()
        d = self.target((dict, collections.OrderedDict), "SETITEM")
        self.set_items(d, [key, value])

    def op_setitems(self):
        items = self.pop_mark()
        d = self.target((dict, collections.OrderedDict), "SETITEMS")
        self.set_items(d, items)

    def set_items(self, d, items):
        if len(items) % 2:
            self.corrupt("SETITEMS with an odd number of values")
        items = [self.plain(i) for i in items]
        self.add_to(d, items)
        for k, v in zip(items[::2], items[1::2]):
            d[self.hashable(k)] = v
        self.meta[id(d)][4] = True

    def hashable(self, key):
        try:
            hash(key)
        except TypeError:
            self.refuse(f"an unhashable dict key or set item ({type(key).__name__})")
        return key

    # ------------------------------------------------------------------ opcodes: globals, calls
    def op_global(self):
        module = self.readline().decode("utf-8", "replace")
        name = self.readline().decode("utf-8", "replace")
        self.stack.append(self.find_class(module, name))

    def op_stack_global(self):
        name = self.pop()
        module = self.pop()
        if type(module) is not str or type(name) is not str:
            self.corrupt("STACK_GLOBAL without a module and a name")
        self.stack.append(self.find_class(module, name))

    def find_class(self, module: str, name: str) -> _Global:
        if (module, name) not in SAFE_GLOBALS:
            raise UnsafeGlobal(f"{module}.{name}", self.where())
        if module in ("builtins", "__builtin__"):
            return _Global(name)
        if module.startswith("numpy.") and module.count(".") == 2:
            return _Global(f"numpy.{name}")
        return _Global(f"{module}.{name}")

    def op_reduce(self):
        args = self.pop()
        func = self.pop()
        if type(func) is not _Global:
            self.refuse(f"a call of {self.kind(func)} (only allowed globals are called)")
        if not isinstance(args, tuple):
            self.corrupt("REDUCE with arguments that are not a tuple")
        self.stack.append(self.call(func.name, args))

    def op_build(self):
        state = self.pop()
        obj = self.pop() if self.stack else self.corrupt("BUILD with nothing to build")
        if type(obj) is _PendingArray and obj.value is None:
            obj.value = self.build_array(state)
        elif type(obj) is _DtypeStub and not obj.built and not obj.used:
            obj.dtype = self.build_dtype(obj, state)
            obj.built = True
        else:
            kind = {_PendingArray: "numpy array that already has its state",
                    _DtypeStub: "numpy dtype that already has its state or is in use"}.get(type(obj))
            self.refuse(f"BUILD state for a {kind or type(obj).__name__} (only a numpy array or dtype being made takes one; "
                        f"state given to anything else can point numpy at arbitrary memory)")
        self.stack.append(obj)

    # ------------------------------------------------------------------ the allowed calls
    def call(self, name: str, args: tuple):
        if name == "numpy._reconstruct":
            if len(args) != 3 or type(args[0]) is not _Global or args[0].name != "numpy.ndarray":
                self.refuse("_reconstruct of anything but numpy.ndarray")
            return _PendingArray()
        if name == "numpy.dtype":
            return self.make_dtype_stub(args)
        if name == "numpy.scalar":
            return self.make_scalar(args)
        if name == "numpy._frombuffer":
            if len(args) != 4:
                self.refuse("_frombuffer with other than (buffer, dtype, shape, order)")
            buf, dt, shape, order = args
            if order not in ("C", "F"):
                self.refuse(f"_frombuffer with order {order!r}")
            return self.make_array(self.check_shape(shape), self.check_dtype(dt), order == "F", buf)
        if name == "numpy.ndarray":
            self.refuse("numpy.ndarray called as a constructor (it can map arbitrary memory)")
        if name == "_codecs.encode":
            if len(args) != 2 or type(args[0]) is not str or args[1] not in ("latin1", "latin-1"):
                self.refuse("_codecs.encode other than (str, 'latin1')")
            try:
                data = args[0].encode("latin-1")
            except UnicodeEncodeError:
                self.corrupt("_codecs.encode of a string that is not latin-1")
            self.count(len(data))
            return _Payload(bytearray(data), "bytes")
        if name == "collections.OrderedDict":
            d = self.new_container(collections.OrderedDict())
            if args:
                self.fill_from(d, args, "OrderedDict")
            return d
        return self.call_builtin(name, args)

    def fill_from(self, d, args, what):
        if len(args) != 1 or type(args[0]) not in (list, tuple, dict):
            self.refuse(f"{what}() with arguments {self.types(args)}")
        src = args[0]
        pairs = list(src.items()) if type(src) is dict else list(src)
        if not all(type(p) is tuple and len(p) == 2 for p in pairs):
            self.refuse(f"{what}() of something other than (key, value) pairs")
        self.set_items(d, [x for p in pairs for x in p])

    @staticmethod
    def kind(x) -> str:
        return {_Payload: "raw bytes", _Global: "a global", _RawTuple: "a tuple", _PendingArray: "an array",
                _DtypeStub: "a dtype"}.get(type(x)) or f"a {type(x).__name__}"

    def types(self, args) -> str:
        return "(" + ", ".join(self.kind(a) for a in args) + ")"

    def call_builtin(self, name, args):
        plain = [self.plain(a) for a in args]
        kinds = tuple(type(a) for a in plain)
        if name in ("list", "tuple", "set", "frozenset"):
            if not args:
                items = []
            elif len(args) == 1 and kinds[0] in (list, tuple, set, frozenset):
                items = list(plain[0])
            else:
                self.refuse(f"{name}() with arguments {self.types(args)}")
            tmp = self.new_container([])
            self.add_to(tmp, items)
            depth, size = self.meta[id(tmp)][1:3]
            if name == "list":
                return self.new_container(items, depth, size)
            if name == "tuple":
                out = tuple(items)
                self.new_tuple_meta(out)
                return out
            out = (set if name == "set" else frozenset)(self.hashable(i) for i in items)
            return self.new_container(out, depth, size)
        if name == "dict":
            d = self.new_container({})
            if args:
                self.fill_from(d, tuple(plain), "dict")
            return d
        if name in ("bytes", "bytearray"):
            if not args:
                data = b""
            elif len(args) == 1 and kinds[0] in (bytes, bytearray):
                data = plain[0]
            elif len(args) == 2 and kinds == (str, str) and plain[1] in ("latin1", "latin-1"):
                try:
                    data = plain[0].encode("latin-1")
                except UnicodeEncodeError:
                    self.corrupt(f"{name}() of a string that is not latin-1")
            else:
                self.refuse(f"{name}() with arguments {self.types(args)}")
            self.count(len(data))
            return bytes(data) if name == "bytes" else bytearray(data)
        scalars = {"str": (str, (str,)), "int": (int, (int, bool)), "float": (float, (float, int, bool)),
                   "bool": (bool, (bool, int)), "complex": (complex, (float, int, bool))}
        if name not in scalars:  # pragma: no cover - SAFE_GLOBALS and this table agree
            self.refuse(f"a call of {name}")
        make, allowed = scalars[name]
        ok = len(args) <= 2 if name == "complex" else len(args) == 1
        if not ok or not all(k in allowed for k in kinds):
            self.refuse(f"{name}() with arguments {self.types(args)}")
        return make(*plain)

    # ------------------------------------------------------------------ numpy, validated
    def make_dtype_stub(self, args):
        if not 1 <= len(args) <= 3 or type(args[0]) is not str:
            self.refuse(f"numpy.dtype() with arguments {self.types(args)} (a type string expected)")
        if any(type(a) not in (bool, int) for a in args[1:]):
            self.refuse("numpy.dtype() with flags that are not booleans")
        code = _ALIASES.get(args[0], args[0])
        kind, size = code[:1], code[1:]
        if kind not in _KINDS or not size.isdigit() or len(size) > 9:
            self.refuse(f"the dtype {args[0][:40]!r} (allowed: bool, int, uint, float, complex, S, U, V, "
                        f"structured and object dtypes)")
        n = int(size)
        sizes = _KINDS[kind]
        if (sizes is not None and n not in sizes) or (sizes is None and not 1 <= n <= MAX_ITEMSIZE):
            self.refuse(f"the dtype {code!r}")
        if kind == "O":
            dt = np.dtype(object)
        else:
            dt = np.dtype(f"{kind}{n}")
        return _DtypeStub(code, dt)

    def build_dtype(self, stub: _DtypeStub, state):
        if type(state) is not tuple or len(state) not in (8, 9) or state[0] not in (3, 4):
            self.refuse(f"a dtype state that is not numpy's (version, byteorder, subarray, names, fields, "
                        f"elsize, alignment, flags[, metadata])")
        _, order, sub, names, fields, elsize, _align, _flags = state[:8]
        dt = stub.dtype
        if order not in ("<", ">", "|", "="):
            self.refuse(f"the dtype byte order {order!r}")
        if type(elsize) is not int or (elsize != -1 and elsize != dt.itemsize):
            self.refuse(f"a dtype {stub.code!r} whose state gives the size {elsize!r}")
        if sub is not None:
            return self.subarray(stub, sub, names, fields, elsize)
        if names is not None or fields is not None:
            return self.structured(stub, names, fields, elsize)
        if dt.kind == "O":
            return dt
        if order in ("<", ">") and dt.itemsize > 1 and dt.kind != "S" and dt.kind != "V":
            dt = dt.newbyteorder(order)
        return dt

    def subarray(self, stub, sub, names, fields, elsize):
        """A field type like ``("<f4", (2,))``: numpy writes it as ``V8`` with state ``(base, shape)``."""
        if stub.dtype.kind != "V" or names is not None or fields is not None or type(sub) is not tuple \
                or len(sub) != 2 or not isinstance(sub[0], np.dtype) or sub[0].hasobject:
            self.refuse("a subarray dtype that is not (numeric or string dtype, shape)")
        base, shape = sub
        shape = self.check_shape(shape)
        if base.subdtype is not None or _product(shape) * base.itemsize != stub.dtype.itemsize:
            self.refuse(f"a subarray dtype {base} x {shape} that does not fill its {stub.dtype.itemsize} bytes")
        return np.dtype((base, shape))

    def structured(self, stub, names, fields, elsize):
        if stub.dtype.kind != "V" or type(names) is not tuple or type(fields) is not dict \
                or set(names) != set(fields) or len(names) != len(fields) or not names:
            self.refuse("a structured dtype whose names and fields disagree")
        formats, offsets = [], []
        for n in names:
            spec = fields[n]
            if type(n) is not str or type(spec) is not tuple or len(spec) not in (2, 3) \
                    or type(spec[1]) is not int:
                self.refuse(f"the structured dtype field {n!r}")
            fdt, off = spec[0], spec[1]
            if len(spec) == 3 and spec[2] is not None:
                self.refuse(f"the structured dtype field {n!r} with a title")
            if not isinstance(fdt, np.dtype) or fdt.hasobject:
                self.refuse(f"the structured dtype field {n!r} of type {type(fdt).__name__} "
                            f"(fields must be numeric or string dtypes)")
            if not 0 <= off <= elsize - fdt.itemsize:
                self.refuse(f"the structured dtype field {n!r} at offset {off} outside the {elsize} bytes")
            formats.append(fdt)
            offsets.append(off)
        try:
            return np.dtype({"names": list(names), "formats": formats, "offsets": offsets, "itemsize": elsize})
        except (ValueError, TypeError) as err:
            self.refuse(f"the structured dtype {names!r} ({err})")

    def check_dtype(self, dt) -> np.dtype:
        dt = self.plain(dt)
        if not isinstance(dt, np.dtype):
            self.refuse(f"an array whose dtype is {self.kind(dt)}")
        if dt.subdtype is not None:
            self.refuse(f"an array or scalar of the subarray dtype {dt} (numpy writes such arrays with a "
                        f"plain dtype and a longer shape)")
        return dt

    def check_shape(self, shape) -> tuple:
        shape = self.plain(shape)
        if type(shape) is not tuple or len(shape) > MAX_NDIM \
                or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape):
            self.refuse(f"an array shape {str(shape)[:80]} (a tuple of at most {MAX_NDIM} sizes "
                        f"in 0..{MAX_DIM} expected)")
        return shape

    def build_array(self, state):
        if type(state) not in (tuple, _RawTuple):
            self.refuse(f"an array state that is {self.kind(state)}")
        if len(state) == 5:
            if state[0] != 1:
                self.refuse(f"an array state of version {state[0]!r}")
            state = state[1:]
        if len(state) != 4:
            self.refuse("an array state that is not (version, shape, dtype, is_fortran, data)")
        shape, dt, fortran, data = state
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            self.refuse(f"an array state with is_fortran={fortran!r}")
        return self.make_array(self.check_shape(shape), self.check_dtype(dt), bool(fortran), data, native=True)

    def make_array(self, shape, dt, fortran, data, native=False):
        n = _product(shape)
        order = "F" if fortran else "C"
        if dt.hasobject:
            if dt.kind != "O":
                self.refuse("an array of a structured dtype holding objects")
            if type(data) is not list:
                self.refuse(f"an object array whose data is {self.kind(data)}, not a list of "
                            f"values (raw bytes would be read as object pointers)")
            if len(data) != n:
                self.refuse(f"an object array of shape {shape} ({n} elements) whose state lists {len(data)}")
            self.count(8 * n + 96)
            arr = np.empty(n, dtype=object)
            for i, v in enumerate(data):
                arr[i] = v
            m = self.meta.get(id(data))
            depth, size = (m[1], m[2]) if m is not None and m[0] is data else (1, 8)
            arr = arr.reshape(shape)  # numpy lists an object array's items in C order, even a Fortran one
            if fortran:
                arr = np.asfortranarray(arr)
            self.new_container(arr, depth, size)
            self.seal(data)
            return arr
        if type(data) is str:  # numpy.ndarray.__setstate__ accepts latin-1 text (Python 2 files)
            try:
                data = _Payload(bytearray(data.encode("latin-1")), "bytes")
            except UnicodeEncodeError:
                self.corrupt("array data that is not latin-1 text")
        if type(data) is bytes:
            data = _Payload(bytearray(data), "bytes")
        if type(data) is not _Payload:
            self.refuse(f"array data that is {self.kind(data)}, not bytes")
        want = n * dt.itemsize
        if len(data.buf) != want:
            self.refuse(f"an array of shape {shape} and dtype {dt} ({want} bytes) whose data holds "
                        f"{len(data.buf)} bytes")
        if data.used or data.value is not None:
            self.count(want)  # a second array from the same bytes, or bytes also used as a value: a copy
            buf = bytearray(data.buf)
        else:  # the first use: the array owns the buffer read from the file (no copy)
            buf = data.buf
            data.used = True
        flat = np.frombuffer(buf, dtype=dt) if want else np.empty(0, dtype=dt)
        if native and not dt.isnative and dt.names is None:  # as ndarray.__setstate__: native byte order
            flat = flat.byteswap(inplace=True).view(dt.newbyteorder("="))
        return flat.reshape(shape, order=order)

    def make_scalar(self, args):
        if len(args) != 2:
            self.refuse("numpy scalar() with other than (dtype, bytes)")
        dt = self.check_dtype(args[0])
        data = args[1]
        if dt.hasobject:
            self.refuse("a numpy scalar of an object dtype (its bytes would be read as a pointer)")
        if type(data) is str:
            data = data.encode("latin-1", "replace")
        elif type(data) is _Payload:
            data = bytes(data.buf)
        if type(data) is not bytes or len(data) != dt.itemsize:
            self.refuse(f"a numpy scalar of dtype {dt} ({dt.itemsize} bytes) from "
                        f"{len(data) if type(data) is bytes else type(data).__name__} bytes")
        self.count(len(data) + 32)
        return np.frombuffer(data, dtype=dt)[0]


def load(f: io.BufferedIOBase, size: int):
    """Interpret the pickle in ``f`` (``size`` bytes); ``Refused``/``Corrupt``/``UnsafeGlobal`` otherwise."""
    loader = _Loader(f, size)
    try:
        return loader.load()
    except (Refused, Corrupt, UnsafeGlobal):
        raise
    except (RecursionError, MemoryError) as err:  # defence in depth: the bounds above should prevent these
        raise Refused(f"{type(err).__name__} while building a value (at byte {loader.op_pos})",
                      loader.where()) from None
    except Exception as err:  # noqa: BLE001 - any other failure is a file that is not a feature pickle
        raise Corrupt(f"{type(err).__name__}: {err} (at byte {loader.op_pos})", loader.where()) from None


__all__ = ["SAFE_GLOBALS", "Refused", "Corrupt", "UnsafeGlobal", "load", "MAX_DEPTH"]
