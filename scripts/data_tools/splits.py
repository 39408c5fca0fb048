"""Group-level splits that never move a record: the library behind dataset_splitter.py.

    from scripts.data_tools.splits import split_records, manifest_bytes
    manifest = split_records(rows, {"train": 0.8, "test": 0.2}, key, "id", "patient")
    Path("split.json").write_bytes(manifest_bytes(manifest))

Each group goes to a split by a keyed hash of its key (see dataset_splitter.py): a group's split
depends on nothing but its own key, so adding records never moves an existing one. The work is
done a column at a time: ``split_columns`` takes the columns as Arrow arrays (what
``read_columns`` gives for a JSON-lines or CSV table), ``split_records`` the rows as dicts; both
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
    keyed = hashlib.blake2b(key=key, digest_size=8)  # copies of it skip hashing the key block again
    digests = []
    for group in groups:
        one = keyed.copy()
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
    if executor is not None and len(names) >= PARALLEL_GROUPS:
        size = -(-len(names) // 16)
        chunks = [names[start : start + size] for start in range(0, len(names), size)]
        digests = b"".join(executor.map(_hash_chunk, [key] * len(chunks), chunks))
    else:
        digests = _hash_chunk(key, names)
    positions = np.frombuffer(digests, dtype=">u8").astype(np.uint64)
    per_group = dict(zip(names, np.searchsorted(_bounds(ratios), positions, side="right").tolist()))
    return list(map(per_group.__getitem__, groups)), per_group


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
    group_splits = dict(zip(per_group, map(names.__getitem__, per_group.values())))
    group_indices = list(per_group.values())
    counts = {
        name: {"records": per_record.count(index), "groups": group_indices.count(index)}
        for index, name in enumerate(names)
    }
    manifest = {
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
        "groups": group_splits,
        "counts": counts,
        "achieved_ratios": {
            name: {
                "records": c["records"] / len(assignments),
                "groups": c["groups"] / len(group_splits),
            }
            for name, c in counts.items()
        },
        "excluded_records": sorted(excluded),
        "records_without_group": without_group,
    }
    if stratify:
        manifest["class_ratios"], manifest["mixed_label_groups"] = class_balance(
            dict(zip(ids, zip(groups, labels))), assignments, ratios
        )
    return manifest


def manifest_bytes(manifest: dict) -> bytes:
    """split.json's canonical bytes. Its floats are finite ratios, so orjson writes it alone,
    unchecked."""
    assignments = manifest["assignments"]
    if isinstance(assignments, Assignments):
        manifest = {
            **manifest,
            "assignments": sorted_object(assignments.ids, assignments.indices, assignments.names),
        }
    return canonical_json(manifest, checked=False)


def split_parquet(manifest: dict) -> bytes:
    """The record -> split assignments as Parquet: columns ``id`` and ``split``, sorted by id."""
    assignments = manifest["assignments"]
    if isinstance(assignments, Assignments):
        ids, splits = assignments.ids, list(map(assignments.names.__getitem__, assignments.indices))
    else:
        ids = sorted(assignments)
        splits = list(map(assignments.__getitem__, ids))
    return columns_parquet({"id": ids, "split": splits})


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
