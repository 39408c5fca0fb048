import csv
import gc
import io
import weakref
import zlib
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pydicom.data
import pytest

from scripts.data_tools import metadata_extractor as mx
from scripts.utils.formats import png
from scripts.utils.formats.parquet import parquet_bytes
from scripts.utils.jsonio import read_json
from scripts.utils.records.data_roots import collect_inputs
from tests.conftest import json_lines, run_script, single_error, tree

PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def extract(workspace, *args, env=None):
    result = run_script(
        "data_tools",
        "metadata_extractor",
        *args,
        "--workspace",
        workspace,
        "--workers",
        "2",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    run_id = [r for r in json_lines(result.stderr) if r["event"] == "run_recorded"][0]["run_id"]
    folder = workspace / "experiments/results" / run_id
    return json_lines((folder / "metadata.jsonl").read_bytes()), folder, result


def test_sample_rows_are_deidentified(sample_workspace):
    rows, folder, result = extract(sample_workspace)
    assert len(rows) == 21 and not any(row["error"] for row in rows)
    dicom = [row for row in rows if row["kind"] == "dicom"]
    assert all(
        row["deidentified"] and row["patient_name"] is None and row["patient_birth_date"] is None
        for row in dicom
    )
    assert all(
        row["patient_id"].startswith("anon-") and row["study_uid"].startswith("2.25.")
        for row in dicom
    )
    assert all(row["private_tags"] == 2 for row in dicom)
    table = pq.read_table(folder / "metadata.parquet")
    assert table.num_rows == 21 and table.column("path").to_pylist() == [r["path"] for r in rows]
    assert table.column("rows").to_pylist() == [row["rows"] for row in rows]  # typed, not text
    series = pq.read_table(folder / "series.parquet").to_pylist()
    assert series == [
        {key: row.get(key) for key in mx.SERIES_COLUMNS}
        for row in json_lines((folder / "series.jsonl").read_bytes())
    ]
    text = (folder / "metadata.jsonl").read_text() + (folder / "metadata.csv").read_text()
    text += str(table.to_pylist())
    for secret in ("Lovelace", "P001", "1950", "Example General Hospital"):
        assert secret not in text
    first = dicom[0]
    assert (
        first["modality"],
        first["rows"],
        first["rescale_intercept"],
        first["window_center"],
    ) == ("CT", 32, -1024.0, [40.0, -600.0])
    assert first["transfer_syntax"] == "1.2.840.10008.1.2.1" and first["pixel_spacing"] == [
        0.7,
        0.7,
    ]
    assert not any(row["phi_in_path"] for row in dicom)
    report = read_json(sample_workspace / "experiments/results" / f"{folder.name}.json")["results"]
    assert report["deidentification"]["pseudonyms"] == "HMAC-SHA256"
    assert any(r["event"] == "deid_key_from_seeds" for r in json_lines(result.stderr))


def test_pseudonyms_are_consistent_and_keyed(sample_workspace):
    rows, _, _ = extract(sample_workspace)
    again, _, _ = extract(sample_workspace)
    other_key, _, _ = extract(
        sample_workspace, env={"CRH_DEID_KEY": "a different secret of enough length"}
    )
    ids = lambda table: [row["patient_id"] for row in table if row["kind"] == "dicom"]
    assert ids(rows) == ids(again) and set(ids(rows)).isdisjoint(ids(other_key))
    by_series = {}
    for row in rows:
        if row["kind"] == "dicom":
            by_series.setdefault(row["series_uid"], set()).add(
                (row["patient_id"], row["study_uid"])
            )
    assert all(
        len(owners) == 1 for owners in by_series.values()
    )  # replaced UIDs still hold the hierarchy
    assert (
        len(by_series) == 6
        and len({row["patient_id"] for row in rows if row["kind"] == "dicom"}) == 4
    )


def test_paths_holding_patient_ids_are_flagged(sample_workspace):
    sample = sample_workspace / "data/sample/dicom"
    (sample / "case01").rename(sample / "P001")
    rows, _, result = extract(sample_workspace)
    flagged = [row["path"] for row in rows if row.get("phi_in_path")]
    assert flagged and all("/P001/" in path for path in flagged)
    assert any(r["event"] == "phi_in_paths" for r in json_lines(result.stderr))


def test_keep_phi_is_explicit(sample_workspace):
    rows, _, _ = extract(sample_workspace, "--keep-phi")
    first = [row for row in rows if row["kind"] == "dicom"][0]
    assert (
        first["patient_id"] == "P001"
        and first["patient_name"] == "Lovelace^Ada"
        and not first["deidentified"]
    )


def test_png_rows_have_every_text_chunk_with_keep_phi(sample_workspace):
    rows, folder, _ = extract(sample_workspace, "--keep-phi")
    png = {row["path"]: row for row in rows if row["kind"] == "png"}
    gray16 = png["data/sample/png/phantom_gray16.png"]
    assert (gray16["width"], gray16["bit_depth"], gray16["mode"]) == (32, 16, "L")
    assert {c["keyword"] for c in gray16["text_chunks"]} == {
        "Software",
        "Description",
        "Comment",
        "Author",
    }
    assert [c for c in gray16["text_chunks"] if c["type"] == "iTXt"][0][
        "text"
    ] == "Synthetic — no real patient"
    table = list(csv.DictReader(io.StringIO((folder / "metadata.csv").read_text())))
    assert len(table) == 21 and orjson.loads(table[-1]["text_chunks"])[0]["type"] == "tEXt"


def test_every_pydicom_test_file_is_a_row_or_a_per_file_error(workspace):
    files = sorted(p for p in PYDICOM_TEST_FILES.rglob("*") if p.is_file())
    rows, _, _ = extract(workspace, PYDICOM_TEST_FILES)
    assert [row["path"] for row in rows] == sorted(
        f"@test_files/{p.relative_to(PYDICOM_TEST_FILES).as_posix()}" for p in files
    )
    readable = [row for row in rows if not row["error"]]
    assert len(readable) > 150
    by_name = {row["path"].rsplit("/", 1)[-1]: row for row in rows}
    assert by_name["CT_small.dcm"]["modality"] == "CT" and by_name["CT_small.dcm"]["rows"] == 128
    assert by_name["JPEG2000.dcm"]["transfer_syntax"] == "1.2.840.10008.1.2.4.91"
    assert by_name["README.txt"]["error"] and by_name["README.txt"]["kind"] is None
    assert by_name["badVR.dcm"]["error"] is None and by_name["badVR.dcm"]["warnings"]


def test_strict_turns_unreadable_files_into_exit_2_with_nothing_written(workspace, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    result = run_script(
        "data_tools", "metadata_extractor", folder, "--strict", "--workspace", workspace
    )
    assert result.returncode == 2 and single_error(result.stderr)["file"].endswith("notes.txt")
    assert not (workspace / "experiments").exists() or tree(workspace / "experiments") == []


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda data: data[:60], "truncated PNG"),
        (lambda data: data[:40] + bytes([data[40] ^ 0xFF]) + data[41:], "bad CRC"),
    ],
)
def test_damaged_pngs_are_error_rows(sample_workspace, damage, fragment):
    path = sample_workspace / "data/sample/png/phantom_gray8.png"
    path.write_bytes(damage(path.read_bytes()))
    row = mx.extract_row(path, "x.png")
    assert row["kind"] == "png" and fragment in row["error"]


