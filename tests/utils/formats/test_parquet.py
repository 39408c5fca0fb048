import io

import pyarrow.parquet as pq

from scripts.utils.formats.parquet import columns_parquet, parquet_bytes

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
