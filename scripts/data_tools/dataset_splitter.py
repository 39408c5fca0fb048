"""Deterministic group-level train/val/test splits that never move a record.

Each group (the patient by default) goes to a split by a keyed hash of its key: ``u`` = keyed
BLAKE2b(group, 8 bytes) as a big-endian integer, then the first split whose cumulative bound (ratio
x 2**64) exceeds ``u``. A group's split depends on nothing but its own key, so adding records never
moves an existing one (scikit-learn's GroupShuffleSplit re-shuffles everything when the dataset
grows). The key is derived from the seeds (stream ``dataset_splitter``): change the seed, get
another split. Every record of a group lands in the same split: a record's split is its group's, by
construction. The table's columns are read by Arrow where it can (JSON lines whose id, group
and error values are text), and the work is done a column at a time: a million records in
100,000 groups, split.json written, take about twice what scikit-learn's GroupShuffleSplit takes
to draw one split (``make bench``, split_full_manifest). Other tables go through rows, with the
same manifest.

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
``split.parquet`` beside it holds the record -> split table (columns ``id``,
``split``, sorted by id) for pandas, polars and DuckDB.

Usage:
    python scripts/data_tools/dataset_splitter.py
    python scripts/data_tools/dataset_splitter.py records.csv --group-column subject \\
        --ratios train=0.8,test=0.2
    python scripts/data_tools/dataset_splitter.py \\
        --verify experiments/results/dataset_splitter_<stamp>/split.json
"""

from __future__ import annotations

import hashlib
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()


from scripts.data_tools import splits
from scripts.data_tools.splits import (
    DEFAULT_RATIOS,
    PARALLEL_GROUPS,
    parse_ratios,
    read_records,
    split_key,
)
from scripts.utils import cli
from scripts.utils.config.seeds import SeedManager
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.jsonio import (
    atomic_output,
    atomic_write_bytes,
    read_json,
)
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.records.registry import MANIFEST
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import relative_to_workspace, resolve_workspace, run_folder


def latest_table(workspace: Path) -> Path:
    """The metadata table of the newest metadata_extractor run in the manifest."""
    run_id = WorkspaceRecords(workspace).latest("metadata_extractor")
    if run_id is None:
        raise InputError(
            "no records file given and no metadata_extractor run in this workspace: "
            "run scripts/data_tools/metadata_extractor.py first, or name a CSV/JSONL file",
            file=workspace / MANIFEST,
        )
    return workspace / run_folder(run_id) / "metadata.jsonl"


def differences(expected: dict, actual: dict, limit: int = 20) -> list:
    """Records whose split differs (or that one side lacks), first ``limit`` of them."""
    found = []
    for record_id in sorted(set(expected) | set(actual)):
        if expected.get(record_id) != actual.get(record_id):
            found.append(
                {
                    "record": record_id,
                    "manifest": expected.get(record_id),
                    "derived": actual.get(record_id),
                }
            )
            if len(found) == limit:
                break
    return found


def pool_for(workers: int, records: int):
    """Worker processes for hashing the groups of a large table; a null context otherwise."""
    if workers > 1 and records >= PARALLEL_GROUPS:
        return ProcessPoolExecutor(max_workers=workers)
    return nullcontext()


def split_table(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    seeds = SeedManager.from_file(args.seeds)
    previous = None
    if args.verify:
        previous = read_json(Path(args.verify))
        if not isinstance(previous, dict) or previous.get("format") != "crh-split":
            raise InputError("not a split manifest (format crh-split)", file=args.verify)
        ratios = {name: ratio for name, ratio in previous["splits"]}
        id_column, group_column, stratify = (
            previous["id_column"],
            previous["group_column"],
            previous["stratify"],
        )
        source = Path(args.records) if args.records else workspace / previous["records"]
    else:
        ratios = parse_ratios(args.ratios)
        id_column, group_column, stratify = args.id_column, args.group_column, args.stratify
        source = Path(args.records) if args.records else latest_table(workspace)
    try:
        source_name = relative_to_workspace(workspace, source)
    except InputError:
        source_name = source.name
    manifest = None
    if not stratify:  # the table's columns read by Arrow, where it can: the same manifest, faster
        columns = splits.read_columns(source, [id_column, group_column, "error"])
        if columns is not None:
            with pool_for(args.workers, len(columns[id_column])) as pool:
                manifest = splits.split_columns(
                    columns, ratios, split_key(seeds), id_column, group_column, source, pool
                )
    if manifest is None:
        rows = read_records(source)
        with pool_for(args.workers, len(rows)) as pool:
            manifest = splits.split_records(
                rows, ratios, split_key(seeds), id_column, group_column, stratify, source, pool
            )
    manifest["records"] = source_name
    manifest["records_sha256"] = hashlib.sha256(source.read_bytes()).hexdigest()

    config = {
        "ratios": ratios,
        "id_column": id_column,
        "group_column": group_column,
        "stratify": stratify,
        "records": source_name,
        "verify": args.verify is not None,
    }
    with RunRecorder(
        "dataset_splitter", argv=args.argv, workspace=workspace, seeds=seeds, log=log, config=config
    ) as record:
        record.consume(source)
        if previous is None:
            with atomic_output(record.output_path("split.json")) as handle:
                splits.write_manifest(handle, manifest)
            atomic_write_bytes(record.output_path("split.parquet"), splits.split_parquet(manifest))
            record.results.update(counts=manifest["counts"], split=f"{record.folder}/split.json")
            log.info(
                "split",
                **{name: c["records"] for name, c in manifest["counts"].items()},
                manifest=f"{record.folder}/split.json",
            )
            return 0
        found = differences(previous["assignments"], manifest["assignments"])
        record.results.update(verified=not found, differences=found)
    if found:
        raise CheckFailed(
            f"the split differs from the manifest ({len(found)} records shown)",
            first=found[0],
            manifest=args.verify,
        )
    log.info("verified", manifest=args.verify, records=len(manifest["assignments"]))
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "dataset_splitter",
        doc=__doc__,
        description="Split records into train/val/test by a keyed hash of their group (patient by "
        "default).",
        example="python scripts/data_tools/dataset_splitter.py --ratios "
        "train=0.7,val=0.15,test=0.15",
    )
    parser.add_argument(
        "records",
        nargs="?",
        metavar="FILE",
        help="CSV or JSONL records (default: the newest metadata table in the workspace)",
    )
    parser.add_argument("--ratios", default=DEFAULT_RATIOS, help="split=ratio,... summing to 1")
    parser.add_argument(
        "--group-column", default="patient_id", help="records of one group stay together"
    )
    parser.add_argument("--id-column", default="path", help="the record identifier")
    parser.add_argument(
        "--stratify",
        metavar="COLUMN",
        default=None,
        help="label column to report class balance for",
    )
    parser.add_argument(
        "--verify",
        metavar="MANIFEST",
        default=None,
        help="re-derive the split of MANIFEST from the same records and seeds; exit 1 on any "
        "difference",
    )
    cli.add_workers_option(
        parser, f"processes for hashing groups (used from {PARALLEL_GROUPS:,} distinct groups)"
    )
    cli.add_seeds_option(parser)
    cli.add_common_options(parser)
    return cli.run(parser, split_table, argv)


if __name__ == "__main__":
    sys.exit(main())
