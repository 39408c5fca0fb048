"""Write the built-in sample dataset: synthetic CT phantom series (DICOM) and PNGs.

Deterministic (seeded, no network): the same seeds give the same bytes.

* ``data/sample/dicom/case<NN>/study<N>/series1/slice<NNN>.dcm``: several
  patients, each with one or two studies of one CT series. Each slice is an
  elliptical phantom (air, soft tissue, bone ring, lungs, a lesion) in
  Hounsfield units, stored as 12-bit unsigned values with Rescale Slope 1
  and Intercept -1024, with Window Center/Width (soft tissue and lung),
  Pixel Spacing, positions, consistent UIDs (``2.25.`` UIDs derived from the
  seed), and identifying data for de-identification to remove: names, IDs,
  birth dates, institution, physician, and a private tag block.
* ``data/sample/png/``: 8-bit gray, 16-bit gray and 8-bit RGB renderings
  carrying tEXt, zTXt and iTXt chunks, one of them placed after the image
  data (where many readers never look).

Usage:
    python scripts/data_tools/sample_data.py
    python scripts/data_tools/sample_data.py --patients 3 --slices 4 --size 32 --workspace /tmp/ws
"""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import sys
import zlib
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

import numpy as np

from scripts.data_tools.phantoms import phantom_hu
from scripts.utils import cli
from scripts.utils.config.seeds import SeedManager
from scripts.utils.errors import InputError
from scripts.utils.jsonio import atomic_write_bytes
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import resolve_workspace

SAMPLE_DIR = "data/sample"
FIRST_NAMES = (
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "John",
    "Margaret",
    "Niklaus",
)
LAST_NAMES = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Backus",
    "Hamilton",
    "Wirth",
)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _uid(seeds: SeedManager, *key) -> str:
    """A ``2.25.`` UID (PS3.5 B.2) from 128 bits of SHA-256 over the seed and ``key``.

    (pydicom's ``generate_uid(prefix=None, ...)`` ignores its entropy sources
    and returns a random UUID, so it cannot be used for reproducible data.)
    """
    digest = hashlib.sha256("\x00".join(map(str, (seeds.base_seed, *key))).encode("utf-8")).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def dicom_slices(seeds: SeedManager, patients: int, slices: int, size: int):
    """Yield ``(relative path, DICOM bytes)`` for every slice of the phantom dataset."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    for p in range(patients):
        patient_id = f"P{p + 1:03d}"
        name = f"{LAST_NAMES[p % 10]}^{FIRST_NAMES[(p * 3) % 10]}"
        birth = f"{1950 + (p * 7) % 50}{(p % 12) + 1:02d}{(p * 5) % 28 + 1:02d}"
        for s in range(1 + p % 2):
            study_uid = _uid(seeds, "study", patient_id, s)
            series_uid = _uid(seeds, "series", patient_id, s)
            frame_uid = _uid(seeds, "frame", patient_id, s)
            study_date = f"2025{(s * 4 + p) % 12 + 1:02d}{(p * 3 + s) % 28 + 1:02d}"
            for k in range(slices):
                rng = seeds.generator("sample_data", patient_id, s, k)
                hu = phantom_hu(size, k, slices, rng)
                stored = np.round(hu + 1024).astype(np.uint16)
                sop_uid = _uid(seeds, "sop", patient_id, s, k)

                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
                meta.MediaStorageSOPInstanceUID = sop_uid
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                meta.ImplementationClassUID = "2.25.1234567890123456789"
                meta.ImplementationVersionName = "CRH_SAMPLE_1"
                ds = Dataset()
                ds.file_meta = meta
                ds.SpecificCharacterSet = "ISO_IR 100"
                ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
                ds.SOPClassUID = CT_IMAGE_STORAGE
                ds.SOPInstanceUID = sop_uid
                ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
                ds.StudyTime = ds.SeriesTime = ds.ContentTime = (
                    f"{9 + p % 8:02d}{(k * 7) % 60:02d}00"
                )
                ds.AccessionNumber = f"ACC{p + 1:03d}{s}"
                ds.Modality = "CT"
                ds.Manufacturer = "CRH Phantom Works"
                ds.InstitutionName = "Example General Hospital"
                ds.ReferringPhysicianName = "House^Gregory"
                ds.StudyDescription = "CT CHEST PHANTOM"
                ds.SeriesDescription = "AXIAL 5MM"
                ds.PatientName = name
                ds.PatientID = patient_id
                ds.PatientBirthDate = birth
                ds.PatientSex = "F" if p % 2 else "M"
                ds.PatientAge = f"{2025 - int(birth[:4]):03d}Y"
                ds.SliceThickness = "5.0"
                ds.KVP = "120"
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = series_uid
                ds.StudyID = f"{s + 1}"
                ds.SeriesNumber = 1
                ds.InstanceNumber = k + 1
                ds.ImagePositionPatient = [-0.35 * size, -0.35 * size, round(-5.0 * k, 1)]
                ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
                ds.FrameOfReferenceUID = frame_uid
                ds.SliceLocation = round(-5.0 * k, 1)
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.Rows = ds.Columns = size
                ds.PixelSpacing = [0.7, 0.7]
                ds.BitsAllocated = 16
                ds.BitsStored = 12
                ds.HighBit = 11
                ds.PixelRepresentation = 0
                ds.WindowCenter = [40, -600]
                ds.WindowWidth = [400, 1500]
                ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
                ds.RescaleIntercept = -1024
                ds.RescaleSlope = 1
                ds.RescaleType = "HU"
                block = ds.private_block(0x0011, "CRH_SAMPLE_PRIVATE", create=True)
                block.add_new(0x01, "LO", f"note for {name}")
                ds.PixelData = stored.tobytes()

                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                # no IDs in paths
                path = f"dicom/case{p + 1:02d}/study{s + 1}/series1/slice{k + 1:03d}.dcm"
                yield path, buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_files(seeds: SeedManager, size: int):
    """Yield ``(relative path, PNG bytes)``: 8-bit gray, 16-bit gray, RGB, with text chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    rng = seeds.generator("sample_data", "png")
    hu = phantom_hu(size, 3, 8, rng)
    gray = np.clip((hu + 160) / 400, 0, 1)  # soft tissue window
    images = {
        "phantom_gray8.png": Image.fromarray(np.round(gray * 255).astype(np.uint8), mode="L"),
        "phantom_gray16.png": Image.fromarray(np.round(hu + 1024).astype(np.uint16)),
        "phantom_rgb8.png": Image.fromarray(
            np.stack(
                [np.round(gray * 255), np.round(gray**0.5 * 255), np.round((1 - gray) * 255)],
                axis=-1,
            ).astype(np.uint8),
            mode="RGB",
        ),
    }
    for name, image in images.items():
        info = PngInfo()
        info.add_text("Software", "cognitive-research-hub sample_data")
        info.add_text("Description", f"synthetic CT phantom, {name[8:-4]}", zip=True)  # zTXt
        info.add_itxt("Comment", "Synthetic — no real patient", lang="en", tkey="Kommentar")  # iTXt
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info)
        data = buffer.getvalue()
        end = data.rindex(b"IEND") - 4  # a chunk after the image data, before IEND
        data = data[:end] + _png_chunk(b"tEXt", b"Author\x00CRH sample generator") + data[end:]
        yield f"png/{name}", data


