"""Array backends (NumPy or CuPy from one code path) and deterministic .npz files.

* ``array_module(backend)`` returns ``(xp, name)``: NumPy, or CuPy when asked
  for (``cupy``) or when ``auto`` finds a usable CUDA device. CuPy is never
  imported otherwise. Asking for CuPy where it cannot run is bad input.
* ``to_numpy(array)`` brings an array back to the host.
* ``save_npz(path, arrays)`` writes an .npz whose bytes depend only on the
  arrays: ``numpy.savez`` stamps each zip entry with the current time, this
  writes entries in name order with a fixed date, atomically.
* ``read_arrays(path)`` reads a .npy or .npz given by a user: each array's
  header is checked before its data is read (a real number type, at most
  the pixel cap of limits.py in values, never pickled objects), so a file
  claiming a huge shape or a compressed bomb costs nothing;
  ``arrays_from_bytes(data, name)`` does the same for bytes in memory.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from scripts.utils.errors import InputError
from scripts.utils.jsonio import atomic_output
from scripts.utils.limits import check_pixels, regular_file

BACKENDS = ("auto", "numpy", "cupy")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold


def _cupy_or_reason():
    """(cupy module, None) when CuPy can run here, else (None, why not)."""
    try:
        import cupy
    except ImportError:
        return None, "CuPy is not installed (run `make setup-gpu`)"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "no CUDA device is visible"
    except Exception as exc:  # CUDA driver missing or broken
        return None, f"CUDA is not usable: {exc}"
    return cupy, None


def array_module(backend: str = "auto"):
    """``(xp, name)`` for ``numpy``, ``cupy`` or ``auto`` (CuPy if usable, else NumPy)."""
    if backend not in BACKENDS:
        raise InputError(
            f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}", value=backend
        )
    if backend == "numpy":
        return np, "numpy"
    cupy, reason = _cupy_or_reason()
    if cupy is not None:
        return cupy, "cupy"
    if backend == "cupy":
        raise InputError(f"--backend cupy was asked for, but {reason}", value=backend)
    return np, "numpy"


def to_numpy(array) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array."""
    return (
        array.get()
        if hasattr(array, "get") and not isinstance(array, np.ndarray)
        else np.asarray(array)
    )


def npz_bytes(arrays: dict) -> bytes:
    """The deterministic .npz bytes of ``{name: array}`` (stored, not compressed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            entry.external_attr = 0o644 << 16
            payload = io.BytesIO()
            # asarray(order="C") keeps 0-d arrays 0-d (ascontiguousarray would make them 1-d)
            np.lib.format.write_array(
                payload, np.asarray(to_numpy(arrays[name]), order="C"), allow_pickle=False
            )
            archive.writestr(entry, payload.getvalue())
    return buffer.getvalue()


def save_npz(path: Path, arrays: dict) -> None:
    with atomic_output(path) as handle:
        handle.write(npz_bytes(arrays))


def _checked_array(stream, name: str, source) -> np.ndarray:
    """Read one .npy from ``stream`` after checking its header (see the module docstring)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = reader(stream, max_header_size=10000)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InputError(f"not a readable .npy array: {exc}", file=source, array=name)
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.subdtype is not None or dtype.names:
        raise InputError(
            f"array has type {dtype}: expected real numbers (bool, integer or float)",
            file=source,
            array=name,
        )
    count = 1
    for size in shape:
        count *= size
    check_pixels(count, "x".join(map(str, shape)) or "a scalar", file=source)
    data = stream.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise InputError(
            f"array data is cut short: {len(data)} of {count * dtype.itemsize} bytes",
            file=source,
            array=name,
        )
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def read_arrays(path) -> dict:
    """``{name: array}`` of a .npy (named by its stem) or .npz file, checked before reading (exit
    2 if bad)."""
    path = Path(path)
    regular_file(path, "array file")
    try:
        with open(path, "rb") as handle:
            return _arrays(handle, path.name, str(path))
    except OSError as exc:
        raise InputError(f"cannot read array file: {exc.strerror or exc}", file=str(path))


def arrays_from_bytes(data: bytes, name: str) -> dict:
    """``read_arrays`` of a file's bytes already in memory (``name`` gives its kind and names it
    in errors)."""
    return _arrays(io.BytesIO(data), PurePosixPath(name).name, name)


def _arrays(stream, filename: str, source: str) -> dict:
    stem, suffix = PurePosixPath(filename).stem, PurePosixPath(filename).suffix.lower()
    try:
        if suffix == ".npy":
            return {stem: _checked_array(stream, stem, source)}
        arrays = {}
        with zipfile.ZipFile(stream) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy") or info.is_dir():
                    continue
                name = info.filename[:-4]
                with archive.open(info) as member:
                    arrays[name] = _checked_array(member, name, source)
        return dict(sorted(arrays.items()))
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        EOFError,
        RuntimeError,
        ValueError,
    ) as exc:
        raise InputError(f"not a readable .npz archive: {exc}", file=source)
