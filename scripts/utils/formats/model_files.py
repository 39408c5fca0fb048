"""Model files read as named tensors, without a framework and without running any pickled code.

    from scripts.utils.formats.model_files import read_model
    # {"fc1.weight": ndarray, "epoch": 3, "optimizer.param_groups[0].lr": 1.0}
    tensors = read_model("model.pt", data)

- PyTorch ``torch.save`` files (``.pt``, ``.pth``, ``.ckpt``, a ``.bin`` that
  is one): a zip holding ``data.pkl`` and one file per storage. The pickle is
  walked by an unpickler that imports nothing: the globals it names become
  inert placeholders, except the few that rebuild a tensor (``torch._utils``'s
  ``_rebuild_tensor_v2``, ``_rebuild_parameter``, the storage types) and plain
  containers. Tensors are rebuilt with NumPy from their storage, offset, shape
  and strides; bfloat16 is widened to float32.
- ``.safetensors``: the JSON header and the raw little-endian data.
- Pickles and ``joblib.dump`` files (``.pkl``, ``.pickle``, ``.joblib``;
  scikit-learn models): the same unpickler, which also rebuilds NumPy arrays
  (``_reconstruct``, ``_frombuffer``, scalars, structured dtypes such as a
  tree's nodes) and reads the arrays joblib writes after their wrappers. An
  estimator becomes its attributes by name (``coef_``, ``estimators_[0].tree_.nodes``).

Nested state (an optimizer's ``state_dict``, a checkpoint dict) is flattened
to dotted names; lists become ``[i]``. Values that are not tensors (epochs,
learning rates, strings) are kept as they are; objects the reader does not
know are shown as ``<module.name>``. A file that is not one of these raises
``ValueError`` (callers compare it as bytes).
"""

from __future__ import annotations

import codecs
import collections
import datetime
import io
import pickle
import struct
import zipfile

import numpy as np
import orjson

MAX_PICKLE_BYTES = 64 << 20
STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "<c8",
    "ComplexDoubleStorage": "<c16",
}
# Containers only: what they build is no bigger than the pickle (bytes(10**12) would not be).
SAFE_BUILTINS = {
    "set": set,
    "frozenset": frozenset,
    "complex": complex,
    "slice": slice,
    "tuple": tuple,
    "list": list,
    "dict": dict,
}
SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "bfloat16",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
    "BOOL": "?",
}


class Opaque:
    """Whatever a pickle builds from a global the reader does not know: its name, arguments and
    contents; nothing runs."""

    name = "?"

    def __new__(cls, *args, **kwargs):
        instance = object.__new__(cls)
        instance.args, instance.state, instance.items, instance.values = args, None, {}, []
        return instance

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.values.append(value)

    def extend(self, values):
        self.values.extend(values)

    def contents(self):
        """What the object holds, as plain containers: its items, list, state, else its
        arguments."""
        held = {**self.items, **({f"[{i}]": v for i, v in enumerate(self.values)})}
        if isinstance(self.state, dict):
            held.update(self.state)
        elif self.state is not None:
            held["state"] = self.state
        if not held and self.args:
            held = {"args": list(self.args)}
        return held

    def __repr__(self):
        return f"<{self.name}>"


class _Storage:
    def __init__(self, dtype: str, key: str):
        self.dtype, self.key = dtype, key


class _Dtype:
    """numpy.dtype(...) as a pickle builds it: the type string, then its byte order or fields
    from BUILD."""

    def __init__(self, kind, *ignored):
        self.kind, self.state = str(kind), None

    def __setstate__(self, state):
        self.state = state

    def real(self) -> np.dtype:
        state = self.state if isinstance(self.state, tuple) else ()
        if len(state) >= 6 and state[3]:  # a structured dtype: names, fields, item size
            names, fields = state[3], state[4]
            return np.dtype(
                {
                    "names": list(names),
                    "formats": [_real_dtype(fields[n][0]) for n in names],
                    "offsets": [int(fields[n][1]) for n in names],
                    "itemsize": int(state[5]),
                }
            )
        dtype = np.dtype(self.kind)
        return dtype.newbyteorder(state[1]) if len(state) > 1 and state[1] in ("<", ">") else dtype


def _real_dtype(value) -> np.dtype:
    if isinstance(value, _Dtype):
        return value.real()
    if isinstance(value, np.dtype):
        return value
    raise ValueError(f"not a dtype: {value!r:.80}")


