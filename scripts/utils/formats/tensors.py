"""Readers and writers for the core's tensor files: .cten and .sten (docs/design.md).

All little-endian; the last 8 bytes are the CRC-64/XZ (ECMA-182 polynomial,
reflected, as xz uses) of every byte before them, computed by ``fastcrc``
(a compiled library). Check value: crc64("123456789") = 0x995DC9BBDF1939FA.

``.cten`` (ChromaticTensor)::

    "CTEN"  version u16 = 1  flags u16 (bit0: coherence present)
    h u32   w u32
    rgb     h*w*3 f32, row-major, R,G,B interleaved per cell, in [0, 1]
    coh     h*w f32 in [0, 1]              (only when bit0)
    crc     u64

``.sten`` (SpectralTensor)::

    "STEN"  version u16 = 1  flags u16 (bit0: sigma present, bit1: log-frequency layout)
    n u32   f_min f32 (Hz)   f_res f32 (Hz per bin, or octaves per bin when log)
    bins    n f32 (amplitude per bin)
    sigma   n f32                          (only when bit0)
    crc     u64

Readers refuse a wrong magic, an unknown version or flag, a wrong length and
a bad CRC, each with its own message (InputError: exit 2).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastcrc import crc64

from scripts.utils.errors import InputError
from scripts.utils.jsonio import atomic_write_bytes
from scripts.utils.limits import check_pixels, max_pixels, read_input_bytes

VERSION = 1
CTEN_MAGIC, STEN_MAGIC = b"CTEN", b"STEN"
CTEN_COHERENCE = 0x1
STEN_SIGMA, STEN_LOG = 0x1, 0x2
_F32 = np.dtype("<f4")


def crc64_xz(data: bytes) -> int:
    return crc64.xz(bytes(data))


@dataclass
class ChromaticTensor:
    rgb: np.ndarray  # (h, w, 3) float32 in [0, 1]
    coherence: np.ndarray | None = None  # (h, w) float32 in [0, 1]


@dataclass
class SpectralTensor:
    bins: np.ndarray  # (n,) float32 amplitudes
    f_min: float  # Hz
    f_res: float  # Hz per bin, or octaves per bin when log_layout
    sigma: np.ndarray | None = None  # (n,) float32
    log_layout: bool = False

    def frequencies(self) -> np.ndarray:
        """The centre frequency of each bin, in Hz."""
        index = np.arange(self.bins.shape[0], dtype=np.float64)
        return (
            self.f_min * 2.0 ** (index * self.f_res)
            if self.log_layout
            else self.f_min + index * self.f_res
        )


def _seal(body: bytes) -> bytes:
    return body + struct.pack("<Q", crc64_xz(body))


def encode_cten(tensor: ChromaticTensor) -> bytes:
    rgb = np.asarray(tensor.rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (h, w, 3), got {rgb.shape}")
    h, w = rgb.shape[:2]
    flags = 0
    parts = [rgb.astype(_F32).tobytes()]
    if tensor.coherence is not None:
        coherence = np.asarray(tensor.coherence)
        if coherence.shape != (h, w):
            raise ValueError(f"coherence must be ({h}, {w}), got {coherence.shape}")
        flags |= CTEN_COHERENCE
        parts.append(coherence.astype(_F32).tobytes())
    return _seal(CTEN_MAGIC + struct.pack("<HHII", VERSION, flags, h, w) + b"".join(parts))


def encode_sten(tensor: SpectralTensor) -> bytes:
    bins = np.asarray(tensor.bins)
    if bins.ndim != 1:
        raise ValueError(f"bins must be one-dimensional, got {bins.shape}")
    n = bins.shape[0]
    flags = STEN_LOG if tensor.log_layout else 0
    parts = [bins.astype(_F32).tobytes()]
    if tensor.sigma is not None:
        sigma = np.asarray(tensor.sigma)
        if sigma.shape != (n,):
            raise ValueError(f"sigma must be ({n},), got {sigma.shape}")
        flags |= STEN_SIGMA
        parts.append(sigma.astype(_F32).tobytes())
    header = STEN_MAGIC + struct.pack("<HHIff", VERSION, flags, n, tensor.f_min, tensor.f_res)
    return _seal(header + b"".join(parts))


def _check_envelope(data: bytes, magic: bytes, source, header_size: int) -> int:
    """Magic, version, minimum length and CRC; returns the flags."""
    kind = magic.decode()
    if data[:4] != magic:
        raise InputError(
            f"not a .{kind.lower()} file: wrong magic {data[:4]!r} (expected {magic!r})",
            file=source,
            problem="magic",
        )
    if len(data) < header_size + 8:
        raise InputError(
            f"wrong length: {len(data)} bytes is shorter than a .{kind.lower()} header",
            file=source,
            problem="length",
        )
    version, flags = struct.unpack_from("<HH", data, 4)
    if version != VERSION:
        raise InputError(
            f"unknown .{kind.lower()} version {version} (this reader knows {VERSION})",
            file=source,
            problem="version",
        )
    stored = struct.unpack_from("<Q", data, len(data) - 8)[0]
    computed = crc64_xz(data[:-8])
    if stored != computed:
        raise InputError(
            f"bad CRC-64/XZ: stored {stored:016x}, computed {computed:016x} (the file is damaged)",
            file=source,
            problem="crc",
        )
    return flags


def check_values(values: np.ndarray, what: str, source) -> None:
    """Refuse an empty array, or one with NaN or ±Inf: bad input naming the count and the first
    position."""
    if values.size == 0:
        raise InputError(
            f"{what} is empty (shape {tuple(values.shape)})", file=source, problem="empty"
        )
    if values.dtype.kind in "biu":
        return
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        first = [int(i) for i in np.unravel_index(int(np.argmin(finite.reshape(-1))), values.shape)]
        raise InputError(
            f"{what} has {bad} non-finite values (NaN or ±Inf), the first at index {first}",
            file=source,
            problem="non_finite",
            non_finite=bad,
            first_index=first,
        )


def decode_cten(data: bytes, source="<bytes>") -> ChromaticTensor:
    """Decode a .cten; refuses a damaged file, an empty tensor and NaN or ±Inf cells (exit 2)."""
    flags = _check_envelope(data, CTEN_MAGIC, source, 16)
    if flags & ~CTEN_COHERENCE:
        raise InputError(f"unknown .cten flags {flags:#06x}", file=source, problem="flags")
    h, w = struct.unpack_from("<II", data, 8)
    cells = h * w
    if cells == 0:
        raise InputError(f"empty .cten tensor ({h}x{w})", file=source, problem="empty")
    expected = 16 + cells * 12 + (cells * 4 if flags & CTEN_COHERENCE else 0) + 8
    if len(data) != expected:
        raise InputError(
            f"wrong length: {len(data)} bytes, a {h}x{w} .cten has {expected}",
            file=source,
            problem="length",
        )
    rgb = np.frombuffer(data, dtype=_F32, count=cells * 3, offset=16).reshape(h, w, 3).copy()
    check_values(rgb, "rgb", source)
    coherence = None
    if flags & CTEN_COHERENCE:
        coherence = (
            np.frombuffer(data, dtype=_F32, count=cells, offset=16 + cells * 12)
            .reshape(h, w)
            .copy()
        )
        check_values(coherence, "coherence", source)
    return ChromaticTensor(rgb, coherence)


def decode_sten(data: bytes, source="<bytes>") -> SpectralTensor:
    """Decode a .sten; refuses a damaged file, zero bins, NaN or ±Inf values and a bad frequency
    axis (exit 2)."""
    flags = _check_envelope(data, STEN_MAGIC, source, 20)
    if flags & ~(STEN_SIGMA | STEN_LOG):
        raise InputError(f"unknown .sten flags {flags:#06x}", file=source, problem="flags")
    n, f_min, f_res = struct.unpack_from("<Iff", data, 8)
    expected = 20 + n * 4 * (2 if flags & STEN_SIGMA else 1) + 8
    if len(data) != expected:
        raise InputError(
            f"wrong length: {len(data)} bytes, a {n}-bin .sten has {expected}",
            file=source,
            problem="length",
        )
    if n == 0:
        raise InputError("empty .sten tensor (zero bins)", file=source, problem="empty")
    if not (math.isfinite(f_min) and math.isfinite(f_res) and f_min > 0 and f_res > 0):
        raise InputError(
            f"bad frequency axis: f_min {f_min} and f_res {f_res} must be finite and positive",
            file=source,
            problem="axis",
        )
    bins = np.frombuffer(data, dtype=_F32, count=n, offset=20).copy()
    check_values(bins, "bins", source)
    sigma = (
        np.frombuffer(data, dtype=_F32, count=n, offset=20 + n * 4).copy()
        if flags & STEN_SIGMA
        else None
    )
    if sigma is not None:
        check_values(sigma, "sigma", source)
    return SpectralTensor(bins, float(f_min), float(f_res), sigma, bool(flags & STEN_LOG))


def _read(path, bytes_per_cell: int) -> bytes:
    """The file, refused before reading when it is larger than a tensor under the pixel cap can
    be."""
    limit = 64 + bytes_per_cell * max_pixels()
    data = read_input_bytes(path, limit, "tensor file")
    if len(data) >= 16:
        cells = (
            struct.unpack_from("<II", data, 8)
            if data[:4] == CTEN_MAGIC
            else (struct.unpack_from("<I", data, 8)[0], 1)
        )
        check_pixels(cells[0] * cells[1], f"{cells[0]}x{cells[1]}", file=path)
    return data


def read_cten(path) -> ChromaticTensor:
    return decode_cten(_read(path, 16), str(path))


def read_sten(path) -> SpectralTensor:
    return decode_sten(_read(path, 8), str(path))


def write_cten(path, tensor: ChromaticTensor) -> None:
    atomic_write_bytes(Path(path), encode_cten(tensor))


def write_sten(path, tensor: SpectralTensor) -> None:
    atomic_write_bytes(Path(path), encode_sten(tensor))