def test_text_chunk_bombs_are_refused():
    bomb = zlib.compress(b"a" * (png.MAX_TEXT_BYTES + 10))
    with pytest.raises(ValueError, match="inflates beyond"):
        png._png_text(b"zTXt", b"Comment\x00\x00" + bomb)


def test_missing_input_is_bad_input(workspace):
    result = run_script(
        "data_tools", "metadata_extractor", "no/such/folder", "--workspace", workspace
    )
    assert result.returncode == 2 and single_error(result.stderr)["file"] == "no/such/folder"


def test_short_key_file_is_refused(sample_workspace, tmp_path):
    key = tmp_path / "key"
    key.write_text("short")
    result = run_script(
        "data_tools", "metadata_extractor", "--deid-key-file", key, "--workspace", sample_workspace
    )
    assert result.returncode == 2 and "16 bytes" in single_error(result.stderr)["error"]


def test_any_executor_gives_the_same_table(sample_workspace):
    from concurrent.futures import ThreadPoolExecutor

    files = [
        (path, name)
        for name, path, _ in collect_inputs(
            sample_workspace, [sample_workspace / "data/sample"]
        ).files
    ]
    with ThreadPoolExecutor(3) as pool:
        settings = mx.Settings(b"k" * 32, ("clean_descriptors",), all_tags=True)
        assert mx.extract_rows(files, settings, executor=pool) == mx.extract_rows(files, settings)


