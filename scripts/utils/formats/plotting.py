"""Deterministic matplotlib: the same figure, the same PNG and SVG bytes, every run.

``pyplot()`` selects the Agg backend, the bundled DejaVu fonts, a fixed
``svg.hashsalt`` (element ids), no date in SVGs and no mathtext (a ``$`` in a
label is a dollar sign); ``save_figure`` strips
the metadata matplotlib would write (software version, creation date) and
writes atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

from scripts.utils.jsonio import atomic_write_bytes

_METADATA = {
    ".png": {"Software": None},
    ".svg": {"Creator": None, "Date": None, "Format": None, "Type": None},
}


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    matplotlib.rcParams.update(
        {
            "svg.hashsalt": "cognitive-research-hub",
            "svg.fonttype": "path",  # glyphs as paths: no dependency on installed fonts
            "font.family": "DejaVu Sans",  # bundled with matplotlib
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "path.simplify": True,
            # labels come from file and folder names: "$" is text, never mathtext
            "text.parse_math": False,
        }
    )
    import matplotlib.pyplot as plt

    return plt


def figure_bytes(figure, suffix: str) -> bytes:
    """The figure as ``.png`` or ``.svg`` bytes, without the metadata that would change run to
    run."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=suffix[1:], metadata=_METADATA[suffix.lower()])
    return buffer.getvalue()


def save_figure(figure, path) -> None:
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(figure, path.suffix))
