"""DICOM/PNG -> normalized float32 arrays (npz) with a record per sample.

For each image (default: every file in the sample dataset):

1. DICOM, monochrome: the Modality LUT (a LUT sequence, else Rescale
   Slope/Intercept) gives modality values (Hounsfield units for CT); then the
   VOI LUT (a LUT sequence, else a window) maps them to [0, 1] following
   DICOM PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT, SIGMOID; the file's VOI LUT
   Function unless ``--voi-function``); MONOCHROME1 is inverted. Without any
   window the modality values' own range is used (recorded). Color DICOM
   and PNG (8/16-bit, gray or RGB) are scaled by their bit depth. Compressed
   transfer syntaxes decode through pydicom's pylibjpeg plugins.
2. Optional mask: ``--mask-threshold V`` keeps pixels whose modality value
   is >= V (e.g. -500 HU for the body), ``--mask FILE`` applies a mask image
   or .npy of the same shape; outside the mask the value is 0.
3. Optional resize to ``--size HxW`` (bilinear, scipy.ndimage / cupyx).
4. Optional seeded augmentation (``--augment``): horizontal/vertical flips,
   90-degree rotations, intensity jitter (scale, shift) and Gaussian noise
   (16-bit levels of N(0, 1) quantiles; see ``normal_quantiles``). Each
   sample's generator is derived from (seed, sample id, epoch), so a
   sample gets the same draws whatever the order or worker count; the drawn
   parameters are recorded.

Inputs are files or folders: in the workspace (named workspace-relative) or
anywhere else (a data root, named ``@<root>/<path>``, never written to; see
scripts/utils/records/data_roots.py). ``--table METADATA_JSONL`` takes only the
files that metadata_extractor read without error; the others are left out,
each listed under ``skipped`` in the report with its reason, as are images
that fail here with ``--skip-errors``. ``--strict`` makes any skipped file
bad input (exit 2).

With ``--volumes``, each DICOM series becomes one volume instead: slices
grouped by Series Instance UID (frames of multi-frame objects included),
ordered along the slice normal by Image Position (Patient), checked for
missing geometry, mixed orientations, duplicate positions, gaps and
irregular spacing (a series with a problem is named in a
``series_not_stacked`` warning and listed under ``skipped``; one whose
slices share positions is first split into its echoes, phases or stacks
when one attribute of ``STACK_KEYS`` does that cleanly), and written as
``volumes/<index>.npz`` (``image`` float32 (slice, row, column), ``affine``
index -> LPS mm, ``spacing``) and ``volumes/<index>.nii`` (NIfTI-1, RAS);
``--volume-values modality`` keeps modality values (e.g. HU) instead of
windowing them.

Library messages quoted in warnings and errors have their quoted values
dropped (they can hold names).

Outputs, under ``experiments/results/image_preprocessor_<stamp>/``:
``samples/<index>.npz`` (array ``image``, float32) and ``records.jsonl`` (one
record per sample: source, shape, the transforms applied and their
parameters, the array's SHA-256). The bytes are the same for any
``--workers``, and with ``--scheduler ADDRESS`` (a Dask cluster; the workers
read the images by path from shared storage and send the arrays back, so
only this process writes the workspace). ``--backend cupy`` runs the arithmetic on the GPU (one
process; results agree with NumPy within float32 rounding).

Usage:
    python scripts/data_tools/image_preprocessor.py
    python scripts/data_tools/image_preprocessor.py data/sample/dicom --size 128x128 \\
        --augment --epoch 3
    python scripts/data_tools/image_preprocessor.py /data/ct_exports --volumes
    python scripts/data_tools/image_preprocessor.py /mnt/archive --scheduler local:4
    python scripts/data_tools/image_preprocessor.py /mnt/scans --skip-errors \
        --table experiments/results/metadata_extractor_<stamp>/metadata.jsonl
"""

from __future__ import annotations

import hashlib
import math
import sys
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor
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

from scripts.data_tools.pixels import SEED_STREAM, VOI_FUNCTIONS, preprocess_pixels, read_image
from scripts.data_tools.volumes import (
    assemble_volume,
    nifti_bytes,
    slice_headers,
    split_stacks,
    volume_plan,
)
from scripts.utils import cli
from scripts.utils.compute import cluster
from scripts.utils.config.seeds import SeedManager
from scripts.utils.errors import InputError
from scripts.utils.formats.arrays import BACKENDS, array_module, npz_bytes, read_arrays, to_numpy
from scripts.utils.formats.deidentify import scrub_quoted
from scripts.utils.json_logger import progress
from scripts.utils.jsonio import atomic_output, atomic_write_bytes, read_json_lines
from scripts.utils.limits import check_png_pixels, regular_file
from scripts.utils.records.data_roots import collect_inputs
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import relative_to_workspace, resolve_workspace

