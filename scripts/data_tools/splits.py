"""Group-level splits that never move a record: the library behind dataset_splitter.py.

    from scripts.data_tools.splits import split_records, manifest_bytes
    manifest = split_records(rows, {"train": 0.8, "test": 0.2}, key, "id", "patient")
    Path("split.json").write_bytes(manifest_bytes(manifest))

Each group goes to a split by a keyed hash of its key (see dataset_splitter.py): a group's split
depends on nothing but its own key, so adding records never moves an existing one. The work is
done a column at a time: ``split_columns`` takes the columns as Arrow arrays (what
``read_columns`` gives for a JSON-lines table), ``split_records`` the rows as dicts; both
give the same manifest.
"""

from __future__ import annotations

import csv
import hashlib
import math
import operator
from collections.abc import Mapping
from concurrent.futures import Executor
from functools import cached_property
from itertools import islice, repeat
from pathlib import Path

import numpy as np
import orjson

from scripts.utils.config.seeds import SeedManager
from scripts.utils.errors import InputError
from scripts.utils.formats.parquet import columns_parquet
from scripts.utils.jsonio import canonical_json, json_objects, sorted_object
from scripts.utils.limits import regular_file

DEFAULT_RATIOS = "train=0.7,val=0.15,test=0.15"
SEED_STREAM = "dataset_splitter"


def parse_ratios(text: str) -> dict:
    """``train=0.7,val=0.15,test=0.15`` (or ``0.7,0.15,0.15``) -> ordered {split: ratio}."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    default_names = {2: ("train", "test"), 3: ("train", "val", "test")}
    ratios = {}
    for index, item in enumerate(items):
        name, sep, value = item.rpartition("=")
        if not sep:
            names = default_names.get(len(items))
            if names is None:
                raise InputError(
                    "unnamed ratios need 2 (train,test) or 3 (train,val,test) values", value=text
                )
            name, value = names[index], item
        try:
            ratio = float(value)
        except ValueError:
            raise InputError(f"ratio {value!r} is not a number", value=text)
        if not name or name in ratios or not 0 <= ratio <= 1 or not math.isfinite(ratio):
            raise InputError(
                "each split needs a unique name and a ratio between 0 and 1", value=text
            )
        ratios[name] = ratio
    if len(ratios) < 2:
        raise InputError("give at least two splits", value=text)
    if abs(sum(ratios.values()) - 1) > 1e-9:
        raise InputError(
            f"split ratios must sum to 1, they sum to {sum(ratios.values()):g}", value=text
        )
    return ratios


def split_key(seeds: SeedManager) -> bytes:
    return seeds.seed(SEED_STREAM).to_bytes(8, "big")


def group_position(key: bytes, group: str) -> float:
    """The group's place in [0, 1): platform-stable, keyed."""
    return int.from_bytes(_hash_chunk(key, [group]), "big") / 2**64


def _bounds(ratios: dict) -> np.ndarray:
    """Cumulative upper bounds of the splits, in 64-bit fixed point; the last is 2**64."""
    cumulative = np.cumsum([ratios[name] for name in ratios])
    fixed = [min(2**64 - 1, int(round(c * 2**64))) for c in cumulative[:-1]]
    return np.array(fixed, dtype=np.uint64)


PARALLEL_GROUPS = 100_000  # below this many distinct groups, one process is faster than a pool


def _hash_chunk(key: bytes, groups: list) -> bytes:
    """8 bytes of keyed BLAKE2b per group, joined (a MAC: without the key the split cannot be
    predicted)."""
    # copies of one keyed hash skip hashing the key block again
    copy = hashlib.blake2b(key=key, digest_size=8).copy
    digests = []
    for group in groups:
        one = copy()
        one.update(group.encode("utf-8"))
        digests.append(one.digest())
    return b"".join(digests)


