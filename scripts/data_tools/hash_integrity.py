"""SHA-256/CRC32 hash registry for a tree of files: record, audit, export.

    hash    PATH...   hash every file under PATH into the registry
    verify  PATH...   audit the files under PATH against the registry, like
                      hashdeep: matched, changed, new, missing, moved; exit 1
                      on any difference

The registry is ``data/hash_registry.json`` (the one the run records use) or
``--registry FILE``; its paths are workspace-relative. An entry that is
already right keeps the run that produced it; new and changed files are
credited to this run.

A stat cache beside the registry (``.<registry>.statcache.json``: inode,
size, mtime_ns, ctime_ns per file) lets ``verify`` skip reading files that
have not changed. Following git's racy-timestamp rule, a file whose mtime is
not older than the cache file itself is hashed again (it may have changed in
the same clock tick as the cache was written). ``--full`` ignores the cache.

Hashing runs on a thread pool (hashlib releases the GIL; CRC32 comes from
ISA-L, several times faster than zlib's), through
``concurrent.futures.Executor``; results are merged in path order, so the
output bytes never depend on ``--workers``. ``--export FILE`` (``-`` for
stdout) writes the hashed files in ``sha256sum -c`` format.

Usage:
    python scripts/data_tools/hash_integrity.py hash data/sample
    python scripts/data_tools/hash_integrity.py verify data/sample --export -
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from scripts.utils import cli
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.jsonio import atomic_output, atomic_write_bytes, canonical_json, locked_update, read_json
from scripts.utils.log_formatter import progress
from scripts.utils.run_records import (REGISTRY, RunRecorder, _checked, _empty_registry, crc32,
                                       relative_to_workspace, resolve_workspace)

CHUNK = 1 << 20
CATEGORIES = ("matched", "changed", "new", "missing", "moved")


# --------------------------------------------------------------------------
# Listing and hashing
# --------------------------------------------------------------------------

def _bookkeeping(name: str) -> bool:
    return name.startswith(".") and name.endswith((".lock", ".tmp", ".statcache.json"))


def list_files(workspace: Path, paths) -> list:
    """Workspace-relative POSIX paths of every regular file under ``paths``, sorted.

    Hidden bookkeeping files of this tool and of the run records (``.*.lock``,
    ``.*.tmp``, the stat cache) are skipped; symbolic links are not followed.
    Each given path is resolved once; below it, ``os.scandir`` supplies the
    file types without extra system calls.
    """
    found = set()
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise InputError("path not found", file=given)
        relative_root = relative_to_workspace(workspace, root)
        relative_root = "" if relative_root == "." else relative_root
        if root.is_file():
            found.add(relative_root)
            continue
        stack = [(str(root.resolve()), relative_root)]
        while stack:
            folder, relative = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    child = f"{relative}/{entry.name}" if relative else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, child))
                    elif entry.is_file(follow_symlinks=False) and not _bookkeeping(entry.name):
                        found.add(child)
    return sorted(found)


_buffers = threading.local()


def hash_one(path: Path) -> dict:
    """SHA-256, CRC32 and size of one file, with the stat seen before reading."""
    stat = os.stat(path)
    sha = hashlib.sha256()
    crc = 0
    size = 0
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:  # one buffer per thread, reused: allocating 1 MiB per file costs more than hashing it
        buffer = _buffers.buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            chunk = view[:count]
            sha.update(chunk)
            crc = crc32(chunk, crc)
            size += count
    return {"sha256": sha.hexdigest(), "crc32": f"{crc:08x}", "size": size, "stat": _stat_key(stat)}


def _stat_key(stat) -> list:
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def hash_files(workspace: Path, relative_paths, executor: Executor | None = None, workers: int = 1,
               cache: dict | None = None, cache_time_ns: int = 0) -> dict:
    """``{path: {sha256, crc32, size, stat, cached}}`` for the given paths, in path order.

    With ``cache`` (from ``load_stat_cache``), a file whose stat matches and
    whose mtime is older than ``cache_time_ns`` is not read again.
    """
    results = {}
    to_hash = []
    root = str(workspace)
    for relative in relative_paths:
        hit = cache.get(relative) if cache else None
        if hit is not None:
            try:
                stat = _stat_key(os.stat(os.path.join(root, relative)))
            except OSError:
                stat = None
            if stat == hit["stat"] and stat[2] < cache_time_ns:
                results[relative] = dict(hit, cached=True)
                continue
        to_hash.append(relative)

    own_pool = executor is None and workers > 1 and len(to_hash) > 1
    pool = ThreadPoolExecutor(max_workers=workers) if own_pool else executor
    try:
        with progress(total=len(to_hash), desc="hashing", unit="file") as bar:
            mapper = pool.map if pool is not None else map
            for relative, result in zip(to_hash, mapper(hash_one, [workspace / p for p in to_hash])):
                results[relative] = dict(result, cached=False)
                bar.update(1)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror}", file=exc.filename)
    finally:
        if own_pool:
            pool.shutdown()
    return {path: results[path] for path in sorted(results)}


# --------------------------------------------------------------------------
# Stat cache
# --------------------------------------------------------------------------

def stat_cache_path(registry: Path) -> Path:
    return registry.with_name(f".{registry.name}.statcache.json")


def load_stat_cache(registry: Path):
    """``(entries, cache file mtime_ns)``; an unreadable cache is simply empty."""
    path = stat_cache_path(registry)
    try:
        entries = read_json(path)["files"]
        return entries, os.stat(path).st_mtime_ns
    except (InputError, KeyError, TypeError, OSError):
        return {}, 0


def save_stat_cache(registry: Path, hashed: dict) -> None:
    path = stat_cache_path(registry)
    old, _ = load_stat_cache(registry)
    old.update({p: {k: h[k] for k in ("sha256", "crc32", "size", "stat")} for p, h in hashed.items()})
    atomic_write_bytes(path, canonical_json({"files": old}))


# --------------------------------------------------------------------------
# Registry update and audit
# --------------------------------------------------------------------------

def update_registry(registry: Path, hashed: dict, run_id: str) -> dict:
    """Record ``hashed`` in the registry; count added, changed and unchanged entries."""
    counts = {"added": 0, "changed": 0, "unchanged": 0}

    def change(document):
        files = _checked(document, "hash registry", "files", registry)["files"]
        for path, entry in hashed.items():
            old = files.get(path)
            new = {"sha256": entry["sha256"], "crc32": entry["crc32"], "size": entry["size"]}
            if old is not None and {k: old.get(k) for k in new} == new:
                counts["unchanged"] += 1
                continue
            counts["changed" if old is not None else "added"] += 1
            files[path] = dict(new, run=run_id)
        return document

    locked_update(registry, change, _empty_registry)
    return counts


def _under(path: str, scopes) -> bool:
    return any(scope in ("", ".") or path == scope or path.startswith(scope + "/") for scope in scopes)


def audit(registry_files: dict, scopes, hashed: dict) -> dict:
    """Compare the tree (``hashed``) with the registry entries under ``scopes``.

    Returns sorted lists per category. ``moved`` pairs a missing entry with
    a new file of the same SHA-256.
    """
    expected = {p: e for p, e in registry_files.items() if _under(p, scopes)}
    result = {name: [] for name in CATEGORIES}
    new = []
    for path, entry in hashed.items():
        known = expected.get(path)
        if known is None:
            new.append(path)
        elif known.get("sha256") == entry["sha256"] and known.get("size") == entry["size"]:
            result["matched"].append(path)
        else:
            result["changed"].append({"path": path, "expected": known.get("sha256"), "found": entry["sha256"]})
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

def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "hash_integrity",
        description="Record SHA-256/CRC32 hashes of a tree in the registry, or audit a tree against it.",
        example="python scripts/data_tools/hash_integrity.py verify data/sample --workers 2",
    )
    parser.add_argument("command", choices=("hash", "verify"), help="hash: record; verify: audit (exit 1 on differences)")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or folders inside the workspace")
    parser.add_argument("--registry", metavar="FILE", default=None, help=f"registry file (default: <workspace>/{REGISTRY})")
    cli.add_workers_option(parser, "hashing threads")
    parser.add_argument("--full", action="store_true", help="read every file, ignoring the stat cache")
    parser.add_argument("--export", metavar="FILE", default=None,
                        help="also write the hashes in `sha256sum -c` format ('-' for stdout), paths workspace-relative")
    cli.add_common_options(parser)

    def run(args, log):
        workspace = resolve_workspace(args.workspace)
        registry = Path(args.registry).resolve() if args.registry else workspace / REGISTRY
        files = list_files(workspace, args.paths)
        scopes = sorted({relative_to_workspace(workspace, p) if Path(p).resolve() != workspace else "" for p in args.paths})
        if args.command == "hash" and not files:
            raise InputError("no files to hash under the given paths", file=args.paths[0])
        cache, cache_time = ({}, 0) if args.full else load_stat_cache(registry)
        timer_start = os.times()
        hashed = hash_files(workspace, files, workers=args.workers, cache=cache, cache_time_ns=cache_time)
        read = sum(1 for h in hashed.values() if not h["cached"])
        log.info("hashed", files=len(hashed), read=read, from_cache=len(hashed) - read,
                 cpu_seconds=round(sum(os.times()[:2]) - sum(timer_start[:2]), 3))

        with RunRecorder("hash_integrity", workspace=workspace, log=log,
                         config={"command": args.command, "paths": scopes, "full": args.full}) as record:
            if args.command == "hash":
                counts = update_registry(registry, hashed, record.run_id)
                record.results.update(counts, files=len(hashed))
                outcome = None
            else:
                registry_files = _checked(read_json(registry), "hash registry", "files", registry)["files"] \
                    if registry.exists() else {}
                outcome = audit(registry_files, scopes, hashed)
                record.results.update({name: outcome[name] for name in CATEGORIES})
                record.results["summary"] = {name: len(outcome[name]) for name in CATEGORIES}
            if args.export == "-":
                sys.stdout.buffer.write(sha256sum_lines(hashed))
                sys.stdout.flush()
            elif args.export:
                with atomic_output(record.claim_output(args.export)) as handle:
                    handle.write(sha256sum_lines(hashed))
        save_stat_cache(registry, hashed)

        if outcome is not None:
            summary = {name: len(outcome[name]) for name in CATEGORIES}
            log.info("audit", **summary)
            if sum(summary.values()) != summary["matched"]:
                raise CheckFailed("the tree differs from the registry", **summary,
                                  report=f"experiments/results/{record.run_id}.json")
        return 0

    return cli.run(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