def _ndarray(raw, dtype, shape, fortran: bool = False) -> np.ndarray:
    dtype, shape = _real_dtype(dtype), tuple(int(n) for n in shape)
    count = int(np.prod(shape, dtype=np.float64))
    if dtype.hasobject:
        if not isinstance(raw, list) or len(raw) != count:
            raise ValueError("an object array whose values do not match its shape")
        values = np.empty(count, object)
        values[:] = raw
        return values.reshape(shape, order="F" if fortran else "C")
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray, memoryview)) or len(raw) != count * dtype.itemsize:
        raise ValueError("an array whose data does not match its shape and dtype")
    return np.frombuffer(bytes(raw), dtype).reshape(shape, order="F" if fortran else "C").copy()


class _PickledArray:
    """numpy's _reconstruct(ndarray, (0,), b'b') then BUILD (version, shape, dtype, fortran,
    data)."""

    def __init__(self, *ignored):
        self.array = None

    def __setstate__(self, state):
        version, shape, dtype, fortran, raw = state if len(state) == 5 else (None, *state)
        self.array = _ndarray(raw, dtype, shape, bool(fortran))


class _SafeUnpickler(pickle._Unpickler):
    """Builds plain values, NumPy arrays and tensors from a pickle; every other global is an inert
    Opaque.

    Pure Python (pickle._Unpickler), so that joblib's arrays, which follow their wrapper in the
    stream, can be read where the wrapper ends.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, storage=None, depth: int = 0):
        super().__init__(file)
        self.file, self.storage, self.depth = file, storage, depth

    def find_class(self, module, name):
        numpy = module.split(".")[0] == "numpy"
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "builtins" and name in SAFE_BUILTINS:
            return SAFE_BUILTINS[name]
        if (
            module == "_codecs" and name == "encode"
        ):  # protocol 2 writes bytes as encode(text, "latin1")
            return lambda text, encoding="utf-8": codecs.encode(
                text, "latin1" if encoding == "latin1" else "utf-8"
            )
        if module == "datetime" and name in ("datetime", "date", "time", "timedelta", "timezone"):
            return getattr(
                datetime, name
            )  # plain values; a time stamp in a checkpoint shows as one
        if numpy and name == "dtype":
            return _Dtype
        if numpy and name == "_reconstruct":
            return _PickledArray
        if numpy and name == "scalar":
            return lambda dtype, raw=b"": (
                _ndarray(raw, dtype, ()).item() if not _real_dtype(dtype).hasobject else raw
            )
        if numpy and name == "_frombuffer":
            return lambda raw, dtype, shape, order="C": _ndarray(raw, dtype, shape, order == "F")
        if module == "torch" and name == "Size":
            return tuple
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self.rebuild_tensor
        if module == "torch._utils" and name in (
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
        ):
            return lambda data, *rest: data
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return lambda function, kind, args, state: function(*args)
        return type(name, (Opaque,), {"name": f"{module}.{name}"})

    def persistent_load(self, pid):
        if self.storage is None or not (
            isinstance(pid, tuple)
            and len(pid) >= 3
            and pid[0] == "storage"
            and isinstance(pid[1], str)
        ):
            raise ValueError(f"unknown persistent id {pid!r:.80}")
        return _Storage(pid[1], str(pid[2]))

    def rebuild_tensor(self, storage, offset, size, stride, *rest):
        if not isinstance(storage, _Storage):
            raise ValueError("a tensor without a storage")
        return self.storage(
            storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride)
        )

    def load_build(self):
        pickle._Unpickler.load_build(self)
        built = self.stack[-1]
        if isinstance(built, _PickledArray):
            self.stack[-1] = built.array
        elif isinstance(built, Opaque) and built.name.endswith("numpy_pickle.NumpyArrayWrapper"):
            self.stack[-1] = self.joblib_array(built.state or {})

    dispatch[pickle.BUILD[0]] = load_build

    def joblib_array(self, state: dict) -> np.ndarray:
        """The array joblib wrote right after its wrapper: alignment padding, then the raw data
        (or a pickle)."""
        dtype = _real_dtype(state.get("dtype"))
        shape = tuple(int(n) for n in state.get("shape", ()))
        if dtype.hasobject:
            if self.depth > 2:
                raise ValueError("object arrays nested too deep")
            return np.asarray(_SafeUnpickler(self.file, depth=self.depth + 1).load(), dtype=object)
        if state.get("numpy_array_alignment_bytes"):
            padding = self.file.read(1)
            self.file.read(int.from_bytes(padding, "little"))
        size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if size > MAX_PICKLE_BYTES * 64:
            raise ValueError("an array larger than the reader takes")
        return _ndarray(self.file.read(size), dtype, shape, state.get("order") == "F")


def _array(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        halves = np.frombuffer(raw[: len(raw) // 2 * 2], "<u2")
        return (halves.astype(np.uint32) << 16).view(np.float32)
    kind = np.dtype(dtype)
    return np.frombuffer(raw[: len(raw) // kind.itemsize * kind.itemsize], kind)


def read_torch(data: bytes) -> dict:
    """{name: ndarray or value} of a ``torch.save`` zip file."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1] or [
        n for n in names if n == "data.pkl"
    ]
    if not pickles:
        raise ValueError("no data.pkl: not a torch.save file")
    prefix = pickles[0][: -len("data.pkl")]
    if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
        raise ValueError("data.pkl is too large to read")
    if prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() not in (
        b"",
        b"little",
    ):
        raise ValueError("big-endian tensors")
    cache: dict = {}

    def storage(ref: _Storage, offset: int, size: tuple, stride: tuple) -> np.ndarray:
        if ref.key not in cache:
            member = f"{prefix}data/{ref.key}"
            if archive.getinfo(member).file_size > len(data):  # torch stores storages uncompressed
                raise ValueError(f"storage {ref.key} unpacks to more bytes than the file has")
            cache[ref.key] = _array(archive.read(member), ref.dtype)
        flat = cache[ref.key]
        if int(np.prod(size, dtype=np.float64)) > max(flat.size, 1 << 20):
            raise ValueError("a tensor claims more values than its storage holds")
        if not size:
            return flat[offset : offset + 1].reshape(()).copy()
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if min(size) == 0:
            return np.zeros(size, flat.dtype)
        if offset < 0 or min(stride) < 0 or last >= flat.size:
            raise ValueError("a tensor reaches past its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], size, [s * flat.itemsize for s in stride]
        )
        return np.array(view)

    root = _SafeUnpickler(io.BytesIO(archive.read(pickles[0])), storage).load()
    return flatten(root)


