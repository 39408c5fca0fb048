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
    python scripts/data_tools/image_preprocessor.py data/sample/dicom --size 128x128 --augment --epoch 3
    python scripts/data_tools/image_preprocessor.py /data/ct_exports --volumes
    python scripts/data_tools/image_preprocessor.py /mnt/archive --scheduler local:4
    python scripts/data_tools/image_preprocessor.py /mnt/scans --skip-errors \
        --table experiments/results/metadata_extractor_<stamp>/metadata.jsonl
"""

from __future__ import annotations

import functools
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

from scripts.utils import cli
from scripts.utils.compute import cluster
from scripts.utils.config.seeds import SeedManager, derive_seed
from scripts.utils.errors import InputError
from scripts.utils.formats.arrays import BACKENDS, array_module, npz_bytes, read_arrays, to_numpy
from scripts.utils.formats.deidentify import scrub_quoted
from scripts.utils.formats.dicom_header import (
    at,
    collapse,
    frame_count,
    frame_values,
    read_dataset,
    series_geometry,
    volume_affine,
)
from scripts.utils.json_logger import progress
from scripts.utils.jsonio import atomic_output, atomic_write_bytes, read_json_lines
from scripts.utils.limits import PNG_SIGNATURE, check_pixels, check_png_pixels, regular_file
from scripts.utils.records.data_roots import collect_inputs
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import relative_to_workspace, resolve_workspace

DEFAULT_INPUT = "data/sample"
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
SEED_STREAM = "image_preprocessor"
# What tells apart the stacks of a series whose slices share positions (classic keywords, then enhanced ones).
STACK_KEYS = (
    "EchoNumbers",
    "EchoTime",
    "EffectiveEchoTime",
    "TemporalPositionIdentifier",
    "TemporalPositionIndex",
    "StackID",
    "TriggerTime",
    "DiffusionBValue",
    "AcquisitionNumber",
    "SeriesNumber",
)
OUTPUT_BYTES = (
    "_output_bytes"  # a record's outputs, sent back by a cluster worker for this process to write
)
OUTPUT_ERROR = "_error"  # a cluster task's bad input, sent back as its error record
BATCH_INPUT_BYTES = (
    64 << 20
)  # input bytes per cluster task: the float32 outputs it sends back are a few times more
MAX_VOLUME_FRAMES = (
    100_000  # frames of one multi-frame file in --volumes (each becomes a slice record)
)


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
    """``(stored pixel array, parameters)`` of a DICOM file.

    Enhanced (multi-frame) objects give their rescale and window per frame
    from the functional groups (``frame_rescale``, ``frame_window``) when
    they differ between frames; one shared value otherwise.
    """
    ds = read_dataset(path, stop_before_pixels=False)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError("DICOM file has no pixel data", file=path)
    shape = [
        _count(ds, "NumberOfFrames"),
        _count(ds, "Rows"),
        _count(ds, "Columns"),
        _count(ds, "SamplesPerPixel"),
    ]
    check_pixels(shape[0] * shape[1] * shape[2] * shape[3], "x".join(map(str, shape)), file=path)
    pixels = ds.pixel_array
    params = dicom_parameters(ds, path)
    if params.pop("palette", False):
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
    return pixels, params


def dicom_parameters(ds, path=None) -> dict:
    """How to normalize the pixels of ``ds``: photometric, bits, Modality LUT/rescale, VOI LUT/window."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    frames = frame_count(ds)
    params = {
        "kind": "dicom",
        "photometric": photometric,
        "signed": signed,
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16),
        "frames": frames,
    }
    if photometric == "PALETTE COLOR":
        params["bits_stored"] = int(ds.RedPaletteColorLookupTableDescriptor[2])
        params["palette"] = True
    if not photometric.startswith("MONOCHROME"):
        params["color"] = True
        return params
    params["color"] = False
    if ds.get("ModalityLUTSequence"):
        params["modality_lut"] = _lut(ds.ModalityLUTSequence[0], signed)
    else:
        slopes, intercepts = (
            frame_values(ds, "RescaleSlope", frames),
            frame_values(ds, "RescaleIntercept", frames),
        )
        rescales = [
            None
            if s is None and i is None
            else [_number(s, 1.0, "RescaleSlope", path), _number(i, 0.0, "RescaleIntercept", path)]
            for s, i in zip(slopes, intercepts)
        ]
        rescale, varies = collapse(rescales)
        if varies:
            params["frame_rescale"] = [r or [1.0, 0.0] for r in rescales]
        elif rescale is not None:
            params["rescale"] = rescale
    if ds.get("VOILUTSequence"):
        params["voi_lut"] = _lut(ds.VOILUTSequence[0], signed)
    windows = [
        _window(c, w)
        for c, w in zip(
            frame_values(ds, "WindowCenter", frames), frame_values(ds, "WindowWidth", frames)
        )
    ]
    window, varies = collapse(windows)
    if varies:
        params["frame_window"] = windows
    elif window is not None:
        params["window"] = window
    function, _ = collapse(frame_values(ds, "VOILUTFunction", frames))
    params["voi_function"] = (
        str(function[0] if isinstance(function, list) else function or "LINEAR").upper() or "LINEAR"
    )
    return params


