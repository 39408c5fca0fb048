"""Reading DICOM headers the way both data tools need them.

* ``read_dataset``: pydicom's reader, accepting files without a preamble or
  file meta (older exports) only when they hold recognisable attributes.
* ``plain``: an attribute's value as plain JSON (lists for multi-valued);
  ``get_plain`` and ``raw_plain`` decode the common VRs straight from the
  raw bytes (several times faster than pydicom's value classes).
* ``frame_values``: an attribute per frame of a multi-frame object, looked up
  where the standard puts it for enhanced objects (PS3.3 C.7.6.16): the
  frame's item of the Per-Frame Functional Groups Sequence, else the Shared
  Functional Groups Sequence, else the top level (classic objects).
* ``slice_geometry``: orders slices along the normal of their orientation by
  Image Position (Patient) and checks spacing, gaps, duplicate positions and
  mixed orientations; the volume tools and the series table share it.

Usage:
    ds = read_dataset(path, stop_before_pixels=True)
    slopes = frame_values(ds, "RescaleSlope")       # one value per frame
"""

from __future__ import annotations

import functools
import struct
import warnings

import numpy as np

from scripts.utils.errors import InputError

DEFER_BYTES = (
    1 << 20
)  # values larger than this are read only when asked for (pixel data: never, for headers)
DICOM_HINTS = ("SOPClassUID", "Modality", "PatientID", "StudyInstanceUID", "Rows")
# Where enhanced objects keep the attributes the tools use (functional group macro -> attributes).
FUNCTIONAL_GROUPS = {
    "PixelMeasuresSequence": ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"),
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
    "FrameVOILUTSequence": (
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "WindowCenterWidthExplanation",
    ),
    "PlanePositionSequence": ("ImagePositionPatient",),
    "PlaneOrientationSequence": ("ImageOrientationPatient",),
    "MREchoSequence": ("EffectiveEchoTime",),
    "MRTimingAndRelatedParametersSequence": ("RepetitionTime", "FlipAngle", "EchoTrainLength"),
    "MRModifierSequence": ("InversionTimes",),
    "CTXRayDetailsSequence": ("KVP",),
    "CTExposureSequence": ("ExposureInmAs", "XRayTubeCurrentInmA", "ExposureTimeInms"),
    "CTReconstructionSequence": ("ConvolutionKernel",),
    "FrameContentSequence": (
        "FrameAcquisitionDateTime",
        "StackID",
        "InStackPositionNumber",
        "TemporalPositionIndex",
    ),
}
GROUP_OF = {keyword: group for group, keywords in FUNCTIONAL_GROUPS.items() for keyword in keywords}
ORIENTATION_TOLERANCE = 1e-4
SPACING_TOLERANCE = 0.01  # relative deviation from the median slice spacing
GAP_FACTOR = 1.5  # a step this many times the median spacing: slices are missing


def read_dataset(path, stop_before_pixels: bool = True):
    """A pydicom Dataset; files without a header are accepted if they look like DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, defer_size=DEFER_BYTES)
    except InvalidDicomError:
        from pydicom.filereader import read_partial

        with open(
            path, "rb"
        ) as handle:  # as dcmread(force=True) does, but stopping where the tags stop rising
            if handle.read(2) in (
                b"",
                b"\0",
                b"\0\0",
            ):  # group 0000 (or nothing): pydicom would read every
                ds = {}  # zero as a command element, minutes per gigabyte
            else:
                handle.seek(0)
                ds = read_partial(
                    handle, _while_tags_rise(stop_before_pixels), defer_size=DEFER_BYTES, force=True
                )
        if not any(keyword in ds for keyword in DICOM_HINTS):
            raise InputError(
                "not a DICOM or PNG file (no DICOM header and no recognisable DICOM attributes)",
                file=str(path),
            )
        return ds


PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # Float, Double Float and Pixel Data


def _while_tags_rise(stop_before_pixels: bool):
    """A ``stop_when`` for a file read without a DICOM header: stop at the first tag that does not
    rise.

    A dataset's tags rise (PS3.5 7.1); a file of zeros (or mostly zeros) reads
    as the tag (0000,0000) again and again, which would take pydicom minutes
    per gigabyte. Stopping there keeps such a file to a few bytes read.
    """
    last = [-1]

    def stop(tag, vr, length) -> bool:
        if tag <= last[0] or (stop_before_pixels and tag in PIXEL_TAGS):
            return True
        last[0] = tag
        return False

    return stop


def plain(value):
    """A JSON-friendly copy of a pydicom value: str, int, float, or lists of them; None for
    empty."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [plain_scalar(v) for v in value]
    return plain_scalar(value)


