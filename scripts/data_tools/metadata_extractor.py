"""DICOM and PNG metadata -> one table (JSON lines and CSV), PHI removed by default.

One row per file under the given folders (default: the sample dataset):

* every row: ``path`` (workspace-relative, or ``@<root>/<path>`` for a
  folder outside the workspace, a data root: see scripts/utils/data_roots.py;
  ``--data-name`` names it), ``kind`` (dicom, png, or null),
  ``error`` (null, or why the file could not be read), ``warnings``;
* DICOM: patient, study, series and SOP identifiers, modality, rows,
  columns, frames, pixel spacing, rescale slope/intercept/type, window
  center/width, photometric interpretation, bits allocated/stored, pixel
  representation, transfer syntax, and the number of (top-level) private tags;
* PNG: width, height, mode, bit depth, color type, and every text chunk
  (tEXt, zTXt, iTXt) wherever it sits, before or after the image data.

De-identification (default), after the DICOM PS3.15 Annex E Basic
Application Level Confidentiality Profile, for the columns this table has:
Patient's Name and Birth Date are emptied (action Z); Patient ID becomes a
keyed pseudonym ``anon-<16 hex>`` = HMAC-SHA256(key, id), stable within a
dataset so that patient-level splits still work; Study, Series, SOP and
Frame of Reference UIDs are replaced consistently (action U) by ``2.25.``
UIDs derived the same way; private tags are dropped (only counted). Paths are kept, since they are how
rows find their files: a row whose path holds the Patient ID is flagged
``phi_in_path`` and the run warns. The key
comes from ``--deid-key-file`` or ``$CRH_DEID_KEY``; without one it is
derived from the seeds, which is fine for the sample data but not for real
patients (anyone with the seeds file could re-identify), and a warning says
so. ``--keep-phi`` keeps the original values and adds name and birth date.

A file that cannot be read (truncated, not DICOM, not PNG) becomes a row
with ``error`` set, and the report lists it under ``skipped`` with the
reason, beside what is not a regular file at all (symbolic links, FIFOs,
sockets, devices: never opened); the run still exits 0 unless ``--strict``
(then 2).

Usage:
    python scripts/data_tools/metadata_extractor.py
    python scripts/data_tools/metadata_extractor.py /data/ct --workers 2 --strict
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import os
import struct
import sys
import warnings
import zlib
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import orjson

from scripts.utils import cli
from scripts.utils.errors import InputError
from scripts.utils.jsonio import atomic_output, joined
from scripts.utils.limits import read_input_bytes
from scripts.utils.log_formatter import progress
from scripts.utils.data_roots import collect_inputs
from scripts.utils.run_records import RunRecorder, resolve_workspace
from scripts.utils.seed_manager import SeedManager

DEFAULT_INPUT = "data/sample"
KEY_ENV = "CRH_DEID_KEY"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_BYTES = 1 << 20  # a zTXt/iTXt chunk may not inflate beyond this (zip bombs)
MAX_CHUNK_BYTES = 16 << 20  # a header or text chunk held in memory
DEFER_BYTES = 1 << 20  # DICOM values larger than this are read only when asked for (never, for most)
PNG_CHUNKS_READ = (b"IHDR", b"tEXt", b"zTXt", b"iTXt")
PNG_COLOR_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}

# PS3.15 Annex E actions for the attributes this table can show.
ANNEX_E_ACTIONS = {
    "PatientName (0010,0010)": "Z: emptied",
    "PatientID (0010,0020)": "Z: replaced by a keyed pseudonym",
    "PatientBirthDate (0010,0030)": "Z: emptied",
    "StudyInstanceUID (0020,000D)": "U: replaced by a consistent UID",
    "SeriesInstanceUID (0020,000E)": "U: replaced by a consistent UID",
    "SOPInstanceUID (0008,0018)": "U: replaced by a consistent UID",
    "FrameOfReferenceUID (0020,0052)": "U: replaced by a consistent UID",
    "private tags": "X: removed (counted only)",
}
COLUMNS = (
    "path", "kind", "error", "warnings", "deidentified",
    "patient_id", "patient_name", "patient_birth_date", "study_uid", "series_uid", "sop_uid",
    "frame_of_reference_uid", "sop_class_uid", "modality", "rows", "columns", "frames",
    "pixel_spacing", "rescale_slope", "rescale_intercept", "rescale_type", "window_center", "window_width",
    "photometric_interpretation", "samples_per_pixel", "bits_allocated", "bits_stored", "pixel_representation",
    "transfer_syntax", "private_tags", "phi_in_path",
    "width", "height", "mode", "bit_depth", "color_type", "text_chunks",
)


# --------------------------------------------------------------------------
# De-identification
# --------------------------------------------------------------------------

class Pseudonymizer:
    """Keyed, stable replacements for identifiers (HMAC-SHA256)."""

    def __init__(self, key: bytes):
        self.key = key

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self.key, f"{kind}\x00{value}".encode("utf-8"), hashlib.sha256).digest()

    def patient_id(self, value):
        return None if value in (None, "") else "anon-" + self._digest("patient", value).hex()[:16]

    def uid(self, value):
        # 2.25.<integer> (PS3.5 B.2): 120 bits keep the UID within 64 characters.
        return None if value in (None, "") else "2.25." + str(int.from_bytes(self._digest("uid", value)[:15], "big"))

    def fingerprint(self) -> str:
        """Identifies the key in reports without revealing it."""
        return hashlib.sha256(b"crh-deid-key\x00" + self.key).hexdigest()[:16]


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
        log.warning("deid_key_from_seeds", note=f"pseudonyms are keyed by the seeds file; for real patient data "
                    f"set ${KEY_ENV} or --deid-key-file, or anyone with the seeds can re-identify")
    return seeds.seed("deidentification").to_bytes(8, "big") * 4, "seeds (not secret)"


# --------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------

def _png_text(kind: bytes, data: bytes) -> dict:
    keyword, _, rest = data.partition(b"\x00")
    entry = {"type": kind.decode(), "keyword": keyword.decode("latin-1")}
    if kind == b"tEXt":
        entry["text"] = rest.decode("latin-1")
    elif kind == b"zTXt":
        entry["text"] = _inflate(rest[1:]).decode("latin-1")
    else:  # iTXt: flag, method, language\0, translated keyword\0, text (UTF-8)
        compressed = rest[:1] == b"\x01"
        language, _, rest = rest[2:].partition(b"\x00")
        translated, _, text = rest.partition(b"\x00")
        entry["language"] = language.decode("ascii", "replace")
        entry["translated_keyword"] = translated.decode("utf-8", "replace")
        entry["text"] = (_inflate(text) if compressed else text).decode("utf-8", "replace")
    return entry


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"a compressed text chunk inflates beyond {MAX_TEXT_BYTES} bytes")
    return out


def png_row(source) -> dict:
    """Read the IHDR and every text chunk of a PNG (bytes or a binary file), checking chunk CRCs.

    Streams: only the header and text chunks are held (one over
    MAX_CHUNK_BYTES is refused); image data and every other chunk are
    checked as they pass, so memory stays small whatever the file's size.
    """
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    handle.seek(8)
    position, row, texts, seen_idat = 8, {}, [], False
    while True:
        header = handle.read(8)
        if len(header) < 8:
            raise ValueError("truncated PNG: the file ends before the IEND chunk")
        length, kind = struct.unpack(">I4s", header)
        name = kind.decode("latin-1")
        if kind not in PNG_CHUNKS_READ:  # image data and the rest: checked as a stream, never held
            crc, remaining = zlib.crc32(kind), length
            while remaining:
                piece = handle.read(min(remaining, 1 << 20))
                if not piece:
                    break
                crc, remaining = zlib.crc32(piece, crc), remaining - len(piece)
            body = b""
            cut = remaining > 0
        else:
            if length > MAX_CHUNK_BYTES:
                raise ValueError(f"PNG chunk {name!r} of {length} bytes is over the limit of {MAX_CHUNK_BYTES}")
            body = handle.read(length)
            crc, cut = zlib.crc32(kind + body), len(body) < length
        stored = handle.read(4)
        if cut or len(stored) < 4:
            raise ValueError(f"truncated PNG: chunk {name!r} is cut short")
        if struct.unpack(">I", stored)[0] != crc:
            raise ValueError(f"bad CRC in PNG chunk {name!r} at byte {position}")
        if kind == b"IHDR":
            if len(body) < 13:
                raise ValueError("PNG IHDR chunk is too short")
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            row.update(width=width, height=height, bit_depth=depth, color_type=color,
                       mode=PNG_COLOR_MODES.get(color), rows=height, columns=width)
        elif kind == b"IDAT":
            seen_idat = True
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            texts.append(dict(_png_text(kind, body), position="after_image_data" if seen_idat else "before_image_data"))
        elif kind == b"IEND":
            break
        position += 12 + length
    if "width" not in row:
        raise ValueError("PNG without an IHDR chunk")
    row["text_chunks"] = texts
    return row


def _value(ds, keyword):
    """A plain JSON value for a DICOM attribute (lists for multi-valued), or None.

    A value that cannot be decoded (a malformed number, say) is None, with a warning.
    """
    try:
        value = ds.get(keyword)  # for a keyword, Dataset.get returns the value
    except Exception as exc:
        warnings.warn(f"{keyword}: unreadable value ({exc})")
        return None
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_scalar(v) for v in value]
    return _scalar(value)


def _scalar(value):
    if isinstance(value, (int, float, str)) and type(value) in (int, float, str):
        return value
    if isinstance(value, int):   # pydicom IS
        return int(value)
    if isinstance(value, float):  # pydicom DS
        return float(value)
    return str(value)


def dicom_row(path: Path, pseudonyms: Pseudonymizer | None, relative: str = "") -> dict:
    """The table row of one DICOM file (``pseudonyms=None`` keeps PHI).

    ``phi_in_path`` flags a row whose path contains the Patient ID: the path
    is kept (it is how rows find their files), so such a layout leaks it.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=DEFER_BYTES)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, defer_size=DEFER_BYTES)
        if not any(keyword in ds for keyword in ("SOPClassUID", "Modality", "PatientID", "StudyInstanceUID", "Rows")):
            raise ValueError("not a DICOM or PNG file (no DICOM header and no recognisable DICOM attributes)")
    meta = getattr(ds, "file_meta", None)
    transfer = _value(meta, "TransferSyntaxUID") if meta is not None else None
    frames = _value(ds, "NumberOfFrames")
    try:
        frames = int(frames) if frames is not None else (1 if "Rows" in ds else None)
    except (TypeError, ValueError):
        warnings.warn(f"NumberOfFrames: not an integer ({frames!r})")
        frames = None
    row = {
        "patient_id": _value(ds, "PatientID"),
        "study_uid": _value(ds, "StudyInstanceUID"),
        "series_uid": _value(ds, "SeriesInstanceUID"),
        "sop_uid": _value(ds, "SOPInstanceUID"),
        "frame_of_reference_uid": _value(ds, "FrameOfReferenceUID"),
        "sop_class_uid": _value(ds, "SOPClassUID"),
        "modality": _value(ds, "Modality"),
        "rows": _value(ds, "Rows"),
        "columns": _value(ds, "Columns"),
        "frames": frames,
        "pixel_spacing": _value(ds, "PixelSpacing"),
        "rescale_slope": _value(ds, "RescaleSlope"),
        "rescale_intercept": _value(ds, "RescaleIntercept"),
        "rescale_type": _value(ds, "RescaleType"),
        "window_center": _value(ds, "WindowCenter"),
        "window_width": _value(ds, "WindowWidth"),
        "photometric_interpretation": _value(ds, "PhotometricInterpretation"),
        "samples_per_pixel": _value(ds, "SamplesPerPixel"),
        "bits_allocated": _value(ds, "BitsAllocated"),
        "bits_stored": _value(ds, "BitsStored"),
        "pixel_representation": _value(ds, "PixelRepresentation"),
        "transfer_syntax": transfer,
        "private_tags": sum(1 for tag in ds.keys() if tag.is_private),  # top level; keys() decodes no values
    }
    if pseudonyms is None:
        name = _value(ds, "PatientName")
        row.update(patient_name=None if name is None else str(name), patient_birth_date=_value(ds, "PatientBirthDate"),
                   deidentified=False)
    else:
        original = row["patient_id"]
        row["phi_in_path"] = bool(original) and len(str(original)) >= 3 and str(original) in relative
        if row["phi_in_path"]:
            warnings.warn("the file's path contains its Patient ID: the path column is not de-identified")
        row["patient_id"] = pseudonyms.patient_id(row["patient_id"])
        for key in ("study_uid", "series_uid", "sop_uid", "frame_of_reference_uid"):
            row[key] = pseudonyms.uid(row[key])
        row.update(patient_name=None, patient_birth_date=None, deidentified=True)
    return row


