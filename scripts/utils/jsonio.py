"""Canonical JSON, atomic file writes, and locked read-modify-write.

Everything that writes a registry, manifest or report goes through here:

* ``canonical_json(obj)``: orjson, sorted keys, UTF-8, trailing newline, and
  non-finite floats written as the strings "NaN", "Infinity", "-Infinity"
  (orjson alone would silently write ``null``).
* ``atomic_write_bytes(path, data)``: temp file in the same folder, flush,
  fsync, ``os.replace``. A reader sees the old file or the new one, never a
  torn one, even if the writer is killed.
* ``locked_update(path, change)``: read, change and rewrite a JSON file
  under a cross-platform lock (filelock), so concurrent writers lose nothing.
"""

from __future__ import annotations

import glob
import math
import os
import re
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

import orjson
from filelock import FileLock, Timeout

from scripts.utils.errors import InputError
from scripts.utils.limits import MAX_TABLE_BYTES, read_input_bytes

NONFINITE_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
LOCK_TIMEOUT_S = 300


def encode_nonfinite(value):
    """Return ``value`` with non-finite floats as strings and NumPy values as plain Python.

    Tuples become lists. Sets are refused: their order is not defined.
    """
    kind = type(value)
    if kind is float:
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if kind is dict:
        return {key: encode_nonfinite(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [encode_nonfinite(item) for item in value]
    if kind.__module__ == "numpy" and hasattr(value, "tolist"):
        return encode_nonfinite(value.tolist())
    if isinstance(value, (set, frozenset)):
        raise TypeError("sets have no defined order: sort them into a list first")
    if isinstance(value, os.PathLike):
        raise TypeError("paths must be written workspace-relative, as strings")
    return value


def as_float(value) -> float:
    """Read a number written by ``canonical_json`` (turns "NaN" etc. back)."""
    if isinstance(value, str):
        if value in NONFINITE_NAMES:
            return NONFINITE_NAMES[value]
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def restore_nonfinite(value):
    """Inverse of ``encode_nonfinite`` for a whole structure of numbers.

    Use it only on structures whose strings are all numbers (metric rows):
    it turns every "NaN", "Infinity" and "-Infinity" string into a float.
    """
    if isinstance(value, str):
        return NONFINITE_NAMES.get(value, value)
    if isinstance(value, dict):
        return {key: restore_nonfinite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [restore_nonfinite(item) for item in value]
    return value


def canonical_json(value, checked: bool = True) -> bytes:
    """The canonical bytes of ``value``: sorted keys, UTF-8, trailing newline.

    orjson writes first; only when its text holds a ``null`` (a None, or a
    non-finite float orjson turned into null) or it refuses a type (NumPy
    values, sets, paths) does the slower walk of ``encode_nonfinite`` run.
    ``checked=False`` skips that walk: for documents of strings and integers.
    """
    return _dumps(value, orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE, checked)


def _dumps(value, option: int, checked: bool = True, default=None) -> bytes:
    if checked:
        try:
            text = orjson.dumps(value, option=option)  # no default here: NumPy values take the walk
        except TypeError:
            text = None
        if text is not None and b"null" not in text:
            return text
        value = encode_nonfinite(value)
    return orjson.dumps(value, option=option, default=default)


def sorted_object(keys: list, indices: list, values: list) -> orjson.Fragment:
    """The JSON object ``{keys[i]: values[indices[i]]}`` as canonical JSON writes it, without
    building the dict.

    ``keys`` are unique strings already in sorted order; ``values`` a short
    list of strings (a million record -> split pairs take a fraction of the
    time of a dict and a sorted dump). orjson encodes all keys as one list;
    in that text ``","`` occurs only between elements, since a quote inside
    a string is always escaped. The result goes into a larger document as an
    orjson Fragment.
    """
    if not keys:
        return orjson.Fragment(b"{}")
    pieces = [b""] * (2 * len(keys))
    pieces[0::2] = orjson.dumps(keys)[2:-2].split(b'","')
    encoded_values = [b'":' + orjson.dumps(value) + b',"' for value in values]
    pieces[1::2] = map(encoded_values.__getitem__, indices)
    return orjson.Fragment(b'{"' + b"".join(pieces)[:-2] + b"}")


def json_line(value) -> bytes:
    """One JSON-lines record (key order kept, non-finite encoded)."""
    return _dumps(value, orjson.OPT_APPEND_NEWLINE, default=str)


def joined(pieces) -> bytes:
    """``b"".join(pieces)`` for many small orjson outputs, in memory near the result's size.

    Each ``orjson.dumps`` result keeps a buffer of about 4 KB however short
    it is, so a list of a million records would hold 4 GB; this appends each
    to one growing buffer as it comes and lets it go.
    """
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
    return bytes(buffer)


def read_json(path: Path):
    """Parse a JSON file; a bad file is an InputError naming it, line and column."""
    path = Path(path)
    return parse_json(read_input_bytes(path, MAX_TABLE_BYTES), path)


def parse_json(data: bytes, path=None):
    """Parse JSON bytes read from ``path``; bad JSON is an InputError naming it, line and column."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", file=path, line=exc.lineno, column=exc.colno)


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable. Folders cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(source: Path, target: Path) -> None:
    # On Windows a reader holding the target open makes os.replace fail for a
    # moment (sharing violation); retry briefly rather than fail the run.
    for attempt in range(50):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if os.name == "posix" or attempt == 49:
                raise
            time.sleep(0.02)


@contextmanager
def atomic_output(path: Path):
    """Yield a binary file; on success it replaces ``path`` atomically.

    On any exception the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path)
    try:
        with open(temp, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _replace(temp, path)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(temp)):
            exc.filename = str(path)  # name the file being written, not its temp
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as handle:
        handle.write(data)


def lock_for(path: Path) -> FileLock:
    """The lock guarding ``path``: a hidden ``.NAME.lock`` file beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_name(f".{path.name}.lock")), timeout=LOCK_TIMEOUT_S)


@contextmanager
def holding(lock: FileLock, path: Path):
    try:
        with lock:
            yield
    except Timeout:
        raise InputError(
            f"could not lock the file within {LOCK_TIMEOUT_S} s: another process holds it",
            file=path,
        )


def locked_update(path: Path, change, empty, checked: bool = True):
    """Read ``path`` (or ``empty()`` when absent), apply ``change``, write back.

    ``change(current)`` returns the new value. The whole cycle holds the
    file's lock; the write is atomic. Returns the new value. ``checked`` is
    passed to ``canonical_json``.
    """
    path = Path(path)
    with holding(lock_for(path), path):
        remove_stale_temps(path)
        current = read_json(path) if path.exists() else empty()
        updated = change(current)
        atomic_write_bytes(path, canonical_json(updated, checked))
    return updated


def remove_stale_temps(path: Path) -> list:
    """Delete temp files that a killed writer of ``path`` left beside it; call it holding ``path``'s
    lock.

    Every writer of a locked file holds the lock while its temp file exists,
    so a temp file seen under the lock belongs to a writer that died.
    """
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
            removed.append(stale.name)
    return removed


_TEMP_NAME = re.compile(r"^\..+\.[0-9]+\.[0-9a-f]{8}\.tmp$")  # what _temp_path names


def remove_temps_under(folder: Path) -> list:
    """Delete the temp files of atomic writes anywhere under ``folder`` (its writer is gone: a
    run resumed in its own log folder), so that they are never taken for outputs."""
    removed = []
    for path in sorted(Path(folder).rglob(".*.tmp")):
        if _TEMP_NAME.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def append_json_line(path: Path, record, key: str | None = None) -> str | None:
    """Append one record to a JSON-lines file under its lock, durably.

    A last line without its newline (a writer killed mid-append) is never
    glued to the new record: a complete JSON value gets its newline, a torn
    fragment is cut off. With ``key``, a line whose ``key`` field equals the
    record's is found first: if it is the same record nothing is written, if
    not it is replaced in place (atomic rewrite). Returns what was repaired
    (None when nothing was), for the caller to log.
    """
    path = Path(path)
    line = json_line(record)
    with holding(lock_for(path), path):
        remove_stale_temps(path)
        with open(path, "a+b") as handle:
            repaired = _repair_tail(handle)
            if key is not None:
                handle.seek(0)
                lines = handle.read().splitlines(keepends=True)
                for index, existing in enumerate(lines):
                    try:
                        found = orjson.loads(existing)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(found, dict) and found.get(key) == record.get(key):
                        if existing != line:
                            lines[index] = line
                            atomic_write_bytes(path, b"".join(lines))
                        return repaired
            handle.seek(0, os.SEEK_END)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    return repaired


def _repair_tail(handle) -> str | None:
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return None
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return None
    start = max(0, size - (1 << 20))
    while True:  # find the start of the last line
        handle.seek(start)
        tail = handle.read(size - start)
        cut = tail.rfind(b"\n")
        if cut >= 0 or start == 0:
            break
        start = max(0, start - (1 << 20))
    line_start = start + cut + 1 if cut >= 0 else 0
    fragment = tail[cut + 1 :] if cut >= 0 else tail
    try:
        orjson.loads(fragment)
        handle.seek(size)
        handle.write(b"\n")
        return "the last line had no newline; added it"
    except orjson.JSONDecodeError:
        handle.truncate(line_start)
        return f"cut a torn last line of {len(fragment)} bytes (a writer was killed mid-append)"


def json_objects(lines, file=None, skip_bad: bool = False, on_bad=None):
    """``(line number, object)`` for each non-blank line of ``lines`` (bytes) that is a JSON object.

    Another line is an InputError naming ``file``, the line and the column, or, with ``skip_bad``,
    passed over (a reader that takes what it can, such as a metrics file being written);
    ``on_bad(number, line)``, when given, is told of each line passed over.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if skip_bad or on_bad:
                if on_bad:
                    on_bad(number, line)
                continue
            raise InputError(
                f"invalid JSON line: {exc.msg}", file=file, line=number, column=exc.colno
            )
        if isinstance(row, dict):
            yield number, row
        elif skip_bad or on_bad:
            if on_bad:
                on_bad(number, line)
        else:
            raise InputError("each line must be a JSON object", file=file, line=number)


def read_json_lines(path: Path) -> list:
    """Read a JSON-lines file; a torn last line (a killed writer) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = read_input_bytes(path, MAX_TABLE_BYTES).splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise InputError(
                f"invalid JSON line: {exc.msg}", file=path, line=number, column=exc.colno
            )
    return records
