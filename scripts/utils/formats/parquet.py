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

A table too large to hold goes through ``jsonl_parquet``: it reads a JSON-lines table back in
blocks of ``ROWS_PER_GROUP`` rows, twice (first each column's type over every block, promoted
as pyarrow promotes them: integers and floats to floats, a null column to any type; a column
whose blocks cannot share one type is text), then writes one row group per block: memory
follows the block, not the table, and the bytes are again the same on every run.
"""

from __future__ import annotations

from pathlib import Path

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
    return text_array(values)


def text_array(values: list):
    """Values as a text column: text as it is, anything else as canonical JSON, None as null."""
    import pyarrow as pa

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


ROWS_PER_GROUP = 16_384


def _blocks(jsonl: Path, columns, size: int):
    """``{name: values}`` of each block of ``size`` rows of a JSON-lines table (an empty table is
    one empty block)."""
    block, count, yielded = {name: [] for name in columns}, 0, False
    with open(jsonl, "rb") as handle:
        for line in handle:
            row = orjson.loads(line)
            for name, values in block.items():
                values.append(row.get(name))
            count += 1
            if count == size:
                yield block
                block, count, yielded = {name: [] for name in columns}, 0, True
    if count or not yielded:
        yield block


def _block_type(values: list):
    """The arrow type pyarrow infers for one block's values, or None where it infers none."""
    import pyarrow as pa

    try:
        return pa.array(values, from_pandas=False).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None


def _promoted(first, second):
    """The one type both arrow types go into (null goes into any), or None where none is."""
    import pyarrow as pa

    if first == second:
        return first
    try:
        schema = pa.unify_schemas(
            [pa.schema([("c", first)]), pa.schema([("c", second)])], promote_options="permissive"
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError):
        return None
    return schema.field("c").type


def _settled(kind):
    """A column's final type: all null is text, lists that were always empty hold text."""
    import pyarrow as pa

    if kind is None or pa.types.is_null(kind):
        return pa.string()
    if pa.types.is_list(kind) and pa.types.is_null(kind.value_type):
        return pa.list_(pa.string())
    return kind


def jsonl_parquet(jsonl: Path, columns, destination: Path, rows_per_group: int = ROWS_PER_GROUP):
    """The JSON-lines table ``jsonl`` (its ``columns``) as a Parquet file at ``destination``,
    read and written a block of rows at a time (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds: dict = {name: pa.null() for name in columns}  # None: text
    for block in _blocks(jsonl, columns, rows_per_group):
        for name, values in block.items():
            if kinds[name] is not None:
                found = _block_type(values)
                kinds[name] = None if found is None else _promoted(kinds[name], found)
    schema = pa.schema([(name, _settled(kind)) for name, kind in kinds.items()])
    with (
        open(destination, "wb") as sink,  # a Python file: arrow refuses paths that are not UTF-8
        pq.ParquetWriter(
            sink, schema, compression="zstd", use_dictionary=True, write_statistics=True
        ) as writer,
    ):
        for block in _blocks(jsonl, columns, rows_per_group):
            arrays = [
                text_array(block[field.name])
                if kinds[field.name] is None
                else pa.array(block[field.name], from_pandas=False).cast(field.type)
                for field in schema
            ]
            writer.write_table(pa.table(arrays, schema=schema), row_group_size=rows_per_group)
