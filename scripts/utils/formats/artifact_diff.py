"""Every difference between two versions of one file, in that file type's own terms.

    from scripts.utils.formats.artifact_diff import compare
    result = compare("metrics.csv", first_bytes, second_bytes)
    # {"type": "csv", "count": 2, "truncated": False,
    #  "differences": [{"where": "row 3, column loss", "first": "0.4", "second": "0.9"}, ...]}

Each difference has a ``where`` that names its place (a JSON key path, a CSV
cell, an array region, an image box, an audio range, an archive member, a
line or byte range); two comparisons of the same file give the same
``where`` for the same place, so differences can be matched across runs.
At most ``limit`` differences are listed per file (``count`` says how many
there were when that is known; ``truncated`` says whether the list stops
short).

By type: JSON and JSON lines (every differing key path), CSV (every
differing cell), tensors: NumPy ``.npy``/``.npz``, the core's ``.cten``/``.sten``
checkpoints, PyTorch ``.pt``/``.pth``/``.ckpt`` (and a ``.bin`` that is one),
``.safetensors``, and pickles (``.pkl``, ``.pickle``, ``.joblib``: scikit-learn
models by attribute; utils/formats/model_files.py reads them all without running
pickled code) (per tensor, by name: shape/dtype, how many values differ,
the largest difference, the first differing index and its two values, and
the boxes of the largest differing regions; a model's other values, such as
an epoch or a learning rate, by name too), PNG/GIF (boxes of differing pixels), WAV (ranges of
differing samples), MP4 (differing decoded frames), tar/zip archives
(member by member: missing members, metadata, and each differing member
compared by its own type, recursively, as diffoscope does), UTF-8 text
(differing line ranges), and anything else (differing byte ranges). A file
that does not parse as its type is compared as bytes (``parse_error`` says
why).
"""

from __future__ import annotations

import csv
import difflib
import io
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import orjson

from scripts.utils.formats.model_files import is_torch_file

LIMIT = 20  # differences listed per file
MAX_DEPTH = 3  # archives inside archives
MAX_MEMBER_BYTES = 256 << 20
TEXT_SNIPPET = 200  # characters of a differing line shown


class Collector:
    """Differences up to ``limit``; counts the rest."""

    def __init__(self, limit: int):
        self.limit, self.items, self.count = limit, [], 0

    def add(self, where: str, **details) -> bool:
        """Record one difference; False once the list is full (callers may stop looking)."""
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append({"where": where, **details})
        return len(self.items) < self.limit

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit

    def result(self, kind: str, **summary) -> dict:
        return {
            "type": kind,
            "count": self.count,
            "differences": self.items,
            "truncated": self.count > len(self.items),
            **summary,
        }


def _short(value):
    text = value if isinstance(value, str) else None
    if text is not None and len(text) > TEXT_SNIPPET:
        return text[:TEXT_SNIPPET] + "..."
    if isinstance(value, (dict, list)):
        dumped = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        return value if len(dumped) <= TEXT_SNIPPET else dumped[:TEXT_SNIPPET] + "..."
    return value


# --------------------------------------------------------------------------
# Structured text
# --------------------------------------------------------------------------


def _json_walk(x, y, path: str, found: Collector) -> None:
    if found.full:
        found.count += 1
        return
    if isinstance(x, dict) and isinstance(y, dict):
        if list(x) != list(y) and set(x) == set(
            y
        ):  # the same keys in another order (a set or hash order)
            found.add(
                f"{path}: key order",
                first=_short([str(k) for k in x]),
                second=_short([str(k) for k in y]),
            )
        for key in sorted(set(x) | set(y), key=str):
            where = f"{path}.{key}"
            if key not in x or key not in y:
                found.add(
                    where,
                    first=_short(x.get(key)) if key in x else "<absent>",
                    second=_short(y.get(key)) if key in y else "<absent>",
                )
            elif x[key] != y[key]:
                _json_walk(x[key], y[key], where, found)
        return
    if isinstance(x, list) and isinstance(y, list):
        for index, (u, v) in enumerate(zip(x, y)):
            if u != v:
                _json_walk(u, v, f"{path}[{index}]", found)
        if len(x) != len(y):
            found.add(f"{path}.length", first=len(x), second=len(y))
        return
    found.add(path, first=_short(x), second=_short(y))


