"""What a whole-tree check found last time, trusted again while the tree's stat listing is the same.

    from scripts.utils.records.tree_snapshots import TreeSnapshots
    inputs = collect_inputs(workspace, paths)             # data_roots.py: names and stats
    snapshots = TreeSnapshots.load(registry_path)
    digest, newest_ns = inputs.stat_digest, inputs.newest_ns
    found = snapshots.lookup("verify", scopes, digest, newest_ns, registry_path)
    if found is None:
        ...  # the full check, then
        snapshots.remember("verify", scopes, digest, outcome, registry_token(registry_path))
        snapshots.save()

Re-verifying an unchanged tree of a million files should cost a walk and a
stat of each file, no more. A *snapshot* is the SHA-256 of the listing's
names and stats (inode, size, mtime_ns, ctime_ns, in listing order, taken as the
folders are listed: data_roots.StatTally), the
outcome the last full check of those paths reached, and, for a check
against the registry, where the registry stood (``registry_token``: the
file's stat and the journal's length). A second call that finds the same
digest takes the outcome without opening the stat cache, the registry or
any file. It is trusted only when

* every listed file's mtime and ctime are older than the snapshot file
  (git's racy-timestamp rule, as for the stat cache: a file changed within
  the clock tick in which the snapshot was written is not vouched for);
* for a registry check, the registry file is the same file (same size,
  mtime and inode) and the journal has only grown since, by lines that name
  nothing under the checked paths. Those lines are read, from the recorded
  length on: the cost follows what was added (a fold rewrites the file,
  and the next check is a full one).

A snapshot taken with its folders (``remember(..., tally=...)``) also keeps
each folder's stat digest and newest time, in the local index
(local_index.py). A listing that differs is then compared folder by folder
(``changed_folders``): the folders whose digest differs, that appeared or
went, that hold a file as new as the snapshot, or that the registry's journal
touched since are the ones to check again; the rest are as the last check
found them. A rewritten registry file (a fold) or another order from the
file system makes every folder one to check: the full check.

Anything else (a touched file, a changed registry) is a miss: a snapshot can
only save work, never change a result. The snapshots live in
``.<registry>.snapshots.json`` beside the registry (the last 64 checks),
machine-local bookkeeping like the stat cache: deleting it only costs time.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson

from scripts.utils.errors import InputError
from scripts.utils.jsonio import atomic_write_bytes, canonical_json, holding, lock_for, read_json
from scripts.utils.records import local_index
from scripts.utils.records.registry import (
    journal_grew,
    journal_lines_since,
    journal_names,
    registry_state,
    under,
)

KEPT = 64
LISTINGS = ("listing_sha256", "quick_check")  # a data root's listing hashes (data_roots.py)


def registry_moved_on(registry: Path, token: dict, scopes) -> dict | None:
    """The registry's state now if, since ``token``, nothing under ``scopes`` changed in it (only
    journal lines naming other files were added); None if anything else happened."""
    touched = registry_touched(registry, token, scopes)
    if touched is None or touched[1]:
        return None
    return touched[0]


def registry_touched(registry: Path, token: dict, scopes, now=None) -> tuple[dict, set] | None:
    """``(state now, names under scopes set or dropped since token)`` when the registry changed
    since ``token`` only by journal lines (read from the recorded length on); None otherwise.
    ``now``: a later state (registry_state) to compare with instead of the present one."""
    now = registry_state(registry) if now is None else now
    if now == token:
        return now, set()
    if not journal_grew(registry, token, now):
        return None
    try:
        changes = journal_lines_since(registry, token, now)
    except (InputError, OSError):
        return None
    names = {name for change in changes for name in journal_names(change)}
    return now, {name for name in names if under(name, scopes)}


def give_roots_their_listings(outcome, roots: dict) -> bool:
    """Hand each data root (data_roots.DataRoot) the listing hashes a snapshot's ``outcome``
    recorded for it; False, handing nothing, when the outcome does not hold them all."""
    recorded = outcome.get("roots") if isinstance(outcome, dict) else None
    if not isinstance(recorded, dict):
        return False
    found = {}
    for name in roots:
        listings = recorded.get(name)
        if not (
            isinstance(listings, dict)
            and all(isinstance(listings.get(key), str) for key in LISTINGS)
        ):
            return False
        found[name] = {key: listings[key] for key in LISTINGS}
    for name, root in roots.items():
        root.known = found[name]
    return True


def roots_listings(roots: dict) -> dict:
    """What a snapshot's outcome records of the data roots: their listing hashes."""
    return {name: {key: root.listings[key] for key in LISTINGS} for name, root in roots.items()}


