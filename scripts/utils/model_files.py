"""Model files read as named tensors, without a framework and without running any pickled code.

    from scripts.utils.model_files import read_model
    tensors = read_model("model.pt", data)   # {"fc1.weight": ndarray, "epoch": 3, "optimizer.param_groups[0].lr": 1.0}

- PyTorch ``torch.save`` files (``.pt``, ``.pth``, ``.ckpt``, a ``.bin`` that
  is one): a zip holding ``data.pkl`` and one file per storage. The pickle is
  walked by an unpickler that imports nothing: the globals it names become
  inert placeholders, except the few that rebuild a tensor (``torch._utils``'s
  ``_rebuild_tensor_v2``, ``_rebuild_parameter``, the storage types) and plain
  containers. Tensors are rebuilt with NumPy from their storage, offset, shape
  and strides; bfloat16 is widened to float32.
- ``.safetensors``: the JSON header and the raw little-endian data.

Nested state (an optimizer's ``state_dict``, a checkpoint dict) is flattened
to dotted names; lists become ``[i]``. Values that are not tensors (epochs,
learning rates, strings) are kept as they are; objects the reader does not
know are shown as ``<module.name>``. A file that is not one of these raises
``ValueError`` (callers compare it as bytes).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np
import orjson

MAX_PICKLE_BYTES = 64 << 20
STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?", "ComplexFloatStorage": "<c8", "ComplexDoubleStorage": "<c16",
}
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "bfloat16", "I64": "<i8", "I32": "<i4",
                      "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}


class Opaque:
    """Whatever a pickle builds from a global the reader does not know: its name and arguments, nothing run."""

    name = "?"

    def __new__(cls, *args, **kwargs):
        instance = object.__new__(cls)
        instance.args, instance.state = args, None
        return instance

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def __repr__(self):
        return f"<{self.name}>"


class _Storage:
    def __init__(self, dtype: str, key: str):
        self.dtype, self.key = dtype, key


class _TorchUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storage):
        super().__init__(io.BytesIO(data))
        self.storage = storage

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "builtins" and name in ("set", "frozenset", "complex", "slice"):
            return {"set": set, "frozenset": frozenset, "complex": complex, "slice": slice}[name]
        if module == "torch" and name == "Size":
            return tuple
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self.rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return lambda data, *rest: data
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return lambda function, kind, args, state: function(*args)
        return type(name, (Opaque,), {"name": f"{module}.{name}"})

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], str)):
            raise ValueError(f"unknown persistent id {pid!r:.80}")
        return _Storage(pid[1], str(pid[2]))

    def rebuild_tensor(self, storage, offset, size, stride, *rest):
        if not isinstance(storage, _Storage):
            raise ValueError("a tensor without a storage")
        return self.storage(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


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
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1] or [n for n in names if n == "data.pkl"]
    if not pickles:
        raise ValueError("no data.pkl: not a torch.save file")
    prefix = pickles[0][: -len("data.pkl")]
    if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
        raise ValueError("data.pkl is too large to read")
    if prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() not in (b"", b"little"):
        raise ValueError("big-endian tensors")
    cache: dict = {}

    def storage(ref: _Storage, offset: int, size: tuple, stride: tuple) -> np.ndarray:
        if ref.key not in cache:
            cache[ref.key] = _array(archive.read(f"{prefix}data/{ref.key}"), ref.dtype)
        flat = cache[ref.key]
        if not size:
            return flat[offset:offset + 1].reshape(()).copy()
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if min(size) == 0:
            return np.zeros(size, flat.dtype)
        if offset < 0 or min(stride) < 0 or last >= flat.size:
            raise ValueError("a tensor reaches past its storage")
        view = np.lib.stride_tricks.as_strided(flat[offset:], size, [s * flat.itemsize for s in stride])
        return np.array(view)

    root = _TorchUnpickler(archive.read(pickles[0]), storage).load()
    return flatten(root)


def read_safetensors(data: bytes) -> dict:
    if len(data) < 8:
        raise ValueError("too short for a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError("the header claims more bytes than the file has")
    header = orjson.loads(data[8:8 + length])
    body = data[8 + length:]
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
    elif isinstance(value, (list, tuple)) and not (value and all(isinstance(v, (int, float)) for v in value)):
        for index, item in enumerate(value):
            flatten(item, f"{name}[{index}]", into)
    elif isinstance(value, Opaque):
        into[name or "(root)"] = repr(value)
    else:
        into[name or "(root)"] = value
    return into


def is_torch_file(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04" and b"data.pkl" in data[:4096]


def read_model(name: str, data: bytes) -> dict:
    """{tensor or value name: ndarray or value} of a model file, by its suffix and content."""
    if name.lower().endswith(".safetensors"):
        return read_safetensors(data)
    return read_torch(data)