def _number(value, default: float, keyword: str, path) -> float:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"DICOM {keyword} is not a number", file=path)
    if not math.isfinite(number):
        raise InputError(f"DICOM {keyword} is not finite", file=path)
    return number


def _window(center, width):
    """The first (center, width) pair, or None."""
    first = lambda v: v[0] if isinstance(v, list) and v else v
    center, width = first(center), first(width)
    if center is None or width is None:
        return None
    try:
        return [float(center), float(width)]
    except (TypeError, ValueError):
        return None


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
        pixels = pixels[..., 0]  # gray + alpha
    return pixels, {
        "kind": "png",
        "color": pixels.ndim == 3,
        "bits_stored": 16 if pixels.dtype == np.uint16 else 8,
        "frames": 1,
    }


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
    """Pixels -> (float32 image in [0, 1], what was done).

    Multi-frame images whose rescale or window differs between frames are
    normalized frame by frame, each with its own functional-group values.
    """
    if (
        not params["color"]
        and params.get("kind") != "png"
        and ("frame_rescale" in params or "frame_window" in params)
    ):
        return _normalize_frames(xp, pixels, params, window_override, function_override)
    done = {}
    if params["color"] or params.get("kind") == "png":
        image = xp.asarray(pixels).astype(xp.float32)
        image *= xp.float32(1 / (2 ** params["bits_stored"] - 1))
        done["scaled_by_bit_depth"] = params["bits_stored"]
        return xp.clip(image, 0.0, 1.0, out=image), done
    done["modality"] = (
        "lut" if "modality_lut" in params else ("rescale" if "rescale" in params else "none")
    )
    if "rescale" in params:
        done["rescale"] = params["rescale"]
    if window_override is None and "voi_lut" in params:
        lut = params["voi_lut"]
        image = (
            apply_lut(xp, modality_values(xp, pixels, params), lut) / (2 ** lut["bits"] - 1)
        ).astype(xp.float32)
        done["voi"] = {"lut": True, "bits": lut["bits"]}
    else:
        values = None
        function = function_override or params.get("voi_function", "LINEAR")
        if window_override is not None:
            (center, width), source = window_override, "argument"
        elif "window" in params:
            (center, width), source = params["window"], "file"
        else:
            values = modality_values(xp, pixels, params)
            (center, width), source = fallback_window(xp, values, params)
            function = function_override or "LINEAR_EXACT"
        done["voi"] = {"center": center, "width": width, "function": function, "from": source}
        if (
            function in ("LINEAR", "LINEAR_EXACT")
            and "modality_lut" not in params
            and width > (function == "LINEAR")
        ):
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