def compare_json(name: str, a: bytes, b: bytes, limit: int) -> dict:
    found = Collector(limit)
    _json_walk(orjson.loads(a), orjson.loads(b), "$", found)
    if not found.count and a != b:  # the same value, written differently (spacing, 1.0 against 1)
        return {
            **compare_text(name, a, b, limit),
            "note": "the same JSON value, written differently",
        }
    return found.result("json")


def compare_jsonl(name: str, a: bytes, b: bytes, limit: int) -> dict:
    found = Collector(limit)
    lines_a, lines_b = a.splitlines(), b.splitlines()
    for number, (x, y) in enumerate(zip(lines_a, lines_b), start=1):
        if x != y:
            _json_walk(orjson.loads(x), orjson.loads(y), f"line {number}: $", found)
    if len(lines_a) != len(lines_b):
        found.add("lines", first=len(lines_a), second=len(lines_b))
    return found.result("jsonl")


def compare_csv(name: str, a: bytes, b: bytes, limit: int) -> dict:
    found = Collector(limit)
    rows_a = list(csv.reader(io.StringIO(a.decode("utf-8"))))
    rows_b = list(csv.reader(io.StringIO(b.decode("utf-8"))))
    header = rows_a[0] if rows_a else []
    for number, (x, y) in enumerate(zip(rows_a, rows_b), start=1):
        if x == y:
            continue
        for column in range(max(len(x), len(y))):
            u = x[column] if column < len(x) else None
            v = y[column] if column < len(y) else None
            if u != v:
                label = header[column] if column < len(header) and number > 1 else str(column + 1)
                found.add(f"row {number}, column {label}", first=u, second=v)
    if len(rows_a) != len(rows_b):
        found.add("rows", first=len(rows_a), second=len(rows_b))
    return found.result("csv", columns=header)


# --------------------------------------------------------------------------
# Arrays, images, sound, video
# --------------------------------------------------------------------------


def _read_arrays(name: str, data: bytes) -> dict:
    from scripts.utils.formats.arrays import arrays_from_bytes
    from scripts.utils.formats.tensors import decode_cten, decode_sten

    suffix = PurePosixPath(name).suffix.lower()
    if suffix == ".npz":
        return arrays_from_bytes(data, name)
    if suffix == ".npy":
        return {"array": next(iter(arrays_from_bytes(data, name).values()))}
    tensor = decode_cten(data, name) if suffix == ".cten" else decode_sten(data, name)
    return {key: value for key, value in vars(tensor).items() if isinstance(value, np.ndarray)}


def regions(mask: np.ndarray, limit: int) -> list:
    """Boxes around the connected regions of a boolean mask: ``[(slices, element count), ...]``,
    largest first."""
    from scipy import ndimage

    if mask.ndim == 0:
        return [((), int(mask))] if mask else []
    labels, count = ndimage.label(mask)
    boxes = ndimage.find_objects(labels)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = sorted(range(count), key=lambda i: (-sizes[i], [s.start for s in boxes[i]]))[:limit]
    return [
        (boxes[i], int(sizes[i])) for i in sorted(order, key=lambda i: [s.start for s in boxes[i]])
    ]


def _box_text(box) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in box) + "]"


def _plain(value):
    """A value as JSON can hold it (a repr where it cannot: complex numbers, sets, bytes)."""
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return repr(value)
    return _short(value)


