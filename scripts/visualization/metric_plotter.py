"""Plot loss and coherence curves of one or more runs, and their FFT drift spectra.

    python scripts/visualization/metric_plotter.py experiments/results/run_2025_10_31
    python scripts/visualization/metric_plotter.py runA/metrics.csv runB/metrics.jsonl \\
        --log-scale --format both

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

import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

import numpy as np

from scripts.utils import cli
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.formats.plotting import pyplot, save_figure
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import relative_to_workspace, resolve_workspace
from scripts.visualization.curves import (
    MARKED_POINTS,
    decimated,
    metrics_file,
    plot_curves,
    read_series,
)

DEFAULT_METRICS = "loss,val_loss,coherence"
SIGNATURE = ("mean_r", "mean_g", "mean_b")


def dominant_period(values: np.ndarray):
    """``(frequencies, amplitudes, dominant period in cycles or None)`` of a series (finite
    points)."""
    finite = values[np.isfinite(values)]
    if finite.size < 4:
        return np.array([]), np.array([]), None
    spectrum = np.abs(np.fft.rfft(finite - finite.mean())) / finite.size
    frequencies = np.fft.rfftfreq(finite.size, d=1.0)
    if spectrum.size < 2 or not np.any(spectrum[1:] > 1e-15):
        return frequencies, spectrum, None
    peak = 1 + int(np.argmax(spectrum[1:]))
    return frequencies, spectrum, round(1.0 / frequencies[peak], 4)


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
        for given in args.inputs:
            record.consume(given)
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
            f"{len(marked)} metric values are not finite (NaN or ±Inf); the first: "
            f"{marked[0]['metric']} at cycle {marked[0]['cycle']:g} of {marked[0]['run']}",
            non_finite=len(marked),
            first=marked[0],
            report=record.report,
        )
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "metric_plotter",
        doc=__doc__,
        description="Plot metric curves of one or more runs (NaN/Inf marked) and their FFT drift "
        "spectra.",
        example="python scripts/visualization/metric_plotter.py experiments/results/run_2025_10_31 "
        "--format both",
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