def extract_row(path: Path, relative: str, key) -> dict:
    """One file -> one row; never raises (errors become the row's ``error``)."""
    row = {"path": relative, "kind": None, "error": None, "warnings": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
            if head == PNG_SIGNATURE:
                row["kind"] = "png"
                with open(path, "rb") as handle:
                    row.update(png_row(handle))
            else:
                row["kind"] = "dicom"
                row.update(dicom_row(path, None if key is None else Pseudonymizer(key), relative))
        except Exception as exc:  # a bad file is a row, not a crash
            row["kind"] = row["kind"] if row["kind"] == "png" else None
            row["error"] = f"{type(exc).__name__}: {exc}"
    row["warnings"] = sorted({str(w.message) for w in caught})
    return row


# --------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------

def extract_rows(files, key, workers: int = 1, executor: Executor | None = None) -> list:
    """Rows for ``files`` in the given order.

    The work runs on ``executor`` when given (any ``concurrent.futures``
    executor), else on a process pool of ``workers``, else inline; ``map``
    keeps the input order, so the table does not depend on the choice.
    """
    paths = [path for path, _ in files]
    names = [name for _, name in files]
    keys = [key] * len(files)
    own_pool = executor is None and workers > 1 and len(files) > 1
    pool = ProcessPoolExecutor(max_workers=workers) if own_pool else executor
    rows = []
    try:
        with progress(total=len(files), desc="metadata", unit="file") as bar:
            if pool is None:
                results = map(extract_row, paths, names, keys)
            else:
                results = pool.map(extract_row, paths, names, keys,
                                   chunksize=max(1, min(64, len(files) // (4 * max(workers, 1)))))
            for row in results:
                rows.append(row)
                bar.update(1)
    finally:
        if own_pool:
            pool.shutdown()
    return rows


def table_jsonl(rows) -> bytes:
    return joined(orjson.dumps({column: row.get(column) for column in COLUMNS}, option=orjson.OPT_APPEND_NEWLINE)
                  for row in rows)


def table_csv(rows) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        cells = []
        for column in COLUMNS:
            value = row.get(column)
            if value is None:
                cells.append("")
            elif isinstance(value, (list, dict, bool)):
                cells.append(orjson.dumps(value).decode())
            else:
                cells.append(value)
        writer.writerow(cells)
    return text.getvalue().encode("utf-8")


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "metadata_extractor",
        description="Extract DICOM and PNG metadata into one table (JSON lines + CSV), de-identified by default.",
        example="python scripts/data_tools/metadata_extractor.py data/sample --workers 2",
    )
    parser.add_argument("inputs", nargs="*", metavar="PATH", help=f"files or folders (default: <workspace>/{DEFAULT_INPUT})")
    parser.add_argument("--keep-phi", action="store_true", help="keep names, IDs, birth dates and UIDs as they are")
    parser.add_argument("--deid-key-file", metavar="FILE", help=f"secret key for pseudonyms (default: ${KEY_ENV}, else the seeds)")
    parser.add_argument("--strict", action="store_true", help="exit 2 if any file cannot be read or is skipped")
    parser.add_argument("--data-name", metavar="NAME", default=None,
                        help="name of the data root for a folder outside the workspace (default: the folder's name)")
    cli.add_workers_option(parser, "processes")
    cli.add_seeds_option(parser)
    cli.add_common_options(parser)

    def run(args, log):
        from scripts.data_tools import metadata_extractor as lib  # importable, for the worker processes

        workspace = resolve_workspace(args.workspace)
        seeds = SeedManager.from_file(args.seeds)
        inputs = collect_inputs(workspace, args.inputs or [workspace / DEFAULT_INPUT], args.data_name, log)
        files = [(path, name) for name, path, _ in inputs.files]
        key, key_source = (None, None) if args.keep_phi else lib.deidentification_key(args.deid_key_file, seeds, log)
        rows = lib.extract_rows(files, key, args.workers)
        failed = [row for row in rows if row["error"]]
        skipped = sorted(inputs.skipped + [{"file": row["path"], "reason": row["error"]} for row in failed],
                         key=lambda item: item["file"])
        leaking = [row["path"] for row in rows if row.get("phi_in_path")]
        if leaking:
            log.warning("phi_in_paths", files=len(leaking), first=leaking[0],
                        note="these paths contain Patient IDs; rename the folders before sharing the table")
        for item in skipped[:20]:
            log.warning("skipped_file", **item)
        if skipped and args.strict:
            raise InputError(f"{len(skipped)} of {len(rows) + len(inputs.skipped)} files could not be read (--strict)",
                             file=skipped[0]["file"], reason=skipped[0]["reason"])
        deid = None if key is None else {
            "profile": "DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile (table columns)",
            "actions": ANNEX_E_ACTIONS, "pseudonyms": "HMAC-SHA256", "key_source": key_source,
            "key_fingerprint": Pseudonymizer(key).fingerprint(),
        }
        config = {"keep_phi": args.keep_phi, "inputs": inputs.given}
        with RunRecorder("metadata_extractor", workspace=workspace, seeds=seeds, log=log, config=config) as record:
            record.data_roots = inputs.root_records()
            with atomic_output(record.output_path("metadata.jsonl")) as handle:
                handle.write(lib.table_jsonl(rows))
            with atomic_output(record.output_path("metadata.csv")) as handle:
                handle.write(lib.table_csv(rows))
            kinds = {}
            for row in rows:
                kinds[row["kind"] or "unreadable"] = kinds.get(row["kind"] or "unreadable", 0) + 1
            record.results.update(files=len(rows), errors=len(failed), kinds=dict(sorted(kinds.items())),
                                  paths_with_patient_ids=len(leaking), skipped=skipped,
                                  deidentification=deid or "none: --keep-phi",
                                  table=f"experiments/results/{record.run_id}/metadata.jsonl")
        log.info("extracted", files=len(rows), errors=len(failed), skipped=len(skipped),
                 table=f"experiments/results/{record.run_id}/metadata.jsonl")
        return 0

    return cli.run(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
