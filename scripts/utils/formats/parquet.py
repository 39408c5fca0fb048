"""Tables as Parquet, for pandas, polars and DuckDB users: the same rows as a JSON-lines table.

    from scripts.utils.formats.parquet import parquet_bytes
    data = parquet_bytes(rows, ["path", "kind", "rows", "columns"])
    # pandas.read_parquet(path); polars.read_parquet(path); duckdb: SELECT * FROM 'metadata.parquet'

Each column is typed as pyarrow infers it from its values (text, integers, floats, booleans,
lists; None is null). A column whose values pyarrow cannot put in one type (an integer in one
row, text in another) is written as text, lists and objects as canonical JSON, as the CSV
table writes them. The bytes are the same on every run with the same pyarrow (Parquet keeps
no time stamps; the writer's version is in the file, and pyarrow is one of the environment's
byte-relevant packages): zstd compression, dictionary encoding, one row group.
"""

from __future__ import annotations

import orjson


def column_array(values: list):
    """One column's values as a pyarrow array (see the module docstring)."""
    import pyarrow as pa

    try:
        array = pa.array(values, from_pandas=False)
        if pa.types.is_list(array.type) and pa.types.is_null(array.type.value_type):
            return array.cast(pa.list_(pa.string()))  # lists that are all empty: of text
        if not pa.types.is_null(array.type):
            return array
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    return pa.array(
        [
            None
            if value is None
            else value
            if isinstance(value, str)
            else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
            for value in values
        ],
        type=pa.string(),
    )


def parquet_bytes(rows: list, columns) -> bytes:
    """``rows`` (dicts; a missing key is null) as a Parquet file of ``columns``, in row order."""
    return columns_parquet({name: [row.get(name) for row in rows] for name in columns})


def columns_parquet(columns: dict) -> bytes:
    """``{name: values}`` (equal lengths) as a Parquet file, the columns in the given order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table([column_array(list(values)) for values in columns.values()], names=[*columns])
    rows = table.num_rows
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        use_dictionary=True,
        row_group_size=max(1, rows),
        write_statistics=True,
    )
    return sink.getvalue().to_pybytes()