DEFAULT_INPUT = "data/sample"
OUTPUT_BYTES = (
    "_output_bytes"  # a record's outputs, sent back by a cluster worker for this process to write
)
OUTPUT_ERROR = "_error"  # a cluster task's bad input, sent back as its error record
BATCH_INPUT_BYTES = (
    64 << 20
)  # input bytes per cluster task: the float32 outputs it sends back are a few times more


# --------------------------------------------------------------------------
# Reading: pixels and the parameters that say how to normalize them
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# Normalizing (one code path for NumPy and CuPy: ``xp``)
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# One sample, end to end (runs in worker processes)
# --------------------------------------------------------------------------


def process_sample(task: dict) -> dict:
    """Read, normalize, mask, resize, augment one image; write its npz; return its record."""
    xp, backend = array_module(task["backend"])
    path = Path(task["path"])
    record = {"index": task["index"], "source": task["source"], "error": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pixels, params = read_image(path)
            image, done = preprocess_pixels(xp, pixels, params, task, task["source"])
            array = np.ascontiguousarray(to_numpy(image).astype(np.float32))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"cannot preprocess image: {type(exc).__name__}: {scrub_quoted(str(exc))}",
                file=task["source"],
            )
    _write_output(task, record, "output", npz_bytes({"image": array}))
    record.update(
        {
            "output": task["output_name"],
            "shape": list(array.shape),
            "dtype": "float32",
            "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
            "min": float(array.min()),
            "max": float(array.max()),
            "mean": float(array.mean(dtype=np.float64)),
            "transforms": done,
            "backend": backend,
            "warnings": sorted({scrub_quoted(str(w.message)) for w in caught}),
        }
    )
    return record


def _write_output(task: dict, record: dict, field: str, data: bytes) -> None:
    """Write an output file of ``task`` (its path is ``task[field]``), or, for a task run on a
    cluster (``return_outputs``), hand the bytes back in the record for the client to write."""
    if task.get("return_outputs"):
        record.setdefault(OUTPUT_BYTES, {})[task[field]] = data
    else:
        atomic_write_bytes(Path(task[field]), data)


def run_tasks(
    tasks: list, workers: int, skip_errors: bool, executor: Executor | None = None, function=None
) -> list:
    """Run ``function`` (default: ``process_sample``) on every task, on ``executor`` (or a pool of
    ``workers``, or inline); records in task order.

    On an ``executor`` (a Dask cluster's: utils/compute/cluster.py) tasks go in
    batches and the workers send the output bytes back: this process alone
    writes into the workspace, which then need not be on shared storage.
    """
    function = function or process_sample
    own_pool = executor is None and workers > 1 and len(tasks) > 1
    pool = ProcessPoolExecutor(max_workers=workers) if own_pool else executor
    records = []
    try:
        with progress(total=len(tasks), desc="preprocess", unit="image") as bar:
            if pool is None:
                results = (_guarded(function, task, skip_errors) for task in tasks)
            elif own_pool:
                results = pool.map(
                    _guarded, [function] * len(tasks), tasks, [skip_errors] * len(tasks)
                )
            else:
                remote = [dict(task, return_outputs=True) for task in tasks]
                sizes = [
                    sum(cluster.size_or_zero(s["path"]) for s in task["slices"])
                    if "slices" in task
                    else cluster.size_or_zero(task["path"])
                    for task in tasks
                ]
                results = cluster.map_batches(
                    pool,
                    run_batch,
                    cluster.batches(
                        remote, cluster.worker_count(pool), sizes, max_bytes=BATCH_INPUT_BYTES
                    ),
                    function,
                    skip_errors,
                )
            for record in results:
                if OUTPUT_ERROR in record:
                    details = dict(record[OUTPUT_ERROR])
                    raise InputError(details.pop("error"), **details)
                for path, data in record.pop(OUTPUT_BYTES, {}).items():
                    atomic_write_bytes(Path(path), data)
                records.append(record)
                bar.update(1)
    finally:
        if own_pool:
            pool.shutdown(cancel_futures=True)
    return records


