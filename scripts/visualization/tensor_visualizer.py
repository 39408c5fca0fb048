"""Render ChromaticTensors (.cten) and SpectralTensors (.sten), checking energy drift.

    python scripts/visualization/tensor_visualizer.py experiments/results/run_2025_10_31
    python scripts/visualization/tensor_visualizer.py dream.cten spectrum.sten --log-axis

Inputs: ``.cten``, ``.sten``, ``.npy``/``.npz`` (a (H, W) array renders as
gray, (H, W, 3) as RGB), a folder of them, or a run folder (its ``dreams/``
and ``bridge/``), in name order.

A ``.cten`` gives direct renders, where each pixel is a value of the tensor:
``rgb.png``, the HSL channels ``hue.png`` (H / 2pi), ``saturation.png`` and
``lightness.png``, and ``coherence.png`` when the tensor has coherence; plus
``panel.png``, a matplotlib overview with the coherence map as a heatmap
with a colorbar. A ``.sten`` gives ``spectrum.png``: amplitude against
frequency in Hz (log axis for log-layout tensors or with ``--log-axis``)
with the sigma band shaded.

Energy drift, as the spec asks: every direct render is decoded back to
[0, 1] and ``10 log10(E_rendered / E_source)`` reported, with E the sum of
squares. Renders are 8-bit; when 8-bit quantization alone would drift
beyond 0.5 dB (a very dark tensor), the render is written as 16-bit and
checked again. A tensor that still drifts beyond 0.5 dB, for example with
values far outside [0, 1] that a PNG cannot hold, makes the run exit 1
(after recording it). The figures go in the run report.
"""

from __future__ import annotations

import math
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
from scripts.utils.formats.arrays import BACKENDS, array_module, read_arrays, to_numpy
from scripts.utils.formats.colour import rgb_to_hsl
from scripts.utils.formats.plotting import pyplot, save_figure
from scripts.utils.formats.tensors import ChromaticTensor, check_values, read_cten, read_sten
from scripts.utils.json_logger import progress
from scripts.utils.records.data_roots import collect_inputs
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import resolve_workspace
from scripts.visualization.renders import DRIFT_LIMIT_DB, render_direct, spectrum_figure

SUFFIXES = (".cten", ".sten", ".npy", ".npz")


def render_cten(tensor: ChromaticTensor, folder: Path, xp=np) -> list:
    """The direct renders of a tensor (its views computed on ``xp``: NumPy or CuPy, the same
    bits) and its matplotlib panel; one result per render."""
    rgb = xp.asarray(tensor.rgb).astype(xp.float64)
    hue, saturation, lightness = rgb_to_hsl(xp.clip(rgb, 0, 1), xp)
    views = {
        "rgb": rgb,
        "hue": hue / (2 * math.pi),
        "saturation": saturation,
        "lightness": lightness,
    }
    if tensor.coherence is not None:
        views["coherence"] = xp.asarray(tensor.coherence).astype(xp.float64)
    results = [
        dict(render_direct(values, folder / f"{name}.png", xp), view=name)
        for name, values in views.items()
    ]

    plt = pyplot()
    columns = len(views)
    figure, axes = plt.subplots(1, columns, figsize=(2.6 * columns, 2.8))
    for axis, (name, device_values) in zip(axes, views.items()):
        values = to_numpy(device_values)  # matplotlib draws from the host
        if name == "rgb":
            axis.imshow(np.clip(values, 0, 1), interpolation="nearest")
        else:
            image = axis.imshow(
                values,
                cmap="viridis" if name == "coherence" else "gray",
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            if name == "coherence":
                figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        axis.set_title(name)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    save_figure(figure, folder / "panel.png")
    plt.close(figure)
    return results


def render_sten(tensor, folder: Path, log_axis: bool) -> None:
    figure = spectrum_figure(tensor, log_axis)
    save_figure(figure, folder / "spectrum.png")
    pyplot().close(figure)


def load_array(path: Path) -> list:
    """``(name, ChromaticTensor)`` for each array of a .npy/.npz file (empty, NaN or ±Inf
    refused)."""
    tensors = []
    for name, array in read_arrays(path).items():
        label = f"{path.stem}.{name}" if path.suffix.lower() == ".npz" else name
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] != 3:
            raise InputError(
                f"array {label!r} has shape {array.shape}: expected (H, W) or (H, W, 3)",
                file=str(path),
            )
        check_values(array, f"array {label!r}", str(path))
        tensors.append((label, ChromaticTensor(array.astype(np.float32))))
    if not tensors:
        raise InputError("the array file holds no arrays", file=str(path))
    return tensors


