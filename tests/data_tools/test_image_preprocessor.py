import hashlib
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from scripts.data_tools import pixels as px
from tests.conftest import json_lines, run_script, single_error, tree

PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def pydicom_range(ds):
    """The [y_min, y_max] pydicom maps windowed values onto (its apply_windowing)."""
    bits = int(ds.BitsStored)
    low, high = (
        (0, 2**bits - 1)
        if ds.PixelRepresentation == 0
        else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        low, high = (
            low * float(ds.RescaleSlope) + float(ds.RescaleIntercept),
            high * float(ds.RescaleSlope) + float(ds.RescaleIntercept),
        )
    return low, high


def windowed_monochrome_files():
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(PYDICOM_TEST_FILES.rglob("*")):
            try:
                ds = pydicom.dcmread(path)
                if (
                    "PixelData" in ds
                    and str(ds.PhotometricInterpretation).startswith("MONOCHROME")
                    and "WindowCenter" in ds
                    and float(ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth) > 1
                ):
                    _ = ds.pixel_array  # decodes, or raises
                    found.append(path)
            except Exception:
                continue
    return found


WINDOWED = windowed_monochrome_files()


def test_there_are_real_files_to_compare_with():
    names = {p.name for p in WINDOWED}
    assert (
        len(WINDOWED) >= 20
        and {"693_J2KI.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"} <= names
    )


@pytest.mark.parametrize("path", WINDOWED, ids=lambda p: p.name)
def test_matches_pydicom_modality_and_voi_on_real_files(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        expected = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
        pixels, params = px.read_image(path)
    low, high = pydicom_range(ds)
    image, done = px.normalize(np, pixels, params)
    assert image.dtype == np.float32
    if ds.PhotometricInterpretation == "MONOCHROME1":
        assert done["inverted"] == "MONOCHROME1"
        image = 1 - image
    # float32 output: within a few float32 steps of pydicom's float64 result
    np.testing.assert_allclose(image, (expected - low) / (high - low), rtol=0, atol=2e-6)
    np.testing.assert_allclose(
        px.modality_values(np, pixels, params),
        apply_modality_lut(ds.pixel_array, ds),
        rtol=0,
        atol=1e-9,
    )


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_each_voi_function_matches_pydicom(function, tmp_path):
    ds = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 40, 400, function
    path = tmp_path / "ct.dcm"
    ds.save_as(path)
    expected = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    low, high = pydicom_range(ds)
    image, done = px.normalize(np, *px.read_image(path))
    assert done["voi"]["function"] == function
    np.testing.assert_allclose(image, (expected - low) / (high - low), rtol=0, atol=2e-6)


def test_lut_sequences_match_pydicom(tmp_path):
    ds = pydicom.dcmread(PYDICOM_TEST_FILES / "MR_small.dcm")
    modality, voi = Dataset(), Dataset()
    modality.LUTDescriptor, modality.ModalityLUTType = [4096, 0, 16], "US"
    modality.add_new(
        0x00283006, "OW", np.array([(3 * v) % 65536 for v in range(4096)], dtype="<u2").tobytes()
    )
    voi.LUTDescriptor = [4096, 0, 12]
    voi.add_new(
        0x00283006, "OW", np.array([min(4095, v // 3) for v in range(4096)], dtype="<u2").tobytes()
    )
    ds.ModalityLUTSequence, ds.VOILUTSequence = [modality], [voi]
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    path = tmp_path / "lut.dcm"
    ds.save_as(path)
    ds = pydicom.dcmread(path)
    pixels, params = px.read_image(path)
    image, done = px.normalize(np, pixels, params)
    np.testing.assert_allclose(
        px.modality_values(np, pixels, params), apply_modality_lut(ds.pixel_array, ds)
    )
    np.testing.assert_allclose(
        image * 4095, apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds), atol=4095 * 2e-7
    )
    assert done["modality"] == "lut" and done["voi"] == {"lut": True, "bits": 12}


def run_preprocessor(workspace, *args):
    result = run_script(
        "data_tools", "image_preprocessor", *args, "--workspace", workspace, cwd=workspace
    )
    assert result.returncode == 0, result.stderr
    run_id = [r for r in json_lines(result.stderr) if r["event"] == "run_recorded"][-1]["run_id"]
    return workspace / "experiments/results" / run_id


def test_same_bytes_for_any_worker_count(sample_workspace):
    one = run_preprocessor(sample_workspace, "--size", "24x20", "--augment", "--workers", "1")
    three = run_preprocessor(sample_workspace, "--size", "24x20", "--augment", "--workers", "3")
    assert tree(one) == tree(three) and len(tree(one)) == 22
    for name in tree(one):
        assert (one / name).read_bytes() == (three / name).read_bytes(), name
    records = json_lines((one / "records.jsonl").read_bytes())
    sample = np.load(one / records[0]["output"])["image"]
    assert sample.dtype == np.float32 and sample.shape in ((24, 20), (20, 24))
    assert hashlib.sha256(sample.tobytes()).hexdigest() == records[0]["sha256"]


def test_augmentation_depends_only_on_seed_sample_and_epoch():
    first = px.augmentation_parameters(7, "data/sample/a.dcm", 0)
    assert first == px.augmentation_parameters(7, "data/sample/a.dcm", 0)
    assert first != px.augmentation_parameters(7, "data/sample/a.dcm", 1)
    assert first != px.augmentation_parameters(7, "data/sample/b.dcm", 0)
    assert first != px.augmentation_parameters(8, "data/sample/a.dcm", 0)


def test_noise_levels_are_pinned_and_gaussian():
    """The table of normal quantiles is part of the output bytes: its SHA-256 is fixed on every
    platform."""
    table = px.normal_quantiles()
    assert hashlib.sha256(table.tobytes()).hexdigest() == (
        "1cfbba1e07e34386a57626f82aeb43e6ed54ba70a3ea6b7d964dc66a841074a8"
    )
    assert np.all(np.diff(table) > 0) and abs(float(table[-1]) - 4.3249) < 1e-3
    noise = px.gaussian_noise(3, (1000, 1000), 0.5)
    assert (
        noise.dtype == np.float32
        and abs(float(noise.mean())) < 0.002
        and abs(float(noise.std()) - 0.5) < 0.002
    )
    # Its tails follow N(0, 0.25): P(|z| > 2 sigma) = 4.55%.
    assert abs(float(np.mean(np.abs(noise) > 1.0)) - 0.0455) < 0.002
    assert np.array_equal(noise, px.gaussian_noise(3, (1000, 1000), 0.5))
    assert hashlib.sha256(px.gaussian_noise(11, (7, 5), 0.25).tobytes()).hexdigest() == (
        "36024db270f0ba1050a10e9f88f0effd84223f0838c02099c9b3555190a92995"
    )  # the draws, pinned too


def test_augmentation_commutes_with_its_flips_and_rotation():
    """Jitter and noise are applied before the flips and rotation; the result is that image,
    rotated."""
    image = np.linspace(0, 1, 12 * 8, dtype=np.float32).reshape(12, 8)
    draws = dict(
        px.augmentation_parameters(7, "a", 0),
        flip_horizontal=True,
        flip_vertical=False,
        rot90=1,
    )
    plain = dict(draws, flip_horizontal=False, rot90=0)
    expected = np.rot90(np.flip(px.augment(np, image, plain, (0, 1)), axis=1), 1)
    assert np.array_equal(px.augment(np, image, draws, (0, 1)), expected)


def test_records_say_what_was_done(sample_workspace):
    out = run_preprocessor(
        sample_workspace,
        "--mask-threshold",
        "-500",
        "--window=-600,1500",
        "--voi-function",
        "SIGMOID",
        "data/sample/dicom",
    )
    record = json_lines((out / "records.jsonl").read_bytes())[0]
    assert record["transforms"]["voi"] == {
        "center": -600.0,
        "width": 1500.0,
        "function": "SIGMOID",
        "from": "argument",
    }
    assert record["transforms"]["mask"] == {"threshold": -500.0} and record["transforms"][
        "rescale"
    ] == [1.0, -1024.0]
    image = np.load(out / record["output"])["image"]
    assert image[0, 0] == 0.0 and image.max() > 0.5  # air outside the body is masked


def test_mask_file_and_png_inputs(sample_workspace, tmp_path):
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 1
    np.save(tmp_path / "mask.npy", mask)
    out = run_preprocessor(sample_workspace, "data/sample/png", "--mask", tmp_path / "mask.npy")
    records = json_lines((out / "records.jsonl").read_bytes())
    assert [r["shape"] for r in records] == [[32, 32], [32, 32], [32, 32, 3]]
    rgb = np.load(out / records[2]["output"])["image"]
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[16, 16].max() > 0


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--size", "0x5"], "--size"),
        (["--window", "40,-1"], "--window"),
        (["--backend", "cupy"], "cupy"),
        (["--mask-threshold", "0", "--mask", "m.npy"], "not both"),
    ],
)
def test_bad_arguments(sample_workspace, args, fragment):
    result = run_script("data_tools", "image_preprocessor", *args, "--workspace", sample_workspace)
    if "cupy" in args and result.returncode == 0:
        pytest.skip("a GPU with CuPy is available here")
    assert result.returncode == 2 and fragment in single_error(result.stderr)["error"]


def test_a_corrupt_image_stops_the_run_and_writes_nothing(sample_workspace):
    bad = sample_workspace / "data/sample/dicom/case01/study1/series1/slice002.dcm"
    bad.write_bytes(bad.read_bytes()[:400])
    before = tree(sample_workspace / "experiments")
    result = run_script("data_tools", "image_preprocessor", "--workspace", sample_workspace)
    assert result.returncode == 2 and single_error(result.stderr)["file"].endswith("slice002.dcm")
    assert tree(sample_workspace / "experiments") == before
    skipped = run_preprocessor(sample_workspace, "--skip-errors")
    records = json_lines((skipped / "records.jsonl").read_bytes())
    assert sum(1 for r in records if r["error"]) == 1 and len(records) == 21
