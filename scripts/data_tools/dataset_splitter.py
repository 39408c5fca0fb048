"""Deterministic group-level train/val/test splits that never move a record.

Each group (the patient by default) goes to a split by a keyed hash of its
key: ``u`` = keyed BLAKE2b(group, 8 bytes) as a big-endian integer, then
the first split whose cumulative bound (ratio x 2**64) exceeds ``u``. A group's split depends on nothing but
its own key, so adding records never moves an existing one (scikit-learn's
GroupShuffleSplit re-shuffles everything when the dataset grows). The key is
derived from the seeds (stream ``dataset_splitter``): change the seed, get
another split. Every record of a group lands in the same split, and this is
checked.

Records come from the metadata table (the newest ``metadata_extractor`` run
by default) or any CSV/JSONL file. Rows with an ``error`` are left out; a
record with an empty group key is a group of its own. ``--stratify LABEL``
reports the class balance of every split and checks that each group has one
label; assignment stays by hash (exact per-class quotas would move records
when data is added), so with few groups per class the achieved ratios can
differ from the targets, which the manifest shows.

The split manifest (``split.json``) holds record -> split, group -> split,
achieved counts by records and groups, class ratios, and everything needed to
re-derive it: ``--verify MANIFEST`` does so and exits 1 on any difference.

Usage:
    python scripts/data_tools/dataset_splitter.py
    python scripts/data_tools/dataset_splitter.py records.csv --group-column subject --ratios train=0.8,test=0.2
    python scripts/data_tools/dataset_splitter.py --verify experiments/results/dataset_splitter_<stamp>/split.json
"""

from __future__ import annotations

import csv
import hashlib
import math
import sys
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import numpy as np
import orjson

from scripts.utils import cli
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.limits import regular_file
from scripts.utils.jsonio import atomic_output, canonical_json, read_json
from scripts.utils.registry import MANIFEST
from scripts.utils.run_records import RunRecorder, latest_run, relative_to_workspace, resolve_workspace
from scripts.utils.seed_manager import SeedManager

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
                raise InputError("unnamed ratios need 2 (train,test) or 3 (train,val,test) values", value=text)
            name, value = names[index], item
        try:
            ratio = float(value)
        except ValueError:
            raise InputError(f"ratio {value!r} is not a number", value=text)
        if not name or name in ratios or not 0 <= ratio <= 1 or not math.isfinite(ratio):
            raise InputError("each split needs a unique name and a ratio between 0 and 1", value=text)
        ratios[name] = ratio
    if len(ratios) < 2:
        raise InputError("give at least two splits", value=text)
    if abs(sum(ratios.values()) - 1) > 1e-9:
        raise InputError(f"split ratios must sum to 1, they sum to {sum(ratios.values()):g}", value=text)
    return ratios


def split_key(seeds: SeedManager) -> bytes:
    return seeds.seed(SEED_STREAM).to_bytes(8, "big")


def _keyed_hash(key: bytes, group: str) -> bytes:
    """8 bytes of keyed BLAKE2b (a MAC: without the key the split cannot be predicted)."""
    return hashlib.blake2b(group.encode("utf-8"), key=key, digest_size=8).digest()


def group_position(key: bytes, group: str) -> float:
    """The group's place in [0, 1): platform-stable, keyed."""
    return int.from_bytes(_keyed_hash(key, group), "big") / 2**64


def _bounds(ratios: dict) -> np.ndarray:
    """Cumulative upper bounds of the splits, in 64-bit fixed point; the last is 2**64."""
    cumulative = np.cumsum([ratios[name] for name in ratios])
    fixed = [min(2**64 - 1, int(round(c * 2**64))) for c in cumulative[:-1]]
    return np.array(fixed, dtype=np.uint64)


PARALLEL_GROUPS = 100_000  # below this many distinct groups, one process is faster than a pool


def _hash_chunk(key: bytes, groups: list) -> bytes:
    return b"".join([_keyed_hash(key, group) for group in groups])


