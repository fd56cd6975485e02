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

The allow-list, the stand-ins and the bounds on built values live in ``_unpickle_values``, the
validated numpy builders in ``_unpickle_numpy``.

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
import io
import struct

from mmsa.data._unpickle_numpy import NumpyBuilders
from mmsa.data._unpickle_values import (MAX_DEPTH, MAX_INT_BYTES, SAFE_GLOBALS, SLACK, Corrupt, Refused,
                                        UnsafeGlobal, Values, _DtypeStub, _Global, _Payload, _PendingArray,
                                        _RawTuple)


class _Loader(Values, NumpyBuilders):
    """The opcode loop: reading, the stack and memo, and one method per opcode."""

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
