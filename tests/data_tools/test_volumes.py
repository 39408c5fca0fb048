"""Enhanced multi-frame objects, series -> volumes, and the no-window fallbacks.

Independent references: dicom2nifti (classic series -> NIfTI), nibabel's
DICOM MultiframeWrapper (a real enhanced Philips MR), and highdicom's legacy
converter (classic CT slices -> a real Enhanced CT object with functional groups).
"""

import gzip
import shutil
import warnings
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from scripts.data_tools import pixels as px
from tests.conftest import json_lines, run_script, single_error
from tests.data_tools.conftest import make_sample

PHILIPS_MR = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"


def preprocess(workspace, *args):
    result = run_script(
        "data_tools", "image_preprocessor", *args, "--workspace", workspace, "--workers", "2"
    )
    assert result.returncode == 0, result.stderr
    run_id = [r for r in json_lines(result.stderr) if r["event"] == "run_recorded"][0]["run_id"]
    folder = workspace / "experiments/results" / run_id
    return json_lines((folder / "records.jsonl").read_bytes()), folder, result


@pytest.fixture
def ct_series(workspace, tmp_path):
    """One 8-slice CT series from the sample generator, in a folder outside the workspace."""
    make_sample(workspace, patients=1, slices=8, size=32)
    source = workspace / "data/sample/dicom/case01/study1/series1"
    folder = tmp_path / "ct" / "series1"
    shutil.copytree(source, folder)
    return folder


def world_corners(affine, shape):
    corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ]
    )
    return np.array(sorted(map(tuple, np.round((np.asarray(affine) @ corners.T).T[:, :3], 3))))


def test_a_series_volume_matches_dicom2nifti(workspace, ct_series, tmp_path):
    import dicom2nifti

    records, folder, _ = preprocess(workspace, ct_series, "--volumes")
    (record,) = records
    assert (
        record["slices"] == 8
        and record["shape"] == [8, 32, 32]
        and record["spacing"] == [5.0, 0.7, 0.7]
    )
    ours = nibabel.load(folder / record["nifti"])
    theirs = dicom2nifti.dicom_series_to_nifti(
        str(ct_series), str(tmp_path / "ref.nii"), reorient_nifti=False
    )["NII"]
    ours, theirs = nibabel.as_closest_canonical(ours), nibabel.as_closest_canonical(theirs)
    assert ours.shape == theirs.shape and np.allclose(ours.affine, theirs.affine, atol=1e-4)
    voi = record["transforms"]["voi"]
    expected = np.clip(
        (theirs.get_fdata() - (voi["center"] - 0.5)) / (voi["width"] - 1) + 0.5, 0, 1
    )
    assert np.abs(ours.get_fdata() - expected).max() < 1e-5
    npz = np.load(folder / record["output"])
    assert np.allclose(
        np.diag([-1, -1, 1, 1]) @ npz["affine"], nibabel.load(folder / record["nifti"]).affine
    )
    assert npz["image"].shape == (8, 32, 32) and record["sources"][0].endswith(
        "slice008.dcm"
    )  # lowest z first


def test_file_names_do_not_decide_the_slice_order(workspace, ct_series):
    before, folder, _ = preprocess(workspace, ct_series, "--volumes")
    for index, path in enumerate(sorted(ct_series.glob("*.dcm"))):
        path.rename(ct_series / f"x{(7 - index) * 37 % 11:02d}_{index}.dcm")
    after, folder2, _ = preprocess(workspace, ct_series, "--volumes")
    assert before[0]["sha256"] == after[0]["sha256"] and before[0]["affine"] == after[0]["affine"]


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("gap", "gaps"),
        ("duplicate", "share positions"),
        ("orientation", "different Image Orientation"),
        ("single", "single slice"),
    ],
)
def test_series_that_are_not_one_volume_are_named(workspace, ct_series, damage, reason):
    slices = sorted(ct_series.glob("*.dcm"))
    if damage == "gap":
        slices[3].unlink()
    elif damage == "duplicate":
        ds = pydicom.dcmread(slices[2])
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["duplicate"])
        ds.save_as(ct_series / "copy.dcm")
    elif damage == "orientation":
        ds = pydicom.dcmread(slices[5])
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.43589]
        ds.save_as(slices[5])
    else:
        for path in slices[1:]:
            path.unlink()
    records, folder, result = preprocess(workspace, ct_series, "--volumes")
    assert records == []
    warning = [r for r in json_lines(result.stderr) if r["event"] == "series_not_stacked"][0]
    assert reason in warning["reason"] and warning["file"].endswith("series1")
    strict = run_script(
        "data_tools",
        "image_preprocessor",
        ct_series,
        "--volumes",
        "--strict",
        "--workspace",
        workspace,
    )
    assert strict.returncode == 2 and reason in single_error(strict.stderr)["reason"]