def run_batch(tasks: list, function, skip_errors: bool) -> list:
    """One cluster task: the records of ``tasks``, in order (an unskipped bad image is returned,
    not raised: an exception's details would not survive the trip back)."""
    records = []
    for task in tasks:
        try:
            records.append(_guarded(function, task, skip_errors))
        except InputError as exc:
            records.append({OUTPUT_ERROR: exc.record()})
            break
    return records


def _guarded(function, task: dict, skip_errors: bool) -> dict:
    """``function(task)``, with a bad image as an error record when ``skip_errors``."""
    try:
        return function(task)
    except InputError as exc:
        if not skip_errors:
            raise
        return {"index": task["index"], "source": task["source"], "error": exc.message}


# --------------------------------------------------------------------------
# Series -> volumes (--volumes)
# --------------------------------------------------------------------------


def process_volume(task: dict) -> dict:
    """Read, normalize and stack one series' slices; write its npz and NIfTI; return its record."""
    xp, backend = array_module(task["backend"])
    volume, dones, messages = assemble_volume(xp, task)
    affine = np.asarray(task["affine"], dtype=np.float64)
    record = {}
    _write_output(
        task,
        record,
        "output",
        npz_bytes(
            {
                "image": volume,
                "affine": affine,
                "spacing": np.asarray(task["spacing"], dtype=np.float64),
            }
        ),
    )
    _write_output(task, record, "nifti", nifti_bytes(volume, affine))
    voi = [done.get("voi") for done in dones]
    return record | {
        "index": task["index"],
        "kind": "volume",
        "source": task["source"],
        "error": None,
        "output": task["output_name"],
        "nifti": task["nifti_name"],
        "sources": [s["source"] for s in task["slices"]],
        "slices": len(task["slices"]),
        "shape": list(volume.shape),
        "dtype": "float32",
        "axes": "slice, row, column",
        "spacing": task["spacing"],
        "affine": task["affine"],
        "affine_space": "LPS (DICOM patient), mm",
        "sha256": hashlib.sha256(volume.tobytes()).hexdigest(),
        "min": float(volume.min()),
        "max": float(volume.max()),
        "mean": float(volume.mean(dtype=np.float64)),
        "values": task.get("values", "normalized"),
        "transforms": {
            "modality": dones[0].get("modality"),
            "voi": voi[0]
            if all(v == voi[0] for v in voi)
            else "per slice (the files' own windows)",
        },
        "backend": backend,
        "warnings": sorted(set(messages) | set(task["warnings"])),
    }


def volume_tasks(images: list, record, options: dict) -> tuple[list, list]:
    """``(tasks, skipped)``: one task per series that forms a regular volume (or per stack in
    it)."""
    series, skipped = slice_headers(images)
    planned = []
    for _key, slices in sorted(series.items(), key=lambda item: item[1][0]["file"]):
        name = (
            slices[0]["file"].rsplit("/", 1)[0] if "/" in slices[0]["file"] else slices[0]["file"]
        )
        taken = sum(source.split("#")[0] == name for source, _ in planned)
        name = name if not taken else f"{name}#series{taken + 1}"
        plan = volume_plan(slices)
        stacks = split_stacks(slices) if "duplicate_positions" in plan["kinds"] else []
        if stacks:
            planned += [(f"{name}#{label}", volume_plan(group)) for label, group in stacks]
        elif plan["problems"]:
            skipped.append(
                {
                    "file": name,
                    "reason": "--volumes: series not stacked: " + "; ".join(plan["problems"]),
                    "slices": len(slices),
                }
            )
        else:
            planned.append((name, plan))
    tasks = []
    for index, (name, plan) in enumerate(planned):
        tasks.append(
            dict(
                options,
                index=index,
                source=name,
                slices=plan["slices"],
                spacing=plan["spacing"],
                affine=plan["affine"],
                warnings=[],
                output=str(record.output_path(f"volumes/{index:06d}.npz")),
                output_name=f"volumes/{index:06d}.npz",
                nifti=str(record.output_path(f"volumes/{index:06d}.nii")),
                nifti_name=f"volumes/{index:06d}.nii",
            )
        )
    return tasks, skipped


def record_name(workspace: Path, path) -> str:
    """How a file given on the command line is named in the record: workspace-relative, else its
    name."""
    try:
        return relative_to_workspace(workspace, path)
    except InputError:
        return Path(path).name