def compare_tensors(x: dict, y: dict, found: Collector) -> None:
    """Named tensors (and plain values) compared one by one: what differs, how many values, by
    how much, where first."""
    absent = object()
    for key in sorted(set(x) | set(y), key=str):
        u, v = x.get(key, absent), y.get(key, absent)
        if not isinstance(u, np.ndarray) or not isinstance(v, np.ndarray):
            if u is absent or v is absent:
                found.add(
                    f"{key}: present",
                    first="<absent>" if u is absent else "present",
                    second="<absent>" if v is absent else "present",
                )
            elif isinstance(u, np.ndarray) or isinstance(v, np.ndarray) or _plain(u) != _plain(v):
                found.add(
                    str(key),
                    first=_plain(u if not isinstance(u, np.ndarray) else f"array {list(u.shape)}"),
                    second=_plain(v if not isinstance(v, np.ndarray) else f"array {list(v.shape)}"),
                )
            continue
        if u.shape != v.shape or u.dtype != v.dtype:
            found.add(
                f"{key}: shape and dtype",
                first=[list(u.shape), str(u.dtype)],
                second=[list(v.shape), str(v.dtype)],
            )
            continue
        unequal = (u != v) & ~(_isnan(u) & _isnan(v))
        count = int(unequal.sum())
        if not count:
            continue
        first_index = tuple(int(i) for i in np.argwhere(unequal)[0]) if u.ndim else ()
        numeric = u.dtype.kind in "biufc"
        largest = (
            float(
                np.nanmax(
                    np.abs(
                        u[unequal].astype(np.complex128 if u.dtype.kind == "c" else np.float64)
                        - v[unequal].astype(np.complex128 if u.dtype.kind == "c" else np.float64)
                    )
                )
            )
            if numeric
            else None
        )
        found.add(
            str(key),
            shape=list(u.shape),
            dtype=str(u.dtype),
            differing_values=count,
            values=int(u.size),
            max_abs_difference=largest,
            first_index=list(first_index),
            first=_plain(u[first_index].item()),
            second=_plain(v[first_index].item()),
            regions=[_box_text(box) for box, _ in regions(unequal, 3)] if u.ndim else [],
        )


def compare_arrays(name: str, a: bytes, b: bytes, limit: int) -> dict:
    found = Collector(limit)
    compare_tensors(_read_arrays(name, a), _read_arrays(name, b), found)
    return found.result("array")


def compare_model(name: str, a: bytes, b: bytes, limit: int) -> dict:
    """PyTorch and safetensors files, tensor by tensor (formats/model_files.py reads them; no
    pickled code runs)."""
    from scripts.utils.formats.model_files import read_model

    found = Collector(limit)
    compare_tensors(read_model(name, a), read_model(name, b), found)
    return found.result("model")


def _isnan(values: np.ndarray) -> np.ndarray:
    return np.isnan(values) if values.dtype.kind in "fc" else np.zeros(values.shape, bool)


def compare_image(name: str, a: bytes, b: bytes, limit: int) -> dict:
    import imageio.v3 as iio

    found = Collector(limit)
    suffix = PurePosixPath(name).suffix.lower()
    u, v = iio.imread(a, extension=suffix, index=None), iio.imread(b, extension=suffix, index=None)
    if u.shape != v.shape:
        found.add("size", first=list(u.shape), second=list(v.shape))
        return found.result("image")
    animated = suffix == ".gif" and u.ndim == 4
    mask = (u != v).reshape(u.shape[: 3 if animated else 2] + (-1,)).any(axis=-1)
    frames = range(mask.shape[0]) if animated else [None]
    for frame in frames:
        spatial = mask[frame] if animated else mask
        for box, pixels in regions(spatial, limit):
            where = (
                f"frame {frame}: " if animated else ""
            ) + f"rows {box[0].start}-{box[0].stop - 1}, columns {box[1].start}-{box[1].stop - 1}"
            found.add(where, pixels=pixels)
    return found.result("image", shape=list(u.shape))


