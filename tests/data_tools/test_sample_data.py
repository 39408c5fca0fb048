import hashlib

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from scripts.utils.formats.png import png_row
from tests.conftest import run_script, tree
from tests.data_tools.conftest import make_sample


def digests(folder):
    return {path: hashlib.sha256((folder / path).read_bytes()).hexdigest() for path in tree(folder)}


def test_same_seeds_same_bytes(tmp_path):
    first = make_sample(tmp_path / "a")
    second = make_sample(tmp_path / "b")
    assert digests(first) == digests(second)
    assert (
        len(digests(first)) == 4 * 3 + 2 * 3 + 3
    )  # 4 patients, every other one with two studies, 3 PNGs


def test_dicom_series_are_consistent_and_in_hounsfield_units(sample_workspace):
    files = sorted((sample_workspace / "data/sample/dicom").rglob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    series = {}
    for ds in datasets:
        series.setdefault(ds.SeriesInstanceUID, set()).add((ds.PatientID, ds.StudyInstanceUID))
    assert all(len(owners) == 1 for owners in series.values())  # a series belongs to one study
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)  # SOP UIDs are unique
    ds = datasets[0]
    hu = apply_modality_lut(ds.pixel_array, ds)
    assert hu.min() >= -1024 and 900 < hu.max() <= 3071 and ds.RescaleType == "HU"
    assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.7] and ds.WindowWidth[0] == 400
    assert (
        ds.PatientName and ds.PatientBirthDate and ds[0x0011, 0x1001].value.startswith("note for")
    )


def test_pngs_carry_text_before_and_after_the_image(sample_workspace):
    row = png_row((sample_workspace / "data/sample/png/phantom_gray16.png").read_bytes())
    assert row["bit_depth"] == 16 and row["mode"] == "L"
    kinds = {(chunk["type"], chunk["position"]) for chunk in row["text_chunks"]}
    assert {
        ("tEXt", "before_image_data"),
        ("zTXt", "before_image_data"),
        ("iTXt", "before_image_data"),
        ("tEXt", "after_image_data"),
    } <= kinds


def test_cli_writes_into_the_workspace_and_records_every_file(workspace):
    result = run_script(
        "data_tools",
        "sample_data",
        "--patients",
        2,
        "--slices",
        2,
        "--size",
        16,
        "--workspace",
        workspace,
    )
    assert result.returncode == 0, result.stderr
    from scripts.utils.jsonio import read_json

    registry = read_json(workspace / "data/hash_registry.json")["files"]
    assert (
        sum(path.startswith("data/sample/") for path in registry) == (1 + 2) * 2 + 3
    )  # P001: 1 study, P002: 2


def test_cli_rejects_silly_sizes(workspace):
    result = run_script("data_tools", "sample_data", "--size", 0, "--workspace", workspace)
    assert result.returncode == 2 and not (workspace / "data").exists()


def test_phantom_has_lungs_and_bone():
    from scripts.data_tools.phantoms import phantom_hu

    image = phantom_hu(64, 4, 8, np.random.Generator(np.random.PCG64(0)))
    assert (image < -700).sum() > 200 and (image > 600).sum() > 50
