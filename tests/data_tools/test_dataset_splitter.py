import csv
import io
import random

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from scripts.data_tools import splits as sp
from scripts.utils.errors import InputError
from scripts.utils.jsonio import read_json
from tests.conftest import json_lines, run_script, single_error

KEY = b"k" * 8
RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


def records(count, groups, start=0, labels=("a", "b")):
    return [
        {"id": f"r{i}", "patient": f"p{i % groups}", "label": labels[(i % groups) % len(labels)]}
        for i in range(start, start + count)
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train=0.8,test=0.2", {"train": 0.8, "test": 0.2}),
        ("0.7,0.15,0.15", RATIOS),
        ("a=0.5, b=0.25, c=0.25", {"a": 0.5, "b": 0.25, "c": 0.25}),
    ],
)
def test_ratio_parsing(text, expected):
    assert sp.parse_ratios(text) == expected and list(sp.parse_ratios(text)) == list(expected)


@pytest.mark.parametrize(
    "text", ["0.5,0.4", "train=1.2,test=-0.2", "train=0.5,train=0.5", "x", "a=b,c=1", "1"]
)
def test_bad_ratios(text):
    with pytest.raises(InputError):
        sp.parse_ratios(text)


def test_groups_never_span_splits_and_ratios_are_close():
    manifest = sp.split_records(records(20_000, 2_000), RATIOS, KEY, "id", "patient")
    by_group = {}
    for record_id, split in manifest["assignments"].items():
        by_group.setdefault(f"p{int(record_id[1:]) % 2000}", set()).add(split)
    assert all(len(splits) == 1 for splits in by_group.values())
    for name, target in RATIOS.items():
        assert abs(manifest["achieved_ratios"][name]["groups"] - target) < 0.03


def test_growth_moves_no_record():
    before = sp.split_records(records(5_000, 500), RATIOS, KEY, "id", "patient")["assignments"]
    grown = records(5_000, 500) + records(
        500, 550, start=5_000
    )  # new records: existing and new patients
    after = sp.split_records(grown, RATIOS, KEY, "id", "patient")["assignments"]
    assert all(after[record_id] == split for record_id, split in before.items())
    assert len(after) == 5_500


def test_another_seed_gives_another_split():
    a = sp.split_records(records(1000, 100), RATIOS, KEY, "id", "patient")["assignments"]
    b = sp.split_records(records(1000, 100), RATIOS, b"other-ke", "id", "patient")["assignments"]
    assert a != b


def test_stratification_reports_balance_and_mixed_groups():
    rows = records(2000, 200)
    rows[0]["label"] = "c"  # patient p0 now has two labels
    manifest = sp.split_records(rows, RATIOS, KEY, "id", "patient", stratify="label")
    assert manifest["mixed_label_groups"] == ["p0"]
    assert set(manifest["class_ratios"]["train"]) >= {"a", "b"}


def test_rows_with_errors_are_left_out_and_groupless_rows_stand_alone():
    rows = [
        {"id": "x", "patient": None, "error": None},
        {"id": "y", "patient": "p", "error": "bad file"},
        {"id": "z", "patient": "p", "error": None},
    ]
    manifest = sp.split_records(rows, RATIOS, KEY, "id", "patient")
    assert manifest["excluded_records"] == ["y"] and set(manifest["assignments"]) == {"x", "z"}
    assert manifest["records_without_group"] == 1 and "record:x" in manifest["groups"]


@pytest.mark.parametrize(
    "rows, fragment",
    [
        ([{"id": "a"}], "column 'patient' not found"),
        ([{"id": "a", "patient": "1"}, {"id": "a", "patient": "2"}], "duplicate record id"),
        ([], "no records"),
    ],
)
def test_bad_records(rows, fragment):
    with pytest.raises(InputError, match=fragment):
        sp.split_records(rows, RATIOS, KEY, "id", "patient")