def test_columns_select_and_unknown_columns_are_refused(sample_workspace):
    rows, folder, _ = extract(sample_workspace, "--columns", "modality,study_date,pixel_spacing")
    assert all(list(row) == ["path", "modality", "study_date", "pixel_spacing"] for row in rows)
    assert (folder / "metadata.csv").read_text().splitlines()[
        0
    ] == "path,modality,study_date,pixel_spacing"
    bad = run_script(
        "data_tools",
        "metadata_extractor",
        "--columns",
        "modality,nope",
        "--workspace",
        sample_workspace,
    )
    assert bad.returncode == 2 and "nope" in single_error(bad.stderr)["error"]
    listing = run_script(
        "data_tools", "metadata_extractor", "--list-columns", "--workspace", sample_workspace
    )
    columns = {item["column"]: item["dicom_keywords"] for item in orjson.loads(listing.stdout)}
    assert (
        columns["echo_time"] == ["EchoTime", "EffectiveEchoTime"]
        and "convolution_kernel" in columns
    )


def test_the_wide_table_keeps_what_the_standard_keeps(sample_workspace):
    rows, _, _ = extract(sample_workspace)
    first = [row for row in rows if row["kind"] == "dicom"][0]
    assert (
        first["study_date"] is None and first["patient_sex"] is None
    )  # Z and X by the Basic Profile
    assert first["slice_thickness"] is not None and first["image_position_patient"] is not None
    assert first["manufacturer"] == "CRH Phantom Works"  # not in Table E.1-1: kept
    kept, _, _ = extract(
        sample_workspace, "--retain-patient-characteristics", "--retain-full-dates"
    )
    first = [row for row in kept if row["kind"] == "dicom"][0]
    assert first["study_date"] is not None and first["patient_sex"] in ("F", "M", "O")


def test_options_need_deidentification(sample_workspace):
    result = run_script(
        "data_tools",
        "metadata_extractor",
        "--keep-phi",
        "--retain-uids",
        "--workspace",
        sample_workspace,
    )
    assert result.returncode == 2 and "--keep-phi" in single_error(result.stderr)["error"]
    both = run_script(
        "data_tools",
        "metadata_extractor",
        "--retain-full-dates",
        "--retain-modified-dates",
        "--workspace",
        sample_workspace,
    )
    assert both.returncode == 2 and "exclude" in single_error(both.stderr)["error"]


class Row(dict):
    """A row that can be watched with a weak reference."""


def test_the_tables_are_written_as_the_rows_come_and_no_row_is_kept(sample_workspace, tmp_path):
    inputs = collect_inputs(sample_workspace, [PYDICOM_TEST_FILES, sample_workspace / "data"])
    files = [(Path(path), name) for name, path, _ in inputs.files]
    settings = mx.Settings(b"k" * 32, (), True)
    rows = mx.extract_rows(files, settings)
    expected = {
        "metadata.jsonl": mx.table_jsonl(rows, mx.COLUMNS),
        "metadata.csv": mx.table_csv(rows, mx.COLUMNS),
        "tags.jsonl": mx.tags_jsonl(rows),
        "series": mx.series_rows(rows),
        "parquet": parquet_bytes(rows, mx.COLUMNS),
    }
    del rows
    stream, watched = mx.TableStream(tmp_path, mx.COLUMNS, all_tags=True), []
    for row in mx.iter_rows(files, settings):
        row = Row(row)
        watched.append(weakref.ref(row))
        stream.add(row)
    del row
    gc.collect()
    assert not [ref for ref in watched if ref() is not None]  # all gone once written
    assert stream.files == len(watched) > 100 and stream.slices
    assert stream.finish() == expected["series"]
    for name in ("metadata.jsonl", "metadata.csv", "tags.jsonl"):
        assert (tmp_path / name).read_bytes() == expected[name], name
    streamed = pq.read_table(tmp_path / "metadata.parquet")
    assert streamed.to_pylist() == pq.read_table(io.BytesIO(expected["parquet"])).to_pylist()
