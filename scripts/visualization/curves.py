"""Metric curves: reading a run's metrics table and drawing its curves (metric_plotter, the HTML
pages, compare_runs).

from scripts.visualization.curves import metrics_file, plot_curves, read_series
series = read_series(metrics_file("experiments/results/phase7"), ["loss", "coherence"])
figure, marked = plot_curves({"phase7": series}, ["loss", "coherence"], log_scale=False)
"""

from __future__ import annotations

import csv
import io
import math
from array import array
from pathlib import Path

import numpy as np

from scripts.utils.errors import InputError
from scripts.utils.formats.plotting import pyplot
from scripts.utils.jsonio import json_objects
from scripts.utils.limits import MAX_TABLE_BYTES, read_input_bytes, regular_file


def metrics_file(given: str) -> Path:
    path = Path(given)
    if path.is_dir():
        for name in ("metrics.jsonl", "metrics.csv"):
            if (path / name).is_file():
                return path / name
        raise InputError("no metrics.jsonl or metrics.csv in this folder", file=given)
    regular_file(path, "metrics file")
    return path


def _value(raw):
    """A number from a CSV cell or JSON value ("NaN", "Infinity", "-Infinity" included); None if
    not one."""
    if raw is None or raw == "":
        return math.nan
    if isinstance(raw, bool):
        return None
    try:
        return float(raw)  # also reads "NaN", "Infinity", "-Infinity" as written by canonical JSON
    except (TypeError, ValueError):
        return None


def _rows(path: Path, data: bytes):
    """``(line number, row)`` of a metrics file: a dict per JSON line, or a list per CSV row (the
    header first)."""
    if path.suffix == ".jsonl":
        yield from json_objects(data.splitlines(), file=str(path))
    elif path.suffix == ".csv":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(
                "the metrics file is not valid UTF-8", file=str(path), offset=exc.start
            )
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            yield from ((reader.line_num, row) for row in reader if row)
        except csv.Error as exc:
            raise InputError(f"invalid CSV: {exc}", file=str(path), line=reader.line_num)
    else:
        raise InputError("metrics must be .csv or .jsonl", file=str(path))


def read_series(path: Path, columns) -> dict:
    """``{column: float array}`` in cycle order; a missing column, a non-number or a non-finite
    cycle is bad input.

    Only the asked columns are kept, a row at a time: a million-row file
    costs its numbers, not a dict per row.
    """
    wanted = ("cycle", *columns)
    values = {column: array("d") for column in wanted}
    header = None
    rows = 0
    for number, row in _rows(path, read_input_bytes(path, MAX_TABLE_BYTES, "metrics file")):
        if isinstance(row, list):
            if header is None:
                header = {name: index for index, name in enumerate(row)}
                _check_columns(path, wanted, header)
                continue
            if len(row) > len(header):
                raise InputError(
                    "a row has more fields than the header", file=str(path), line=number
                )
            cells = [row[header[c]] if header[c] < len(row) else None for c in wanted]
        else:
            if header is None:
                header = row
                _check_columns(path, wanted, header)
            cells = [row.get(column) for column in wanted]
        rows += 1
        for column, raw in zip(wanted, cells):
            value = _value(raw)
            if value is None:
                raise InputError(
                    f"{column!r} is not a number in row {rows}: {str(raw)[:100]!r}",
                    file=str(path),
                    row=rows,
                    line=number,
                )
            values[column].append(value)
    if not rows:
        raise InputError("the metrics file has no rows", file=str(path))
    series = {
        column: np.frombuffer(found, dtype=np.float64).copy() for column, found in values.items()
    }
    if not np.all(np.isfinite(series["cycle"])):
        row = int(np.argmin(np.isfinite(series["cycle"]))) + 1
        raise InputError("'cycle' must be a finite number in every row", file=str(path), row=row)
    order = np.argsort(series["cycle"], kind="stable")
    return {column: found[order] for column, found in series.items()}