def fallback_window(xp, values, params: dict) -> tuple:
    """The window of an image that has none: ``((center, width), source)``, mapped LINEAR_EXACT.

    * ``data range``: the image's own modality values, min -> 0, max -> 1;
    * ``stored range (constant image)``: a constant image would make the data
      range empty (and every pixel 0 or 1), so the range the stored bits can
      hold, through the rescale, is used instead: the constant lands where it
      lies in that range (e.g. 0 of an unsigned image is black, 2048 of a
      12-bit one mid-gray).
    """
    low, high = float(values.min()), float(values.max())
    if high > low:
        return ((low + high) / 2, high - low), "data range"
    bits = params.get("bits_stored", 16)
    stored = (
        (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
        if params.get("signed")
        else (0.0, 2.0**bits - 1)
    )
    if "modality_lut" in params:
        ends = [float(v) for v in params["modality_lut"]["data"][[0, -1]]]
    else:
        slope, intercept = params.get("rescale", (1.0, 0.0))
        ends = [stored[0] * slope + intercept, stored[1] * slope + intercept]
    low, high = min(ends), max(ends)
    if high <= low:
        return ((low + 0.5, 1.0)), "stored range (constant image; degenerate rescale: mid-gray)"
    return ((low + high) / 2, high - low), "stored range (constant image)"


def _normalize_frames(xp, pixels, params: dict, window_override, function_override):
    """Frame by frame, each with its functional groups' rescale and window."""
    frames = params["frames"]
    images, per_frame = [], []
    for index in range(frames):
        frame_params = {
            key: value
            for key, value in params.items()
            if key not in ("frame_rescale", "frame_window")
        }
        if "frame_rescale" in params:
            frame_params["rescale"] = at(params["frame_rescale"], index)
        if "frame_window" in params:
            if at(params["frame_window"], index) is not None:
                frame_params["window"] = at(params["frame_window"], index)
            else:
                frame_params.pop("window", None)
        image, done = normalize(
            xp,
            pixels[index] if frames > 1 else pixels,
            frame_params,
            window_override,
            function_override,
        )
        images.append(image)
        per_frame.append(done)
    done = {"per_frame": True, "modality": per_frame[0]["modality"]}
    for key in ("rescale", "voi"):
        values = [item.get(key) for item in per_frame]
        done[key] = values[0] if all(v == values[0] for v in values) else values
    if "inverted" in per_frame[0]:
        done["inverted"] = per_frame[0]["inverted"]
    return (xp.stack(images) if frames > 1 else images[0]), done


def preprocess_pixels(xp, pixels, params: dict, options: dict, sample_id: str):
    """Normalize, mask, resize and augment one image: ``(float32 image, what was done)``.

    ``options``: window, voi_function, mask_threshold, mask (array) and
    mask_name, size, augment, seed, epoch.
    """
    image, done = normalize(xp, pixels, params, options.get("window"), options.get("voi_function"))
    axes = spatial_axes(image, params["color"])
    if options.get("mask_threshold") is not None:
        if params["color"] or params.get("kind") == "png":
            raise InputError(
                "--mask-threshold needs a monochrome DICOM (modality values)", file=sample_id
            )
        image = image * (modality_values(xp, pixels, params) >= options["mask_threshold"])
        done["mask"] = {"threshold": options["mask_threshold"]}
    if options.get("mask") is not None:
        mask = xp.asarray(options["mask"], dtype=xp.float32)
        spatial = (image.shape[axes[0]], image.shape[axes[1]])
        if tuple(mask.shape) != spatial:
            raise InputError(
                f"mask shape {tuple(mask.shape)} does not match the image {spatial}", file=sample_id
            )
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
        "noise_generator": NOISE_GENERATOR,
    }


NOISE_LEVELS = 1 << 16
NOISE_GENERATOR = (
    "SFC64 raw words as 16-bit levels into the 65,536 equiprobable quantiles of N(0, 1)"
)


@functools.cache
def normal_quantiles() -> np.ndarray:
    """N(0, 1) at the probabilities (k + 0.5) / 65536, float32: |z| <= 4.33, standard deviation 0.99999.

    Per-pixel noise picks one of these levels per pixel with a uniform 16-bit
    draw: a quarter of the cost of NumPy's ziggurat normals on a 512x512
    image, and integer draws plus a table lookup give the same bytes on
    every platform (test_image_preprocessor pins the table's SHA-256).
    """
    from scipy.special import ndtri

    return ndtri((np.arange(NOISE_LEVELS) + 0.5) / NOISE_LEVELS).astype(np.float32)


