"""The machine-local index beside a registry: one SQLite database of lookups by folder.

    from scripts.utils.records import local_index
    with local_index.opened(registry_path) as db:   # None where it cannot be opened
        if db is not None:
            rows = db.execute("SELECT name, stat FROM stats WHERE folder = ?", ("@scans/case01",))

A million-file data folder changes a few files at a time; what a check reads
and writes should follow those few. The JSON documents (the registry, its
journal, the snapshots) stay the interface; this database is bookkeeping
beside them, ``.<registry>.index.sqlite``, keyed by folder (``folder_of``), so
that one folder's rows cost one indexed read:

* ``stats``: the stat cache (registry.StatCache): per file, the stat and the
  hashes last computed, and the save (``generation``) that wrote them, whose
  file-system time (``generations.written_ns``) is what git's racy-timestamp
  rule compares with;
* ``entries`` and ``state``: a mirror of the registry's entries, brought up
  to date from the journal's new lines, or rebuilt when the registry file
  was rewritten by someone else (registry.entries_in_folders);
* ``folders`` and ``listings``: per tree snapshot, each folder's stat digest
  (tree_snapshots.py), which tells the folders that changed since; ``contents``:
  per snapshot of the pipeline's data fingerprint, each folder's content digest.

SQLite makes every write a transaction (a killed process leaves the last
committed state) and lets several processes share the file. A file that is
not a usable index is deleted and started again: deleting it only costs
time. Where it cannot be opened at all (a read-only folder), callers go
without it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
from pathlib import Path

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS stats (
    folder TEXT NOT NULL, name TEXT NOT NULL, stat TEXT NOT NULL, sha256 TEXT NOT NULL,
    crc32 TEXT NOT NULL, size INTEGER NOT NULL, generation INTEGER NOT NULL,
    PRIMARY KEY (folder, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS generations (generation INTEGER PRIMARY KEY, written_ns INTEGER);
CREATE TABLE IF NOT EXISTS entries (
    folder TEXT NOT NULL, name TEXT NOT NULL, entry BLOB NOT NULL,
    PRIMARY KEY (folder, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folders (
    snapshot TEXT NOT NULL, folder TEXT NOT NULL, digest BLOB NOT NULL, newest_ns INTEGER NOT NULL,
    PRIMARY KEY (snapshot, folder)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS listings (snapshot TEXT PRIMARY KEY, listing TEXT NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contents (
    snapshot TEXT NOT NULL, folder TEXT NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (snapshot, folder)) WITHOUT ROWID;
"""
SUFFIX = ".index.sqlite"
BUSY_TIMEOUT_S = 120  # another process's transaction: wait for it (a rebuild takes seconds)


def path_for(registry: Path) -> Path:
    registry = Path(registry)
    return registry.with_name(f".{registry.name}{SUFFIX}")


def folder_of(name: str) -> str:
    """The folder part of a record name: ``@scans/a/b.dcm`` -> ``@scans/a``; ``x.txt`` -> ""."""
    return name.rpartition("/")[0]


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"index schema {version}, expected {SCHEMA_VERSION}")
        if version == 0:
            db.executescript(
                f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
            remove_json_stat_caches(path)
        db.execute("PRAGMA synchronous=NORMAL")
        return db
    except BaseException:
        db.close()
        raise


def remove_json_stat_caches(index: Path) -> None:
    """The stat caches earlier versions kept as JSON beside the registry (one per data root, up
    to hundreds of MB each): the index replaces them."""
    registry_name = index.name[1 : -len(SUFFIX)]
    for leftover in index.parent.glob(f".{glob.escape(registry_name)}*.statcache.json"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def open_index(registry: Path) -> sqlite3.Connection | None:
    """A connection to the index beside ``registry`` (created if need be), or None where none can
    be had. A damaged file is deleted and started again once."""
    path = path_for(registry)
    if not path.parent.is_dir():
        return None
    for attempt in range(2):
        try:
            return _connect(path)
        except sqlite3.OperationalError:  # read-only, locked beyond the timeout, no space
            return None
        except sqlite3.DatabaseError:  # not a database, or another schema: only bookkeeping
            if attempt:
                return None
            discard(registry)
    return None


def discard(registry: Path) -> None:
    """Delete the index (and SQLite's journal beside it); the next use starts from nothing."""
    path = path_for(registry)
    for leftover in (path, path.with_name(path.name + "-journal")):
        with contextlib.suppress(OSError):
            os.unlink(leftover)


@contextlib.contextmanager
def opened(registry: Path):
    """``open_index`` as a context: the connection (or None), closed afterwards."""
    db = open_index(registry)
    try:
        yield db
    finally:
        if db is not None:
            db.close()


@contextlib.contextmanager
def transaction(db: sqlite3.Connection):
    """One write transaction (taken at once, so two writers queue rather than deadlock)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def file_time_now(registry: Path) -> int | None:
    """The index file's mtime: the file system's clock just after a write to it."""
    try:
        return os.stat(path_for(registry)).st_mtime_ns
    except OSError:
        return None