def test_volumes_refuse_per_image_options(workspace, ct_series):
    result = run_script(
        "data_tools",
        "image_preprocessor",
        ct_series,
        "--volumes",
        "--size",
        "16x16",
        "--workspace",
        workspace,
    )
    assert result.returncode == 2 and "--size" in single_error(result.stderr)["error"]


def enhanced_from(ct_series, path: Path, windows):
    """A real Enhanced CT object (highdicom's legacy converter) from the classic slices,
    per-frame windows."""
    import highdicom

    slices = [pydicom.dcmread(p) for p in sorted(ct_series.glob("*.dcm"))]
    for index, (ds, (center, width)) in enumerate(zip(slices, windows)):
        ds.WindowCenter, ds.WindowWidth = center, width
        ds.RescaleSlope = 1 + index / 8  # as PET does: a rescale per frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enhanced = highdicom.legacy.LegacyConvertedEnhancedCTImage(
            slices,
            series_instance_uid=pydicom.uid.generate_uid(entropy_srcs=["enhanced"]),
            series_number=99,
            sop_instance_uid=pydicom.uid.generate_uid(entropy_srcs=["enhanced-sop"]),
            instance_number=1,
        )
    assert "RescaleIntercept" not in enhanced and "PerFrameFunctionalGroupsSequence" in enhanced
    enhanced.save_as(path)
    for ds, original in zip(slices, sorted(ct_series.glob("*.dcm"))):
        ds.save_as(original)  # the classic slices carry the same windows


def test_enhanced_ct_frames_use_their_functional_groups(workspace, ct_series, tmp_path):
    windows = [(40 + 10 * i, 400 + 20 * i) for i in range(8)]
    enhanced = tmp_path / "enhanced" / "ct.dcm"
    enhanced.parent.mkdir()
    enhanced_from(ct_series, enhanced, windows)
    pixels, params = px.read_image(enhanced)
    assert params["frame_rescale"] == [[1 + i / 8, -1024.0] for i in range(8)]
    assert params["frame_window"] == [list(map(float, w)) for w in windows]
    image, done = px.normalize(np, pixels, params)
    for index, path in enumerate(sorted(ct_series.glob("*.dcm"))):
        classic, classic_params = px.read_image(path)
        expected, _ = px.normalize(np, classic, classic_params)
        assert np.array_equal(image[index], expected)
    assert (
        done["voi"][3]["center"] == 70.0
        and done["rescale"][3] == [1.375, -1024.0]
        and 0.0 < float(image.mean()) < 1.0
    )
    from_classic, _, _ = preprocess(workspace, ct_series, "--volumes")
    from_enhanced, _, _ = preprocess(workspace, enhanced.parent, "--volumes")
    assert from_classic[0]["sha256"] == from_enhanced[0]["sha256"]
    assert np.allclose(from_classic[0]["affine"], from_enhanced[0]["affine"])


