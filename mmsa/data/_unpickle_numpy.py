"""Numpy objects an interpreted feature pickle may build, each from validated parts.

* dtypes: ``numpy.dtype(str, align, copy)`` + BUILD state, for booleans, integers, floats,
  complex numbers, ``S``/``U`` strings, ``V`` blobs, structured dtypes whose fields are such
  dtypes, and ``O`` (object arrays only); made from the validated type string, byte order, size
  and fields -- flags, alignment and metadata in the file are ignored;
* arrays: ``np.frombuffer(data, dtype).reshape(shape)`` only when ``data`` holds exactly
  ``prod(shape) * itemsize`` bytes; an object array only from a list of exactly ``prod(shape)``
  values already built;
* scalars: ``multiarray.scalar(dtype, bytes)`` with exactly ``itemsize`` bytes.
"""
from __future__ import annotations

import numpy as np

from mmsa.data._unpickle_values import (_ALIASES, _KINDS, MAX_DIM, MAX_ITEMSIZE, MAX_NDIM, _DtypeStub, _Payload,
                                        _product, _RawTuple)


class NumpyBuilders:
    """Dtype, array and scalar construction of ``_unpickle._Loader`` (a mixin)."""

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
