"""DICOM and PNG metadata -> tables (JSON lines, CSV, Parquet), de-identified by the standard by
default.

Outputs, under ``experiments/results/metadata_extractor_<stamp>/``:

* ``metadata.jsonl`` / ``.csv`` / ``.parquet``: one row per file under the given folders
  (default: the sample dataset). Every row: ``path`` (workspace-relative,
  or ``@<root>/<path>`` for a folder outside the workspace, a data root:
  see scripts/utils/records/data_roots.py; ``--data-name`` names it), ``kind``
  (dicom, png, or null), ``error`` (null, or why the file could not be
  read), ``warnings``. DICOM rows have the columns researchers filter and
  group on (``--list-columns`` prints them with their DICOM keywords):
  identifiers, dates and times, descriptions, body part, equipment,
  series/instance/acquisition numbers, geometry (pixel spacing, slice
  thickness, spacing between slices, Image Position/Orientation), rescale
  and window, CT exposure (KVP, mAs, kernel), MR timing (echo, repetition,
  inversion time, flip angle, field strength), contrast agent, patient
  sex/age/weight/size, pixel format, transfer syntax, the number of private
  tags. Enhanced (multi-frame) objects are read through their shared and
  per-frame functional groups: a value that differs between frames is a
  list with one entry per frame, and ``varying_per_frame`` names those
  columns. PNG rows: width, height, mode, bit depth, color type, and every
  text chunk (tEXt, zTXt, iTXt) wherever it sits. ``--columns a,b,c``
  keeps only those columns (``path`` always comes first).
* ``series.jsonl`` / ``.csv`` / ``.parquet``: one row per DICOM series: files, slices, shape,
  pixel spacing, orientation, the slice spacing measured from the positions, and consistency
  flags (mixed orientation or shape, duplicate positions, gaps, irregular spacing, missing
  geometry, one slice, no valid pixel spacing); ``volume_ok`` says whether the series stacks into
  one regular volume (``image_preprocessor.py --volumes``).
* The Parquet tables (for pandas, polars, DuckDB) hold the same rows with typed columns
  (scripts/utils/formats/parquet.py), byte-identical from run to run.
* Rows go to the tables as they come, in input order, and are not kept (``TableStream``): the
  JSON lines and CSV are written as a stream, the Parquet table is read back from the JSON lines
  in blocks of 16,384 rows (a row group each), and the series table is built from a few fields
  per DICOM file (its geometry and identifiers). Memory follows the files being read, not the
  table, on one machine or as a cluster's client.
* ``tags.jsonl`` with ``--all-tags``: every public attribute of each DICOM
  file, flattened: ``Keyword`` at the top level, ``Sequence[i].Keyword``
  inside sequences (``(gggg,eeee)`` for attributes without a keyword);
  binary values are shown as ``<OB 1234 bytes>``.

De-identification (default): DICOM PS3.15 Annex E, Basic Application
Level Confidentiality Profile, applied from the standard's own Table E.1-1
(shipped as data; see scripts/utils/formats/deidentify.py) to every value written,
inside sequences too: attributes are removed, emptied, given dummies or new
UIDs, or cleaned, as the table says; private tags are dropped (only
counted). Patient ID becomes a keyed pseudonym ``anon-<16 hex>`` =
HMAC-SHA256(key, id), stable within a dataset so that patient-level splits
still work; UIDs become keyed ``2.25.`` UIDs. The table's options are flags
(``--retain-modified-dates``, ``--clean-descriptors``,
``--retain-patient-characteristics``, ``--retain-device-identity``, ...);
their codes (CID 7050) go into the report. Warnings and errors are scrubbed
of the file's identifying values. PNG text chunks are free text, so they are
removed (only counted, ``text_chunks_removed``). Paths are kept, since they
are how rows find their files: a row whose path holds the Patient ID is
flagged ``phi_in_path`` and the run warns. The key comes from
``--deid-key-file`` or ``$CRH_DEID_KEY``; without one it is derived from the
seeds, which is fine for the sample data but not for real patients (anyone
with the seeds file could re-identify), and a warning says so.
``--keep-phi`` writes every value as it is.

A file that cannot be read (truncated, not DICOM, not PNG) becomes a row
with ``error`` set, and the report lists it under ``skipped`` with the
reason, beside what is not a regular file at all (symbolic links, FIFOs,
sockets, devices: never opened); the run still exits 0 unless ``--strict``
(then 2).

Usage:
    python scripts/data_tools/metadata_extractor.py
    python scripts/data_tools/metadata_extractor.py /data/ct --workers 2 --strict
    python scripts/data_tools/metadata_extractor.py /data/mr --retain-modified-dates \\
        --clean-descriptors --all-tags
    python scripts/data_tools/metadata_extractor.py /mnt/archive --scheduler tls://head-node:8786
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import logging
import os
import sys
import threading
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

import orjson

from scripts.utils import cli
from scripts.utils.compute import cluster
from scripts.utils.config.seeds import SeedManager
from scripts.utils.errors import InputError
from scripts.utils.formats.deidentify import OPTIONS, Deidentifier, FileContext, scrub_quoted
from scripts.utils.formats.dicom_header import (
    PROBLEM_KINDS,
    collapse,
    dictionary_vr,
    frame_count,
    frame_values,
    get_plain,
    plain,
    read_dataset,
    series_geometry,
    tag_of,
)
from scripts.utils.formats.parquet import jsonl_parquet, parquet_bytes
from scripts.utils.formats.png import png_row
from scripts.utils.json_logger import progress
from scripts.utils.jsonio import joined
from scripts.utils.limits import PNG_SIGNATURE, read_input_bytes
from scripts.utils.records.data_roots import collect_inputs
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import resolve_workspace

DEFAULT_INPUT = "data/sample"
KEY_ENV = "CRH_DEID_KEY"
MAX_TAGS_PER_FILE = (
    200_000  # --all-tags: entries kept per file (huge per-frame sequences are cut, with a warning)
)
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}

# Column -> DICOM keywords, tried in order (the second is where enhanced objects keep it).
DICOM_COLUMNS = {
    "patient_id": ("PatientID",),
    "patient_name": ("PatientName",),
    "patient_birth_date": ("PatientBirthDate",),
    "patient_sex": ("PatientSex",),
    "patient_age": ("PatientAge",),
    "patient_weight": ("PatientWeight",),
    "patient_size": ("PatientSize",),
    "study_uid": ("StudyInstanceUID",),
    "series_uid": ("SeriesInstanceUID",),
    "sop_uid": ("SOPInstanceUID",),
    "frame_of_reference_uid": ("FrameOfReferenceUID",),
    "sop_class_uid": ("SOPClassUID",),
    "modality": ("Modality",),
    "accession_number": ("AccessionNumber",),
    "study_date": ("StudyDate",),
    "study_time": ("StudyTime",),
    "series_date": ("SeriesDate",),
    "series_time": ("SeriesTime",),
    "acquisition_date": ("AcquisitionDate",),
    "acquisition_time": ("AcquisitionTime",),
    "acquisition_datetime": ("AcquisitionDateTime",),
    "study_description": ("StudyDescription",),
    "series_description": ("SeriesDescription",),
    "protocol_name": ("ProtocolName",),
    "body_part_examined": ("BodyPartExamined",),
    "manufacturer": ("Manufacturer",),
    "manufacturer_model_name": ("ManufacturerModelName",),
    "institution_name": ("InstitutionName",),
    "station_name": ("StationName",),
    "device_serial_number": ("DeviceSerialNumber",),
    "software_versions": ("SoftwareVersions",),
    "series_number": ("SeriesNumber",),
    "instance_number": ("InstanceNumber",),
    "acquisition_number": ("AcquisitionNumber",),
    "rows": ("Rows",),
    "columns": ("Columns",),
    "pixel_spacing": ("PixelSpacing",),
    "slice_thickness": ("SliceThickness",),
    "spacing_between_slices": ("SpacingBetweenSlices",),
    "image_position_patient": ("ImagePositionPatient",),
    "image_orientation_patient": ("ImageOrientationPatient",),
    "slice_location": ("SliceLocation",),
    "rescale_slope": ("RescaleSlope",),
    "rescale_intercept": ("RescaleIntercept",),
    "rescale_type": ("RescaleType",),
    "window_center": ("WindowCenter",),
    "window_width": ("WindowWidth",),
    "voi_lut_function": ("VOILUTFunction",),
    "kvp": ("KVP",),
    "exposure_mas": ("Exposure", "ExposureInmAs"),
    "xray_tube_current_ma": ("XRayTubeCurrent", "XRayTubeCurrentInmA"),
    "exposure_time_ms": ("ExposureTime", "ExposureTimeInms"),
    "convolution_kernel": ("ConvolutionKernel",),
    "echo_time": ("EchoTime", "EffectiveEchoTime"),
    "repetition_time": ("RepetitionTime",),
    "inversion_time": ("InversionTime", "InversionTimes"),
    "flip_angle": ("FlipAngle",),
    "magnetic_field_strength": ("MagneticFieldStrength",),
    "mr_acquisition_type": ("MRAcquisitionType",),
    "contrast_bolus_agent": ("ContrastBolusAgent",),
    "photometric_interpretation": ("PhotometricInterpretation",),
    "samples_per_pixel": ("SamplesPerPixel",),
    "bits_allocated": ("BitsAllocated",),
    "bits_stored": ("BitsStored",),
    "pixel_representation": ("PixelRepresentation",),
}
COLUMNS = (
    ("path", "kind", "error", "warnings", "deidentified")
    + tuple(DICOM_COLUMNS)
    + (
        "frames",
        "varying_per_frame",
        "transfer_syntax",
        "private_tags",
        "phi_in_path",
        "width",
        "height",
        "mode",
        "bit_depth",
        "color_type",
        "text_chunks",
        "text_chunks_removed",
    )
)
SERIES_COLUMNS = (
    "study_uid",
    "series_uid",
    "patient_id",
    "modality",
    "series_description",
    "first_path",
    "files",
    "slices",
    "rows",
    "columns",
    "pixel_spacing",
    "image_orientation_patient",
    "slice_spacing",
    "slice_thickness",
    "volume_ok",
    "flags",
    "problems",
)


class Settings(NamedTuple):
    """How rows are made: ``key`` None keeps PHI; ``options`` are Table E.1-1 option names."""

    key: bytes | None = None
    options: tuple = ()
    all_tags: bool = False


@functools.lru_cache(maxsize=8)
def deidentifier(key: bytes, options: tuple) -> Deidentifier:
    return Deidentifier(key, options)


def deidentification_key(key_file, seeds: SeedManager, log):
    """``(key bytes, source)``: --deid-key-file, else $CRH_DEID_KEY, else from the seeds."""
    if key_file:
        key = read_input_bytes(key_file, 1 << 20, "de-identification key file").strip()
        if len(key) < 16:
            raise InputError("the de-identification key must have at least 16 bytes", file=key_file)
        return key, "key file"
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode("utf-8"), f"${KEY_ENV}"
    if log is not None:
        log.warning(
            "deid_key_from_seeds",
            note=f"pseudonyms are keyed by the seeds file; for real patient data "
            f"set ${KEY_ENV} or --deid-key-file, or anyone with the seeds can re-identify",
        )
    return seeds.seed("deidentification").to_bytes(8, "big") * 4, "seeds (not secret)"


# --------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------


def _column_values(ds, keywords, frames: int, enhanced: bool):
    """``(value, varies)`` of one column: per frame for enhanced objects, else the top-level
    value."""
    for keyword in keywords:
        if enhanced:
            value, varies = collapse(frame_values(ds, keyword, frames))
        else:
            value, varies = get_plain(ds, keyword), False
        if value is not None:
            return keyword, value, varies
    return keywords[0], None, False


def dicom_row(path: Path, settings: Settings, relative: str = "") -> dict:
    """The table row of one DICOM file, de-identified unless ``settings.key`` is None.

    ``phi_in_path`` flags a row whose path contains the Patient ID: the path
    is kept (it is how rows find their files), so such a layout leaks it.
    Also returns, under ``_slices`` (not a column), each frame's position and
    orientation for the series table, and under ``_tags`` the ``--all-tags``
    export.
    """

    ds = read_dataset(path, stop_before_pixels=True)
    meta = getattr(ds, "file_meta", None)
    frames = frame_count(ds) if "NumberOfFrames" in ds else (1 if "Rows" in ds else None)
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    deid = None if settings.key is None else deidentifier(settings.key, settings.options)
    context = None if deid is None else FileContext(ds, deid)
    row, varying = {}, []
    for column, keywords in DICOM_COLUMNS.items():
        keyword, value, varies = _column_values(ds, keywords, frames or 1, enhanced)
        if deid is not None and value is not None:
            tag = tag_of(keyword)
            _, value = deid.value(tag, dictionary_vr(tag), value, context)
        row[column] = value
        if varies and value is not None:
            varying.append(column)
    row.update(
        frames=frames,
        varying_per_frame=varying,
        transfer_syntax=get_plain(meta, "TransferSyntaxUID") if meta is not None else None,
        private_tags=sum(
            1 for tag in ds.keys() if tag.is_private
        ),  # top level; keys() decodes no values
    )
    if enhanced:
        positions = frame_values(ds, "ImagePositionPatient", frames or 1)
        orientations = frame_values(ds, "ImageOrientationPatient", frames or 1)
    else:
        positions, orientations = (
            [get_plain(ds, "ImagePositionPatient")],
            [get_plain(ds, "ImageOrientationPatient")],
        )
    row["_slices"] = {
        "positions": positions,
        "orientations": orientations,
        "pixel_spacing": frame_values(ds, "PixelSpacing", 1)[0]
        if enhanced
        else get_plain(ds, "PixelSpacing"),
    }
    if deid is None:
        row["deidentified"] = False
    else:
        original = str(ds.get("PatientID", "") or "")
        row["phi_in_path"] = len(original) >= 3 and original in relative
        if row["phi_in_path"]:
            warnings.warn(
                "the file's path contains its Patient ID: the path column is not de-identified"
            )
        row["deidentified"] = True
        row["_context"] = context
    if settings.all_tags:
        row["_tags"] = all_tags(ds, deid, context)
    return row


def all_tags(ds, deid: Deidentifier | None, context) -> dict:
    """Every public attribute, flattened (``Seq[i].Keyword``), de-identified when ``deid`` is
    given."""
    from pydicom.dataelem import RawDataElement

    out = {}
    stack = [("", ds)]
    while stack:
        prefix, dataset = stack.pop()
        nested = []
        for tag in dataset.keys():
            if tag.is_private or tag.element == 0:  # private tags never; group lengths say nothing
                continue
            if len(out) >= MAX_TAGS_PER_FILE:
                warnings.warn(
                    f"--all-tags: more than {MAX_TAGS_PER_FILE} attributes; the rest are left out"
                )
                return dict(sorted(out.items()))
            raw = dataset.get_item(tag, keep_deferred=True)
            name = prefix + (_keyword(tag) or f"({tag.group:04X},{tag.element:04X})")
            if (
                isinstance(raw, RawDataElement)
                and raw.value is None
                and raw.length not in (0, 0xFFFFFFFF)
            ):
                if deid is None or deid.action(int(tag)) != "X":
                    out[name] = f"<{raw.VR or 'UN'} {raw.length} bytes, not read>"
                continue
            try:
                element = dataset[tag]
            except Exception as exc:
                warnings.warn(f"{name}: unreadable value ({type(exc).__name__})")
                continue
            action = "K" if deid is None else deid.action(int(tag))
            if element.VR == "SQ":
                if action in "XZDU":
                    continue
                nested.extend(
                    (f"{name}[{index}].", item) for index, item in enumerate(element.value or [])
                )
                continue
            if element.VR in BINARY_VRS:
                if action != "X":
                    out[name] = f"<{element.VR} {len(element.value or b'')} bytes>"
                continue
            try:
                value = plain(element.value)  # PersonName and other value classes become str
            except Exception as exc:
                warnings.warn(f"{name}: unreadable value ({type(exc).__name__})")
                continue
            if deid is not None:
                keep, value = deid.value(int(tag), element.VR, value, context)
                if not keep:
                    continue
            out[name] = value
        stack.extend(reversed(nested))
    return dict(sorted(out.items()))


def _keyword(tag) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag)


def extract_row(path: Path, relative: str, settings: Settings | None = None) -> dict:
    """One file -> one row; never raises (errors become the row's ``error``).

    Warnings are collected per row; pydicom's own log (which repeats them)
    is silenced meanwhile, so that no value reaches the run's log unscrubbed.
    """
    settings = settings or Settings()
    row = {"path": relative, "kind": None, "error": None, "warnings": []}
    with warnings.catch_warnings(record=True) as caught, quiet_pydicom_log():
        warnings.simplefilter("always")
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
            if head == PNG_SIGNATURE:
                row["kind"] = "png"
                with open(path, "rb") as handle:
                    row.update(png_row(handle))
                if settings.key is not None:
                    row["text_chunks_removed"] = len(row["text_chunks"])
                    row["text_chunks"] = []
                    row["deidentified"] = True
                else:
                    row["deidentified"] = False
            else:
                row["kind"] = "dicom"
                row.update(dicom_row(path, settings, relative))
        except Exception as exc:  # a bad file is a row, not a crash
            row["kind"] = row["kind"] if row["kind"] == "png" else None
            row["error"] = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
        context = row.pop("_context", None)
        if settings.key is not None:  # library messages may quote values: scrub them
            clean = (
                (lambda text: scrub_quoted(context.scrub(text)))
                if context is not None
                else scrub_quoted
            )
            if row["error"]:
                row["error"] = clean(row["error"])
            messages = {clean(str(w.message)) for w in caught}
        else:
            messages = {str(w.message) for w in caught}
    row["warnings"] = sorted(messages)
    return row


class _QuietFilter(logging.Filter):
    """Drops pydicom's log records in a thread that is inside ``quiet_pydicom_log``."""

    state = threading.local()

    def filter(self, record) -> bool:
        return not getattr(self.state, "quiet", False)


_QUIET_FILTER = _QuietFilter()


@contextlib.contextmanager
def quiet_pydicom_log():
    logger = logging.getLogger("pydicom")
    if _QUIET_FILTER not in logger.filters:
        logger.addFilter(_QUIET_FILTER)
    _QUIET_FILTER.state.quiet = True
    try:
        yield
    finally:
        _QUIET_FILTER.state.quiet = False


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def iter_rows(
    files, settings: Settings | None = None, workers: int = 1, executor: Executor | None = None
):
    """Rows for ``files`` (``(path, name)`` pairs), yielded one at a time in the given order.

    The work runs on ``executor`` when given (any ``concurrent.futures``
    executor, a Dask cluster's included), in batches of files, one task each
    (utils/compute/cluster.py); else on a process pool of ``workers``, else inline.
    Results come in input order, so the table does not depend on the choice.
    """
    settings = settings or Settings()
    own_pool = executor is None and workers > 1 and len(files) > 1
    pool = ProcessPoolExecutor(max_workers=workers) if own_pool else executor
    try:
        with progress(total=len(files), desc="metadata", unit="file") as bar:
            if pool is None:
                results = (extract_row(path, name, settings) for path, name in files)
            else:
                parallelism = workers if own_pool else cluster.worker_count(pool)
                items = [(str(path), name) for path, name in files]
                results = cluster.map_batches(
                    pool, extract_batch, cluster.batches(items, parallelism), settings
                )
            for row in results:
                yield row
                bar.update(1)
    finally:
        if own_pool:
            pool.shutdown()


def extract_rows(
    files, settings: Settings | None = None, workers: int = 1, executor: Executor | None = None
) -> list:
    """``iter_rows`` as a list (a table small enough to hold)."""
    return list(iter_rows(files, settings, workers, executor))


def extract_batch(items: list, settings: Settings) -> list:
    """One task: the rows of ``(path, name)`` items, in order."""
    return [extract_row(Path(path), name, settings) for path, name in items]


def series_rows(rows) -> list:
    """One row per DICOM series (by Study and Series Instance UID), with its consistency flags."""
    groups = {}
    for row in rows:
        if row["kind"] == "dicom" and not row["error"] and row.get("_slices"):
            groups.setdefault((row.get("study_uid"), row.get("series_uid")), []).append(row)
    table = []
    for (study, series), members in groups.items():
        positions, orientations, spacings, shapes = [], [], [], []
        for member in members:
            geometry = member["_slices"]
            positions += geometry["positions"]
            orientations += geometry["orientations"]
            spacings.append(geometry["pixel_spacing"])
            shapes.append((member.get("rows"), member.get("columns")))
        geometry = series_geometry(positions, orientations, shapes, spacings)
        problems = [message for _, message in geometry["problems"]]
        flags = {kind: False for kind in PROBLEM_KINDS}
        for kind, _ in geometry["problems"]:
            flags[kind] = True
        first = members[0]
        table.append(
            {
                "study_uid": study,
                "series_uid": series,
                "patient_id": first.get("patient_id"),
                "modality": first.get("modality"),
                "series_description": first.get("series_description"),
                "first_path": first["path"],
                "files": len(members),
                "slices": len(positions),
                "rows": None if flags["mixed_shape"] else first.get("rows"),
                "columns": None if flags["mixed_shape"] else first.get("columns"),
                "pixel_spacing": None
                if flags["mixed_pixel_spacing"]
                else first["_slices"]["pixel_spacing"],
                "image_orientation_patient": None
                if flags["mixed_orientation"]
                else orientations[0],
                "slice_spacing": geometry["spacing"],
                "slice_thickness": first.get("slice_thickness"),
                "volume_ok": not any(flags.values()),
                "flags": flags,
                "problems": problems,
            }
        )
    return sorted(table, key=lambda item: item["first_path"])


SERIES_FIELDS = (
    "kind",
    "error",
    "_slices",
    "study_uid",
    "series_uid",
    "patient_id",
    "modality",
    "series_description",
    "path",
    "rows",
    "columns",
    "slice_thickness",
)


class TableStream:
    """The tables of a run, written a row at a time as the rows come (rows are never all held):
    ``metadata.jsonl`` and ``.csv`` (and ``tags.jsonl``) under ``folder``; what the run reports
    and the series table need is kept, a few fields per DICOM file. ``finish`` writes the
    Parquet table from the JSON lines and the series tables."""

    def __init__(self, folder: Path, columns, all_tags: bool):
        self.folder, self.columns = Path(folder), columns
        self.jsonl = open(self.folder / "metadata.jsonl", "wb")
        self.csv_text = open(self.folder / "metadata.csv", "w", encoding="utf-8", newline="")
        self.csv = csv.writer(self.csv_text, lineterminator="\n")
        self.csv.writerow(columns)
        self.tags = open(self.folder / "tags.jsonl", "wb") if all_tags else None
        self.files = 0
        self.kinds: dict = {}
        self.failed: list = []  # {"file", "reason"} of rows that could not be read
        self.leaking = 0  # rows whose path holds a Patient ID
        self.first_leaking = None
        self.text_chunks_removed = 0
        self.slices: list = []  # SERIES_FIELDS of each DICOM row with geometry

    def add(self, row: dict) -> None:
        self.files += 1
        kind = row["kind"] or "unreadable"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if row["error"]:
            self.failed.append({"file": row["path"], "reason": row["error"]})
        if row.get("phi_in_path"):
            self.leaking += 1
            self.first_leaking = self.first_leaking or row["path"]
        self.text_chunks_removed += row.get("text_chunks_removed") or 0
        if row["kind"] == "dicom" and not row["error"] and row.get("_slices"):
            self.slices.append({field: row.get(field) for field in SERIES_FIELDS})
        self.jsonl.write(table_jsonl([row], self.columns))
        self.csv.writerow(csv_cells(row, self.columns))
        if self.tags is not None:
            self.tags.write(tags_jsonl([row]))

    def close(self) -> None:
        for handle in (self.jsonl, self.csv_text, self.tags):
            if handle is not None:
                handle.close()

    def finish(self) -> list:
        """Close the streams, write ``metadata.parquet`` and the series tables; the series."""
        self.close()
        jsonl_parquet(
            self.folder / "metadata.jsonl", self.columns, self.folder / "metadata.parquet"
        )
        series = series_rows(self.slices)
        (self.folder / "series.jsonl").write_bytes(table_jsonl(series, SERIES_COLUMNS))
        (self.folder / "series.csv").write_bytes(table_csv(series, SERIES_COLUMNS))
        (self.folder / "series.parquet").write_bytes(parquet_bytes(series, SERIES_COLUMNS))
        return series


def table_jsonl(rows, columns=COLUMNS) -> bytes:
    return joined(
        orjson.dumps(
            {column: row.get(column) for column in columns}, option=orjson.OPT_APPEND_NEWLINE
        )
        for row in rows
    )


def tags_jsonl(rows) -> bytes:
    return joined(
        orjson.dumps(
            {"path": row["path"], "tags": row.get("_tags")}, option=orjson.OPT_APPEND_NEWLINE
        )
        for row in rows
        if row["kind"] == "dicom"
    )


def parse_columns(text) -> tuple:
    if text is None:
        return COLUMNS
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in COLUMNS]
    if unknown or not chosen:
        raise InputError(
            f"unknown columns: {unknown} (--list-columns shows them)"
            if unknown
            else "--columns is empty",
            value=text,
        )
    return ("path",) + tuple(dict.fromkeys(name for name in chosen if name != "path"))