def test_enhanced_philips_mr_geometry_matches_nibabel(workspace, tmp_path):
    from nibabel.nicom.dicomwrappers import wrapper_from_file

    folder = tmp_path / "mr"
    folder.mkdir()
    (folder / "mprage.dcm").write_bytes(gzip.decompress(PHILIPS_MR.read_bytes()))
    records, _, _ = preprocess(workspace, folder, "--volumes")
    (record,) = records
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = wrapper_from_file(folder / "mprage.dcm")
    assert record["shape"] == [176, 256, 256]
    ours = world_corners(record["affine"], (256, 256, 176))  # index order: column, row, slice
    theirs = world_corners(reference.affine, reference.image_shape)
    assert np.allclose(ours, theirs, atol=0.01)
    table = run_script("data_tools", "metadata_extractor", folder, "--workspace", workspace)
    run_id = [r for r in json_lines(table.stderr) if r["event"] == "run_recorded"][0]["run_id"]
    (row,) = json_lines(
        (workspace / "experiments/results" / run_id / "metadata.jsonl").read_bytes()
    )
    assert (
        row["frames"] == 176
        and row["pixel_spacing"] == [1.0, 1.0]
        and row["rescale_slope"] == pytest.approx(2.1079365)
    )
    assert len(row["window_center"]) == 176 and "window_center" in row["varying_per_frame"]
    assert len(row["image_position_patient"]) == 176 and row["echo_time"] == pytest.approx(3.513)
    (series,) = json_lines(
        (workspace / "experiments/results" / run_id / "series.jsonl").read_bytes()
    )
    assert (
        series["slices"] == 176
        and series["volume_ok"]
        and series["slice_spacing"] == pytest.approx(1.0, abs=1e-4)
    )


@pytest.mark.parametrize(
    "value, signed, expected", [(1000, False, 1000 / 4095), (0, False, 0.0), (0, True, 2048 / 4095)]
)
def test_a_constant_image_without_window_is_placed_in_its_stored_range(
    tmp_path, value, signed, expected
):
    ds = pydicom.dcmread(Path(pydicom.__file__).parent / "data/test_files/CT_small.dcm")
    for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
    ds.PixelData = np.full((128, 128), value, dtype=np.int16 if signed else np.uint16).tobytes()
    path = tmp_path / "flat.dcm"
    ds.save_as(path)
    pixels, params = px.read_image(path)
    image, done = px.normalize(np, pixels, params)
    assert (
        done["voi"]["from"] == "stored range (constant image)"
        and done["voi"]["function"] == "LINEAR_EXACT"
    )
    assert np.allclose(image, expected, atol=1e-6)


def test_an_image_without_window_uses_its_data_range(tmp_path):
    ds = pydicom.dcmread(Path(pydicom.__file__).parent / "data/test_files/CT_small.dcm")
    assert "WindowCenter" not in ds  # CT_small has no window of its own
    path = tmp_path / "nowindow.dcm"
    ds.save_as(path)
    image, done = px.normalize(np, *px.read_image(path))
    assert (
        done["voi"]["from"] == "data range"
        and float(image.min()) == 0.0
        and float(image.max()) == 1.0
    )


def test_series_table_flags_gaps(workspace, ct_series):
    sorted(ct_series.glob("*.dcm"))[4].unlink()
    result = run_script(
        "data_tools", "metadata_extractor", ct_series.parent, "--workspace", workspace
    )
    run_id = [r for r in json_lines(result.stderr) if r["event"] == "run_recorded"][0]["run_id"]
    (series,) = json_lines(
        (workspace / "experiments/results" / run_id / "series.jsonl").read_bytes()
    )
    assert series["slices"] == 7 and series["flags"]["gap"] and not series["volume_ok"]
    assert series["slice_spacing"] == 5.0 and "missing slices" in series["problems"][0]
    csv_text = (workspace / "experiments/results" / run_id / "series.csv").read_text()
    assert csv_text.splitlines()[0].startswith("study_uid,series_uid")


