"""How big, how deep and what kind of input the scripts accept: one home for the caps.

Every reader checks sizes *before* it reads, decodes or allocates, so memory
stays bounded whatever a file claims:

* ``read_input_bytes(path, max_bytes)``: a regular file only (a FIFO, socket
  or device is refused at once: reading one may never end, /dev/zero never
  does), at most ``max_bytes`` (checked before reading and while reading).
* ``check_plain(value)``: a loaded config or record is plain data that the
  canonical JSON writer can write exactly: integers within 64 bits, strings
  that are valid Unicode (no lone surrogates such as "\\udcff", which a
  non-UTF-8 command-line byte becomes), nesting at most ``MAX_DEPTH`` deep.
  Anything else is bad input naming the key.
* ``max_pixels()``: the decoded-size cap of one image (pixels, all frames
  and samples counted): ``$CRH_MAX_PIXELS``, default 100 million. That is
  400 MB as float32 per image in flight, sized so that a 24 GB machine runs
  the default worker count; an image over it is an error row, decoded never.
* ``max_volume_pixels()``: the same for one stacked series
  (``image_preprocessor --volumes``): ``$CRH_MAX_VOLUME_PIXELS``, default
  2**30 (a 1024-slice 1024x1024 series; 4 GiB as float32, held once: each
  slice is normalized straight into the volume).
* ``max_experiment_bytes()``: what the reference experiment may plan to
  hold in memory, computed from its config before anything is allocated:
  ``$CRH_MAX_EXPERIMENT_BYTES``, default 8 GiB.
* ``printable_name(raw)`` and ``name_hex(raw)``: how a file name that is not
  valid UTF-8 is written into JSON (bytes that are not UTF-8 as ``\\xNN``, and
  the exact bytes in hex, so the name can be rebuilt).
"""

from __future__ import annotations

import os
import stat as stat_module
from pathlib import Path

import orjson

from scripts.utils.errors import InputError

MAX_DEPTH = 64  # nesting of configs, --set keys and values
MAX_CONFIG_BYTES = 64 * 1024**2  # a config or seeds file
MAX_TABLE_BYTES = 4 * 1024**3  # a records table, a registry, a manifest
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what orjson writes exactly
MAX_PIXELS_ENV = "CRH_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000
MAX_VOLUME_PIXELS_ENV = "CRH_MAX_VOLUME_PIXELS"
DEFAULT_MAX_VOLUME_PIXELS = 2**30
MAX_EXPERIMENT_BYTES_ENV = "CRH_MAX_EXPERIMENT_BYTES"
DEFAULT_MAX_EXPERIMENT_BYTES = 8 << 30


def _cap(variable: str, default: int, unit: str = "pixels") -> int:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{variable} must be a positive integer number of {unit}", value=text)
    return value


def max_experiment_bytes() -> int:
    """The memory a reference experiment may plan to use: $CRH_MAX_EXPERIMENT_BYTES, else 8 GiB."""
    return _cap(MAX_EXPERIMENT_BYTES_ENV, DEFAULT_MAX_EXPERIMENT_BYTES, "bytes")


def max_pixels() -> int:
    """The decoded-size cap of one image: $CRH_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    return _cap(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)


def max_volume_pixels() -> int:
    """The size cap of one stacked series: $CRH_MAX_VOLUME_PIXELS, else
    DEFAULT_MAX_VOLUME_PIXELS."""
    return _cap(MAX_VOLUME_PIXELS_ENV, DEFAULT_MAX_VOLUME_PIXELS)


def check_pixels(count: int, shape_text: str, file=None, volume: bool = False) -> None:
    """Refuse an image (or, with ``volume``, a stacked series) over its cap, before decoding it."""
    cap, variable = (
        (max_volume_pixels(), MAX_VOLUME_PIXELS_ENV) if volume else (max_pixels(), MAX_PIXELS_ENV)
    )
    if count > cap:
        raise InputError(
            f"{'volume' if volume else 'image'} of {shape_text} ({count:,} values) is over the "
            f"decoded-size cap of {cap:,} (raise it with {variable})",
            file=file,
            pixels=count,
            max_pixels=cap,
        )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # by colour type (a palette decodes to RGB)


def check_png_pixels(path) -> None:
    """Refuse a PNG whose header claims more decoded values than the cap (read from its first 33
    bytes)."""
    import struct

    with open(path, "rb") as handle:
        head = handle.read(33)
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR" or len(head) < 26:
        raise InputError("not a PNG file: no signature and IHDR header", file=path)
    width, height, _, color_type = struct.unpack(">IIBB", head[16:26])
    channels = _PNG_CHANNELS.get(color_type)
    if channels is None or width == 0 or height == 0:
        raise InputError(
            f"PNG header is invalid: {width}x{height}, colour type {color_type}", file=path
        )
    check_pixels(width * height * channels, f"{width}x{height}x{channels}", file=path)


def regular_file(path, what: str = "file") -> os.stat_result:
    """The stat of ``path`` if it is a regular file (symlinks followed); else bad input saying
    what it is."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=path)
    except OSError as exc:
        raise InputError(f"cannot open {what}: {exc.strerror or exc}", file=path)
    except ValueError as exc:  # an embedded NUL
        raise InputError(f"not a usable path: {exc}", file=printable_name(str(path)))
    if stat_module.S_ISDIR(info.st_mode):
        raise InputError(f"{what} is a folder, not a file", file=path)
    if not stat_module.S_ISREG(info.st_mode):
        raise InputError(
            f"{what} is not a regular file (a FIFO, socket or device): it is never read", file=path
        )
    return info


