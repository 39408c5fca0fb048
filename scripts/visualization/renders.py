"""Renders of tensors as images, with their energy drift: the PNGs and spectrum plots of
tensor_visualizer and the HTML pages.

    from scripts.visualization.renders import render_direct
    # {"file", "bits", "drift_db"}: 8-bit, or 16-bit when 8 bits drift too far
    render_direct(values, Path("rgb.png"))
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from scripts.utils.formats.arrays import to_numpy
from scripts.utils.formats.plotting import pyplot
from scripts.utils.jsonio import atomic_write_bytes

DRIFT_LIMIT_DB = 0.5


def energy_drift_db(source, rendered: np.ndarray) -> float:
    """10 log10(E_rendered / E_source), E = sum of squares (0 when both are 0). ``source`` may be
    on the device: the sums run on the host, in NumPy's order, so the figure is the same bits
    whichever backend rendered."""
    source = to_numpy(source)
    source_energy = float(np.sum(np.square(source, dtype=np.float64)))
    rendered_energy = float(np.sum(np.square(rendered, dtype=np.float64)))
    if source_energy == 0 and rendered_energy == 0:
        return 0.0
    if source_energy == 0 or rendered_energy == 0:
        return math.inf if rendered_energy > 0 else -math.inf
    return 10 * math.log10(rendered_energy / source_energy)


def quantized(values, bits: int, xp=np) -> np.ndarray:
    """Values in [0, 1] (clipped) as 8- or 16-bit levels, computed on ``xp``, on the host."""
    top = 255 if bits == 8 else 65535
    return to_numpy(
        xp.rint(xp.clip(values, 0, 1) * top).astype(xp.uint8 if bits == 8 else xp.uint16)
    )


def png_bytes(values, bits: int, xp=np) -> bytes:
    """Values in [0, 1] (clipped) as an 8- or 16-bit gray or RGB PNG."""
    import imageio.v3 as iio

    pixels = quantized(values, bits, xp)
    if bits == 16 and pixels.ndim == 3:
        from PIL import (
            Image,
        )  # Pillow cannot write 16-bit RGB: keep 16 bits with three gray planes side by side

        pixels = np.concatenate([pixels[..., c] for c in range(3)], axis=1)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()
    return iio.imwrite("<bytes>", pixels, extension=".png")


def decode_png(data: bytes, shape) -> np.ndarray:
    import imageio.v3 as iio

    pixels = iio.imread(data, extension=".png")
    top = 65535 if pixels.dtype == np.uint16 else 255
    values = pixels.astype(np.float64) / top
    if len(shape) == 3 and values.ndim == 2:  # 16-bit RGB written as planes side by side
        width = shape[1]
        values = np.stack([values[:, c * width : (c + 1) * width] for c in range(3)], axis=-1)
    return values


def render_direct(values, path: Path, xp=np) -> dict:
    """Write a direct render (8-bit, or 16-bit when 8-bit drifts too far); return its drift.
    ``values`` live on ``xp`` (NumPy or CuPy); only the quantized pixels come to the host."""
    drift, source = None, to_numpy(values)
    for bits in (8, 16):
        data = png_bytes(values, bits, xp)
        drift = energy_drift_db(source, decode_png(data, values.shape))
        if abs(drift) <= DRIFT_LIMIT_DB:
            break
    atomic_write_bytes(path, data)
    return {"file": path.name, "bits": bits, "drift_db": drift}


def spectrum_figure(tensor, log_axis: bool):
    """A SpectralTensor's amplitude over frequency (Hz), with its sigma band."""
    plt = pyplot()
    frequencies = tensor.frequencies()
    figure, axis = plt.subplots(figsize=(6.4, 3.2))
    axis.plot(frequencies, tensor.bins, color="tab:blue", linewidth=1.2, label="amplitude")
    if tensor.sigma is not None:
        axis.fill_between(
            frequencies,
            np.maximum(tensor.bins - tensor.sigma * tensor.bins.max(), 0),
            tensor.bins + tensor.sigma * tensor.bins.max(),
            color="tab:blue",
            alpha=0.2,
            label="sigma band",
        )
    if log_axis or tensor.log_layout:
        axis.set_xscale("log", base=2)
    axis.set_xlabel("frequency (Hz)")
    axis.set_ylabel("amplitude")
    axis.legend(loc="upper right")
    figure.tight_layout()
    return figure