def expand_run_folders(inputs) -> list:
    """A run folder (it has a plan.json) stands for its dreams/ and bridge/ (not its
    checkpoints)."""
    expanded = []
    for given in inputs:
        folder = Path(given)
        if folder.is_dir() and (folder / "plan.json").is_file():
            parts = [folder / part for part in ("dreams", "bridge") if (folder / part).is_dir()]
            if not parts:
                raise InputError("the run folder has no dreams/ or bridge/ yet", file=str(given))
            expanded += parts
        else:
            expanded.append(given)
    return expanded


def visualize(
    workspace: Path, inputs, out_root: Path, log_axis: bool = False, record=None, xp=np
) -> list:
    """Render every supported file under ``inputs``; one result dict per rendered tensor.

    ``record`` (a RunRecorder), when given, notes the data roots read; ``xp`` (NumPy or CuPy:
    ``array_module``) computes the direct renders.
    """
    inputs = expand_run_folders(inputs)
    found = collect_inputs(workspace, inputs)
    if record is not None:
        record.data_roots = found.root_records()
    files = [
        (Path(path), name) for name, path, _ in found.files if Path(path).suffix.lower() in SUFFIXES
    ]
    if not files:
        raise InputError("no .cten, .sten, .npy or .npz files found", file=str(inputs[0]))
    results = []
    with progress(total=len(files), desc="render", unit="file") as bar:
        for path, name in files:
            stem = name.replace("/", "__")
            if path.suffix == ".cten":
                renders = render_cten(read_cten(path), out_root / stem, xp)
                results.append({"source": name, "kind": "cten", "renders": renders})
            elif path.suffix == ".sten":
                render_sten(read_sten(path), out_root / stem, log_axis)
                results.append(
                    {"source": name, "kind": "sten", "renders": [{"file": "spectrum.png"}]}
                )
            else:
                for array_name, tensor in load_array(path):
                    renders = render_cten(tensor, out_root / array_name.replace("/", "__"), xp)
                    results.append(
                        {"source": f"{name}:{array_name}", "kind": "array", "renders": renders}
                    )
            bar.update(1)
    return results


def render_tensors(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    xp, backend = array_module(args.backend)
    with RunRecorder(
        "tensor_visualizer",
        argv=args.argv,
        workspace=workspace,
        log=log,
        config={"log_axis": args.log_axis},
        extra={"backend": backend},
    ) as record:
        for given in args.inputs:
            record.consume(given)
        results = visualize(workspace, args.inputs, record.output_dir, args.log_axis, record, xp)
        drifts = [r for result in results for r in result["renders"] if "drift_db" in r]
        failing = [
            {"source": result["source"], **r}
            for result in results
            for r in result["renders"]
            if "drift_db" in r and abs(r["drift_db"]) > DRIFT_LIMIT_DB
        ]
        worst = max((abs(r["drift_db"]) for r in drifts), default=0.0)
        record.results.update(
            tensors=len(results),
            renders=sum(len(r["renders"]) for r in results),
            max_abs_drift_db=worst,
            drift_limit_db=DRIFT_LIMIT_DB,
            failing=failing,
            items=results,
        )
        if failing:
            record.status = "check_failed"
    log.info(
        "rendered",
        tensors=len(results),
        max_abs_drift_db=worst,
        failing=len(failing),
        folder=record.folder,
    )
    if failing:
        raise CheckFailed(
            f"{len(failing)} renders drift beyond {DRIFT_LIMIT_DB} dB",
            first=failing[0],
            report=record.report,
        )
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "tensor_visualizer",
        doc=__doc__,
        description="Render .cten/.sten tensors (and .npy/.npz arrays) to PNG, with an "
        "energy-drift check.",
        example="python scripts/visualization/tensor_visualizer.py "
        "experiments/results/run_2025_10_31",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="PATH", help="tensor files, folders or run folders"
    )
    parser.add_argument(
        "--log-axis", action="store_true", help="log frequency axis for every spectrum"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="numpy",
        help="array backend for the direct renders (cupy: on the GPU, the same bytes)",
    )
    cli.add_common_options(parser)
    return cli.run(parser, render_tensors, argv)


if __name__ == "__main__":
    sys.exit(main())
