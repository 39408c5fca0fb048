"""De-identification of everything metadata_extractor writes, checked against dicognito.

For every DICOM file among pydicom's and nibabel's bundled test files (many
vendors, an enhanced Philips MR) and a file loaded with PHI in free text and
sequences, every value that dicognito removes or replaces must be absent
from our outputs for that file: its table row, its --all-tags export, and
the run's log.
"""

import copy
import gzip
import re
import shutil
from pathlib import Path

import nibabel
import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.conftest import json_lines, run_script

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_FILES = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"
TEXT_VRS = {
    "AE",
    "AS",
    "CS",
    "DA",
    "DT",
    "LO",
    "LT",
    "PN",
    "SH",
    "ST",
    "TM",
    "UC",
    "UR",
    "UT",
    "UI",
}
NAME, MRN, HOSPITAL = "Doe^Jane^Q", "MRN99887766", "Saint Elsewhere Hospital"


def phi_laden(path: Path) -> None:
    """CT_small with names, IDs, an institution, dates and free text everywhere, sequences
    included."""
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    ds.PatientName, ds.PatientID, ds.InstitutionName = NAME, MRN, HOSPITAL
    ds.PatientBirthDate, ds.AccessionNumber = "19610704", "ACC5551234"
    ds.StudyDescription = "CT chest for Jane Doe (MRN99887766)"
    ds.ImageComments = f"Seen by Dr Watson at {HOSPITAL} on 20240102"
    ds.ReferringPhysicianName, ds.OperatorsName = "Watson^John", "Hudson^Martha"
    ds.PatientAddress, ds.PatientTelephoneNumbers = "221B Baker Street", "555-0199"
    item = Dataset()
    item.PatientID, item.IssuerOfPatientID = "OTHERID4242", HOSPITAL
    ds.OtherPatientIDsSequence = Sequence([item])
    request = Dataset()
    request.RequestedProcedureDescription, request.RequestingPhysician = (
        "Chest CT Jane Doe",
        "Moriarty^James",
    )
    ds.RequestAttributesSequence = Sequence([request])
    ds.add_new(0x00091010, "LO", "Jane Doe private note")
    ds.save_as(path)


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phi") / "exports"
    shutil.copytree(PYDICOM_FILES, folder / "pydicom")
    (folder / "nibabel").mkdir()
    for source in NIBABEL_FILES.glob("*.dcm*"):
        data = source.read_bytes()
        (folder / "nibabel" / source.name.replace(".gz", "")).write_bytes(
            gzip.decompress(data) if source.suffix == ".gz" else data
        )
    phi_laden(folder / "phi_laden.dcm")
    return folder


def _text_elements(ds, prefix=""):
    for element in ds:
        if element.VR == "SQ":
            for index, item in enumerate(element.value or []):
                yield from _text_elements(item, f"{prefix}{element.tag}[{index}].")
        elif element.VR in TEXT_VRS:
            yield prefix + str(element.tag), element


def values_dicognito_takes_out(path: Path) -> set:
    from dicognito.anonymizer import Anonymizer

    try:
        original = pydicom.dcmread(path, force=True)
        if not any(k in original for k in ("SOPClassUID", "Modality", "PatientID", "Rows")):
            return set()
        anonymized = copy.deepcopy(original)
        Anonymizer(seed="test").anonymize(anonymized)
    except Exception:
        return set()
    after = {key: str(element.value) for key, element in _text_elements(anonymized)}
    taken = set()
    for key, element in _text_elements(original):
        try:
            values = element.value if element.VM > 1 else [element.value]
        except Exception:
            continue
        for value in (str(v).strip() for v in values):
            # dicognito appends to De-identification Method, and writes 19000101-style dummies of
            # its own
            if (
                len(value) >= 4
                and value not in after.get(key, "")
                and not re.fullmatch(r"[0-9.+\- ]{1,6}", value)
            ):
                taken.add(value)
    return taken


@pytest.fixture(scope="module")
def taken_out(dicom_folder) -> dict:
    """For each file, the values dicognito removes or replaces (computed once for the module)."""
    return {
        path: values_dicognito_takes_out(path)
        for path in sorted(dicom_folder.rglob("*"))
        if path.is_file()
    }


