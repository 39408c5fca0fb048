import io

import orjson
import pyarrow.parquet as pq
import pytest

from scripts.utils.formats.parquet import columns_parquet, jsonl_parquet, parquet_bytes

ROWS = [
    {"path": "a.dcm", "rows": 512, "spacing": [0.5, 0.5], "ok": True, "mixed": 1, "warnings": []},
    {"path": "b.png", "rows": None, "spacing": None, "ok": False, "mixed": "x", "warnings": []},
    {"path": "c.png", "rows": 64, "ok": None, "mixed": {"b": 1, "a": [2]}, "warnings": []},
]
COLUMNS = ["path", "rows", "spacing", "ok", "mixed", "warnings", "never"]


def read(data: bytes):
    return pq.read_table(io.BytesIO(data))


def test_columns_keep_their_types_and_mixed_ones_become_text():
    table = read(parquet_bytes(ROWS, COLUMNS))
    assert table.column_names == COLUMNS
    types = {name: str(table.schema.field(name).type) for name in COLUMNS}
    assert types["path"] == "string" and types["rows"] == "int64" and types["ok"] == "bool"
    assert types["spacing"] == "list<element: double>"
    assert types["mixed"] == "string" and types["never"] == "string"
    assert types["warnings"] == "list<element: string>"
    assert table.column("rows").to_pylist() == [512, None, 64]
    assert table.column("mixed").to_pylist() == ["1", "x", '{"a":[2],"b":1}']
    assert table.column("never").to_pylist() == [None, None, None]


def test_the_bytes_are_the_same_every_time_and_follow_the_rows():
    assert parquet_bytes(ROWS, COLUMNS) == parquet_bytes([dict(row) for row in ROWS], COLUMNS)
    assert parquet_bytes(ROWS, COLUMNS) != parquet_bytes(ROWS[::-1], COLUMNS)
    data = columns_parquet({"id": ["r1", "r2"], "split": ["train", "test"]})
    assert read(data).to_pylist() == [
        {"id": "r1", "split": "train"},
        {"id": "r2", "split": "test"},
    ]


def as_jsonl(rows, path):
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


@pytest.mark.parametrize("block", [1, 2, 1000])
def test_a_table_written_a_block_at_a_time_has_the_types_and_values_of_one_written_whole(
    tmp_path, block
):
    """Blocks of one row each see one kind of value per column: the types are still those the
    whole column gets (integers and floats promote, a null block takes any type, kinds that
    cannot share a type are text), and so are the values."""
    rows = [*ROWS, {"path": "d.dcm", "rows": 2.5, "spacing": [1, 2], "ok": True, "mixed": None}]
    jsonl = as_jsonl(rows, tmp_path / "t.jsonl")
    jsonl_parquet(jsonl, COLUMNS, tmp_path / "blocks.parquet", rows_per_group=block)
    whole = read(parquet_bytes(rows, COLUMNS))
    streamed = pq.read_table(tmp_path / "blocks.parquet")
    assert streamed.schema == whole.schema
    assert streamed.to_pylist() == whole.to_pylist()
    assert pq.ParquetFile(tmp_path / "blocks.parquet").num_row_groups == -(-len(rows) // block)
    if block >= len(rows):  # one block: the very bytes of the table written whole
        assert (tmp_path / "blocks.parquet").read_bytes() == parquet_bytes(rows, COLUMNS)
    again = tmp_path / "again.parquet"
    jsonl_parquet(jsonl, COLUMNS, again, rows_per_group=block)
    assert again.read_bytes() == (tmp_path / "blocks.parquet").read_bytes()


def test_an_empty_table_is_a_parquet_file_of_no_rows(tmp_path):
    jsonl = as_jsonl([], tmp_path / "empty.jsonl")
    jsonl_parquet(jsonl, COLUMNS, tmp_path / "empty.parquet")
    table = pq.read_table(tmp_path / "empty.parquet")
    assert table.num_rows == 0 and table.column_names == COLUMNS
