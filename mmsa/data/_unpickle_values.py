"""What an interpreted feature pickle may build (``mmsa.data._unpickle`` walks the opcodes).

The allow-list of globals (``SAFE_GLOBALS``), the errors, the stand-ins for objects still being
built (an allowed global, an array or dtype waiting for its BUILD state, raw bytes), and
``Values``: the part of the interpreter that turns stand-ins into plain values, counts what is
built against the file's size and the nesting depth, fills containers and makes the allowed
builtin calls (``numpy`` pieces: ``mmsa.data._unpickle_numpy``).
"""
from __future__ import annotations

import collections

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


class Values:
    """Values, containers and builtin calls of ``_unpickle._Loader`` (a mixin: it uses the loader's
    stack, memo, ``refuse``/``corrupt``/``count`` and the numpy builders)."""

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