def extract(workspace, folder, *args):
    result = run_script(
        "data_tools",
        "metadata_extractor",
        folder,
        "--all-tags",
        "--workspace",
        workspace,
        "--workers",
        "2",
        "--data-name",
        "exports",
        *args,
    )
    assert result.returncode == 0, result.stderr
    run_id = [r for r in json_lines(result.stderr) if r["event"] == "run_recorded"][0]["run_id"]
    out = workspace / "experiments/results" / run_id
    rows = {row["path"]: row for row in json_lines((out / "metadata.jsonl").read_bytes())}
    tags = {row["path"]: row["tags"] for row in json_lines((out / "tags.jsonl").read_bytes())}
    return rows, tags, out, result


# Options that retain values (dates, devices, patient characteristics) keep, by the user's choice,
# what dicognito (which has no such options) removes; Clean Descriptors must still take out every
# identifier.
@pytest.mark.parametrize("options", [(), ("--clean-descriptors",)])
def test_nothing_dicognito_removes_survives_in_any_output(
    workspace, dicom_folder, taken_out, options
):
    rows, tags, out, result = extract(workspace, dicom_folder, *options)
    log = result.stderr.decode("utf-8", "replace")
    report = (out.parent / f"{out.name}.json").read_text()
    files = sorted(p for p in dicom_folder.rglob("*") if p.is_file())
    names = sorted(
        ("@exports/" + p.relative_to(dicom_folder).as_posix() for p in files), key=len, reverse=True
    )
    for name in names:  # paths are kept on purpose (phi_in_path flags them)
        log = log.replace(name, "")
    checked, survivors = 0, []
    for path, name in zip(
        files, ("@exports/" + p.relative_to(dicom_folder).as_posix() for p in files)
    ):
        written = (
            orjson.dumps([rows[name], tags.get(name)]).decode().replace(name, "") + log + report
        )
        for value in taken_out[path]:
            checked += 1
            if value in written:
                survivors.append((name, value))
    assert checked > 500 and survivors == []
    phi = rows["@exports/phi_laden.dcm"]
    assert phi["patient_id"].startswith("anon-") and phi["institution_name"] is None
    assert "Elsewhere" not in orjson.dumps(tags["@exports/phi_laden.dcm"]).decode()
    if options:  # cleaned descriptors keep their words, not the identifying ones
        assert phi["study_description"] == "CT chest for [REDACTED] [REDACTED] ([REDACTED])"
    else:
        assert phi["study_description"] is None
    assert phi["study_date"] is None and phi["patient_sex"] is None


def test_modified_dates_keep_intervals_within_a_patient(workspace, dicom_folder):
    rows, _, _, _ = extract(workspace, dicom_folder / "nibabel", "--retain-modified-dates")
    row = rows["@exports/philips_mprage.dcm"]
    ds = pydicom.dcmread(dicom_folder / "nibabel/philips_mprage.dcm", stop_before_pixels=True)
    import datetime

    day = lambda text: datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    shift = day(ds.StudyDate) - day(row["study_date"])
    assert 1 <= shift.days <= 3650 and day(ds.SeriesDate) - day(row["series_date"]) == shift
    assert row["study_time"] == ds.StudyTime  # times of day are kept


def test_png_text_chunks_are_removed_under_deidentification(sample_workspace):
    result = run_script("data_tools", "metadata_extractor", "--workspace", sample_workspace)
    assert result.returncode == 0, result.stderr
    run_id = [r for r in json_lines(result.stderr) if r["event"] == "run_recorded"][0]["run_id"]
    out = sample_workspace / "experiments/results" / run_id
    png = [row for row in json_lines((out / "metadata.jsonl").read_bytes()) if row["kind"] == "png"]
    assert png and all(row["text_chunks"] == [] for row in png)
    assert sum(row["text_chunks_removed"] for row in png) >= 4
    assert "Synthetic" not in (out / "metadata.csv").read_text()
    report = orjson.loads((out.parent / f"{run_id}.json").read_bytes())["results"][
        "deidentification"
    ]
    assert report["png_text_chunks"].startswith("removed") and report["profile"]["code"] == "113100"