def assign_records(groups, ratios: dict, key: bytes, executor: Executor | None = None):
    """Split index (into ``list(ratios)``) of every record, as a list, and ``{group: split index}``.

    The distinct groups are found in first-seen order with a dict (faster
    than sorting strings), each is hashed once with keyed BLAKE2b (8 bytes,
    read as a big-endian integer), and the positions are compared with the
    bounds. With an ``executor`` and many groups, chunks of groups are hashed
    on it; the chunks are joined in order, so the result does not depend on it.
    """
    groups = groups.tolist() if isinstance(groups, np.ndarray) else list(groups)
    names = list(dict.fromkeys(groups))
    per_group = dict(zip(names, group_splits(names, ratios, key, executor).tolist()))
    return list(map(per_group.__getitem__, groups)), per_group


def group_splits(names: list, ratios: dict, key: bytes, executor: Executor | None = None):
    """The split index of each distinct group in ``names`` (a NumPy array, in that order)."""
    if executor is not None and len(names) >= PARALLEL_GROUPS:
        size = -(-len(names) // 16)
        chunks = [names[start : start + size] for start in range(0, len(names), size)]
        digests = b"".join(executor.map(_hash_chunk, [key] * len(chunks), chunks))
    else:
        digests = _hash_chunk(key, names)
    positions = np.frombuffer(digests, dtype=">u8").astype(np.uint64)
    return np.searchsorted(_bounds(ratios), positions, side="right")


def assign_groups(groups, ratios: dict, key: bytes) -> dict:
    """``{group: split name}`` for every distinct group key."""
    names = list(ratios)
    _, per_group = assign_records(list(groups), ratios, key)
    return {group: names[index] for group, index in per_group.items()}


def read_records(path: Path) -> list:
    """Rows of a CSV or JSON-lines file as dicts of strings (None for empty)."""
    suffix = path.suffix.lower()
    try:
        regular_file(path, "records file")
        if suffix == ".csv":
            rows = []
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                for row in reader:
                    if None in row:
                        raise InputError(
                            "a row has more fields than the header", file=path, line=reader.line_num
                        )
                    rows.append({k: (v if v != "" else None) for k, v in row.items()})
            return rows
        if suffix in (".jsonl", ".ndjson"):
            with open(path, "rb") as handle:
                return [row for _, row in json_objects(handle, file=path)]
    except FileNotFoundError:
        raise InputError("records file not found", file=path)
    except UnicodeDecodeError:
        raise InputError("records file is not UTF-8 text", file=path)
    except csv.Error as exc:
        raise InputError(f"invalid CSV: {exc}", file=path)
    raise InputError(f"unknown records format {suffix!r}: use .csv or .jsonl", file=path)


def _text(value):
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _column(rows: list, column: str) -> list:
    """One column as texts (None for a missing or empty value); fast when every value is already
    text."""
    values = list(map(dict.get, rows, repeat(column)))
    if set(map(type, values)) == {str} and "" not in values:
        return values
    return [_text(value) for value in values]


def split_records(
    rows: list,
    ratios: dict,
    key: bytes,
    id_column: str,
    group_column: str,
    stratify: str | None = None,
    source="records",
    executor: Executor | None = None,
) -> dict:
    """The split manifest's content for ``rows`` (see the module docstring).

    Column at a time: a million records take well under a second. A group
    spanning two splits is impossible by construction (a record's split is
    its group's), which the tests check from the outside.
    """
    if not rows:
        raise InputError("no records to split", file=source)
    for column in filter(None, (id_column, group_column, stratify)):
        if column not in rows[0]:
            raise InputError(
                f"column {column!r} not found (columns: {', '.join(sorted(rows[0]))})",
                file=source,
                column_name=column,
            )
    ids = _column(rows, id_column)
    groups = _column(rows, group_column)
    labels = _column(rows, stratify) if stratify else None
    if None in ids:
        number = ids.index(None) + 1
        raise InputError(f"record {number} has no {id_column!r}", file=source, record=number)
    errors = list(map(dict.get, rows, repeat("error")))
    excluded = []
    if any(errors):
        kept = [number for number, error in enumerate(errors) if not error]
        excluded = [ids[number] for number, error in enumerate(errors) if error]
        ids, groups = [ids[n] for n in kept], [groups[n] for n in kept]
        labels = [labels[n] for n in kept] if labels is not None else None
    without_group = groups.count(None)
    if without_group:
        groups = [
            group if group is not None else "record:" + record_id
            for record_id, group in zip(ids, groups)
        ]
    if not ids:
        raise InputError("every record has an error: nothing to split", file=source)

    names = list(ratios)
    per_record, per_group = assign_records(groups, ratios, key, executor)
    assignments = Assignments.from_records(ids, per_record, names, source)
    counts = {
        name: {"records": per_record.count(index), "groups": list(per_group.values()).count(index)}
        for index, name in enumerate(names)
    }
    manifest = describe(
        ratios, assignments, per_group, counts, id_column, group_column, stratify, excluded
    )
    manifest["records_without_group"] = without_group
    if stratify:
        manifest["class_ratios"], manifest["mixed_label_groups"] = class_balance(
            dict(zip(ids, zip(groups, labels))), assignments, ratios
        )
    return manifest


def read_columns(path: Path, names: list) -> dict | None:
    """The columns ``names`` of a JSON-lines table as Arrow text arrays, read by Arrow's own
    reader (a missing or empty value is null; the fields not named are not parsed); None where
    it cannot give exactly what ``read_records`` gives (a value that is not text, a malformed
    line, another format: CSV keeps Python's reader and its field-size limit): the row reader
    then takes the file and names any error."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as arrow_json

    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return None
    schema = pa.schema([(name, pa.string()) for name in names])
    options = arrow_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as handle:  # a Python open: read_tracing sees it
            table = arrow_json.read_json(handle, parse_options=options)
    except (pa.ArrowException, OSError, ValueError):
        return None
    columns = {}
    for name in names:
        column = table.column(name).combine_chunks()
        columns[name] = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    return columns


def split_columns(
    columns: dict,
    ratios: dict,
    key: bytes,
    id_column: str,
    group_column: str,
    source="records",
    executor: Executor | None = None,
) -> dict | None:
    """``split_records`` on Arrow text columns (``read_columns``): the same manifest, a column at a
    time in Arrow and NumPy. None where the row path must decide (an id or group column that is
    null throughout: missing, or a message to give)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids, groups = columns[id_column], columns[group_column]
    if len(ids) == 0 or ids.null_count or groups.null_count == len(groups):
        return None
    errors = columns.get("error")
    excluded = []
    if errors is not None and errors.null_count < len(errors):
        failed = pc.is_valid(errors)
        excluded = pc.filter(ids, failed).to_pylist()
        ids, groups = pc.filter(ids, pc.invert(failed)), pc.filter(groups, pc.invert(failed))
        if len(ids) == 0:
            raise InputError("every record has an error: nothing to split", file=source)
    without_group = groups.null_count
    if without_group:
        own = pc.binary_join_element_wise(pa.scalar("record:"), ids, "")
        groups = pc.if_else(pc.is_null(groups), own, groups)

    encoded = pc.dictionary_encode(groups)
    distinct = encoded.dictionary.to_pylist()  # first seen first, as assign_records finds them
    group_index = group_splits(distinct, ratios, key, executor)
    per_record = group_index[encoded.indices.to_numpy(zero_copy_only=False)]

    names = list(ratios)
    assignments = ColumnAssignments.from_columns(ids, per_record, names, source)
    record_counts = np.bincount(per_record, minlength=len(names))
    group_counts = np.bincount(group_index, minlength=len(names))
    counts = {
        name: {"records": int(record_counts[index]), "groups": int(group_counts[index])}
        for index, name in enumerate(names)
    }
    per_group = dict(zip(distinct, group_index.tolist()))
    manifest = describe(
        ratios, assignments, per_group, counts, id_column, group_column, None, excluded
    )
    manifest["records_without_group"] = without_group
    return manifest


def describe(
    ratios, assignments, per_group, counts, id_column, group_column, stratify, excluded
) -> dict:
    """The manifest around the assignments (``per_group``: {group: split index})."""
    names = list(ratios)
    split_of_group = dict(zip(per_group, map(names.__getitem__, per_group.values())))
    return {
        "format": "crh-split",
        "version": 1,
        # A list, not a mapping: the order of the splits sets the hash bounds,
        # and canonical JSON sorts mapping keys.
        "splits": [[name, ratio] for name, ratio in ratios.items()],
        "id_column": id_column,
        "group_column": group_column,
        "stratify": stratify,
        "assignment": "keyed BLAKE2b(group, digest_size=8, key from the seeds), big-endian, "
        "against cumulative ratios x 2**64",
        "assignments": assignments,  # canonical JSON writes the keys sorted
        "groups": split_of_group,
        "counts": counts,
        "achieved_ratios": {
            name: {
                "records": c["records"] / len(assignments),
                "groups": c["groups"] / len(split_of_group),
            }
            for name, c in counts.items()
        },
        "excluded_records": sorted(excluded),
    }


def manifest_bytes(manifest: dict) -> bytes:
    """split.json's canonical bytes. Its floats are finite ratios, so orjson writes it alone,
    unchecked."""
    assignments = manifest["assignments"]
    if isinstance(assignments, ColumnAssignments):
        written = sorted_arrow_object(
            assignments.id_array, assignments.index_array, assignments.names
        )
        manifest = {
            **manifest,
            "assignments": written
            or sorted_object(assignments.ids, assignments.indices, assignments.names),
        }
    elif isinstance(assignments, Assignments):
        manifest = {
            **manifest,
            "assignments": sorted_object(assignments.ids, assignments.indices, assignments.names),
        }
    return canonical_json(manifest, checked=False)


MANIFEST_BLOCK = 1 << 16  # records laid out at a time by write_manifest


def write_manifest(handle, manifest: dict, block: int = MANIFEST_BLOCK) -> None:
    """``manifest_bytes(manifest)`` written to ``handle`` in pieces: the assignments of a manifest
    on columns are laid out ``block`` records at a time, so the document is never whole in
    memory (ids that need JSON escapes, and manifests on rows, are written whole)."""
    assignments = manifest["assignments"]
    if (
        not isinstance(assignments, ColumnAssignments)
        or len(assignments) <= block
        or _needs_escapes(assignments.id_array)
    ):
        handle.write(manifest_bytes(manifest))
        return
    marker = b"\x01"  # a control character: in canonical JSON only ever escaped, so unique
    head, tail = canonical_json(
        {**manifest, "assignments": orjson.Fragment(marker)}, checked=False
    ).split(marker)
    handle.write(head + b"{")
    keys, indices = assignments.id_array, assignments.index_array
    for start in range(0, len(keys), block):
        piece = _arrow_object(
            keys.slice(start, block), indices[start : start + block], assignments.names
        )
        handle.write((b"," if start else b"") + piece[1:-1])
    handle.write(b"}" + tail)


def split_parquet(manifest: dict) -> bytes:
    """The record -> split assignments as Parquet: columns ``id`` and ``split``, sorted by id."""
    assignments = manifest["assignments"]
    if isinstance(assignments, ColumnAssignments):
        ids = assignments.id_array
        splits = [assignments.names[index] for index in assignments.index_array.tolist()]
    elif isinstance(assignments, Assignments):
        ids, splits = assignments.ids, list(map(assignments.names.__getitem__, assignments.indices))
    else:
        ids = sorted(assignments)
        splits = list(map(assignments.__getitem__, ids))
    return columns_parquet({"id": ids, "split": splits})


def sorted_arrow_object(keys, indices: np.ndarray, values: list):
    """``jsonio.sorted_object`` for keys held as an Arrow text array (sorted, unique): the JSON
    object ``{keys[i]: values[indices[i]]}`` laid out byte by byte with NumPy, as an orjson
    Fragment; None when a key holds a character JSON escapes (a quote, a backslash, a control
    character), which sorted_object then writes."""
    if _needs_escapes(keys):
        return None
    return orjson.Fragment(_arrow_object(keys, indices, values))


def _key_bytes(keys) -> tuple:
    """An Arrow text array's offsets (int64, from 0 at its first key's start) and its bytes."""
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int32)[
        keys.offset : keys.offset + len(keys) + 1
    ].astype(np.int64)
    data = np.frombuffer(keys.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return offsets, data


def _needs_escapes(keys) -> bool:
    """Whether a key holds a character JSON escapes (a quote, a backslash, a control character)."""
    _, data = _key_bytes(keys)
    return bool(data.size and (data.min() < 0x20 or np.any((data == 0x22) | (data == 0x5C))))


def _arrow_object(keys, indices: np.ndarray, values: list) -> bytes:
    """sorted_arrow_object's bytes, for keys that need no escapes: Arrow joins each key with its
    value's tail (``":"value","``) in one kernel, and its text buffer is the object's body."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(keys) == 0:
        return b"{}"
    tails = pa.array(['":' + orjson.dumps(value).decode() + ',"' for value in values])
    items = pc.binary_join_element_wise(keys, tails.take(pa.array(indices)), "")
    _, data = _key_bytes(items)
    body = bytearray(b'{"')
    body += memoryview(data[:-2])  # the last item's ',"' becomes the closing brace
    body += b"}"
    return bytes(body)


class Assignments(Mapping):
    """record id -> split name, held as ids sorted and split indices; the dict is built only when
    looked into."""

    def __init__(self, ids: list, indices: list, names: list):
        self.ids, self.indices, self.names = ids, indices, names

    @classmethod
    def from_records(cls, ids: list, indices: list, names: list, source) -> Assignments:
        """Sort by id and refuse a duplicate id. A table already in id order (metadata_extractor
        writes its rows sorted) is only checked: one pass."""
        if not all(map(operator.lt, ids, islice(ids, 1, None))):
            order = sorted(range(len(ids)), key=ids.__getitem__)
            ids, indices = list(map(ids.__getitem__, order)), list(map(indices.__getitem__, order))
            duplicate = next((a for a, b in zip(ids, islice(ids, 1, None)) if a == b), None)
            if duplicate is not None:
                raise InputError(
                    f"duplicate record id {duplicate!r}", file=source, record_id=duplicate
                )
        return cls(ids, indices, names)

    @cached_property
    def _lookup(self) -> dict:
        return dict(zip(self.ids, map(self.names.__getitem__, self.indices)))

    def __getitem__(self, record_id):
        return self._lookup[record_id]

    def __iter__(self):
        return iter(self.ids)

    def __len__(self):
        return len(self.ids)


class ColumnAssignments(Assignments):
    """Assignments held as an Arrow id array (sorted) and a NumPy array of split indices; the
    Python lists are made only when asked for."""

    def __init__(self, id_array, index_array: np.ndarray, names: list):
        self.id_array, self.index_array, self.names = id_array, index_array, names

    @classmethod
    def from_columns(cls, ids, indices: np.ndarray, names: list, source) -> ColumnAssignments:
        """Sort by id (Arrow compares UTF-8 bytes, which orders as Python orders text) and refuse
        a duplicate id; a column already in id order is only checked."""
        import pyarrow.compute as pc

        ahead = pc.less(ids.slice(0, len(ids) - 1), ids.slice(1))
        if len(ids) > 1 and not pc.all(ahead).as_py():
            order = pc.sort_indices(ids)
            ids, indices = ids.take(order), indices[order.to_numpy()]
            same = pc.equal(ids.slice(0, len(ids) - 1), ids.slice(1))
            if pc.any(same).as_py():
                duplicate = ids[pc.index(same, True).as_py()].as_py()
                raise InputError(
                    f"duplicate record id {duplicate!r}", file=source, record_id=duplicate
                )
        return cls(ids, indices, names)

    @cached_property
    def ids(self) -> list:
        return self.id_array.to_pylist()

    @cached_property
    def indices(self) -> list:
        return self.index_array.tolist()

    def __len__(self):
        return len(self.id_array)


def class_balance(records: dict, assignments: dict, ratios: dict):
    """Per split, the fraction of each label; and groups whose records disagree on the label."""
    per_split = {name: {} for name in ratios}
    labels_of_group = {}
    for record_id, (group, label) in records.items():
        label = label if label is not None else "(none)"
        bucket = per_split[assignments[record_id]]
        bucket[label] = bucket.get(label, 0) + 1
        labels_of_group.setdefault(group, set()).add(label)
    fractions = {
        name: {
            label: count / max(1, sum(bucket.values())) for label, count in sorted(bucket.items())
        }
        for name, bucket in per_split.items()
    }
    mixed = sorted(group for group, labels in labels_of_group.items() if len(labels) > 1)
    return fractions, mixed
