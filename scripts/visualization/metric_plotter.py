"""Plot loss and coherence curves of one or more runs, and their FFT drift spectra.

    python scripts/visualization/metric_plotter.py experiments/results/run_2025_10_31
    python scripts/visualization/metric_plotter.py runA/metrics.csv runB/metrics.jsonl --log-scale --format both

Inputs: ``metrics.csv`` or ``metrics.jsonl`` files, or run folders holding
them; each needs a ``cycle`` column and the metrics plotted (``--metrics``,
default ``loss,val_loss,coherence``).

``curves.png`` (and ``.svg``): one panel per metric, every run overlaid with
a legend, optional log scale. A NaN or infinite value is never dropped
silently: it is drawn as a red marker at the panel's top (NaN, +Inf) or
bottom (-Inf) edge and listed in the run report (the first 50, and the
count); a finite value beyond ±1e100 is drawn at the edge the same way.
A series longer than 4,000 points is drawn as the first, lowest, highest
and last point of each of 1,000 runs of points (about a pixel column
each), so a plot stays small whatever the row count. Only the plotted
columns are kept in memory.

``fft.png`` (and ``.svg``): the amplitude spectrum of each metric series
(mean removed) and of the mean-RGB signature over cycles, to expose periodic
drift and oscillation; the dominant period (in cycles) of each series is
annotated and reported. Non-finite points are left out of the FFT and
counted.

Figures are byte-identical run to run: Agg, bundled fonts, fixed SVG hash
salt, metadata stripped (``scripts/utils/formats/plotting.py``).
"""

from __future__ import annotations

import csv
import io
import math
import sys
from array import array
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

import numpy as np
import orjson

from scripts.utils import cli
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.formats.plotting import pyplot, save_figure
from scripts.utils.limits import MAX_TABLE_BYTES, read_input_bytes, regular_file
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import relative_to_workspace, resolve_workspace

DEFAULT_METRICS = "loss,val_loss,coherence"
SIGNATURE = ("mean_r", "mean_g", "mean_b")


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
    """A number from a CSV cell or JSON value ("NaN", "Infinity", "-Infinity" included); None if not one."""
    if raw is None or raw == "":
        return math.nan
    if isinstance(raw, bool):
        return None
    try:
        return float(raw)  # also reads "NaN", "Infinity", "-Infinity" as written by canonical JSON
    except (TypeError, ValueError):
        return None