def plain_scalar(value):
    if type(value) in (int, float, str):
        return value
    if isinstance(value, int):  # pydicom IS
        return int(value)
    if isinstance(value, float):  # pydicom DS
        return float(value)
    if isinstance(value, bytes):
        return None
    return str(value)


@functools.lru_cache(maxsize=4096)
def tag_of(keyword: str):
    """The tag of a keyword as pydicom's own tag type (lookups then skip a conversion), or None."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import Tag

    tag = tag_for_keyword(keyword)
    return None if tag is None else Tag(tag)


def get_plain(ds, keyword):
    """``plain(ds.<keyword>)``; a value that cannot be decoded is None, with a warning."""
    tag = tag_of(keyword)
    if (
        tag is None or ds is None or tag not in ds.keys()
    ):  # absent is the common case: a dict lookup
        return None
    try:
        return raw_plain(ds, tag, present=True)
    except Exception as exc:
        warnings.warn(f"{keyword}: unreadable value ({type(exc).__name__})")
        return None


def frame_count(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        warnings.warn("NumberOfFrames is not an integer")
        return 1


def _first_item(ds, keyword):
    try:
        sequence = ds.get(keyword)
    except Exception:
        return None
    return sequence[0] if sequence else None


def frame_values(ds, keyword: str, frames: int | None = None) -> list:
    """``keyword`` per frame: per-frame group, else shared group, else top level.

    The list is never longer than what the file holds: one entry per item of
    the Per-Frame Functional Groups Sequence (at most ``frames``), or a single
    entry when the value is the same for every frame. Use ``at(values, i)``
    to read frame ``i``. (Number of Frames is only a claim: a list of that
    length could exhaust memory.)
    """
    frames = frame_count(ds) if frames is None else frames
    group = GROUP_OF.get(keyword)
    top = get_plain(ds, keyword)
    if group is None:
        return [top]
    shared_item = _first_item(ds, "SharedFunctionalGroupsSequence")
    shared_group = _first_item(shared_item, group) if shared_item is not None else None
    shared = get_plain(shared_group, keyword) if shared_group is not None else None
    default = shared if shared is not None else top
    try:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    except Exception:
        per_frame = None
    if not per_frame:
        return [default]
    values = []
    for index in range(min(frames, len(per_frame))):
        group_item = _first_item(per_frame[index], group)
        value = get_plain(group_item, keyword) if group_item is not None else None
        values.append(default if value is None else value)
    return values or [default]


def at(values: list, index: int):
    """Frame ``index`` of a ``frame_values`` list (its last entry holds for the frames after it)."""
    return values[min(index, len(values) - 1)]


def collapse(values: list):
    """One value when every frame agrees, else the per-frame list (``(value, varies)``)."""
    first = values[0] if values else None
    if all(value == first for value in values):
        return first, False
    return values, True


# --------------------------------------------------------------------------
# Fast values: decoding raw elements directly
# --------------------------------------------------------------------------
# pydicom converts a value through hooks, validation and its own value
# classes (DSfloat, IS, PersonName), which costs more than reading the file.
# The tables need plain values only, so the common VRs are decoded here from
# the raw bytes pydicom has already read; anything else goes through pydicom.

ASCII_VRS = {"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"}
CHARSET_VRS = {"LO", "LT", "PN", "SH", "ST", "UC", "UT"}
SINGLE_VALUED_VRS = {"LT", "ST", "UT", "UR"}
BINARY_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


@functools.lru_cache(maxsize=8192)
def dictionary_vr(tag: int) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def text_decoder(ds):
    """A bytes -> str function for ``ds``'s Specific Character Set (fast for the usual ones)."""
    charset = None
    try:
        raw = ds.get_item(0x00080005, keep_deferred=True) if ds is not None else None
        if raw is not None:
            charset = (
                raw.value.decode("ascii", "replace").strip(" \x00")
                if isinstance(raw.value, bytes)
                else raw.value
            )
    except Exception:
        charset = None
    if isinstance(charset, (list, tuple)) or (isinstance(charset, str) and "\\" in charset):
        from pydicom.charset import convert_encodings, decode_bytes

        names = charset if isinstance(charset, (list, tuple)) else charset.split("\\")
        encodings = convert_encodings([str(name) for name in names])
        return lambda data: decode_bytes(data, encodings, set())
    if charset == "ISO_IR 192":
        return lambda data: data.decode("utf-8", "replace")
    if charset in (None, "", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6", "ISO 2022 IR 100"):
        return lambda data: data.decode("latin-1")
    from pydicom.charset import convert_encodings, decode_bytes

    encodings = convert_encodings(str(charset))
    return lambda data: decode_bytes(data, encodings, set())


def raw_plain(ds, tag: int, decode=None, present: bool = False):
    """The plain value of attribute ``tag`` of ``ds`` (None when absent or empty), decoded from its
    raw bytes.

    Values over the deferred-read size are not read (None). Malformed numbers
    are None, with a warning naming the attribute (never its value).
    """
    if not present and (ds is None or tag not in ds.keys()):
        return None
    element = ds.get_item(tag, keep_deferred=True)
    data = getattr(element, "value", None)
    if not getattr(element, "is_raw", False):  # converted already (or set by hand): pydicom's value
        return plain(data)
    if data is None:
        return None
    vr = element.VR or dictionary_vr(tag)
    if vr in ASCII_VRS or vr in CHARSET_VRS:
        text = (decode or text_decoder(ds))(data) if vr in CHARSET_VRS else data.decode("latin-1")
        parts = [text] if vr in SINGLE_VALUED_VRS else text.split("\\")
        values = [
            part.rstrip(" \x00") if vr in SINGLE_VALUED_VRS else part.strip(" \x00")
            for part in parts
        ]
    elif vr in ("DS", "IS"):
        values = []
        for part in data.decode("latin-1").split("\\"):
            part = part.strip(" \x00")
            try:
                values.append(None if not part else (float(part) if vr == "DS" else int(part)))
            except ValueError:
                if vr == "IS":
                    try:
                        number = float(part)
                        values.append(int(number) if number.is_integer() else None)
                        continue
                    except ValueError:
                        pass
                warnings.warn(f"({tag >> 16:04X},{tag & 0xFFFF:04X}): not a valid {vr} value")
                values.append(None)
    elif vr in BINARY_NUMBER_FORMATS:
        size = struct.calcsize(BINARY_NUMBER_FORMATS[vr])
        count = len(data) // size
        order = "<" if element.is_little_endian else ">"
        values = list(
            struct.unpack(order + BINARY_NUMBER_FORMATS[vr] * count, data[: count * size])
        )
    else:
        try:
            return plain(ds[tag].value)
        except Exception as exc:
            warnings.warn(
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}): unreadable value ({type(exc).__name__})"
            )
            return None
    if not values or all(value in (None, "") for value in values):
        return None
    return values[0] if len(values) == 1 else values


