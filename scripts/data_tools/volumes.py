"""Slices into volumes: the stacks of a series told apart, ordered along their normal, assembled,
and written as NIfTI with the patient-space affine.

    from scripts.data_tools.volumes import slice_headers, volume_plan
    # the slices' order, spacing and affine, or why they are no volume
    plan = volume_plan(slices)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import orjson

from scripts.data_tools.pixels import modality_values, normalize, read_image
from scripts.utils.errors import InputError
from scripts.utils.formats.arrays import to_numpy
from scripts.utils.formats.deidentify import scrub_quoted
from scripts.utils.formats.dicom_header import (
    at,
    frame_count,
    frame_values,
    read_dataset,
    series_geometry,
    volume_affine,
)
from scripts.utils.limits import PNG_SIGNATURE, check_pixels

# What tells apart the stacks of a series whose slices share positions (classic keywords, then
# enhanced ones).
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


MAX_VOLUME_FRAMES = (
    100_000  # frames of one multi-frame file in --volumes (each becomes a slice record)
)


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
                        "reason": f"cannot read the DICOM header: {type(exc).__name__}: "
                        f"{scrub_quoted(str(exc))}",
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
    """Order one series' slices and check them: ``{"slices", "problems", "kinds"}``, plus
    ``affine`` and ``spacing`` when there is no problem."""
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
    """``(float32 volume (slice, row, column), per-slice transforms, warnings)`` of one planned
    series.

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
    """``(float32 modality values, what was done)``: the Modality LUT or rescale only (HU for
    CT), per frame."""
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
