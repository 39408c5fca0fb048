"""Pixels made comparable: DICOM and PNG pixels read with the parameters that say how to scale them
(rescale, LUTs, VOI windows), normalized to [0, 1], resized, and augmented deterministically.

    from scripts.data_tools.pixels import read_image, preprocess_pixels
    pixels, params = read_image(Path("data/sample/dicom/p01/slice_000.dcm"))
    image = preprocess_pixels(np, pixels, params, options, "p01/slice_000")

The image preprocessor (image_preprocessor.py) runs these over files,
locally or on a cluster; every draw of the augmentation comes from (seed,
sample id, epoch).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from scripts.utils.config.seeds import derive_seed
from scripts.utils.errors import InputError
from scripts.utils.formats.dicom_header import at, collapse, frame_count, frame_values, read_dataset
from scripts.utils.limits import PNG_SIGNATURE, check_pixels, check_png_pixels

VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


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
    """How to normalize the pixels of ``ds``: photometric, bits, Modality LUT/rescale, VOI
    LUT/window."""
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
    """N(0, 1) at the probabilities (k + 0.5) / 65536, float32: |z| <= 4.33, standard deviation
    0.99999.

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


SEED_STREAM = "image_preprocessor"