def test_every_record_lands_in_its_groups_split():
    rows = records(3_000, 300) + [{"id": "lone", "patient": None, "label": "a"}]
    manifest = sp.split_records(rows, RATIOS, KEY, "id", "patient")
    for row in rows:
        group = row["patient"] or "record:" + row["id"]
        assert manifest["assignments"][row["id"]] == manifest["groups"][group]
    assert manifest["records_without_group"] == 1
    assert sum(c["records"] for c in manifest["counts"].values()) == 3_001


def test_a_table_of_only_errors_is_a_clear_error():
    with pytest.raises(InputError, match="every record has an error"):
        sp.split_records(
            [{"id": "a", "patient": "p", "error": "unreadable"}], RATIOS, KEY, "id", "patient"
        )


def test_manifest_bytes_do_not_depend_on_record_order():
    rows = records(2_000, 200)
    forward = sp.manifest_bytes(sp.split_records(rows, RATIOS, KEY, "id", "patient"))
    backward = sp.manifest_bytes(sp.split_records(rows[::-1], RATIOS, KEY, "id", "patient"))
    assert forward == backward


def test_cli_splits_the_metadata_table_and_verifies(sample_workspace):
    assert (
        run_script("data_tools", "metadata_extractor", "--workspace", sample_workspace).returncode
        == 0
    )
    result = run_script("data_tools", "dataset_splitter", "--workspace", sample_workspace)
    assert result.returncode == 0, result.stderr
    manifest_path = (
        sample_workspace
        / [r for r in json_lines(result.stderr) if r["event"] == "split"][0]["manifest"]
    )
    manifest = read_json(manifest_path)
    assert sum(c["records"] for c in manifest["counts"].values()) == 21
    assert [name for name, _ in manifest["splits"]] == ["train", "val", "test"]
    table = pq.read_table(manifest_path.with_name("split.parquet")).to_pylist()
    assert table == [
        {"id": key, "split": manifest["assignments"][key]}
        for key in sorted(manifest["assignments"])
    ]
    ok = run_script(
        "data_tools", "dataset_splitter", "--verify", manifest_path, "--workspace", sample_workspace
    )
    assert ok.returncode == 0, ok.stderr

    tampered = dict(manifest)
    first = sorted(manifest["assignments"])[0]
    tampered["assignments"] = dict(
        manifest["assignments"],
        **{first: "test" if manifest["assignments"][first] != "test" else "train"},
    )
    manifest_path.write_bytes(orjson.dumps(tampered))
    bad = run_script(
        "data_tools", "dataset_splitter", "--verify", manifest_path, "--workspace", sample_workspace
    )
    assert bad.returncode == 1 and single_error(bad.stderr)["first"]["record"] == first


def test_cli_reads_csv_and_rejects_a_missing_column(workspace, tmp_path):
    path = tmp_path / "records.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "subject"])
        writer.writerows([[f"img{i}.png", f"s{i % 7}"] for i in range(50)])
    ok = run_script(
        "data_tools",
        "dataset_splitter",
        path,
        "--group-column",
        "subject",
        "--ratios",
        "0.8,0.2",
        "--workspace",
        workspace,
    )
    assert ok.returncode == 0, ok.stderr
    bad = run_script("data_tools", "dataset_splitter", path, "--workspace", workspace)
    assert bad.returncode == 2 and single_error(bad.stderr)["column_name"] == "patient_id"


def test_positions_are_uniform_enough():
    positions = np.array([sp.group_position(KEY, f"g{i}") for i in range(20_000)])
    assert 0 <= positions.min() and positions.max() < 1 and abs(positions.mean() - 0.5) < 0.01