# --------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------


def slice_normal(orientation) -> np.ndarray:
    """The unit normal of an Image Orientation (Patient): row direction x column direction."""
    row, column = (
        np.asarray(orientation[:3], dtype=float),
        np.asarray(orientation[3:6], dtype=float),
    )
    normal = np.cross(row, column)
    length = np.linalg.norm(normal)
    if length < 1e-6:
        raise ValueError("Image Orientation (Patient) has parallel or zero direction cosines")
    return normal / length


def slice_geometry(positions: list, orientations: list) -> dict:
    """Order slices and check that they form one regular volume.

    Returns ``order`` (indices sorted along the normal), ``spacing`` (the
    median step), ``steps``, and ``problems``: a list of (kind, message) with
    kinds ``missing_geometry``, ``mixed_orientation``, ``duplicate_positions``,
    ``gap``, ``irregular_spacing``. A series with problems is not one volume.
    """
    count = len(positions)
    result = {
        "slices": count,
        "order": list(range(count)),
        "spacing": None,
        "steps": [],
        "problems": [],
    }
    if not all(_numbers(p, 3) for p in positions) or not all(_numbers(o, 6) for o in orientations):
        result["problems"].append(
            ("missing_geometry", "some slices lack a valid Image Position or Orientation (Patient)")
        )
        return result
    reference = np.asarray(orientations[0], dtype=float)
    if any(
        np.max(np.abs(np.asarray(o, dtype=float) - reference)) > ORIENTATION_TOLERANCE
        for o in orientations
    ):
        result["problems"].append(
            ("mixed_orientation", "slices have different Image Orientation (Patient)")
        )
        return result
    try:
        normal = slice_normal(reference)
    except ValueError as exc:
        result["problems"].append(("missing_geometry", str(exc)))
        return result
    distances = np.asarray(positions, dtype=float) @ normal
    order = sorted(range(count), key=lambda i: (distances[i], i))
    result["order"] = order
    result["normal"] = normal.tolist()
    if count < 2:
        return result
    steps = np.diff(distances[order])
    result["steps"] = [float(s) for s in steps]
    duplicates = int(np.sum(steps < 1e-3))
    if duplicates:
        result["problems"].append(
            (
                "duplicate_positions",
                f"{duplicates + 1} slices share positions (several echoes, phases or "
                f"acquisitions in one series?)",
            )
        )
        return result
    spacing = float(np.median(steps))
    result["spacing"] = spacing
    gaps = int(np.sum(steps > GAP_FACTOR * spacing))
    if gaps:
        result["problems"].append(
            (
                "gap",
                f"{gaps} gaps: steps up to {float(steps.max()):.4g} mm against a "
                f"median of {spacing:.4g} mm (missing slices?)",
            )
        )
    elif float(np.max(np.abs(steps - spacing))) > max(SPACING_TOLERANCE * spacing, 1e-3):
        result["problems"].append(
            (
                "irregular_spacing",
                f"slice steps vary from {float(steps.min()):.4g} to {float(steps.max()):.4g} mm",
            )
        )
    return result