def _rows(path: Path, data: bytes):
    """``(line number, row)`` of a metrics file: a dict per JSON line, or a list per CSV row (the header first)."""
    if path.suffix == ".jsonl":
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"invalid JSON line: {exc.msg}", file=str(path), line=number)
            if not isinstance(row, dict):
                raise InputError("each line must be a JSON object", file=str(path), line=number)
            yield number, row
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
    """``{column: float array}`` in cycle order; a missing column, a non-number or a non-finite cycle is bad input.

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
                f"the metrics file has no {column!r} column (columns: {', '.join(sorted(header))[:500]})",
                file=str(path),
                column_name=column,
            )


def dominant_period(values: np.ndarray):
    """``(frequencies, amplitudes, dominant period in cycles or None)`` of a series (finite points)."""
    finite = values[np.isfinite(values)]
    if finite.size < 4:
        return np.array([]), np.array([]), None
    spectrum = np.abs(np.fft.rfft(finite - finite.mean())) / finite.size
    frequencies = np.fft.rfftfreq(finite.size, d=1.0)
    if spectrum.size < 2 or not np.any(spectrum[1:] > 1e-15):
        return frequencies, spectrum, None
    peak = 1 + int(np.argmax(spectrum[1:]))
    return frequencies, spectrum, round(1.0 / frequencies[peak], 4)


PLOT_COLUMNS = 1000  # a long series is drawn as the min and max of each of this many columns (about a pixel each)
MARKED_POINTS = 50  # off-scale points drawn and named one by one; the rest are counted
OFF_SCALE = 1e100  # beyond it a value is drawn at the panel's edge, like an infinity


def decimated(x: np.ndarray, y: np.ndarray, columns: int = PLOT_COLUMNS) -> tuple:
    """``(x, y)`` reduced to the first, minimum, maximum and last point of each of ``columns`` runs of points,
    in order: the drawn line looks the same, and a plot costs the same whatever the row count."""
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


def plot_fft(runs: dict, series_names):
    plt = pyplot()
    figure, axes = plt.subplots(
        len(series_names), 1, figsize=(7, 2.2 * len(series_names)), squeeze=False
    )
    periods = []
    for axis, name in zip(axes[:, 0], series_names):
        for label, series in runs.items():
            frequencies, spectrum, period = dominant_period(series[name])
            if spectrum.size == 0:
                continue
            x, y = decimated(frequencies[1:], spectrum[1:])
            axis.plot(x, y, marker="." if x.size <= 200 else None, linewidth=1, label=label)
            excluded = int(np.sum(~np.isfinite(series[name])))
            periods.append(
                {
                    "run": label,
                    "series": name,
                    "dominant_period_cycles": period,
                    "excluded_non_finite": excluded,
                }
            )
            if period is not None:
                peak = 1 + int(np.argmax(spectrum[1:]))
                axis.annotate(
                    f"period {period:g}",
                    (frequencies[peak], spectrum[peak]),
                    fontsize=7,
                    xytext=(4, 4),
                    textcoords="offset points",
                )
        axis.set_ylabel(name)
        axis.grid(True, alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("frequency (1/cycle)")
    figure.tight_layout()
    return figure, periods


def plot_metrics(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not metrics:
        raise InputError("--metrics names no column", value=args.metrics)
    runs = {}
    for given in args.inputs:
        path = metrics_file(given)
        try:
            label = relative_to_workspace(workspace, path.parent)
        except InputError:
            label = path.parent.name
        columns = metrics + [c for c in SIGNATURE if c not in metrics]
        try:
            runs[label] = read_series(path, columns)
        except InputError as exc:
            if exc.details.get("column_name") not in SIGNATURE:
                raise
            runs[label] = read_series(path, metrics)  # no signature columns: plot the metrics alone
    fft_series = metrics + [c for c in SIGNATURE if all(c in s for s in runs.values())]
    suffixes = {"png": [".png"], "svg": [".svg"], "both": [".png", ".svg"]}[args.format]
    with RunRecorder(
        "metric_plotter",
        argv=args.argv,
        workspace=workspace,
        log=log,
        config={
            "metrics": metrics,
            "log_scale": args.log_scale,
            "format": args.format,
            "runs": sorted(runs),
        },
    ) as record:
        curves, marked = plot_curves(runs, metrics, args.log_scale)
        fft, periods = plot_fft(runs, fft_series)
        for suffix in suffixes:
            save_figure(curves, record.output_path(f"curves{suffix}"))
            save_figure(fft, record.output_path(f"fft{suffix}"))
        pyplot().close("all")
        record.results.update(
            runs=sorted(runs),
            non_finite_points=marked[:MARKED_POINTS],
            non_finite_count=len(marked),
            dominant_periods=periods,
        )
    log.info("plotted", runs=len(runs), non_finite_points=len(marked), folder=record.folder)
    if marked:  # plotted and marked, so the run is visible; still a failed check
        raise CheckFailed(
            f"{len(marked)} metric values are not finite (NaN or ±Inf); the first: {marked[0]['metric']} "
            f"at cycle {marked[0]['cycle']:g} of {marked[0]['run']}",
            non_finite=len(marked),
            first=marked[0],
            report=record.report,
        )
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "metric_plotter",
        doc=__doc__,
        description="Plot metric curves of one or more runs (NaN/Inf marked) and their FFT drift spectra.",
        example="python scripts/visualization/metric_plotter.py experiments/results/run_2025_10_31 --format both",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="RUN_OR_FILE", help="run folders or metrics.csv/.jsonl files"
    )
    parser.add_argument(
        "--metrics", default=DEFAULT_METRICS, help="comma-separated columns to plot"
    )
    parser.add_argument("--log-scale", action="store_true", help="log scale for the metric axes")
    parser.add_argument(
        "--format", choices=("png", "svg", "both"), default="both", help="figure format"
    )
    cli.add_common_options(parser)
    return cli.run(parser, plot_metrics, argv)


if __name__ == "__main__":
    sys.exit(main())
