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

Anything else (another order from the file system, a touched file, a
changed registry) is a miss and the full check runs: a snapshot can only
save work, never change a result. The snapshots live in
``.<registry>.snapshots.json`` beside the registry (the last 64 checks),
machine-local bookkeeping like the stat cache: deleting it only costs time.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from scripts.utils.errors import InputError
from scripts.utils.jsonio import atomic_write_bytes, canonical_json, holding, lock_for, read_json
from scripts.utils.records.registry import journal_path, under

KEPT = 64
LISTINGS = ("listing_sha256", "quick_check")  # a data root's listing hashes (data_roots.py)


def _file_stat(path: Path) -> list | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def registry_token(registry: Path) -> dict:
    """Where the registry stands: its file's stat and its journal's length (up to the last
    complete line) and inode."""
    journal = journal_path(registry)
    try:
        info = os.stat(journal)
        length = _complete_length(journal, info.st_size)
        journal_state = [info.st_ino, length]
    except FileNotFoundError:
        journal_state = None
    return {"file": _file_stat(registry), "journal": journal_state}


def _complete_length(journal: Path, size: int) -> int:
    with open(journal, "rb") as handle:
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return size
        end = size
        while end > 0:  # a torn last line is not part of the registry yet
            start = max(0, end - (1 << 16))
            handle.seek(start)
            found = handle.read(end - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            end = start
        return 0


def registry_moved_on(registry: Path, token: dict, scopes) -> dict | None:
    """The registry's token now if, since ``token``, nothing under ``scopes`` changed in it (only
    journal lines naming other files were added); None if anything else happened."""
    if not isinstance(token, dict) or token.get("file") != _file_stat(registry):
        return None
    now = registry_token(registry)
    before, after = token.get("journal"), now["journal"]
    if before == after:
        return now
    if after is None or (before is not None and (before[0] != after[0] or after[1] < before[1])):
        return None
    start = before[1] if before is not None else 0
    with open(journal_path(registry), "rb") as handle:
        handle.seek(start)
        added = handle.read(after[1] - start)
    for line in added.splitlines():
        try:
            names = orjson.loads(line).get("set", {})
        except (orjson.JSONDecodeError, AttributeError):
            return None
        if not isinstance(names, dict) or any(under(name, scopes) for name in names):
            return None
    return now


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

    def __init__(self, path: Path, entries: dict, written_ns: int):
        self.path = path
        self.entries = entries
        self.written_ns = written_ns
        self.updates: dict = {}

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
            return cls(path, entries, os.stat(path).st_mtime_ns)
        except (InputError, KeyError, TypeError, OSError):
            return cls(path, {}, 0)

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

    def remember(self, kind: str, scopes, digest: str, outcome, token=None) -> None:
        self.updates[self.key(kind, scopes)] = {
            "listing": digest,
            "outcome": outcome,
            "registry": token,
        }

    @staticmethod
    def _order(entry) -> int:
        return entry.get("saved", 0) if isinstance(entry, dict) else 0

    def save(self) -> None:
        """Merge this process's snapshots into the file (locked, atomic), the newest 64 kept.
        Failing to save is harmless."""
        if not self.updates:
            return
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