@pytest.mark.parametrize(
    "change, reason",
    [
        (
            lambda ds: ds.__setitem__(
                0x00200032, RawDataElement(Tag(0x00200032), "DS", 6, b"a\\b\\c ", 0, False, True)
            ),
            "valid Image Position",
        ),
        (
            lambda ds: setattr(ds, "ImageOrientationPatient", [0, 0, 0, 0, 0, 0]),
            "direction cosines",
        ),
        (lambda ds: setattr(ds, "PixelSpacing", [0, 0]), "valid Pixel Spacing"),
        (lambda ds: setattr(ds, "NumberOfFrames", 10**9), "Number of Frames"),
    ],
)
def test_hostile_geometry_is_named_not_a_crash(workspace, ct_series, change, reason):
    for path in sorted(ct_series.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        with pydicom.config.disable_value_validation():  # the damage is the point
            change(ds)
            ds.save_as(path)
    result = run_script(
        "data_tools",
        "image_preprocessor",
        ct_series,
        "--volumes",
        "--strict",
        "--workspace",
        workspace,
    )
    assert result.returncode == 2 and reason in single_error(result.stderr)["reason"]
    table = run_script("data_tools", "metadata_extractor", ct_series, "--workspace", workspace)
    assert table.returncode == 0, table.stderr


def test_several_echoes_in_one_series_become_one_volume_each(workspace, ct_series):
    for path in sorted(ct_series.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.EchoNumbers = 1
        ds.save_as(path)
        ds.EchoNumbers = 2
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["echo2", path.name])
        ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(path.with_name("echo2_" + path.name))
    records, folder, result = preprocess(workspace, ct_series, "--volumes")
    assert [r["source"].rsplit("#", 1)[1] for r in records] == ["EchoNumbers=1", "EchoNumbers=2"]
    assert all(r["slices"] == 8 and r["spacing"][0] == 5.0 for r in records)
    assert records[0]["sha256"] != records[1]["sha256"]
    assert all(name.rsplit("/", 1)[1].startswith("echo2_") for name in records[1]["sources"])
    assert not [r for r in json_lines(result.stderr) if r["event"] == "series_not_stacked"]


def test_modality_volumes_equal_dicom2nifti_values(workspace, ct_series, tmp_path):
    import dicom2nifti

    records, folder, _ = preprocess(
        workspace, ct_series, "--volumes", "--volume-values", "modality"
    )
    (record,) = records
    assert record["values"] == "modality" and record["transforms"] == {
        "modality": "rescale",
        "voi": None,
    }
    ours = nibabel.as_closest_canonical(nibabel.load(folder / record["nifti"]))
    theirs = dicom2nifti.dicom_series_to_nifti(
        str(ct_series), str(tmp_path / "ref.nii"), reorient_nifti=False
    )["NII"]
    theirs = nibabel.as_closest_canonical(theirs)
    assert np.allclose(ours.affine, theirs.affine, atol=1e-4)
    assert np.array_equal(ours.get_fdata(), theirs.get_fdata())  # Hounsfield units, both
    assert float(ours.get_fdata().min()) < -500  # air in HU, not a [0, 1] value
    refused = run_script(
        "data_tools",
        "image_preprocessor",
        ct_series,
        "--volume-values",
        "modality",
        "--workspace",
        workspace,
    )
    assert refused.returncode == 2 and "--volumes" in single_error(refused.stderr)["error"]


def test_enhanced_modality_volume_uses_each_frames_rescale(workspace, ct_series, tmp_path):
    enhanced = tmp_path / "enhanced" / "ct.dcm"
    enhanced.parent.mkdir()
    enhanced_from(ct_series, enhanced, [(40, 400)] * 8)
    classic, _, _ = preprocess(workspace, ct_series, "--volumes", "--volume-values", "modality")
    from_enhanced, _, _ = preprocess(
        workspace, enhanced.parent, "--volumes", "--volume-values", "modality"
    )
    assert classic[0]["sha256"] == from_enhanced[0]["sha256"]
    assert (
        len(from_enhanced[0]["transforms"]["modality"]) and from_enhanced[0]["values"] == "modality"
    )
