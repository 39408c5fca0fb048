"""Synthetic anatomy for the sample data and the reference experiment: an elliptical chest phantom.

from scripts.data_tools.phantoms import phantom_hu
slice_hu = phantom_hu(64, slice_index=3, slices=8, rng=np.random.default_rng(0))
"""

from __future__ import annotations

import numpy as np


def phantom_hu(size: int, slice_index: int, slices: int, rng: np.random.Generator) -> np.ndarray:
    """One axial slice of an elliptical chest phantom, in Hounsfield units."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    z = (slice_index + 0.5) / slices * 2 - 1  # -1 (feet) .. 1 (head)
    image = np.full((size, size), -1000.0)  # air
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1
    image[body] = 40.0  # soft tissue
    ring = body & ((x / 0.78) ** 2 + (y / 0.58) ** 2 > 1)
    image[ring] = 700.0  # ribs
    lung_scale = 0.32 * np.sqrt(max(0.05, 1 - z**2))
    for side in (-1, 1):
        lung = ((x - side * 0.38) / lung_scale) ** 2 + (y / (lung_scale * 1.4)) ** 2 <= 1
        image[lung] = -820.0
    spine = ((x) / 0.1) ** 2 + ((y - 0.45) / 0.1) ** 2 <= 1
    image[spine] = 1100.0
    cx, cy, radius = rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.2), rng.uniform(0.04, 0.12)
    lesion = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    image[lesion & body] = 65.0
    image += rng.normal(0.0, 12.0, image.shape)  # scanner noise
    return np.clip(image, -1024, 3071)