def read_safetensors(data: bytes) -> dict:
    if len(data) < 8:
        raise ValueError("too short for a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError("the header claims more bytes than the file has")
    header = orjson.loads(data[8 : 8 + length])
    body = data[8 + length :]
    tensors: dict = {}
    for name, entry in sorted(header.items()):
        if name == "__metadata__":
            tensors.update({f"__metadata__.{k}": v for k, v in (entry or {}).items()})
            continue
        begin, end = entry["data_offsets"]
        shape = tuple(int(n) for n in entry["shape"])
        if not 0 <= begin <= end <= len(body):
            raise ValueError(f"tensor {name} lies outside the file")
        flat = _array(body[begin:end], SAFETENSORS_DTYPES.get(entry["dtype"], "u1"))
        tensors[name] = flat.reshape(shape) if flat.size == int(np.prod(shape)) else flat
    return tensors


def flatten(value, name: str = "", into: dict | None = None) -> dict:
    """Nested dicts and lists as {dotted name: leaf}."""
    into = {} if into is None else into
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(item, f"{name}.{key}" if name else str(key), into)
    elif isinstance(value, (datetime.date, datetime.time, datetime.timedelta, datetime.tzinfo)):
        into[name or "(root)"] = str(value)
    elif isinstance(value, (list, tuple)) and not (
        value and all(isinstance(v, (int, float)) for v in value)
    ):
        for index, item in enumerate(value):
            flatten(item, f"{name}[{index}]", into)
    elif isinstance(value, Opaque):
        into[name or "(root)"] = repr(value)
        flatten(value.contents(), name, into)
    else:
        into[name or "(root)"] = value
    return into


def is_torch_file(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04" and b"data.pkl" in data[:4096]


def read_pickle(data: bytes) -> dict:
    """{name: value} of a pickle or joblib file (scikit-learn models): attributes by name, arrays
    as arrays."""
    if len(data) > MAX_PICKLE_BYTES * 64:
        raise ValueError("too large to read as a pickle")
    return flatten(_SafeUnpickler(io.BytesIO(data)).load())


def read_model(name: str, data: bytes) -> dict:
    """{tensor or value name: ndarray or value} of a model file, by its suffix and content."""
    if name.lower().endswith(".safetensors"):
        return read_safetensors(data)
    if is_torch_file(data):
        return read_torch(data)
    return read_pickle(data)