def test_an_executor_gives_the_same_assignment(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(sp, "PARALLEL_GROUPS", 10)
    groups = [f"g{i % 500}" for i in range(3000)]
    alone, _ = sp.assign_records(groups, RATIOS, KEY)
    with ThreadPoolExecutor(4) as pool:
        pooled, _ = sp.assign_records(groups, RATIOS, KEY, pool)
    assert alone == pooled


def test_manifest_bytes_equal_a_plain_canonical_dump():
    """The fast writer of the assignments gives canonical_json's bytes, escapes and non-ASCII
    included."""
    from scripts.utils.jsonio import canonical_json

    odd = [
        'quote"inside',
        "back\\slash",
        'a","b',
        "tab\there",
        "é/ü",
        "日本",
        "emoji😀",
        "ctrl\x01",
        "end\\",
    ]
    rows = [
        {"id": text + str(i), "patient": f"p{i % 7}"}
        for i in range(300)
        for text in [odd[i % len(odd)]]
    ]
    manifest = sp.split_records(rows, RATIOS, KEY, "id", "patient")
    plain = {**manifest, "assignments": dict(manifest["assignments"].items())}
    assert sp.manifest_bytes(manifest) == canonical_json(plain)
    assert orjson.loads(sp.manifest_bytes(manifest))["assignments"] == plain["assignments"]


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
@pytest.mark.parametrize("in_order", [True, False])
@pytest.mark.parametrize("odd_ids", [["é", "ü/ß"], ["é", '"quoted"', "back\\slash"]])
def test_the_column_path_writes_the_bytes_of_the_row_path(tmp_path, suffix, in_order, odd_ids):
    rng = random.Random(3)
    ids = [f"r{i:05d}" for i in range(2000)]
    if not in_order:
        rng.shuffle(ids)
    rows = []
    for record_id in ids:
        row = {"id": record_id, "patient": f"p{rng.randrange(300)}" if rng.random() > 0.1 else None}
        if rng.random() < 0.05:
            row["error"] = "unreadable"
        if rng.random() < 0.05:
            row["id"] += rng.choice(odd_ids)  # the second set needs JSON escapes
        rows.append(row)
    path = tmp_path / f"records{suffix}"
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    ratios, key = {"train": 0.7, "val": 0.15, "test": 0.15}, b"k" * 8
    by_rows = sp.split_records(sp.read_records(path), ratios, key, "id", "patient", source=path)
    columns = sp.read_columns(path, ["id", "patient", "error"])
    by_columns = sp.split_columns(columns, ratios, key, "id", "patient", source=path)
    assert isinstance(by_columns["assignments"], sp.ColumnAssignments)
    assert sp.manifest_bytes(by_columns) == sp.manifest_bytes(by_rows)
    assert sp.split_parquet(by_columns) == sp.split_parquet(by_rows)
    for block in (1, 7, 500, 10**6):  # written a block of records at a time: the same bytes
        written = io.BytesIO()
        sp.write_manifest(written, by_columns, block=block)
        assert written.getvalue() == sp.manifest_bytes(by_rows)


def test_tables_the_column_readers_cannot_take_go_to_the_row_path(tmp_path):
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_bytes(b'{"id": 1, "patient": "a"}\n{"id": 2, "patient": "b"}\n')
    assert sp.read_columns(numbers, ["id", "patient", "error"]) is None  # ids are not text
    table = tmp_path / "table.csv"
    table.write_text("id,patient\nr1,a\n")
    assert sp.read_columns(table, ["id", "patient", "error"]) is None  # Python's CSV reader
    no_group = tmp_path / "no_group.jsonl"
    no_group.write_text('{"id": "r1", "subject": "a"}\n{"id": "r2", "subject": "b"}\n')
    columns = sp.read_columns(no_group, ["id", "patient", "error"])
    ratios, key = {"train": 0.5, "test": 0.5}, b"k" * 8
    assert sp.split_columns(columns, ratios, key, "id", "patient") is None  # the rows name it
    with pytest.raises(InputError, match="column 'patient' not found"):
        sp.split_records(sp.read_records(no_group), ratios, key, "id", "patient")