def write_sample_dataset(
    workspace: Path,
    seeds: SeedManager,
    run: RunRecorder,
    patients: int = 6,
    slices: int = 8,
    size: int = 64,
) -> dict:
    """Write the dataset into ``<workspace>/data/sample`` (replacing it whole)."""
    target = workspace / SAMPLE_DIR
    staging = target.with_name(".sample.partial")
    shutil.rmtree(staging, ignore_errors=True)
    counts = {"dicom": 0, "png": 0}
    written = []
    try:
        for kind, files in (
            ("dicom", dicom_slices(seeds, patients, slices, size)),
            ("png", png_files(seeds, size)),
        ):
            for relative, data in files:
                atomic_write_bytes(staging / relative, data)
                written.append(relative)
                counts[kind] += 1
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a failed run leaves nothing half written
        raise
    old = target.with_name(".sample.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    for relative in written:
        run.claim_output(target / relative)
    return counts


def write_sample_data(args, log) -> int:
    for name in ("patients", "slices", "size"):
        if not 1 <= getattr(args, name) <= 4096:
            raise InputError(f"--{name} must be between 1 and 4096", value=getattr(args, name))
    seeds = SeedManager.from_file(args.seeds)
    workspace = resolve_workspace(args.workspace)
    with RunRecorder(
        "sample_data",
        argv=args.argv,
        workspace=workspace,
        seeds=seeds,
        log=log,
        config={"patients": args.patients, "slices": args.slices, "size": args.size},
    ) as record:
        counts = write_sample_dataset(
            workspace, seeds, record, args.patients, args.slices, args.size
        )
        record.results.update(counts, folder=SAMPLE_DIR)
    log.info("sample_written", folder=SAMPLE_DIR, **counts)
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "sample_data",
        doc=__doc__,
        description="Write the built-in sample dataset (CT phantom DICOM series and PNGs) into "
        "data/sample/.",
        example="python scripts/data_tools/sample_data.py --patients 6 --slices 8 --size 64",
    )
    parser.add_argument("--patients", type=int, default=6, help="number of patients")
    parser.add_argument("--slices", type=int, default=8, help="slices per series")
    parser.add_argument("--size", type=int, default=64, help="rows and columns per slice")
    cli.add_seeds_option(parser)
    cli.add_common_options(parser)
    return cli.run(parser, write_sample_data, argv)


if __name__ == "__main__":
    sys.exit(main())