PROBLEM_KINDS = (
    "missing_geometry",
    "mixed_orientation",
    "duplicate_positions",
    "gap",
    "irregular_spacing",
    "single_slice",
    "mixed_shape",
    "mixed_pixel_spacing",
    "invalid_pixel_spacing",
)


def series_geometry(
    positions: list, orientations: list, shapes: list, pixel_spacings: list
) -> dict:
    """``slice_geometry`` plus the checks a stack needs: more than one slice, one size, one valid
    Pixel Spacing.

    The series table (metadata_extractor) and ``--volumes`` (image_preprocessor)
    both judge a series with this, so ``volume_ok`` and what gets stacked agree.
    """
    geometry = slice_geometry(positions, orientations)
    problems = geometry["problems"]
    if len(positions) < 2:
        problems.append(("single_slice", "a single slice is not a volume"))
    if len(set(shapes)) > 1:
        problems.append(
            ("mixed_shape", f"slices have different sizes: {sorted(map(str, set(shapes)))}")
        )
    spacings = {tuple(s) if isinstance(s, list) else None for s in pixel_spacings}
    if len(spacings) > 1:
        problems.append(("mixed_pixel_spacing", "slices have different Pixel Spacing"))
    elif not _numbers(list(next(iter(spacings)) or ()), 2) or not all(
        0 < v < 1e6 for v in next(iter(spacings))
    ):
        problems.append(
            ("invalid_pixel_spacing", "slices have no valid Pixel Spacing (two positive numbers)")
        )
    return geometry


def _numbers(value, count: int) -> bool:
    """A list of ``count`` finite numbers."""
    return (
        isinstance(value, list)
        and len(value) == count
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
            for v in value
        )
    )


def volume_affine(first_position, orientation, pixel_spacing, slice_step: float, normal) -> list:
    """4x4 matrix from voxel index (column i, row j, slice k) to patient coordinates (LPS, mm)."""
    row_direction = np.asarray(orientation[:3], dtype=float)  # direction of increasing column index
    column_direction = np.asarray(
        orientation[3:6], dtype=float
    )  # direction of increasing row index
    affine = np.eye(4)
    affine[:3, 0] = row_direction * float(pixel_spacing[1])
    affine[:3, 1] = column_direction * float(pixel_spacing[0])
    affine[:3, 2] = np.asarray(normal, dtype=float) * slice_step
    affine[:3, 3] = np.asarray(first_position, dtype=float)
    return affine.tolist()
