"""SHA-256/CRC32 hash registry for a tree of files: record, audit, export.

    hash    PATH...   hash every file under PATH into the registry; entries
                      under PATH whose files are gone are removed
    verify  PATH...   audit the files under PATH against the registry, like
                      hashdeep: matched, changed, new, missing, moved; exit 1
                      on any difference

The registry is ``data/hash_registry.json`` (the one the run records use) or
``--registry FILE``. Files in the workspace are named workspace-relative; a
folder outside it is a data root, whose files are named
``@<root>/<path>`` (``--data-name`` names it; see scripts/utils/records/data_roots.py):
the data folder is only read, never written. An entry that is already right
keeps the run that produced it; new and changed files are credited to this
run. The registry changes with the run's commit, so a failed or killed run
changes nothing. ``hash`` reads and rewrites the whole registry, folding in
its journal (a large registry's appended runs; see scripts/utils/records/registry.py).

A stat cache beside the registry (``.<registry>.statcache.json``, and one
``.<registry>.@<root>.statcache.json`` per data root: inode, size, mtime_ns,
ctime_ns per file) lets both commands skip reading files that have not
changed. Following git's racy-timestamp rule, a file whose mtime is not
older than the cache file itself is hashed again (it may have changed in the
same clock tick as the cache was written). A ``verify`` that finds the tree
right leaves a snapshot of its listing (names and stats; tree_snapshots.py):
the next ``verify`` or ``hash`` of the same paths whose listing is the same,
while the registry has changed only elsewhere, takes that outcome without
opening the stat cache, the registry or any file: a million unchanged files
cost a walk and a stat of each. ``--full`` ignores the cache and the
snapshots. A verify's report counts the matched files and lists the others
(changed, new, missing, moved).

A file that cannot be read, and anything that is not a regular file
(symbolic links, FIFOs, sockets, devices), is skipped and listed with its
reason in the report; ``--strict`` makes any skipped file bad input (exit 2).

Hashing runs on a thread pool (hashlib releases the GIL; CRC32 comes from
ISA-L, several times faster than zlib's), through
``concurrent.futures.Executor``; results are merged in path order, so the
output bytes never depend on ``--workers``. ``--scheduler ADDRESS`` (or
``$CRH_DASK_SCHEDULER``) hashes on a Dask cluster instead, in tasks of up to
1,000 files or 256 MiB, the workers reading the files by the same path
(shared storage); the registry is still written by this process alone, and
its bytes are the same (scripts/utils/compute/cluster.py). ``--export FILE`` (``-``
for stdout) writes the hashed files in ``sha256sum -c`` format.

Usage:
    python scripts/data_tools/hash_integrity.py hash data/sample
    python scripts/data_tools/hash_integrity.py hash /mnt/scans --data-name scans
    python scripts/data_tools/hash_integrity.py verify data/sample --export -
    python scripts/data_tools/hash_integrity.py hash /mnt/archive --scheduler tcp://head-node:8786
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

from scripts.utils import cli
from scripts.utils.compute import cluster
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.json_logger import progress
from scripts.utils.jsonio import atomic_output
from scripts.utils.records.data_roots import bind_roots, collect_inputs
from scripts.utils.records.registry import (
    REGISTRY,
    StatCache,
    hash_files,
    prune,
    read_registry,
    under,
    update_registry,
)
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.records.tree_snapshots import (
    TreeSnapshots,
    give_roots_their_listings,
    registry_token,
    roots_listings,
)
from scripts.utils.workspace import relative_to_workspace, resolve_workspace

CATEGORIES = ("matched", "changed", "new", "missing", "moved")
SNAPSHOT = "registry"  # the kind of check a snapshot vouches for: the tree matches the registry


def registry_changes(files: dict, hashed: dict, scopes, keep, run_id: str) -> dict:
    """Bring the registry ``files`` in line with ``hashed`` (in place); return the counts.

    Entries that are already right keep their run; new and changed ones are
    credited to ``run_id``; entries under ``scopes`` that are neither hashed
    nor in ``keep`` (files skipped this time) are removed.
    """
    counts = {"added": 0, "changed": 0, "unchanged": 0, "removed": 0}
    for name, entry in hashed.items():
        old = files.get(name)
        new = {"sha256": entry["sha256"], "crc32": entry["crc32"], "size": entry["size"]}
        if old is not None and {key: old.get(key) for key in new} == new:
            counts["unchanged"] += 1
            continue
        counts["changed" if old is not None else "added"] += 1
        files[name] = dict(new, run=run_id)
    counts["removed"] = len(prune(files, scopes, set(hashed) | set(keep)))
    return counts


def audit(registry_files: dict, scopes, hashed: dict) -> dict:
    """Compare the tree (``hashed``) with the registry entries under ``scopes``.

    Returns sorted lists per category. ``moved`` pairs a missing entry with
    a new file of the same SHA-256.
    """
    expected = {p: e for p, e in registry_files.items() if under(p, scopes)}
    result = {name: [] for name in CATEGORIES}
    new = []
    for path, entry in hashed.items():
        known = expected.get(path)
        if known is None:
            new.append(path)
        elif known.get("sha256") == entry["sha256"] and known.get("size") == entry["size"]:
            result["matched"].append(path)
        else:
            result["changed"].append(
                {"path": path, "expected": known.get("sha256"), "found": entry["sha256"]}
            )
    missing = sorted(set(expected) - set(hashed))
    new_by_hash: dict = {}
    for path in new:
        new_by_hash.setdefault(hashed[path]["sha256"], []).append(path)
    for path in missing:
        candidates = new_by_hash.get(expected[path].get("sha256"))
        if candidates:
            result["moved"].append({"from": path, "to": candidates.pop(0)})
        else:
            result["missing"].append(path)
    moved_to = {move["to"] for move in result["moved"]}
    result["new"] = [path for path in new if path not in moved_to]
    return result


def sha256sum_lines(hashed: dict) -> bytes:
    """``sha256sum -c`` format: ``<hex>  <path>`` (binary-safe names escaped as coreutils does)."""
    lines = []
    for path, entry in hashed.items():
        if "\\" in path or "\n" in path:
            escaped = path.replace("\\", "\\\\").replace("\n", "\\n")
            lines.append(f"\\{entry['sha256']}  {escaped}\n")
        else:
            lines.append(f"{entry['sha256']}  {path}\n")
    return "".join(lines).encode("utf-8")


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def hash_or_verify(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    default_registry = workspace / REGISTRY
    registry = Path(args.registry).resolve() if args.registry else default_registry
    if args.registry:
        relative_to_workspace(workspace, registry)  # a registry outside the workspace is refused
    inputs = collect_inputs(workspace, args.paths, args.data_name, log, bind=False)
    gc.freeze()  # the listing lives to the end: later collections need not walk its million objects
    scopes = inputs.given
    skipped = list(inputs.skipped)
    listing, newest_ns = inputs.stat_digest, inputs.newest_ns
    snapshots = TreeSnapshots.load(registry)
    known = None
    if not (args.full or args.export):
        known = snapshots.lookup(SNAPSHOT, scopes, listing, newest_ns, registry)
    if known is not None and not (
        isinstance(known[0], dict)
        and known[0].get("files") == len(inputs.files)
        and give_roots_their_listings(known[0], inputs.roots)
    ):
        known = None  # a snapshot of another shape: the full check
    bind_roots(workspace, inputs.roots, log)  # a name taken by another folder: exit 2 before work
    cache = None
    if known is not None:  # the same listing as a check that found the registry right
        hashed, token = None, known[1]
        log.info("hashed", files=len(inputs.files), read=0, unchanged_listing=True)
    else:
        token = registry_token(registry)  # before the registry is read: what the check is against
        cache = StatCache(StatCache.path_for(registry), empty=args.full)
        hashed = hash_tree(args, inputs, cache, skipped, log)
    skipped.sort(key=lambda item: item["file"])
    for item in skipped[:20]:
        log.warning("skipped_file", **item)
    if skipped and args.strict:
        raise InputError(
            f"{len(skipped)} files were skipped (--strict)",
            file=skipped[0]["file"],
            reason=skipped[0]["reason"],
        )
    if args.command == "hash" and hashed is not None and not hashed:
        raise InputError("no file could be hashed under the given paths", file=args.paths[0])

    with RunRecorder(
        "hash_integrity",
        argv=args.argv,
        workspace=workspace,
        log=log,
        config={"command": args.command, "paths": scopes, "full": args.full},
    ) as record:
        record.data_roots = inputs.root_records()
        files = len(inputs.files) if hashed is None else len(hashed)
        if args.command == "hash":
            if hashed is None:
                counts = {"added": 0, "changed": 0, "unchanged": files, "removed": 0}
            else:
                keep = {item["file"] for item in skipped}
                counts = registry_changes(
                    dict(read_registry(registry)), hashed, scopes, keep, record.run_id
                )
                apply = lambda files: registry_changes(files, hashed, scopes, keep, record.run_id)
                if registry == default_registry:
                    record.change_registry(apply)  # with the run's own commit: all or nothing
                else:
                    update_registry(registry, apply)
            record.results.update(counts, files=files)
            summary = None
        else:
            outcome = (
                audit(read_registry(registry), scopes, hashed)
                if hashed is not None
                else {name: [] for name in CATEGORIES}
            )
            summary = {name: len(outcome[name]) for name in CATEGORIES}
            if hashed is None:
                summary["matched"] = files
            record.results.update({name: outcome[name] for name in CATEGORIES[1:]})
            record.results["matched"] = summary["matched"]
            record.results["summary"] = summary
        record.results["skipped"] = skipped
        if args.export == "-":
            sys.stdout.buffer.write(sha256sum_lines(hashed))
            sys.stdout.flush()
        elif args.export:
            with atomic_output(record.claim_output(args.export)) as handle:
                handle.write(sha256sum_lines(hashed))
    if cache is not None:
        cache.save()  # after the run: a run that fails leaves the bookkeeping as it was
    if summary is None:
        return 0
    log.info("audit", **summary)
    if sum(summary.values()) == summary["matched"] == files and len(skipped) == len(inputs.skipped):
        outcome = {"files": files, "roots": roots_listings(inputs.roots)}
        snapshots.remember(SNAPSHOT, scopes, listing, outcome, token)
        snapshots.save()  # the next verify of this same listing needs no more than the listing
    elif sum(summary.values()) != summary["matched"]:
        raise CheckFailed("the tree differs from the registry", **summary, report=record.report)
    return 0


def hash_tree(args, inputs, cache: StatCache, skipped: list, log) -> dict:
    """Every listed file's hashes (the stat cache's where it vouches for them); unreadable files
    are added to ``skipped``."""
    address = cluster.scheduler_address(args.scheduler)
    with (
        cluster.cluster_executor(address, log) as executor,
        progress(total=len(inputs.files), desc="hashing", unit="file") as bar,
    ):
        hashed = hash_files(
            inputs.files,
            cache,
            executor=executor,
            workers=args.workers,
            progress=bar,
            on_error=lambda name, reason: skipped.append({"file": name, "reason": reason}),
        )
    read = sum(map(len, cache.updates.values()))  # the files hashed this time
    log.info(
        "hashed", files=len(hashed), read=read, from_cache=len(hashed) - read, skipped=len(skipped)
    )
    return hashed


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "hash_integrity",
        doc=__doc__,
        description="Record SHA-256/CRC32 hashes of a tree in the registry, or audit a tree "
        "against it.",
        example="python scripts/data_tools/hash_integrity.py verify data/sample --workers 2",
    )
    parser.add_argument(
        "command",
        choices=("hash", "verify"),
        help="hash: record; verify: audit (exit 1 on differences)",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files or folders (outside the workspace: data roots)",
    )
    parser.add_argument(
        "--registry",
        metavar="FILE",
        default=None,
        help=f"registry file (default: <workspace>/{REGISTRY})",
    )
    cli.add_data_name_option(parser)
    cli.add_workers_option(parser, "hashing threads")
    cli.add_scheduler_option(parser)
    parser.add_argument(
        "--full", action="store_true", help="read every file, ignoring the stat cache"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 2 if any file is skipped (unreadable, not a file)",
    )
    parser.add_argument(
        "--export",
        metavar="FILE",
        default=None,
        help="also write the hashes in `sha256sum -c` format ('-' for stdout), names as in the "
        "registry",
    )
    cli.add_common_options(parser)
    return cli.run(parser, hash_or_verify, argv)


if __name__ == "__main__":
    sys.exit(main())