def read_input_bytes(path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; else bad input naming it."""
    path = Path(path)
    info = regular_file(path, what)
    if info.st_size > max_bytes:
        raise InputError(
            f"{what} is {info.st_size:,} bytes, over the limit of {max_bytes:,}", file=path
        )
    try:
        with open(
            path, "rb"
        ) as handle:  # what the file holds (plus one byte to see it grow), never the cap
            data = handle.read(min(info.st_size, max_bytes) + 1)
            while (
                info.st_size < len(data) <= max_bytes
            ):  # longer than it said (growing, /proc): 1 MiB at a time
                more = handle.read(min(1 << 20, max_bytes + 1 - len(data)))
                if not more:
                    break
                data += more
    except IsADirectoryError:
        raise InputError(f"{what} is a folder, not a file", file=path)
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", file=path)
    if len(data) > max_bytes:
        raise InputError(
            f"{what} grew over the limit of {max_bytes:,} bytes while being read", file=path
        )
    return data


_ORJSON_DEPTH = 254  # orjson refuses deeper nesting


def plain_copy(value, file=None, default=None, slow=None):
    """A checked plain copy of ``value`` (see ``check_plain``), at C speed where it can be.

    orjson writes the value wrapped in enough lists that anything nested
    deeper than MAX_DEPTH meets orjson's own depth limit, ``default``
    converting what JSON has no type for (datetimes). When that fails, or
    the text holds a ``null`` (a None, or a NaN that orjson would turn into
    None), ``check_plain`` names the problem, or ``slow(value)`` makes the
    copy the careful way.
    """
    wrapped = value
    for _ in range(_ORJSON_DEPTH - MAX_DEPTH):
        wrapped = [wrapped]
    try:
        text = orjson.dumps(wrapped, default=default, option=orjson.OPT_PASSTHROUGH_DATETIME)
    except TypeError:
        text = None
    if text is not None and b"null" not in text:
        copy = orjson.loads(text)
        for _ in range(_ORJSON_DEPTH - MAX_DEPTH):
            copy = copy[0]
        return copy
    check_plain(value, file)
    if slow is None:
        raise InputError("value cannot be written as JSON", file=file)
    return slow(value)


def check_plain(value, file=None, where: str = "", depth: int = 0) -> None:
    """Refuse what canonical JSON cannot write exactly (see the module docstring), naming the key.

    ``depth`` is the number of tables and lists around ``value``.
    """
    kind = type(value)
    if kind in (dict, list, tuple) and depth >= MAX_DEPTH:
        raise InputError(
            f"nested more than {MAX_DEPTH} levels deep",
            file=file,
            key=printable_name(where) or None,
        )
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise InputError(
                    f"keys must be strings, not {type(key).__name__}", file=file, key=where or None
                )
            _check_text(key, file, where, "key")
            check_plain(item, file, f"{where}.{key}" if where else key, depth + 1)
    elif kind is list or kind is tuple:
        for index, item in enumerate(value):
            check_plain(item, file, f"{where}[{index}]", depth + 1)
    elif kind is str:
        _check_text(value, file, where, "value")
    elif kind is int and not INT_MIN <= value <= INT_MAX:
        raise InputError(
            "integer beyond 64 bits (from -2**63 to 2**64-1); write it as a string if it is a name",
            file=file,
            key=printable_name(where) or None,
        )


def _check_text(text: str, file, where: str, role: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"a {role} is not valid Unicode (a lone surrogate such as \\udcff, or bytes that are "
            f"not UTF-8): {printable_name(text)!r}",
            file=file,
            key=printable_name(where) or None,
        )


def printable_name(raw: str) -> str:
    """``raw`` as valid UTF-8 text: bytes that are not UTF-8 written as ``\\xNN``."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace")
    try:
        raw.encode("utf-8")
        return raw
    except UnicodeEncodeError:
        return (
            os.fsencode(raw).decode("utf-8", "backslashreplace")
            if _fs_encodable(raw)
            else raw.encode("utf-8", "backslashreplace").decode("utf-8")
        )


def name_hex(raw: str) -> str:
    """The exact bytes of a file name, in hex: ``bytes.fromhex`` rebuilds it."""
    return (
        os.fsencode(raw).hex() if _fs_encodable(raw) else raw.encode("utf-8", "surrogatepass").hex()
    )


def _fs_encodable(raw: str) -> bool:
    try:
        os.fsencode(raw)
        return True
    except UnicodeEncodeError:
        return False
