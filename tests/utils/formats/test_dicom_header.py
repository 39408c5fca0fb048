"""Raw-byte decoding against pydicom's own values, and the slice geometry checks."""

import gzip
import warnings
from pathlib import Path

import nibabel
import pydicom
import pytest

from scripts.data_tools.metadata_extractor import DICOM_COLUMNS
from scripts.utils.formats import dicom_header as dh

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_FILES = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"


def real_datasets():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(PYDICOM_FILES.rglob("*")) + sorted(NIBABEL_FILES.glob("*.dcm*")):
            if not path.is_file():
                continue
            try:
                source = gzip.open(path) if path.suffix == ".gz" else path
                ds = pydicom.dcmread(source, stop_before_pixels=True, force=True)
                if "SOPClassUID" in ds or "Modality" in ds:
                    yield path.name, ds
            except Exception:
                continue


def same(ours, theirs) -> bool:
    if isinstance(theirs, list) and isinstance(ours, list):
        return len(ours) == len(theirs) and all(same(a, b) for a, b in zip(ours, theirs))
    if isinstance(theirs, float) and isinstance(ours, (int, float)):
        return abs(ours - theirs) <= 1e-9 * max(1.0, abs(theirs))
    return ours == theirs


def test_raw_decoding_matches_pydicom_on_real_files():
    compared, differences = 0, []
    for name, ds in real_datasets():
        for keywords in DICOM_COLUMNS.values():
            for keyword in keywords:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ours = dh.get_plain(
                        ds, keyword
                    )  # first: from the raw bytes (pydicom converts in place)
                    try:
                        theirs = dh.plain(ds.get(keyword))
                    except Exception:
                        continue
                if theirs is None and ours is None:
                    continue
                compared += 1
                if isinstance(theirs, list) and not isinstance(ours, list):
                    ours = [ours]
                if not same(
                    ours, theirs if keyword != "PatientName" else str(theirs) if theirs else None
                ):
                    differences.append((name, keyword, ours, theirs))
    assert compared > 2000 and differences == []


@pytest.mark.parametrize(
    "positions, problem",
    [
        ([[0, 0, z] for z in (0, 5, 10, 15)], None),
        ([[0, 0, z] for z in (15, 0, 10, 5)], None),
        ([[0, 0, z] for z in (0, 5, 15, 20)], "gap"),
        ([[0, 0, z] for z in (0, 5, 5, 10)], "duplicate_positions"),
        ([[0, 0, z] for z in (0, 5, 10.4, 15)], "irregular_spacing"),
    ],
)
def test_slice_geometry(positions, problem):
    geometry = dh.slice_geometry(positions, [[1, 0, 0, 0, 1, 0]] * len(positions))
    assert [kind for kind, _ in geometry["problems"]] == ([problem] if problem else [])
    if problem is None:
        assert [positions[i][2] for i in geometry["order"]] == sorted(p[2] for p in positions)
        assert geometry["spacing"] == 5.0


def test_mixed_orientations_and_missing_geometry():
    mixed = dh.slice_geometry([[0, 0, 0], [0, 0, 5]], [[1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, 1]])
    assert mixed["problems"][0][0] == "mixed_orientation"
    missing = dh.slice_geometry([[0, 0, 0], None], [[1, 0, 0, 0, 1, 0]] * 2)
    assert missing["problems"][0][0] == "missing_geometry"