def assign_records(groups, ratios: dict, key: bytes, executor: Executor | None = None):
    """Split index (into ``list(ratios)``) for every record, and ``{group: split index}``.

    Vectorized: the distinct groups are found with ``numpy.unique`` (as
    scikit-learn does), each is hashed once with keyed BLAKE2b (8 bytes, read
    as a big-endian integer), and the positions are compared with the bounds.
    With an ``executor`` and many groups, chunks of groups are hashed on it;
    the chunks are joined in order, so the result does not depend on it.
    """
    groups = np.asarray(groups, dtype=str)
    distinct, inverse = np.unique(groups, return_inverse=True)
    names = distinct.tolist()
    if executor is not None and len(names) >= PARALLEL_GROUPS:
        size = -(-len(names) // 16)
        chunks = [names[start:start + size] for start in range(0, len(names), size)]
        digests = b"".join(executor.map(_hash_chunk, [key] * len(chunks), chunks))
    else:
        digests = _hash_chunk(key, names)
    positions = np.frombuffer(digests, dtype=">u8").astype(np.uint64)
    per_group = np.searchsorted(_bounds(ratios), positions, side="right")
    return per_group[inverse.reshape(-1)], dict(zip(distinct.tolist(), per_group.tolist()))


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
                        raise InputError("a row has more fields than the header", file=path,
                                         line=reader.line_num)
                    rows.append({k: (v if v != "" else None) for k, v in row.items()})
            return rows
        if suffix in (".jsonl", ".ndjson"):
            rows = []
            with open(path, "rb") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        raise InputError(f"invalid JSON line: {exc.msg}", file=path, line=number, column=exc.colno)
                    if not isinstance(row, dict):
                        raise InputError("each line must be a JSON object", file=path, line=number)
                    rows.append(row)
            return rows
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


def split_records(rows: list, ratios: dict, key: bytes, id_column: str, group_column: str,
                  stratify: str | None = None, source="records", executor: Executor | None = None) -> dict:
    """The split manifest's content for ``rows`` (see the module docstring)."""
    if not rows:
        raise InputError("no records to split", file=source)
    for column in filter(None, (id_column, group_column, stratify)):
        if column not in rows[0]:
            raise InputError(f"column {column!r} not found (columns: {', '.join(sorted(rows[0]))})",
                             file=source, column_name=column)
    records = {}
    excluded = []
    without_group = 0
    for number, row in enumerate(rows, start=1):
        record_id = _text(row.get(id_column))
        if record_id is None:
            raise InputError(f"record {number} has no {id_column!r}", file=source, record=number)
        if row.get("error"):
            excluded.append(record_id)
            continue
        if record_id in records:
            raise InputError(f"duplicate record id {record_id!r}", file=source, record=number)
        group = _text(row.get(group_column))
        if group is None:
            group, without_group = "record:" + record_id, without_group + 1
        records[record_id] = (group, _text(row.get(stratify)) if stratify else None)

    names = list(ratios)
    ids = list(records)
    per_record, per_group = assign_records([records[i][0] for i in ids], ratios, key, executor)
    assignments = dict(zip(ids, (names[index] for index in per_record.tolist())))
    groups = {group: names[index] for group, index in per_group.items()}
    check_disjoint(records, assignments)

    counts = {name: {"records": 0, "groups": 0} for name in ratios}
    for split in assignments.values():
        counts[split]["records"] += 1
    for split in groups.values():
        counts[split]["groups"] += 1
    manifest = {
        "format": "crh-split", "version": 1,
        # A list, not a mapping: the order of the splits sets the hash bounds,
        # and canonical JSON sorts mapping keys.
        "splits": [[name, ratio] for name, ratio in ratios.items()],
        "id_column": id_column, "group_column": group_column, "stratify": stratify,
        "assignment": "keyed BLAKE2b(group, digest_size=8, key from the seeds), big-endian, against cumulative "
                      "ratios x 2**64",
        "assignments": dict(sorted(assignments.items())),
        "groups": dict(sorted(groups.items())),
        "counts": counts,
        "achieved_ratios": {name: {"records": c["records"] / len(assignments), "groups": c["groups"] / len(groups)}
                            for name, c in counts.items()},
        "excluded_records": sorted(excluded),
        "records_without_group": without_group,
    }
    if stratify:
        manifest["class_ratios"], manifest["mixed_label_groups"] = class_balance(records, assignments, ratios)
    return manifest


def check_disjoint(records: dict, assignments: dict) -> None:
    """No group may span two splits (true by construction; checked all the same)."""
    seen = {}
    for record_id, (group, _) in records.items():
        split = assignments[record_id]
        if seen.setdefault(group, split) != split:
            raise CheckFailed(f"group {group!r} spans two splits", group=group, splits=sorted({seen[group], split}))


def class_balance(records: dict, assignments: dict, ratios: dict):
    """Per split, the fraction of each label; and groups whose records disagree on the label."""
    per_split = {name: {} for name in ratios}
    labels_of_group = {}
    for record_id, (group, label) in records.items():
        label = label if label is not None else "(none)"
        bucket = per_split[assignments[record_id]]
        bucket[label] = bucket.get(label, 0) + 1
        labels_of_group.setdefault(group, set()).add(label)
    fractions = {name: {label: count / max(1, sum(bucket.values())) for label, count in sorted(bucket.items())}
                 for name, bucket in per_split.items()}
    mixed = sorted(group for group, labels in labels_of_group.items() if len(labels) > 1)
    return fractions, mixed


def latest_table(workspace: Path) -> Path:
    """The metadata table of the newest metadata_extractor run in the manifest."""
    run_id = latest_run(workspace, "metadata_extractor")
    if run_id is None:
        raise InputError("no records file given and no metadata_extractor run in this workspace: "
                         "run scripts/data_tools/metadata_extractor.py first, or name a CSV/JSONL file",
                         file=workspace / MANIFEST)
    return workspace / "experiments/results" / run_id / "metadata.jsonl"


def differences(expected: dict, actual: dict, limit: int = 20) -> list:
    """Records whose split differs (or that one side lacks), first ``limit`` of them."""
    found = []
    for record_id in sorted(set(expected) | set(actual)):
        if expected.get(record_id) != actual.get(record_id):
            found.append({"record": record_id, "manifest": expected.get(record_id), "derived": actual.get(record_id)})
            if len(found) == limit:
                break
    return found


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "dataset_splitter",
        description="Split records into train/val/test by a keyed hash of their group (patient by default).",
        example="python scripts/data_tools/dataset_splitter.py --ratios train=0.7,val=0.15,test=0.15",
    )
    parser.add_argument("records", nargs="?", metavar="FILE",
                        help="CSV or JSONL records (default: the newest metadata table in the workspace)")
    parser.add_argument("--ratios", default=DEFAULT_RATIOS, help="split=ratio,... summing to 1")
    parser.add_argument("--group-column", default="patient_id", help="records of one group stay together")
    parser.add_argument("--id-column", default="path", help="the record identifier")
    parser.add_argument("--stratify", metavar="COLUMN", default=None, help="label column to report class balance for")
    parser.add_argument("--verify", metavar="MANIFEST", default=None,
                        help="re-derive the split of MANIFEST from the same records and seeds; exit 1 on any difference")
    cli.add_workers_option(parser, f"processes for hashing groups (used from {PARALLEL_GROUPS:,} distinct groups)")
    cli.add_seeds_option(parser)
    cli.add_common_options(parser)

    def run(args, log):
        from scripts.data_tools import dataset_splitter as lib  # importable, for the worker processes

        workspace = resolve_workspace(args.workspace)
        seeds = SeedManager.from_file(args.seeds)
        previous = None
        if args.verify:
            previous = read_json(Path(args.verify))
            if not isinstance(previous, dict) or previous.get("format") != "crh-split":
                raise InputError("not a split manifest (format crh-split)", file=args.verify)
            ratios = {name: ratio for name, ratio in previous["splits"]}
            id_column, group_column, stratify = previous["id_column"], previous["group_column"], previous["stratify"]
            source = Path(args.records) if args.records else workspace / previous["records"]
        else:
            ratios = parse_ratios(args.ratios)
            id_column, group_column, stratify = args.id_column, args.group_column, args.stratify
            source = Path(args.records) if args.records else latest_table(workspace)
        try:
            source_name = relative_to_workspace(workspace, source)
        except InputError:
            source_name = source.name
        rows = read_records(source)
        if args.workers > 1 and len(rows) >= PARALLEL_GROUPS:
            with ProcessPoolExecutor(max_workers=args.workers) as pool:
                manifest = lib.split_records(rows, ratios, split_key(seeds), id_column, group_column, stratify, source,
                                             pool)
        else:
            manifest = lib.split_records(rows, ratios, split_key(seeds), id_column, group_column, stratify, source)
        manifest["records"] = source_name
        manifest["records_sha256"] = hashlib.sha256(source.read_bytes()).hexdigest()

        config = {"ratios": ratios, "id_column": id_column, "group_column": group_column, "stratify": stratify,
                  "records": source_name, "verify": args.verify is not None}
        with RunRecorder("dataset_splitter", workspace=workspace, seeds=seeds, log=log, config=config) as record:
            if previous is None:
                with atomic_output(record.output_path("split.json")) as handle:
                    handle.write(canonical_json(manifest))
                record.results.update(counts=manifest["counts"], split=f"experiments/results/{record.run_id}/split.json")
                log.info("split", **{name: c["records"] for name, c in manifest["counts"].items()},
                         manifest=f"experiments/results/{record.run_id}/split.json")
                return 0
            found = differences(previous["assignments"], manifest["assignments"])
            record.results.update(verified=not found, differences=found)
        if found:
            raise CheckFailed(f"the split differs from the manifest ({len(found)} records shown)",
                              first=found[0], manifest=args.verify)
        log.info("verified", manifest=args.verify, records=len(manifest["assignments"]))
        return 0

    return cli.run(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