def compare_wav(name: str, a: bytes, b: bytes, limit: int) -> dict:
    import wave

    found = Collector(limit)
    with wave.open(io.BytesIO(a)) as first, wave.open(io.BytesIO(b)) as second:
        params = first.getparams(), second.getparams()
        frames = first.readframes(first.getnframes()), second.readframes(second.getnframes())
    if params[0][:3] != params[1][:3]:
        found.add("format", first=list(params[0][:3]), second=list(params[1][:3]))
        return found.result("wav")
    width = {1: "u1", 2: "<i2", 4: "<i4"}.get(params[0].sampwidth, "u1")
    u, v = np.frombuffer(frames[0], width), np.frombuffer(frames[1], width)
    rate = params[0].framerate * params[0].nchannels
    for start, stop in _runs(u, v):
        found.add(
            f"samples {start}-{stop - 1}", seconds=[round(start / rate, 4), round(stop / rate, 4)]
        )
    if u.size != v.size:
        found.add("length", first=int(u.size), second=int(v.size))
    return found.result("wav", sample_rate=params[0].framerate)


def _runs(u: np.ndarray, v: np.ndarray, gap: int = 1) -> list:
    """``[start, stop)`` ranges where two 1-D arrays differ (over their common length)."""
    size = min(u.size, v.size)
    where = np.nonzero(u[:size] != v[:size])[0]
    if where.size == 0:
        return []
    breaks = np.nonzero(np.diff(where) > gap)[0]
    starts = np.concatenate([[where[0]], where[breaks + 1]])
    stops = np.concatenate([where[breaks], [where[-1]]]) + 1
    return [(int(s), int(e)) for s, e in zip(starts, stops)]


def compare_mp4(name: str, a: bytes, b: bytes, limit: int) -> dict:
    from scripts.utils.formats.media import read_mp4_frames

    found = Collector(limit)
    with tempfile.TemporaryDirectory() as scratch:
        first, second = Path(scratch) / "a.mp4", Path(scratch) / "b.mp4"
        first.write_bytes(a)
        second.write_bytes(b)
        u, v = read_mp4_frames(first), read_mp4_frames(second)
    for number, (x, y) in enumerate(zip(u, v)):
        if x.shape != y.shape or not np.array_equal(x, y):
            found.add(
                f"frame {number}",
                pixels=int((x != y).any(axis=-1).sum()) if x.shape == y.shape else None,
            )
    if len(u) != len(v):
        found.add("frames", first=len(u), second=len(v))
    return found.result(
        "mp4",
        note=None if found.count else "the decoded frames are equal: only the container differs",
    )


# --------------------------------------------------------------------------
# Archives, member by member
# --------------------------------------------------------------------------


def _tar_members(data: bytes) -> dict:
    members = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        for member in archive:
            content = b""
            if member.isfile() and member.size <= MAX_MEMBER_BYTES:
                content = archive.extractfile(member).read()
            members[member.name] = (
                {
                    "mode": oct(member.mode),
                    "mtime": member.mtime,
                    "uid": member.uid,
                    "gid": member.gid,
                    "user": member.uname,
                    "group": member.gname,
                    "type": member.type.decode(errors="replace"),
                    "link": member.linkname,
                },
                content,
            )
    return members


def _zip_members(data: bytes) -> dict:
    members = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            content = archive.read(info) if info.file_size <= MAX_MEMBER_BYTES else b""
            members[info.filename] = (
                {
                    "date_time": list(info.date_time),
                    "mode": oct(info.external_attr >> 16),
                    "compress_type": info.compress_type,
                    "comment": info.comment.decode(errors="replace"),
                },
                content,
            )
    return members