def select_from_table(files: list, table_path) -> tuple[list, list]:
    """``(files to process, skipped)``: only the files a metadata table read without error.

    ``files`` is ``[(name, path)]``; the table is a metadata_extractor
    ``metadata.jsonl`` whose ``path`` column holds the same names. A row
    with an error is left out with that error as the reason; a file the
    table does not list is left out too (it came after the table was made).
    """
    rows = {}
    for row in read_json_lines(Path(table_path)):
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise InputError("not a metadata table (rows need a 'path')", file=table_path)
        rows[row["path"]] = row
    chosen, skipped = [], []
    for name, path in files:
        row = rows.get(name)
        if row is None:
            skipped.append({"file": name, "reason": "not in the metadata table"})
        elif row.get("error"):
            skipped.append({"file": name, "reason": f"metadata_extractor: {row['error']}"})
        else:
            chosen.append((name, path))
    return chosen, skipped


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_size(text):
    if text is None:
        return None
    parts = text.lower().replace("x", " ").split()
    try:
        size = [int(p) for p in parts] * (2 if len(parts) == 1 else 1)
    except ValueError:
        size = []
    if len(size) != 2 or not all(1 <= s <= 16384 for s in size):
        raise InputError("--size must be HxW (or N for NxN) with 1..16384 pixels", value=text)
    return size


def parse_window(text):
    if text is None:
        return None
    try:
        center, width = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError("--window must be CENTER,WIDTH, e.g. 40,400", value=text)
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        raise InputError("--window needs finite numbers and a positive width", value=text)
    return [center, width]