def csv_cells(row: dict, columns) -> list:
    """One row's CSV cells: null is empty, lists, objects and booleans are JSON."""
    cells = []
    for column in columns:
        value = row.get(column)
        if value is None:
            cells.append("")
        elif isinstance(value, (list, dict, bool)):
            cells.append(orjson.dumps(value).decode())
        else:
            cells.append(value)
    return cells


def table_csv(rows, columns=COLUMNS) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(csv_cells(row, columns))
    return text.getvalue().encode("utf-8")


def list_columns() -> list:
    """Every column with where its value comes from."""
    listing = []
    for column in COLUMNS:
        source = DICOM_COLUMNS.get(column)
        listing.append({"column": column, "dicom_keywords": list(source) if source else None})
    return listing


def extract_table(args, log) -> int:
    from scripts.data_tools import metadata_extractor as lib  # importable, for the worker processes

    if args.list_columns:
        cli.print_json(lib.list_columns())
        return 0
    columns = lib.parse_columns(args.columns)
    options = tuple(name for name in OPTIONS if getattr(args, f"option_{name}"))
    if args.keep_phi and options:
        raise InputError("de-identification options make no sense with --keep-phi")
    if "retain_full_dates" in options and "retain_modified_dates" in options:
        raise InputError("--retain-full-dates and --retain-modified-dates exclude each other")
    workspace = resolve_workspace(args.workspace)
    seeds = SeedManager.from_file(args.seeds)
    inputs = collect_inputs(
        workspace, args.inputs or [workspace / DEFAULT_INPUT], args.data_name, log
    )
    files = [(Path(path), name) for name, path, _ in inputs.files]
    key, key_source = (
        (None, None) if args.keep_phi else lib.deidentification_key(args.deid_key_file, seeds, log)
    )
    config = {
        "keep_phi": args.keep_phi,
        "inputs": inputs.given,
        "columns": None if args.columns is None else list(columns),
        "all_tags": args.all_tags,
        "deidentification_options": list(options),
    }
    with (
        cluster.cluster_executor(
            cluster.scheduler_address(args.scheduler), log, carries_secret=key is not None
        ) as executor,
        RunRecorder(
            "metadata_extractor",
            argv=args.argv,
            workspace=workspace,
            seeds=seeds,
            log=log,
            config=config,
        ) as record,
    ):
        record.data_roots = inputs.root_records()
        for name in inputs.workspace_inputs():
            record.consume(workspace / name)
        stream = lib.TableStream(
            record.output_path("metadata.jsonl").parent, columns, args.all_tags
        )
        try:  # the rows go to the tables as they come; a failed run leaves no table behind
            for row in lib.iter_rows(
                files, Settings(key, options, args.all_tags), args.workers, executor
            ):
                stream.add(row)
        finally:
            stream.close()
        skipped = sorted(inputs.skipped + stream.failed, key=lambda item: item["file"])
        if stream.leaking:
            log.warning(
                "phi_in_paths",
                files=stream.leaking,
                first=stream.first_leaking,
                note="these paths contain Patient IDs; rename the folders before sharing the table",
            )
        for item in skipped[:20]:
            log.warning("skipped_file", **item)
        if skipped and args.strict:
            raise InputError(
                f"{len(skipped)} of {stream.files + len(inputs.skipped)} files could not be read "
                f"(--strict)",
                file=skipped[0]["file"],
                reason=skipped[0]["reason"],
            )
        series = stream.finish()
        deid = None
        if key is not None:
            deid = dict(
                lib.deidentifier(key, options).report(),
                key_source=key_source,
                applies_to="every value written: table, series table, --all-tags, warnings and "
                "errors",
                png_text_chunks=f"removed ({stream.text_chunks_removed} chunks): free text",
                paths="kept (see phi_in_path)",
            )
        record.results.update(
            files=stream.files,
            errors=len(stream.failed),
            kinds=dict(sorted(stream.kinds.items())),
            series=len(series),
            series_not_volumes=sum(not s["volume_ok"] for s in series),
            paths_with_patient_ids=stream.leaking,
            skipped=skipped,
            deidentification=deid or "none: --keep-phi",
            table=f"{record.folder}/metadata.jsonl",
        )
    log.info(
        "extracted",
        files=stream.files,
        errors=len(stream.failed),
        skipped=len(skipped),
        series=len(series),
        table=f"{record.folder}/metadata.jsonl",
    )
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "metadata_extractor",
        doc=__doc__,
        description="Extract DICOM and PNG metadata into tables (JSON lines + CSV), de-identified "
        "by default (DICOM PS3.15 Annex E).",
        example="python scripts/data_tools/metadata_extractor.py data/sample --workers 2 "
        "--retain-modified-dates",
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="PATH",
        help=f"files or folders (default: <workspace>/{DEFAULT_INPUT})",
    )
    parser.add_argument(
        "--columns",
        metavar="A,B,...",
        help="keep only these columns of metadata.jsonl/.csv (default: all)",
    )
    parser.add_argument(
        "--list-columns",
        action="store_true",
        help="print the columns and their DICOM keywords, then exit",
    )
    parser.add_argument(
        "--all-tags",
        action="store_true",
        help="also write tags.jsonl: every public attribute, flattened",
    )
    parser.add_argument(
        "--keep-phi", action="store_true", help="write every value as it is (no de-identification)"
    )
    parser.add_argument(
        "--deid-key-file",
        metavar="FILE",
        help=f"secret key for pseudonyms (default: ${KEY_ENV}, else the seeds)",
    )
    for name, (code, meaning) in OPTIONS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"option_{name}",
            action="store_true",
            help=f"de-identification option: {meaning} ({code})",
        )
    parser.add_argument(
        "--strict", action="store_true", help="exit 2 if any file cannot be read or is skipped"
    )
    cli.add_data_name_option(parser)
    cli.add_workers_option(parser, "processes")
    cli.add_scheduler_option(parser)
    cli.add_seeds_option(parser)
    cli.add_common_options(parser)
    return cli.run(parser, extract_table, argv)


if __name__ == "__main__":
    sys.exit(main())