def compare_archive(name: str, a: bytes, b: bytes, limit: int, depth: int = 0) -> dict:
    found = Collector(limit)
    read = _zip_members if name.lower().endswith(".zip") else _tar_members
    x, y = read(a), read(b)
    if list(x) != list(y) and set(x) == set(y):
        found.add("member order", first=list(x)[:limit], second=list(y)[:limit])
    for member in sorted(set(x) | set(y)):
        if member not in x or member not in y:
            found.add(
                f"{member}",
                first="<absent>" if member not in x else "present",
                second="<absent>" if member not in y else "present",
            )
            continue
        (meta_a, content_a), (meta_b, content_b) = x[member], y[member]
        for field in sorted(set(meta_a) | set(meta_b)):
            if meta_a.get(field) != meta_b.get(field):
                found.add(f"{member}: {field}", first=meta_a.get(field), second=meta_b.get(field))
        if content_a != content_b:
            inner = compare(member, content_a, content_b, limit, depth + 1)
            for item in inner["differences"]:
                found.add(
                    f"{member}: {item['where']}", **{k: v for k, v in item.items() if k != "where"}
                )
            found.count += inner["count"] - len(inner["differences"])
    return found.result("archive", members=[len(x), len(y)])


# --------------------------------------------------------------------------
# Text and bytes
# --------------------------------------------------------------------------


def compare_text(name: str, a: bytes, b: bytes, limit: int) -> dict:
    found = Collector(limit)
    lines_a, lines_b = a.decode("utf-8").splitlines(), b.decode("utf-8").splitlines()
    matcher = difflib.SequenceMatcher(None, lines_a, lines_b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        where = f"lines {i1 + 1}-{i2}" if i2 - i1 > 1 else f"line {i1 + 1}"
        found.add(
            where, first=_short("\n".join(lines_a[i1:i2])), second=_short("\n".join(lines_b[j1:j2]))
        )
    return found.result("text")


def compare_bytes(name: str, a: bytes, b: bytes, limit: int) -> dict:
    found = Collector(limit)
    u, v = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
    for start, stop in _runs(u, v, gap=8):
        found.add(
            f"bytes {start}-{stop - 1}",
            first=a[start : min(stop, start + 16)].hex(),
            second=b[start : min(stop, start + 16)].hex(),
        )
    if len(a) != len(b):
        found.add("size", first=len(a), second=len(b))
    return found.result("bytes")


COMPARERS = {  # file suffix -> how two versions of that type are compared
    ".json": compare_json,
    ".jsonl": compare_jsonl,
    ".csv": compare_csv,
    ".npz": compare_arrays,
    ".npy": compare_arrays,
    ".cten": compare_arrays,
    ".sten": compare_arrays,
    ".pt": compare_model,
    ".pth": compare_model,
    ".ckpt": compare_model,
    ".safetensors": compare_model,
    ".pkl": compare_model,
    ".pickle": compare_model,
    ".joblib": compare_model,
    ".png": compare_image,
    ".gif": compare_image,
    ".wav": compare_wav,
    ".mp4": compare_mp4,
    ".tar": compare_archive,
    ".tgz": compare_archive,
    ".gz": compare_archive,
    ".zip": compare_archive,
}


def _is_text(data: bytes) -> bool:
    if b"\0" in data[:65536]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def compare(name: str, a: bytes, b: bytes, limit: int = LIMIT, depth: int = 0) -> dict:
    """Every difference between ``a`` and ``b`` (two versions of file ``name``), up to ``limit``."""
    suffix = PurePosixPath(name).suffix.lower()
    comparer = COMPARERS.get(suffix)
    if comparer is None and suffix == ".bin" and is_torch_file(a) and is_torch_file(b):
        comparer = compare_model
    if suffix == ".gz" and not name.lower().endswith(".tar.gz"):
        comparer = None
    note = {}
    if comparer is not None and (comparer is not compare_archive or depth < MAX_DEPTH):
        try:
            result = (
                compare_archive(name, a, b, limit, depth)
                if comparer is compare_archive
                else comparer(name, a, b, limit)
            )
            if result["count"] or a == b:
                return result
            note = {
                "note": f"the same {result['type']} content, stored differently"
            }  # e.g. a pickled object
        except (
            Exception
        ) as exc:  # a file that does not parse as its type: compare it as text or bytes
            note = {"parse_error": f"{type(exc).__name__}: {exc}"}
    result = (
        compare_text(name, a, b, limit)
        if _is_text(a) and _is_text(b)
        else compare_bytes(name, a, b, limit)
    )
    return {**result, **note}