def gaussian_noise(seed: int, shape: tuple, sigma: float) -> np.ndarray:
    """Per-pixel N(0, sigma^2) noise (float32, on the host), from its own generator.

    Each pixel's level is 16 bits of SFC64's raw 64-bit output, the words
    read as little-endian on every platform (twice as fast as ``integers``).
    """
    count = int(np.prod(shape))
    words = np.random.SFC64(seed).random_raw(-(-count // 4)).astype("<u8", copy=False)
    levels = words.view("<u2")[:count].reshape(shape)
    return np.take(normal_quantiles() * np.float32(sigma), levels)


def augment(xp, image, draws: dict, axes):
    """Intensity jitter and noise on the image as it is, then flips and rotation (as views).

    The pixel-wise steps commute with the flips and rotation, so they run
    first, on contiguous memory; the noise is indexed like the unrotated image.
    """
    image = image * xp.float32(draws["intensity_scale"])
    image += xp.float32(draws["intensity_shift"])
    # Noise is drawn on the host so that both backends see the same numbers.
    image += xp.asarray(gaussian_noise(draws["noise_seed"], image.shape, draws["noise_sigma"]))
    xp.clip(image, 0.0, 1.0, out=image)
    if draws["flip_horizontal"]:
        image = xp.flip(image, axis=axes[1])
    if draws["flip_vertical"]:
        image = xp.flip(image, axis=axes[0])
    if draws["rot90"]:
        image = xp.rot90(image, draws["rot90"], axes=axes)
    return image


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
    """Write an output file of ``task`` (its path is ``task[field]``), or, for a task run on a cluster
    (``return_outputs``), hand the bytes back in the record for the client to write."""
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
    """One cluster task: the records of ``tasks``, in order (an unskipped bad image is returned, not raised:
    an exception's details would not survive the trip back)."""
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


def slice_headers(images: list) -> tuple[dict, list]:
    """``({series key: [slice]}, skipped)`` from the headers of ``[(name, path)]``.

    Each frame of a multi-frame object is a slice. A slice is a dict: source
    name, path, frame (None for a single-frame file), position, orientation,
    pixel spacing, shape.
    """
    series, skipped = {}, []
    for name, path in images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with open(path, "rb") as handle:
                    if handle.read(8) == PNG_SIGNATURE:
                        skipped.append(
                            {
                                "file": name,
                                "reason": "--volumes: a PNG is not part of a DICOM series",
                            }
                        )
                        continue
                ds = read_dataset(path, stop_before_pixels=True)
                frames = frame_count(ds)
                shape = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
                if frames > MAX_VOLUME_FRAMES:  # checked before one entry per claimed frame is made
                    raise InputError(
                        f"Number of Frames is {frames}, over {MAX_VOLUME_FRAMES} for --volumes",
                        file=name,
                    )
                check_pixels(
                    frames * max(shape[0], 1) * max(shape[1], 1),
                    f"{frames}x{shape[0]}x{shape[1]}",
                    file=name,
                    volume=True,
                )
                positions = frame_values(ds, "ImagePositionPatient", frames)
                orientations = frame_values(ds, "ImageOrientationPatient", frames)
                spacings = frame_values(ds, "PixelSpacing", frames)
                stack_values = {
                    keyword: frame_values(ds, keyword, frames) for keyword in STACK_KEYS
                }
                key = str(ds.get("SeriesInstanceUID", "") or f"(no Series Instance UID) {name}")
                if "Rows" not in ds:  # headers are read without the pixel data; an image has Rows
                    skipped.append({"file": name, "reason": "--volumes: DICOM file has no image"})
                    continue
            except InputError as exc:
                skipped.append({"file": name, "reason": exc.message})
                continue
            except Exception as exc:
                skipped.append(
                    {
                        "file": name,
                        "reason": f"cannot read the DICOM header: {type(exc).__name__}: {scrub_quoted(str(exc))}",
                    }
                )
                continue
        for frame in range(frames):
            series.setdefault(key, []).append(
                {
                    "source": name if frames == 1 else f"{name}#frame{frame + 1}",
                    "file": name,
                    "path": str(path),
                    "frame": None if frames == 1 else frame,
                    "position": at(positions, frame),
                    "orientation": at(orientations, frame),
                    "pixel_spacing": at(spacings, frame),
                    "shape": shape,
                    "stack": {
                        keyword: at(values, frame) for keyword, values in stack_values.items()
                    },
                }
            )
    return series, skipped


def volume_plan(slices: list) -> dict:
    """Order one series' slices and check them: ``{"slices", "problems", "kinds"}``, plus ``affine`` and
    ``spacing`` when there is no problem."""
    geometry = series_geometry(
        [s["position"] for s in slices],
        [s["orientation"] for s in slices],
        [s["shape"] for s in slices],
        [s["pixel_spacing"] for s in slices],
    )
    plan = {
        "slices": [slices[i] for i in geometry["order"]],
        "problems": [message for _, message in geometry["problems"]],
        "kinds": [kind for kind, _ in geometry["problems"]],
    }
    if not plan["problems"]:
        first = plan["slices"][0]
        plan["spacing"] = [
            geometry["spacing"],
            float(first["pixel_spacing"][0]),
            float(first["pixel_spacing"][1]),
        ]
        plan["affine"] = volume_affine(
            first["position"],
            first["orientation"],
            first["pixel_spacing"],
            geometry["spacing"],
            geometry["normal"],
        )
    return plan


def assemble_volume(xp, task: dict) -> tuple:
    """``(float32 volume (slice, row, column), per-slice transforms, warnings)`` of one planned series.

    The volume is allocated once and each slice normalized straight into
    it, so memory is the volume plus one file's image.
    """
    slices = task["slices"]
    rows, columns = slices[0]["shape"]
    check_pixels(
        len(slices) * rows * columns,
        f"{len(slices)}x{rows}x{columns}",
        file=task["source"],
        volume=True,
    )
    volume = np.empty((len(slices), rows, columns), dtype=np.float32)
    dones, cache = [], {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for index, item in enumerate(slices):
                if item["path"] not in cache:
                    cache.clear()  # a multi-frame file is normalized once, for all its frames
                    pixels, params = read_image(Path(item["path"]))
                    if params["color"]:
                        raise InputError("--volumes needs monochrome images", file=item["file"])
                    if task.get("values") == "modality":
                        cache[item["path"]] = modality_image(xp, pixels, params)
                    else:
                        cache[item["path"]] = normalize(
                            xp, pixels, params, task.get("window"), task.get("voi_function")
                        )
                image, done = cache[item["path"]]
                image = image if item["frame"] is None else image[item["frame"]]
                if tuple(image.shape) != (rows, columns):
                    raise InputError(
                        f"a slice decodes to {tuple(image.shape)}, not {rows}x{columns}",
                        file=item["file"],
                    )
                volume[index] = to_numpy(image)
                dones.append(done)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"cannot build the volume: {type(exc).__name__}: {scrub_quoted(str(exc))}",
                file=task["source"],
            )
    return volume, dones, sorted({scrub_quoted(str(w.message)) for w in caught})


def modality_image(xp, pixels, params: dict) -> tuple:
    """``(float32 modality values, what was done)``: the Modality LUT or rescale only (HU for CT), per frame."""
    frames = params.get("frames", 1)
    if "frame_rescale" in params and frames > 1:
        image = xp.stack(
            [
                modality_values(
                    xp, pixels[index], dict(params, rescale=at(params["frame_rescale"], index))
                )
                for index in range(frames)
            ]
        )
        rescale = params["frame_rescale"]
    else:
        image, rescale = modality_values(xp, pixels, params), params.get("rescale")
    done = {
        "values": "modality",
        "modality": "lut" if "modality_lut" in params else ("rescale" if rescale else "none"),
    }
    if rescale is not None:
        done["rescale"] = rescale
    return image.astype(xp.float32), done


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


def nifti_bytes(volume: np.ndarray, affine_lps: np.ndarray) -> bytes:
    """A NIfTI-1 image: data as (column, row, slice), affine in RAS (nibabel's convention)."""
    import nibabel

    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    image = nibabel.Nifti1Image(np.transpose(volume, (2, 1, 0)), ras)
    image.header.set_xyzt_units("mm")
    image.set_qform(ras, code=1)
    image.set_sform(ras, code=1)
    return image.to_bytes()


def split_stacks(slices: list) -> list:
    """``[(label, slices)]``: a series whose slices share positions, split into regular volumes.

    Several echoes, phases, b-values or acquisitions in one series put two
    slices at each position. The first attribute of ``STACK_KEYS`` that takes
    more than one value and splits the series into groups that are each one
    regular volume names the volumes (``EchoNumbers=2``). None does: ``[]``.
    """
    for keyword in STACK_KEYS:
        values = [s["stack"].get(keyword) for s in slices]
        if None in values or len({orjson.dumps(v) for v in values}) < 2:
            continue
        groups = {}
        for value, item in zip(values, slices):
            groups.setdefault(orjson.dumps(value), []).append(item)
        if all(len(group) > 1 and not volume_plan(group)["problems"] for group in groups.values()):
            return [
                (f"{keyword}={orjson.loads(value)}", group)
                for value, group in sorted(groups.items())
            ]
    return []


def volume_tasks(images: list, record, options: dict) -> tuple[list, list]:
    """``(tasks, skipped)``: one task per series that forms a regular volume (or per stack in it)."""
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
        example="python scripts/data_tools/image_preprocessor.py data/sample --size 64x64 --augment --epoch 0",
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
    parser.add_argument(
        "--data-name",
        metavar="NAME",
        default=None,
        help="name of the data root for a folder outside the workspace (default: the folder's name)",
    )
    cli.add_scheduler_option(parser)
    cli.add_seeds_option(parser)
    cli.add_common_options(parser)
    return cli.run(parser, preprocess_files, argv)


if __name__ == "__main__":
    sys.exit(main())