def load_mask(path):
    if path is None:
        return None
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            mask = read_arrays(path)[path.stem]
        else:
            import imageio.v3 as iio

            check_png_pixels(path) if path.suffix.lower() == ".png" else regular_file(
                path, "mask file"
            )
            mask = iio.imread(path)
    except FileNotFoundError:
        raise InputError("mask file not found", file=path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read the mask: {exc}", file=path)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise InputError("the mask must be a 2-D image", file=path)
    return (mask > 0).astype(np.float64)


def preprocess_files(args, log) -> int:
    from scripts.data_tools import image_preprocessor as lib  # importable, for the worker processes

    if args.mask is not None and args.mask_threshold is not None:
        raise InputError("use --mask or --mask-threshold, not both")
    if args.volumes:
        unsupported = [
            flag
            for flag, value in (
                ("--size", args.size),
                ("--augment", args.augment),
                ("--mask", args.mask),
                ("--mask-threshold", args.mask_threshold),
            )
            if value not in (None, False)
        ]
        if unsupported:
            raise InputError(
                f"--volumes does not support {', '.join(unsupported)} (they are per-image options)"
            )
    size, window_override = lib.parse_size(args.size), lib.parse_window(args.window)
    _, backend = array_module(args.backend)
    workers = args.workers if backend == "numpy" else 1
    workspace = resolve_workspace(args.workspace)
    seeds = SeedManager.from_file(args.seeds)
    seed = seeds.seed(SEED_STREAM)
    found = collect_inputs(
        workspace, args.inputs or [workspace / DEFAULT_INPUT], args.data_name, log
    )
    images = [(name, Path(path)) for name, path, _ in found.files]
    skipped = list(found.skipped)
    if args.table:
        images, left_out = lib.select_from_table(images, args.table)
        skipped += left_out
    if skipped and args.strict:
        skipped.sort(key=lambda item: item["file"])
        raise InputError(
            f"{len(skipped)} files are skipped (--strict)",
            file=skipped[0]["file"],
            reason=skipped[0]["reason"],
        )
    mask = lib.load_mask(args.mask)
    if args.volume_values != "normalized" and not args.volumes:
        raise InputError("--volume-values needs --volumes")
    config = {
        "volumes": args.volumes,
        "volume_values": args.volume_values,
        "window": window_override,
        "voi_function": args.voi_function,
        "size": size,
        "mask_threshold": args.mask_threshold,
        "mask": Path(args.mask).name if args.mask else None,
        "augment": args.augment,
        "epoch": args.epoch,
        "backend": backend,
    }
    if args.table:
        config["table"] = record_name(workspace, args.table)
    with RunRecorder(
        "image_preprocessor",
        argv=args.argv,
        workspace=workspace,
        seeds=seeds,
        log=log,
        config=config,
        extra={"backend": backend},
    ) as record:
        record.data_roots = found.root_records()
        for name in found.workspace_inputs():
            record.consume(workspace / name)
        if args.table:
            record.consume(args.table)
        if args.volumes:
            tasks, not_stacked = lib.volume_tasks(
                images,
                record,
                {
                    "window": window_override,
                    "voi_function": args.voi_function,
                    "backend": backend,
                    "values": args.volume_values,
                },
            )
            for item in not_stacked:
                log.warning(
                    "series_not_stacked"
                    if "series not stacked" in item["reason"]
                    else "skipped_file",
                    **item,
                )
            skipped += not_stacked
            if skipped and args.strict:
                skipped.sort(key=lambda item: item["file"])
                raise InputError(
                    f"{len(skipped)} files or series are skipped (--strict)",
                    file=skipped[0]["file"],
                    reason=skipped[0]["reason"],
                )
        else:
            tasks = [
                {
                    "index": index,
                    "path": str(path),
                    "source": name,
                    "output": str(record.output_path(f"samples/{index:06d}.npz")),
                    "output_name": f"samples/{index:06d}.npz",
                    "window": window_override,
                    "voi_function": args.voi_function,
                    "size": size,
                    "mask_threshold": args.mask_threshold,
                    "mask": mask,
                    "mask_name": config["mask"],
                    "augment": args.augment,
                    "epoch": args.epoch,
                    "seed": seed,
                    "backend": backend,
                }
                for index, (name, path) in enumerate(images)
            ]
        with cluster.cluster_executor(cluster.scheduler_address(args.scheduler), log) as executor:
            records = lib.run_tasks(
                tasks,
                workers,
                args.skip_errors and not args.strict,
                executor,
                function=lib.process_volume if args.volumes else lib.process_sample,
            )
        with atomic_output(record.output_path("records.jsonl")) as handle:
            for item in records:
                handle.write(
                    orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SORT_KEYS)
                )
        failed = [item for item in records if item.get("error")]
        skipped = sorted(
            skipped + [{"file": item["source"], "reason": item["error"]} for item in failed],
            key=lambda item: item["file"],
        )
        record.results.update(
            samples=len(records),
            errors=len(failed),
            skipped=skipped,
            records=f"{record.folder}/records.jsonl",
        )
    for item in skipped[:20]:
        log.warning("skipped_file", **item)
    log.info(
        "preprocessed",
        samples=len(records),
        errors=len(failed),
        skipped=len(skipped),
        backend=backend,
        records=f"{record.folder}/records.jsonl",
    )
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "image_preprocessor",
        doc=__doc__,
        description="Normalize DICOM/PNG images to float32 arrays (npz) with a record per sample.",
        example="python scripts/data_tools/image_preprocessor.py data/sample --size 64x64 "
        "--augment --epoch 0",
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="PATH",
        help=f"files or folders (default: <workspace>/{DEFAULT_INPUT})",
    )
    parser.add_argument(
        "--window", metavar="CENTER,WIDTH", help="override every DICOM window (e.g. 40,400)"
    )
    parser.add_argument(
        "--voi-function",
        choices=VOI_FUNCTIONS,
        help="override the VOI LUT Function (default: the file's)",
    )
    parser.add_argument("--size", metavar="HxW", help="resize to this shape (bilinear)")
    parser.add_argument(
        "--mask-threshold",
        type=cli.bounded(float, -1e15, 1e15),
        metavar="VALUE",
        help="keep pixels whose modality value >= VALUE",
    )
    parser.add_argument(
        "--mask",
        metavar="FILE",
        help="mask image or .npy (non-zero = keep), same shape as the images",
    )
    parser.add_argument(
        "--augment", action="store_true", help="seeded flips, rot90, intensity jitter, noise"
    )
    parser.add_argument(
        "--epoch",
        type=cli.bounded(int, 0, 2**63 - 1),
        default=0,
        help="epoch number (part of each sample's generator key)",
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="numpy", help="array backend for the arithmetic"
    )
    cli.add_workers_option(parser, "processes (NumPy backend)")
    parser.add_argument(
        "--skip-errors",
        action="store_true",
        help="record unreadable images and go on (default: exit 2)",
    )
    parser.add_argument(
        "--volumes",
        action="store_true",
        help="stack each DICOM series into one volume (npz + NIfTI) ordered along the slice normal",
    )
    parser.add_argument(
        "--volume-values",
        choices=("normalized", "modality"),
        default="normalized",
        help="with --volumes: windowed [0, 1] values, or modality values (rescaled, e.g. HU)",
    )
    parser.add_argument(
        "--table",
        metavar="METADATA_JSONL",
        help="take only the files this metadata table read without error (others: skipped)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 2 if any file is skipped (by the table, the listing, or --skip-errors)",
    )
    cli.add_data_name_option(parser)
    cli.add_scheduler_option(parser)
    cli.add_seeds_option(parser)
    cli.add_common_options(parser)
    return cli.run(parser, preprocess_files, argv)


if __name__ == "__main__":
    sys.exit(main())