def _check_columns(path: Path, wanted, header) -> None:
    for column in wanted:
        if column not in header:
            raise InputError(
                f"the metrics file has no {column!r} column (columns: "
                f"{', '.join(sorted(header))[:500]})",
                file=str(path),
                column_name=column,
            )


# a long series is drawn as the min and max of each of this many columns (about a pixel each)
PLOT_COLUMNS = 1000


MARKED_POINTS = 50  # off-scale points drawn and named one by one; the rest are counted


OFF_SCALE = 1e100  # beyond it a value is drawn at the panel's edge, like an infinity


def decimated(x: np.ndarray, y: np.ndarray, columns: int = PLOT_COLUMNS) -> tuple:
    """``(x, y)`` reduced to the first, minimum, maximum and last point of each of ``columns``
    runs of points, in order: the drawn line looks the same, and a plot costs the same whatever
    the row count."""
    if x.size <= 4 * columns:
        return x, y
    edges = np.linspace(0, x.size, columns + 1).astype(np.int64)
    starts = edges[:-1]
    lows = np.minimum.reduceat(y, starts)
    highs = np.maximum.reduceat(y, starts)
    keep = set(starts.tolist()) | set((edges[1:] - 1).tolist())
    for start, end, low, high in zip(starts, edges[1:], lows, highs):
        part = y[start:end]
        keep.add(int(start + np.argmax(part == low)))
        keep.add(int(start + np.argmax(part == high)))
    index = np.array(sorted(keep), dtype=np.int64)
    return x[index], y[index]


def plot_curves(runs: dict, metrics, log_scale: bool):
    plt = pyplot()
    figure, axes = plt.subplots(
        len(metrics), 1, figsize=(7, 2.4 * len(metrics)), sharex=True, squeeze=False
    )
    marked = []
    for axis, metric in zip(axes[:, 0], metrics):
        for label, series in runs.items():
            cycles, values = series["cycle"], series[metric]
            drawn = np.isfinite(values) & (np.abs(values) < OFF_SCALE)
            x, y = decimated(cycles[drawn], values[drawn])
            axis.plot(x, y, marker="." if x.size <= 200 else None, linewidth=1.2, label=label)
        if log_scale:
            axis.set_yscale("log")
        low, high = axis.get_ylim()
        for label, series in runs.items():
            cycles, values = series["cycle"], series[metric]
            off = ~(np.isfinite(values) & (np.abs(values) < OFF_SCALE))
            for count, (cycle, value) in enumerate(zip(cycles[off], values[off])):
                kind = (
                    "NaN"
                    if math.isnan(value)
                    else (
                        "+Inf"
                        if value == math.inf
                        else "-Inf"
                        if value == -math.inf
                        else f"{value:+.3g}"
                    )
                )
                if not math.isfinite(value):
                    marked.append(
                        {"run": label, "metric": metric, "cycle": float(cycle), "value": kind}
                    )
                if count >= MARKED_POINTS:
                    continue
                edge = low if kind.startswith("-") else high
                axis.plot([cycle], [edge], marker="x", color="red", markersize=9, clip_on=False)
                axis.annotate(
                    kind,
                    (cycle, edge),
                    color="red",
                    fontsize=7,
                    xytext=(3, 3 if kind.startswith("-") else -9),
                    textcoords="offset points",
                )
        axis.set_ylim(low, high)
        axis.set_ylabel(metric)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("cycle")
    figure.tight_layout()
    return figure, marked


METRICS = ("loss", "val_loss", "coherence")  # the curves and final/best values a page shows


SHOWN_METRICS = 8  # metrics shown in a table or plot


def read_metrics(folder: Path):
    """``(series, {metric: {"final", "best"}})`` of a run folder's metrics file; ``(None, {})``
    without one."""
    try:
        series = read_series(metrics_file(str(folder)), METRICS)
    except InputError:
        return None, {}
    summary = {}
    for name in METRICS:
        values = series[name][np.isfinite(series[name])]
        best = (values.max() if name == "coherence" else values.min()) if values.size else None
        summary[name] = {
            "final": float(series[name][-1]),
            "best": None if best is None else float(best),
        }
    return series, summary
