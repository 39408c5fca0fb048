"""SHA-256/CRC32 hash registry for a tree of files: record, audit, export.

    hash    PATH...   hash every file under PATH into the registry; entries
                      under PATH whose files are gone are removed
    verify  PATH...   audit the files under PATH against the registry, like
                      hashdeep: matched, changed, new, missing, moved; exit 1
                      on any difference
    fold              write the registry file with its journal applied (the
                      same entries; for tools that read the file alone, jq)

The registry is ``data/hash_registry.json`` (the one the run records use) or
``--registry FILE``. Files in the workspace are named workspace-relative; a
folder outside it is a data root, whose files are named
``@<root>/<path>`` (``--data-name`` names it; see scripts/utils/records/data_roots.py):
the data folder is only read, never written. An entry that is already right
keeps the run that produced it; new and changed files are credited to this
run. The registry changes with the run's commit, so a failed or killed run
changes nothing. ``hash`` writes what changed: for a large registry, one
journal line of the entries set and dropped (see scripts/utils/records/registry.py).

A stat cache (inode, size, mtime_ns, ctime_ns and the hashes per file, in
the SQLite index beside the registry) lets both commands skip reading files
that have not changed. Following git's racy-timestamp rule, a file whose
mtime is not older than the save of its cache row is hashed again (it may
have changed in the same clock tick). A ``verify`` that finds the tree right,
and a ``hash`` that skipped no file, leave a snapshot of the listing (names
and stats, per folder; tree_snapshots.py). The next ``verify`` or ``hash`` of
the same paths whose listing is the same, while the registry has changed
only elsewhere, takes that outcome without opening the stat cache, the
registry or any file: a million unchanged files cost a walk and a stat of
each. When the listing differs, only the folders whose listing changed, or
whose entries the registry's journal set or dropped since, are checked
(their files through the stat cache, their entries from the index); every
other folder is as the snapshot found it. ``--full`` ignores the cache and
the snapshots. A verify's report counts the matched files and lists the
others (changed, new, missing, moved).

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
    python scripts/data_tools/hash_integrity.py fold
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
    add_to_registry,
    check_registry,
    entries_in_folders,
    fold_journal,
    hash_files,
    read_registry,
    registry_state,
    under,
)
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.records.tree_snapshots import (
    TreeSnapshots,
    give_roots_their_listings,
    registry_touched,
    roots_listings,
)
from scripts.utils.workspace import relative_to_workspace, resolve_workspace

CATEGORIES = ("matched", "changed", "new", "missing", "moved")
SNAPSHOT = "registry"  # the kind of check a snapshot vouches for: the tree matches the registry


def registry_changes(files: dict, hashed: dict, scopes, keep, run_id: str) -> tuple:
    """What brings the registry entries ``files`` in line with ``hashed``: ``(entries to set,
    names to drop, counts)``.

    Entries that are already right keep their run; new and changed ones are
    credited to ``run_id``; entries under ``scopes`` that are neither hashed
    nor in ``keep`` (files skipped this time) are dropped.
    """
    counts = {"added": 0, "changed": 0, "unchanged": 0, "removed": 0}
    changes = {}
    for name, entry in hashed.items():
        old = files.get(name)
        new = {"sha256": entry["sha256"], "crc32": entry["crc32"], "size": entry["size"]}
        if old is not None and {key: old.get(key) for key in new} == new:
            counts["unchanged"] += 1
            continue
        counts["changed" if old is not None else "added"] += 1
        changes[name] = dict(new, run=run_id)
    present = set(hashed) | set(keep)
    gone = sorted(name for name in files if under(name, scopes) and name not in present)
    counts["removed"] = len(gone)
    return changes, gone, counts


def changed_part(inputs, snapshots: TreeSnapshots, registry: Path):
    """The part of the listing a check must look at, when a snapshot of an earlier check of these
    paths kept its folder digests: ``(files to check, registry entries of their folders under the
    paths, registry state they were read at)``; every other listed file is as that check found
    it. None when the whole tree must be checked."""
    tally, scopes = inputs.tally, inputs.given
    if tally is None or inputs.skipped:
        return None
    found = snapshots.changed_folders(SNAPSHOT, scopes, tally, registry)
    if found is None:
        return None
    state, changed = found
    while True:  # read the entries, then look again at what the journal gained meanwhile
        read = entries_in_folders(registry, set(map(tally.folder_of_key, changed)))
        if read is None:
            return None
        entries, now = read
        touched = registry_touched(registry, state, scopes, now)
        if touched is None:
            return None
        more = set(map(tally.key_of, touched[1])) - changed
        if not more:
            break
        changed |= more
        state = now
    files = [item for item in inputs.files if tally.key_of(item[0]) in changed]
    expected = {
        name: entry
        for name, entry in entries.items()
        if tally.key_of(name) in changed and under(name, scopes)
    }
    return files, expected, now


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
    if args.command == "fold":
        if args.paths:
            raise InputError("fold takes no paths", value=args.paths[0])
        check_registry(registry)
        log.info("folded", registry=str(registry), folded=fold_journal(registry, force=True))
        return 0
    if not args.paths:
        raise InputError(f"{args.command} needs at least one PATH")
    inputs = collect_inputs(workspace, args.paths, args.data_name, log, bind=False)
    gc.freeze()  # the listing lives to the end: later collections need not walk its million objects
    scopes = inputs.given
    skipped = list(inputs.skipped)
    listing, newest_ns = inputs.stat_digest, inputs.newest_ns
    snapshots = TreeSnapshots.load(registry)
    known = part = None
    if not (args.full or args.export):
        known = snapshots.lookup(SNAPSHOT, scopes, listing, newest_ns, registry)
        if known is not None and not (
            isinstance(known[0], dict)
            and known[0].get("files") == len(inputs.files)
            and give_roots_their_listings(known[0], inputs.roots)
        ):
            known = None  # a snapshot of another shape: the full check
        if known is None:
            part = changed_part(inputs, snapshots, registry)
    bind_roots(workspace, inputs.roots, log)  # a name taken by another folder: exit 2 before work
    cache = StatCache.load(registry, empty=args.full)
    if known is not None:  # the same listing as a check that found the registry right
        hashed, token, expected = {}, known[1], {}
        log.info("hashed", files=len(inputs.files), read=0, unchanged_listing=True)
    elif part is not None:  # only the folders that changed since such a check
        files, expected, token = part
        hashed = hash_tree(args, files, cache, skipped, log)
        log.info("changed_folders", files=len(files), unchanged=len(inputs.files) - len(files))
    else:
        token = registry_state(registry)  # before the registry is read: what the check is against
        hashed = hash_tree(args, inputs.files, cache, skipped, log)
        expected = None  # the whole registry, read when needed
    vouched = len(inputs.files) - len(hashed) - (len(skipped) - len(inputs.skipped))
    skipped.sort(key=lambda item: item["file"])
    for item in skipped[:20]:
        log.warning("skipped_file", **item)
    if skipped and args.strict:
        raise InputError(
            f"{len(skipped)} files were skipped (--strict)",
            file=skipped[0]["file"],
            reason=skipped[0]["reason"],
        )
    if args.command == "hash" and not hashed and not vouched:
        raise InputError("no file could be hashed under the given paths", file=args.paths[0])

    with RunRecorder(
        "hash_integrity",
        argv=args.argv,
        workspace=workspace,
        log=log,
        config={"command": args.command, "paths": scopes, "full": args.full},
    ) as record:
        record.data_roots = inputs.root_records()
        files = len(hashed) + vouched
        if expected is None:
            expected = read_registry(registry)
        if args.command == "hash":
            keep = {item["file"] for item in skipped}
            changes, gone, counts = registry_changes(expected, hashed, scopes, keep, record.run_id)
            counts["unchanged"] += vouched
            if registry == default_registry:
                record.set_registry_entries(changes, gone)  # with the run's own commit
            else:
                add_to_registry(registry, changes, drop=gone)
            record.results.update(counts, files=files)
            summary = None
        else:
            outcome = audit(expected, scopes, hashed)
            outcome["matched"] = len(outcome["matched"]) + vouched
            summary = {
                name: outcome[name] if name == "matched" else len(outcome[name])
                for name in CATEGORIES
            }
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
    cache.save()  # after the run: a run that fails leaves the bookkeeping as it was
    if summary is not None:
        log.info("audit", **summary)
        if sum(summary.values()) != summary["matched"]:
            raise CheckFailed("the tree differs from the registry", **summary, report=record.report)
    if known is None and len(skipped) == len(inputs.skipped):
        # The tree is the registry as it stood at `token`, but for what this run's own journal
        # line (if any) changed: the next check finds those folders touched and looks at them.
        outcome = {"files": files, "roots": roots_listings(inputs.roots)}
        snapshots.remember(SNAPSHOT, scopes, listing, outcome, token, inputs.tally)
        snapshots.save()  # the next check of this same listing needs no more than the listing
    return 0


def hash_tree(args, files: list, cache: StatCache, skipped: list, log) -> dict:
    """The hashes of ``files`` (the stat cache's where it vouches for them); unreadable files
    are added to ``skipped``."""
    address = cluster.scheduler_address(args.scheduler)
    with (
        cluster.cluster_executor(address, log) as executor,
        progress(total=len(files), desc="hashing", unit="file") as bar,
    ):
        hashed = hash_files(
            files,
            cache,
            executor=executor,
            workers=args.workers,
            progress=bar,
            on_error=lambda name, reason: skipped.append({"file": name, "reason": reason}),
        )
    read = len(cache.updates)  # the files hashed this time
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
        choices=("hash", "verify", "fold"),
        help="hash: record; verify: audit (exit 1 on differences); fold: the registry file whole",
    )
    parser.add_argument(
        "paths",
        nargs="*",
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