class TreeSnapshots:
    """The snapshots beside a registry (see the module docstring)."""

    def __init__(self, registry: Path, entries: dict, written_ns: int):
        self.registry = Path(registry)
        self.path = self.path_for(registry)
        self.entries = entries
        self.written_ns = written_ns
        self.updates: dict = {}
        self.folder_updates: dict = {}  # {key: (listing, {folder: (digest, newest)}, before)}
        self.content_updates: dict = {}  # {key: {folder: content digest}}
        self.contents_before: dict = {}  # {key: {folder: content digest}} as kept

    @staticmethod
    def path_for(registry: Path) -> Path:
        registry = Path(registry)
        return registry.with_name(f".{registry.name}.snapshots.json")

    @classmethod
    def load(cls, registry: Path) -> TreeSnapshots:
        """The snapshots beside ``registry``; a missing or unreadable file holds none."""
        path = cls.path_for(registry)
        try:
            entries = read_json(path)["snapshots"]
            if not isinstance(entries, dict):
                raise TypeError
            return cls(registry, entries, os.stat(path).st_mtime_ns)
        except (InputError, KeyError, TypeError, OSError):
            return cls(registry, {}, 0)

    @staticmethod
    def key(kind: str, scopes) -> str:
        return orjson.dumps([kind, sorted(scopes)]).decode()

    def lookup(self, kind: str, scopes, digest: str, newest_ns: int, registry=None):
        """``(outcome, registry token now)`` of the last check of ``kind`` over ``scopes`` if the
        listing is the same and can be trusted (with ``registry``: the registry has not changed
        under ``scopes``); else None."""
        found = self.entries.get(self.key(kind, scopes))
        if not isinstance(found, dict) or found.get("listing") != digest:
            return None
        if newest_ns >= self.written_ns:
            return None
        token = None
        if registry is not None:
            token = registry_moved_on(Path(registry), found.get("registry"), scopes)
            if token is None:
                return None
        return found.get("outcome"), token

    def changed_folders(self, kind: str, scopes, tally, registry: Path, against_registry=True):
        """``(registry state now, changed)`` against the last check of
        ``kind`` over ``scopes`` whose folder digests were kept, when the listing differs from it:
        ``changed`` holds the folder keys (data_roots.StatTally) whose listing changed or cannot
        be trusted (a file as new as the snapshot), or where the registry's journal set or dropped
        a name since; every other folder is as the check found it. None when there is nothing to
        compare with (the full check runs)."""
        key = self.key(kind, scopes)
        found = self.entries.get(key)
        if not isinstance(found, dict) or not isinstance(found.get("listing"), str):
            return None
        kept = self._folders(key, found["listing"], registry)
        if kept is None:
            return None
        before, self.contents_before[key] = kept
        state, names = None, set()
        if against_registry:
            touched = registry_touched(registry, found.get("registry"), scopes)
            if touched is None:
                return None
            state, names = touched
        changed = {
            folder
            for folder, (digest, newest) in tally.folders.items()
            if before.get(folder) != digest or newest >= self.written_ns
        }
        changed.update(folder for folder in before if folder not in tally.folders)
        changed.update(map(tally.key_of, names))
        self.folder_updates[key] = (None, None, before)
        return state, changed

    def contents(self, kind: str, scopes) -> dict:
        """The folder content digests kept with the snapshot that ``changed_folders`` compared
        with (empty when none were kept)."""
        return self.contents_before.get(self.key(kind, scopes)) or {}

    @staticmethod
    def _folders(key: str, listing: str, registry: Path) -> tuple | None:
        """``({folder: stat digest}, {folder: content digest})`` kept for snapshot ``key`` if it
        is of ``listing``."""
        with local_index.opened(registry) as db:
            if db is None:
                return None
            try:
                kept = db.execute("SELECT listing FROM listings WHERE snapshot = ?", (key,))
                if kept.fetchone() != (listing,):
                    return None
                rows = db.execute("SELECT folder, digest FROM folders WHERE snapshot = ?", (key,))
                digests = dict(rows)
                rows = db.execute("SELECT folder, digest FROM contents WHERE snapshot = ?", (key,))
                return digests, dict(rows)
            except sqlite3.Error:
                return None

    def remember(
        self, kind: str, scopes, digest: str, outcome, token=None, tally=None, contents=None
    ) -> None:
        """Keep this check's outcome for the next one; with ``tally``, its folder digests too
        (and with ``contents``, each folder's content digest)."""
        key = self.key(kind, scopes)
        self.updates[key] = {
            "listing": digest,
            "outcome": outcome,
            "registry": token,
        }
        if tally is not None:
            before = self.folder_updates.get(key, (None, None, None))[2]
            self.folder_updates[key] = (digest, tally.folders, before)
            if contents is not None:
                self.content_updates[key] = contents

    @staticmethod
    def _order(entry) -> int:
        return entry.get("saved", 0) if isinstance(entry, dict) else 0

    def save(self) -> None:
        """Merge this process's snapshots into the file (locked, atomic), the newest 64 kept.
        Failing to save is harmless."""
        if not self.updates:
            return
        self._save_folders()
        try:
            with holding(lock_for(self.path), self.path):
                try:
                    current = read_json(self.path)["snapshots"] if self.path.exists() else {}
                    if not isinstance(current, dict):
                        current = {}
                except (InputError, KeyError, TypeError):
                    current = {}
                saved = max(map(self._order, current.values()), default=0) + 1
                for key, entry in self.updates.items():
                    current[key] = dict(entry, saved=saved)
                kept = dict(sorted(current.items(), key=lambda item: self._order(item[1]))[-KEPT:])
                atomic_write_bytes(self.path, canonical_json({"snapshots": kept}, checked=False))
            self.updates = {}
        except (OSError, InputError):
            pass

    def _save_folders(self) -> None:
        """The folder digests, in the local index, before the snapshot that names their listing:
        only the rows that differ from those the check started from."""
        saving = {key: item for key, item in self.folder_updates.items() if item[0] is not None}
        if not saving:
            return
        with local_index.opened(self.registry) as db:
            if db is None:
                return
            try:
                with local_index.transaction(db):
                    for key, (listing, folders, before) in saving.items():
                        if before is None:
                            db.execute("DELETE FROM folders WHERE snapshot = ?", (key,))
                            before = {}
                        gone = [(key, folder) for folder in before if folder not in folders]
                        db.executemany(
                            "DELETE FROM folders WHERE snapshot = ? AND folder = ?", gone
                        )
                        db.executemany(
                            "INSERT OR REPLACE INTO folders VALUES (?, ?, ?, ?)",
                            [
                                (key, folder, digest, newest)
                                for folder, (digest, newest) in folders.items()
                                if before.get(folder) != digest
                            ],
                        )
                        self._save_contents(db, key)
                        db.execute("INSERT OR REPLACE INTO listings VALUES (?, ?)", (key, listing))
            except sqlite3.Error:
                pass

    def _save_contents(self, db, key: str) -> None:
        contents = self.content_updates.get(key)
        before = self.contents_before.get(key)
        if contents is None or before is None:
            db.execute("DELETE FROM contents WHERE snapshot = ?", (key,))
            before = {}
        contents = contents or {}
        db.executemany(
            "DELETE FROM contents WHERE snapshot = ? AND folder = ?",
            [(key, folder) for folder in before if folder not in contents],
        )
        db.executemany(
            "INSERT OR REPLACE INTO contents VALUES (?, ?, ?)",
            [(key, f, d) for f, d in contents.items() if before.get(f) != d],
        )
