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
   90-degree rotations, intensity jitter (scale, shift) and Gaussian noise.
   Each sample's generator is derived from (seed, sample id, epoch), so a
   sample gets the same draws whatever the order or worker count; the drawn
   parameters are recorded.

Inputs are files or folders: in the workspace (named workspace-relative) or
anywhere else (a data root, named ``@<root>/<path>``, never written to; see
scripts/utils/data_roots.py). ``--table METADATA_JSONL`` takes only the
files that metadata_extractor read without error; the others are left out,
each listed under ``skipped`` in the report with its reason, as are images
that fail here with ``--skip-errors``. ``--strict`` makes any skipped file
bad input (exit 2).

Outputs, under ``experiments/results/image_preprocessor_<stamp>/``:
``samples/<index>.npz`` (array ``image``, float32) and ``records.jsonl`` (one
record per sample: source, shape, the transforms applied and their
parameters, the array's SHA-256). The bytes are the same for any
``--workers``. ``--backend cupy`` runs the arithmetic on the GPU (one
process; results agree with NumPy within float32 rounding).

Usage:
    python scripts/data_tools/image_preprocessor.py
    python scripts/data_tools/image_preprocessor.py data/sample/dicom --size 128x128 --augment --epoch 3
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

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import numpy as np
import orjson

from scripts.utils import cli
from scripts.utils.arrays import BACKENDS, array_module, npz_bytes, read_arrays, to_numpy
from scripts.utils.errors import InputError
from scripts.utils.data_roots import collect_inputs
from scripts.utils.jsonio import atomic_output, atomic_write_bytes, read_json_lines
from scripts.utils.limits import check_pixels, check_png_pixels, regular_file
from scripts.utils.log_formatter import progress
from scripts.utils.run_records import RunRecorder, relative_to_workspace, resolve_workspace
from scripts.utils.seed_manager import SeedManager, derive_seed

DEFAULT_INPUT = "data/sample"
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEED_STREAM = "image_preprocessor"
DEFER_BYTES = 1 << 20  # DICOM values larger than this (pixel data, big private tags) are read only when used


# --------------------------------------------------------------------------
# Reading: pixels and the parameters that say how to normalize them
# --------------------------------------------------------------------------

def _lut(item, signed: bool) -> dict:
    """A Modality or VOI LUT item: first mapped value, bits per entry, the table."""
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    if signed and first >= 2**15:
        first -= 2**16  # the first mapped value is signed for signed pixel data (PS3.3 C.11.1.1)
    data = item.LUTData
    if isinstance(data, bytes):
        data = np.frombuffer(data, dtype="<u2" if bits > 8 else "u1")
    data = np.asarray(list(data) if not isinstance(data, np.ndarray) else data, dtype=np.float64)
    return {"first": first, "bits": bits, "data": data[: entries or 65536]}  # 0 entries means 2**16


def read_dicom(path: Path) -> tuple:
    """``(stored pixel array, parameters)`` of a DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except InvalidDicomError:  # no preamble or file meta (older exports): read it as metadata_extractor does
        ds = pydicom.dcmread(path, force=True, defer_size=DEFER_BYTES)
        if not any(keyword in ds for keyword in ("SOPClassUID", "Modality", "PatientID", "StudyInstanceUID", "Rows")):
            raise InputError("not a DICOM or PNG file (no DICOM header and no recognisable DICOM attributes)",
                             file=path)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError("DICOM file has no pixel data", file=path)
    shape = [_count(ds, "NumberOfFrames"), _count(ds, "Rows"), _count(ds, "Columns"), _count(ds, "SamplesPerPixel")]
    check_pixels(shape[0] * shape[1] * shape[2] * shape[3], "x".join(map(str, shape)), file=path)
    pixels = ds.pixel_array
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    params = {"kind": "dicom", "photometric": photometric,
              "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 16))),
              "frames": int(ds.get("NumberOfFrames", 1) or 1)}
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
        params["bits_stored"] = int(ds.RedPaletteColorLookupTableDescriptor[2])
    if not photometric.startswith("MONOCHROME"):
        params["color"] = True
        return pixels, params
    params["color"] = False
    if ds.get("ModalityLUTSequence"):
        params["modality_lut"] = _lut(ds.ModalityLUTSequence[0], signed)
    elif "RescaleSlope" in ds or "RescaleIntercept" in ds:
        params["rescale"] = [float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)]
    if ds.get("VOILUTSequence"):
        params["voi_lut"] = _lut(ds.VOILUTSequence[0], signed)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        centers, widths = ds.WindowCenter, ds.WindowWidth
        first = lambda v: float(v[0]) if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else float(v)
        params["window"] = [first(centers), first(widths)]
    params["voi_function"] = str(ds.get("VOILUTFunction", "LINEAR")).upper() or "LINEAR"
    return pixels, params


def _count(ds, keyword: str) -> int:
    """A DICOM count attribute (frames, rows, columns, samples), 1 when absent or empty."""
    try:
        value = int(ds.get(keyword, 1) or 1)
    except (TypeError, ValueError):
        raise InputError(f"DICOM {keyword} is not a number", file=getattr(ds, "filename", None))
    if value < 1:
        raise InputError(f"DICOM {keyword} is {value}", file=getattr(ds, "filename", None))
    return value


def read_png(path: Path) -> tuple:
    import imageio.v3 as iio

    check_png_pixels(path)
    pixels = iio.imread(path)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise InputError(f"unsupported PNG sample type {pixels.dtype}", file=path)
    if pixels.ndim == 3 and pixels.shape[-1] == 4:
        pixels = pixels[..., :3]  # drop alpha
    elif pixels.ndim == 3 and pixels.shape[-1] == 2:
        pixels = pixels[..., 0]   # gray + alpha
    return pixels, {"kind": "png", "color": pixels.ndim == 3, "bits_stored": 16 if pixels.dtype == np.uint16 else 8,
                    "frames": 1}


def read_image(path: Path) -> tuple:
    with open(path, "rb") as handle:
        head = handle.read(8)
    return read_png(path) if head == PNG_SIGNATURE else read_dicom(path)


# --------------------------------------------------------------------------
# Normalizing (one code path for NumPy and CuPy: ``xp``)
# --------------------------------------------------------------------------

def apply_lut(xp, values, lut: dict):
    """Look values up in a LUT; values below/above the mapped range clamp."""
    table = xp.asarray(lut["data"], dtype=xp.float64)
    index = xp.clip(xp.rint(values).astype(xp.int64) - lut["first"], 0, table.shape[0] - 1)
    return table[index]


def modality_values(xp, pixels, params: dict):
    """Stored values -> modality values (float64), per PS3.3 C.11.1."""
    values = xp.asarray(pixels).astype(xp.float64)
    if "modality_lut" in params:
        return apply_lut(xp, values, params["modality_lut"])
    if "rescale" in params:
        slope, intercept = params["rescale"]
        return values * slope + intercept
    return values


def window(xp, values, center: float, width: float, function: str):
    """PS3.3 C.11.2.1.2 windowing onto [0, 1]."""
    if function == "LINEAR":
        if width < 1:
            raise ValueError("Window Width must be >= 1 for LINEAR")
        if width == 1:  # the formula degenerates to a threshold
            return (values > center - 0.5).astype(xp.float64)
        center, width = center - 0.5, width - 1
        return xp.clip((values - center) / width + 0.5, 0.0, 1.0)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError("Window Width must be > 0 for LINEAR_EXACT")
        return xp.clip((values - center) / width + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError("Window Width must be > 0 for SIGMOID")
        return 1.0 / (1.0 + xp.exp(-4.0 * (values - center) / width))
    raise ValueError(f"unsupported VOI LUT Function {function!r}")


def _linear_window(xp, pixels, slope: float, intercept: float, center: float, width: float):
    """LINEAR / LINEAR_EXACT windowing of rescaled pixels, fused and in float32.

    ``(x * slope + intercept - center) / width + 0.5`` is evaluated as
    ``(x - s0) * scale + offset`` where ``s0`` is the stored value nearest the
    window's center: the subtraction is exact in float32, so no precision is
    lost to cancellation, and the whole chain is four passes over the image.
    """
    s0 = round((center - intercept) / slope) if slope else 0
    scale = slope / width
    offset = (s0 * slope + intercept - center) / width + 0.5
    image = xp.asarray(pixels).astype(xp.float32)
    image -= xp.float32(s0)
    image *= xp.float32(scale)
    image += xp.float32(offset)
    return xp.clip(image, 0.0, 1.0, out=image)


def normalize(xp, pixels, params: dict, window_override=None, function_override=None):
    """Pixels -> (float32 image in [0, 1], what was done)."""
    done = {}
    if params["color"] or params.get("kind") == "png":
        image = xp.asarray(pixels).astype(xp.float32)
        image *= xp.float32(1 / (2 ** params["bits_stored"] - 1))
        done["scaled_by_bit_depth"] = params["bits_stored"]
        return xp.clip(image, 0.0, 1.0, out=image), done
    done["modality"] = "lut" if "modality_lut" in params else ("rescale" if "rescale" in params else "none")
    if "rescale" in params:
        done["rescale"] = params["rescale"]
    if window_override is None and "voi_lut" in params:
        lut = params["voi_lut"]
        image = (apply_lut(xp, modality_values(xp, pixels, params), lut) / (2 ** lut["bits"] - 1)).astype(xp.float32)
        done["voi"] = {"lut": True, "bits": lut["bits"]}
    else:
        values = None
        if window_override is not None:
            (center, width), source = window_override, "argument"
        elif "window" in params:
            (center, width), source = params["window"], "file"
        else:
            values = modality_values(xp, pixels, params)
            low, high = float(values.min()), float(values.max())
            center, width, source = (low + high) / 2, max(high - low, 1.0), "data range"
        function = function_override or params.get("voi_function", "LINEAR")
        done["voi"] = {"center": center, "width": width, "function": function, "from": source}
        if function in ("LINEAR", "LINEAR_EXACT") and "modality_lut" not in params and width > (function == "LINEAR"):
            slope, intercept = params.get("rescale", (1.0, 0.0))
            if function == "LINEAR":
                center, width = center - 0.5, width - 1
            image = _linear_window(xp, pixels, slope, intercept, center, width)
        else:
            values = modality_values(xp, pixels, params) if values is None else values
            image = window(xp, values, center, width, function).astype(xp.float32)
    if params.get("photometric") == "MONOCHROME1":
        image = 1.0 - image
        done["inverted"] = "MONOCHROME1"
    return image, done


def preprocess_pixels(xp, pixels, params: dict, options: dict, sample_id: str):
    """Normalize, mask, resize and augment one image: ``(float32 image, what was done)``.

    ``options``: window, voi_function, mask_threshold, mask (array) and
    mask_name, size, augment, seed, epoch.
    """
    image, done = normalize(xp, pixels, params, options.get("window"), options.get("voi_function"))
    axes = spatial_axes(image, params["color"])
    if options.get("mask_threshold") is not None:
        if params["color"] or params.get("kind") == "png":
            raise InputError("--mask-threshold needs a monochrome DICOM (modality values)", file=sample_id)
        image = image * (modality_values(xp, pixels, params) >= options["mask_threshold"])
        done["mask"] = {"threshold": options["mask_threshold"]}
    if options.get("mask") is not None:
        mask = xp.asarray(options["mask"], dtype=xp.float32)
        spatial = (image.shape[axes[0]], image.shape[axes[1]])
        if tuple(mask.shape) != spatial:
            raise InputError(f"mask shape {tuple(mask.shape)} does not match the image {spatial}", file=sample_id)
        image = image * (mask[..., None] if params["color"] else mask)
        done["mask"] = {"file": options.get("mask_name")}
    if options.get("size") is not None:
        image = resize(xp, image, options["size"], axes)
        done["resize"] = list(options["size"])
    if options.get("augment"):
        draws = augmentation_parameters(options["seed"], sample_id, options.get("epoch", 0))
        image = augment(xp, image, draws, axes)
        done["augmentation"] = draws
    return image.astype(xp.float32, copy=False), done


def spatial_axes(image, color: bool) -> tuple:
    """Rows and columns: (H, W), (F, H, W), (H, W, 3) and (F, H, W, 3) layouts."""
    return (image.ndim - 3, image.ndim - 2) if color else (image.ndim - 2, image.ndim - 1)


def resize(xp, image, shape, axes):
    """Bilinear resize of the spatial ``axes`` to ``shape``."""
    if (image.shape[axes[0]], image.shape[axes[1]]) == tuple(shape):
        return image
    if xp is np:
        from scipy import ndimage
    else:
        from cupyx.scipy import ndimage
    factors = [1.0] * image.ndim
    factors[axes[0]] = shape[0] / image.shape[axes[0]]
    factors[axes[1]] = shape[1] / image.shape[axes[1]]
    return ndimage.zoom(image, factors, order=1, mode="nearest", grid_mode=True)


def augmentation_parameters(seed: int, sample_id: str, epoch: int) -> dict:
    """The draws for one sample, from its own generator (seed, sample id, epoch)."""
    rng = np.random.Generator(np.random.PCG64(derive_seed(seed, SEED_STREAM, sample_id, epoch)))
    return {
        "flip_horizontal": bool(rng.random() < 0.5),
        "flip_vertical": bool(rng.random() < 0.5),
        "rot90": int(rng.integers(0, 4)),
        "intensity_scale": float(rng.uniform(0.9, 1.1)),
        "intensity_shift": float(rng.uniform(-0.05, 0.05)),
        "noise_sigma": float(rng.uniform(0.0, 0.02)),
        "noise_seed": int(rng.integers(0, 2**63)),
        "noise_generator": "SFC64",  # the fastest of NumPy's bit generators here, for the per-pixel draws
    }


def augment(xp, image, draws: dict, axes):
    if draws["flip_horizontal"]:
        image = xp.flip(image, axis=axes[1])
    if draws["flip_vertical"]:
        image = xp.flip(image, axis=axes[0])
    if draws["rot90"]:
        image = xp.rot90(image, draws["rot90"], axes=axes)
    image = image * xp.float32(draws["intensity_scale"])
    image += xp.float32(draws["intensity_shift"])
    # Noise is drawn on the host so that both backends see the same numbers.
    noise = np.random.Generator(np.random.SFC64(draws["noise_seed"])).standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(draws["noise_sigma"])
    image += xp.asarray(noise)
    return xp.clip(image, 0.0, 1.0, out=image)


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
            raise InputError(f"cannot preprocess image: {type(exc).__name__}: {exc}", file=task["source"])
    atomic_write_bytes(Path(task["output"]), npz_bytes({"image": array}))
    record.update({
        "output": task["output_name"], "shape": list(array.shape), "dtype": "float32",
        "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
        "min": float(array.min()), "max": float(array.max()), "mean": float(array.mean(dtype=np.float64)),
        "transforms": done, "backend": backend, "warnings": sorted({str(w.message) for w in caught}),
    })
    return record


def run_tasks(tasks: list, workers: int, skip_errors: bool, executor: Executor | None = None) -> list:
    """Process every task on ``executor`` (or a pool of ``workers``, or inline); records in task order."""
    own_pool = executor is None and workers > 1 and len(tasks) > 1
    pool = ProcessPoolExecutor(max_workers=workers) if own_pool else executor
    records = []
    try:
        with progress(total=len(tasks), desc="preprocess", unit="image") as bar:
            if pool is None:
                results = (_guarded_sample(task, skip_errors) for task in tasks)
            else:
                results = pool.map(_guarded_sample, tasks, [skip_errors] * len(tasks))
            for record in results:
                records.append(record)
                bar.update(1)
    finally:
        if own_pool:
            pool.shutdown(cancel_futures=True)
    return records


def _guarded_sample(task: dict, skip_errors: bool) -> dict:
    """``process_sample``, with a bad image as an error record when ``skip_errors``."""
    try:
        return process_sample(task)
    except InputError as exc:
        if not skip_errors:
            raise
        return {"index": task["index"], "source": task["source"], "error": exc.message}


def record_name(workspace: Path, path) -> str:
    """How a file given on the command line is named in the record: workspace-relative, else its name."""
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

            check_png_pixels(path) if path.suffix.lower() == ".png" else regular_file(path, "mask file")
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


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "image_preprocessor",
        description="Normalize DICOM/PNG images to float32 arrays (npz) with a record per sample.",
        example="python scripts/data_tools/image_preprocessor.py data/sample --size 64x64 --augment --epoch 0",
    )
    parser.add_argument("inputs", nargs="*", metavar="PATH", help=f"files or folders (default: <workspace>/{DEFAULT_INPUT})")
    parser.add_argument("--window", metavar="CENTER,WIDTH", help="override every DICOM window (e.g. 40,400)")
    parser.add_argument("--voi-function", choices=VOI_FUNCTIONS, help="override the VOI LUT Function (default: the file's)")
    parser.add_argument("--size", metavar="HxW", help="resize to this shape (bilinear)")
    parser.add_argument("--mask-threshold", type=cli.bounded(float, -1e15, 1e15), metavar="VALUE", help="keep pixels whose modality value >= VALUE")
    parser.add_argument("--mask", metavar="FILE", help="mask image or .npy (non-zero = keep), same shape as the images")
    parser.add_argument("--augment", action="store_true", help="seeded flips, rot90, intensity jitter, noise")
    parser.add_argument("--epoch", type=cli.bounded(int, 0, 2 ** 63 - 1), default=0,
                        help="epoch number (part of each sample's generator key)")
    parser.add_argument("--backend", choices=BACKENDS, default="numpy", help="array backend for the arithmetic")
    cli.add_workers_option(parser, "processes (NumPy backend)")
    parser.add_argument("--skip-errors", action="store_true", help="record unreadable images and go on (default: exit 2)")
    parser.add_argument("--table", metavar="METADATA_JSONL",
                        help="take only the files this metadata table read without error (others: skipped)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 2 if any file is skipped (by the table, the listing, or --skip-errors)")
    parser.add_argument("--data-name", metavar="NAME", default=None,
                        help="name of the data root for a folder outside the workspace (default: the folder's name)")
    cli.add_seeds_option(parser)
    cli.add_common_options(parser)

    def run(args, log):
        from scripts.data_tools import image_preprocessor as lib  # importable, for the worker processes

        if args.mask is not None and args.mask_threshold is not None:
            raise InputError("use --mask or --mask-threshold, not both")
        size, window_override = lib.parse_size(args.size), lib.parse_window(args.window)
        _, backend = array_module(args.backend)
        workers = args.workers if backend == "numpy" else 1
        workspace = resolve_workspace(args.workspace)
        seeds = SeedManager.from_file(args.seeds)
        seed = seeds.seed(SEED_STREAM)
        found = collect_inputs(workspace, args.inputs or [workspace / DEFAULT_INPUT], args.data_name, log)
        images = [(name, path) for name, path, _ in found.files]
        skipped = list(found.skipped)
        if args.table:
            images, left_out = lib.select_from_table(images, args.table)
            skipped += left_out
        if skipped and args.strict:
            skipped.sort(key=lambda item: item["file"])
            raise InputError(f"{len(skipped)} files are skipped (--strict)", file=skipped[0]["file"],
                             reason=skipped[0]["reason"])
        mask = lib.load_mask(args.mask)
        config = {"window": window_override, "voi_function": args.voi_function, "size": size,
                  "mask_threshold": args.mask_threshold, "mask": Path(args.mask).name if args.mask else None,
                  "augment": args.augment, "epoch": args.epoch, "backend": backend}
        if args.table:
            config["table"] = record_name(workspace, args.table)
        with RunRecorder("image_preprocessor", workspace=workspace, seeds=seeds, log=log, config=config,
                         extra={"backend": backend}) as record:
            record.data_roots = found.root_records()
            tasks = [{
                "index": index, "path": str(path), "source": name,
                "output": str(record.output_path(f"samples/{index:06d}.npz")),
                "output_name": f"samples/{index:06d}.npz",
                "window": window_override, "voi_function": args.voi_function, "size": size,
                "mask_threshold": args.mask_threshold, "mask": mask, "mask_name": config["mask"],
                "augment": args.augment, "epoch": args.epoch, "seed": seed, "backend": backend,
            } for index, (name, path) in enumerate(images)]
            records = lib.run_tasks(tasks, workers, args.skip_errors and not args.strict)
            with atomic_output(record.output_path("records.jsonl")) as handle:
                for item in records:
                    handle.write(orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SORT_KEYS))
            failed = [item for item in records if item.get("error")]
            skipped = sorted(skipped + [{"file": item["source"], "reason": item["error"]} for item in failed],
                             key=lambda item: item["file"])
            record.results.update(samples=len(records), errors=len(failed), skipped=skipped,
                                  records=f"experiments/results/{record.run_id}/records.jsonl")
        for item in skipped[:20]:
            log.warning("skipped_file", **item)
        log.info("preprocessed", samples=len(records), errors=len(failed), skipped=len(skipped), backend=backend,
                 records=f"experiments/results/{record.run_id}/records.jsonl")
        return 0

    return cli.run(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
