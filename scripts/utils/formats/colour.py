"""Colour math shared by the reference experiment and the renderers: RGB -> HSL, and
docs/design.md's bridge.

    from scripts.utils.formats.colour import bridge_encode, rgb_to_hsl
    hue, saturation, lightness = rgb_to_hsl(rgb)              # rgb: (..., 3) floats in [0, 1]
    spectrum = bridge_encode(rgb, {"f_min": 55.0, "octaves": 5.0, "bins": 48})   # a SpectralTensor

Both are deterministic (no reductions whose order depends on threads): the
same input gives the same bytes on every machine; ``rgb_to_hsl`` also runs
on CuPy (``xp``), with the same bits.
"""

from __future__ import annotations

import math

import numpy as np

from scripts.utils.formats.tensors import SpectralTensor


def rgb_to_hsl(rgb, xp=np):
    """Hue in radians [0, 2*pi), saturation and lightness in [0, 1] (HSL), on ``xp`` (NumPy or
    CuPy: element-wise and correctly rounded, so the same bits on both)."""
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    lightness = (high + low) / 2
    delta = high - low
    saturation = xp.where(delta == 0, 0.0, delta / xp.maximum(1e-12, 1 - xp.abs(2 * lightness - 1)))
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = xp.where(delta == 0, 1.0, delta)
    hue = xp.where(
        high == r, ((g - b) / safe) % 6, xp.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = xp.where(delta == 0, 0.0, hue) * (math.pi / 3)
    return hue % (2 * math.pi), xp.clip(saturation, 0, 1), lightness


def bridge_encode(rgb: np.ndarray, bcfg: dict) -> SpectralTensor:
    """docs/design.md's bridge: hue -> f = f_min * 2**(octaves * H / 2pi), saturation -> amplitude,
    lightness -> sigma.

    Log-frequency layout, ``bins`` bins over ``octaves`` octaves from f_min;
    each bin holds the summed saturation of its cells (per cell of the image)
    and the mean lightness of its cells as the kernel width.
    """
    hue, saturation, lightness = rgb_to_hsl(rgb)
    octave_position = bcfg["octaves"] * hue / (2 * math.pi)
    per_bin = bcfg["octaves"] / bcfg["bins"]
    index = np.minimum((octave_position / per_bin).astype(np.int64), bcfg["bins"] - 1).ravel()
    cells = index.size
    amplitude = np.bincount(index, weights=saturation.ravel(), minlength=bcfg["bins"]) / cells
    counts = np.bincount(index, minlength=bcfg["bins"])
    sigma = np.bincount(index, weights=lightness.ravel(), minlength=bcfg["bins"]) / np.maximum(
        counts, 1
    )
    return SpectralTensor(
        amplitude.astype(np.float32),
        bcfg["f_min"],
        per_bin,
        sigma.astype(np.float32),
        log_layout=True,
    )
