"""The hash registry, the run manifest and the stat cache: their one public home.

Every script reads, writes, checks and prunes these through this module::

    from scripts.utils.records import registry

    files = registry.read_registry(workspace / registry.REGISTRY)        # {name: entry}
    registry.update_registry(path, lambda files: files.pop("old/x", None))
    digest = registry.hash_file(path)            # sha256, crc32, size, stat
    cache = registry.StatCache.load(path)        # skip re-reading unchanged files
    damaged = registry.damaged_files(files, locate, cache)

``data/hash_registry.json`` maps a file's name (workspace-relative POSIX, or
``@<root>/<path>`` for a file under a named data root, see data_roots.py) to
``{sha256, crc32, size, run}``. ``meta/chronicle/manifest.json`` maps a run
id to its record. Both are rewritten atomically under a cross-platform lock
(jsonio.locked_update); a file that is not one of them is bad input (exit 2)
and is left as it is.

A registry of millions of entries is not rewritten for every change. Once
the registry file is larger than ``$CRH_REGISTRY_JOURNAL_BYTES`` (default 4 MiB,
about 20,000 entries), a commit that only sets and drops entries (a run's
outputs, ``hash_integrity.py hash``, recovery and retraction) appends one line,
``{"set": {name: entry}, "drop": [name, ...]}``, to the journal beside it
(``.hash_registry.json.journal.jsonl``, fsync'd under the registry's lock).
The registry is the file with the journal's lines applied in order (each
line's drops, then its sets); every reader here (``read_registry``) merges
them. The journal is folded into the file (atomically, then deleted) when it
reaches an eighth of the file's size (so the cost per entry stays constant),
before any change other than setting and dropping entries, and at the end of
every pipeline (``make phaseN``): ``data/hash_registry.json`` keeps its format
and is whole after every phase. A line torn by a kill has no newline: readers
ignore it and the next writer cuts it off. Folding is idempotent (a fold
killed before the journal is deleted applies the same lines twice, with the
same result).

Lookups by folder go through the local index (local_index.py, an SQLite
file beside the registry, bookkeeping): the stat cache, and a mirror of the
registry's entries (``entries_in_folders``) brought up to date from the
journal's new lines, so that checking a few changed folders of a million
files reads those folders' rows and no more.

The stat cache (``StatCache``) keeps, per name, the hashes last computed and
the file's stat when they were (inode, size, mtime_ns, ctime_ns). A file
whose stat still matches, and whose mtime is older than the file-system time
of the save that wrote its row (git's racy-timestamp rule: it may have
changed within the same clock tick), is not read again. The cache is
machine-local bookkeeping, never an artifact: deleting it only costs time.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

try:  # ISA-L's CRC32 (SIMD) is several times faster than zlib's; same values
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - a platform without isal wheels
    from zlib import crc32

import orjson

from scripts.utils.errors import InputError
from scripts.utils.jsonio import (
    atomic_write_bytes,
    canonical_json,
    holding,
    lock_for,
    locked_update,
    read_json,
    remove_stale_temps,
)
from scripts.utils.records import local_index
from scripts.utils.workspace import checked_run_id

REGISTRY = "data/hash_registry.json"
MANIFEST = "meta/chronicle/manifest.json"
HASH_CHUNK = 1 << 20

# --------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------


def empty_registry() -> dict:
    return {"format": "crh-hash-registry", "version": 1, "files": {}}


def empty_manifest() -> dict:
    return {"format": "crh-manifest", "version": 1, "runs": {}}


def _checked(document, kind: str, table: str, path: Path) -> dict:
    if not isinstance(document, dict) or not isinstance(document.get(table), dict):
        raise InputError(f"not a {kind} (expected an object with a '{table}' table)", file=path)
    if not all(isinstance(entry, dict) for entry in document[table].values()):
        raise InputError(f"not a {kind}: every entry of '{table}' must be an object", file=path)
    return document


def checked_registry(document, path: Path) -> dict:
    """``document`` if it is a hash registry, else an InputError naming ``path``."""
    return _checked(document, "hash registry", "files", path)


def checked_manifest(document, path: Path) -> dict:
    """``document`` if it is a run manifest whose run ids are run ids (never paths), else an
    InputError."""
    _checked(document, "run manifest", "runs", path)
    for run_id in document["runs"]:
        checked_run_id(run_id, path)
    return document


def read_registry(path: Path) -> dict:
    """The ``files`` table of a registry (empty when the file does not exist), its journal
    applied."""
    path = Path(path)
    files = checked_registry(read_json(path), path)["files"] if path.exists() else {}
    for change in read_journal(path):
        apply_journal_line(files, change)
    return files


def read_manifest(path: Path) -> dict:
    """The ``runs`` table of a manifest file (empty when the file does not exist)."""
    path = Path(path)
    return checked_manifest(read_json(path), path)["runs"] if path.exists() else {}


def update_registry(path: Path, change) -> dict:
    """Apply ``change(files)`` (it edits the table in place) under the lock; the journal is
    folded first."""
    path = Path(path)
    with holding(lock_for(path), path):
        return _rewrite(path, change)


def _rewrite(path: Path, change) -> dict:
    """Fold the journal, apply ``change`` to the table, write the file once. Call it holding the
    lock."""
    _fold(path)
    remove_stale_temps(path)
    document = checked_registry(read_json(path), path) if path.exists() else empty_registry()
    change(document["files"])
    atomic_write_bytes(path, canonical_json(document, checked=False))
    return document["files"]


# --------------------------------------------------------------------------
# The registry's journal (see the module docstring)
# --------------------------------------------------------------------------

JOURNAL_BYTES_ENV = "CRH_REGISTRY_JOURNAL_BYTES"
DEFAULT_JOURNAL_BYTES = 4 << 20
FOLD_FRACTION = 8  # fold when the journal reaches 1/8 of the registry file


def journal_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.journal.jsonl")


def journal_from_bytes() -> int:
    """Registry files at least this large take appends through the journal."""
    try:
        return max(0, int(os.environ.get(JOURNAL_BYTES_ENV, DEFAULT_JOURNAL_BYTES)))
    except ValueError:
        raise InputError(
            f"${JOURNAL_BYTES_ENV} must be a whole number of bytes",
            value=os.environ.get(JOURNAL_BYTES_ENV),
        )


def read_journal(path: Path) -> list:
    """The complete lines of ``path``'s journal, parsed (a torn last line is not one)."""
    journal = journal_path(path)
    try:
        data = journal.read_bytes()
    except FileNotFoundError:
        return []
    changes = []
    for number, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), start=1):
        try:
            change = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(
                f"registry journal line {number} is not JSON: {exc.msg}", file=journal, line=number
            )
        if not journal_line_ok(change):
            raise InputError(
                f'registry journal line {number} is not {{"set": {{name: entry}}, "drop": '
                "[name, ...]}",
                file=journal,
                line=number,
            )
        changes.append(change)
    return changes


def journal_line_ok(change) -> bool:
    return (
        isinstance(change, dict)
        and isinstance(change.get("set", {}), dict)
        and all(isinstance(entry, dict) for entry in change.get("set", {}).values())
        and isinstance(change.get("drop", []), list)
        and all(isinstance(name, str) for name in change.get("drop", []))
    )


def journal_names(change: dict) -> list:
    """The names a journal line sets or drops."""
    return [*change.get("drop", []), *change.get("set", {})]


def apply_journal_line(files: dict, change: dict) -> None:
    """Drop, then set: a line's own entries win."""
    for name in change.get("drop", []):
        files.pop(name, None)
    files.update(change.get("set", {}))


def _fold(path: Path) -> None:
    """Write the registry with its journal applied, then delete the journal. Call it holding the
    lock."""
    journal = journal_path(path)
    if not journal.exists():
        return
    before = registry_state(path)
    document = checked_registry(read_json(path), path) if path.exists() else empty_registry()
    for change in read_journal(path):
        apply_journal_line(document["files"], change)
    atomic_write_bytes(path, canonical_json(document, checked=False))
    journal.unlink()
    _mirror_follows_fold(path, before)


def fold_journal(path: Path, force: bool = False) -> bool:
    """Fold the journal into the registry when it is due (an eighth of the file) or ``force``;
    True if folded."""
    path = Path(path)
    journal = journal_path(path)
    if not journal.exists():
        return False
    with holding(lock_for(path), path):
        try:
            due = force or journal.stat().st_size * FOLD_FRACTION >= path.stat().st_size
        except FileNotFoundError:
            due = journal.exists()
        if due:
            _fold(path)
        return due


def _journal_length(journal: Path) -> int:
    """The journal's length up to its last complete line; a torn tail is cut off here."""
    try:
        handle = open(journal, "r+b")
    except FileNotFoundError:
        return 0
    with handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                size = _last_newline(handle) + 1
                handle.truncate(size)
        return size


def _last_newline(handle) -> int:
    """The offset of the last newline in ``handle`` (-1 if none), read backwards in 1 MiB blocks."""
    end = handle.seek(0, os.SEEK_END)
    while end > 0:
        start = max(0, end - (1 << 20))
        handle.seek(start)
        found = handle.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


def add_to_registry(path: Path, entries: dict, change=None, drop=()):
    """Apply ``change(files)`` if given, drop the names in ``drop``, add ``entries``; return a
    function that undoes exactly this.

    Through the journal when the registry file is large and no ``change`` is
    asked (the undo then cuts the journal back); otherwise one rewrite (the
    undo restores the file and journal as they were).
    """
    line = {"set": entries, "drop": sorted(drop)} if drop else {"set": entries}
    path = Path(path)
    journal = journal_path(path)
    with holding(lock_for(path), path):
        if change is None and _takes_journal(path):
            length = _append_journal(path, line)

            def undo():
                with holding(lock_for(path), path):
                    _cut(journal, length)

            return undo

        previous = path.read_bytes() if path.exists() else None
        previous_journal = journal.read_bytes() if journal.exists() else None

        def add(files):
            if change is not None:
                change(files)
            apply_journal_line(files, line)

        _rewrite(path, add)

    def restore():
        with holding(lock_for(path), path):
            if previous is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(path, previous)
            if previous_journal is not None:
                atomic_write_bytes(journal, previous_journal)

    return restore


def drop_from_registry(path: Path, select) -> dict:
    """Drop the entries for which ``select(name, entry)`` is true; return them, ``{name: entry}``.

    Finding them reads the registry whole; writing costs what is dropped: one
    journal line when the registry file is large (as ``add_to_registry``),
    else one rewrite.
    """
    path = Path(path)
    with holding(lock_for(path), path):
        if not _takes_journal(path):
            dropped = {}

            def drop(files):
                for name in sorted(n for n, e in files.items() if select(n, e)):
                    dropped[name] = files.pop(name)

            _rewrite(path, drop)
            return dropped
        files = read_registry(path)
        dropped = {name: files[name] for name in sorted(files) if select(name, files[name])}
        if dropped:
            _append_journal(path, {"set": {}, "drop": list(dropped)})
        return dropped


def _takes_journal(path: Path) -> bool:
    """Whether a change to ``path`` goes to its journal: the file is large, and its journal not yet
    due for a fold. Call it holding the lock."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    journal = journal_path(path)
    journal_size = journal.stat().st_size if journal.exists() else 0
    return size >= journal_from_bytes() and journal_size * FOLD_FRACTION < size


def _append_journal(path: Path, line: dict) -> int:
    """Append ``line`` to the journal, fsync'd; return the journal's length before it (what an undo
    cuts back to). Call it holding the lock."""
    checked_registry_head(path)
    journal = journal_path(path)
    length = _journal_length(journal)
    try:
        with open(journal, "ab") as handle:
            handle.write(canonical_json(line, checked=False))
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _cut(journal, length)  # a line written but not synced must not outlive the failed commit
        raise
    return length


def _cut(journal: Path, length: int) -> None:
    with open(journal, "r+b") as handle:
        handle.truncate(length)
        os.fsync(handle.fileno())


def check_registry(path: Path) -> None:
    """A registry that exists is valid (else InputError). A file large enough to keep a journal
    gets the cheap check (head and tail, and the journal); a fold reads it whole and would refuse
    it then."""
    path = Path(path)
    if path.exists() and path.stat().st_size >= journal_from_bytes():
        checked_registry_head(path)
        read_journal(path)
    else:
        read_registry(path)


REGISTRY_TAIL = b'"format":"crh-hash-registry","version":1}'


def checked_registry_head(path: Path) -> None:
    """A cheap check of a large registry file: it opens as a registry and ends as one written here.

    A file that does not pass gets the full check (and its exact error).
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(10)
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64))
            tail = handle.read().rstrip()
    except OSError:
        tail, head = b"", b""
    if head.startswith(b'{"files":{') and tail.endswith(REGISTRY_TAIL):
        return
    read_registry(path)


def update_manifest(path: Path, change) -> dict:
    """Apply ``change(runs)`` (it edits the table in place) under the lock; one atomic rewrite."""
    path = Path(path)

    def apply(document):
        change(checked_manifest(document, path)["runs"])
        return document

    return locked_update(path, apply, empty_manifest, checked=False)[
        "runs"
    ]  # strings and integers only


def register_files(workspace: Path, entries: dict) -> dict:
    """Add ``{name: {sha256, crc32, size, run}}`` to the workspace registry in one write."""
    return update_registry(Path(workspace) / REGISTRY, lambda files: files.update(entries))


def check_writable(path: Path) -> None:
    """A registry or manifest that exists must be a valid, writable file in a writable folder."""
    path = Path(path)
    if path.exists():
        if not path.is_file():
            raise InputError("expected a file here, found something else", file=path)
        if not os.access(path, os.W_OK):
            raise InputError("the file is not writable", file=path)
    if path.parent.exists() and not os.access(path.parent, os.W_OK):
        raise InputError("the folder is not writable", file=path.parent)


def under(name: str, scopes) -> bool:
    """Whether ``name`` lies under one of ``scopes`` ("" or "." is the whole workspace, not the
    data roots)."""
    return any(
        (scope in ("", ".") and not name.startswith("@"))
        or name == scope
        or name.startswith(scope + "/")
        for scope in scopes
    )


def prune(files: dict, scopes, present) -> list:
    """Remove the entries under ``scopes`` whose names are not in ``present``; return them,
    sorted."""
    gone = sorted(name for name in files if under(name, scopes) and name not in present)
    for name in gone:
        del files[name]
    return gone


# --------------------------------------------------------------------------
# Where the registry stands, and its mirror in the local index
# --------------------------------------------------------------------------


def _file_stat(path: Path) -> list | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def registry_state(registry: Path) -> dict:
    """Where the registry stands: its file's stat, and its journal's inode and length up to the
    last complete line (None for a file that does not exist)."""
    journal = journal_path(registry)
    try:
        info = os.stat(journal)
        length = _complete_length(journal, info.st_size)
        journal_state = [info.st_ino, length, _journal_tail(journal, length)]
    except FileNotFoundError:
        journal_state = None
    return {"file": _file_stat(registry), "journal": journal_state}


TAIL_BYTES = 256


def _journal_tail(journal: Path, length: int) -> str:
    """SHA-256 of the journal's last bytes before ``length``: tells a journal that grew from one
    that was cut back (an undone commit) and written again."""
    with open(journal, "rb") as handle:
        handle.seek(max(0, length - TAIL_BYTES))
        return hashlib.sha256(handle.read(min(length, TAIL_BYTES))).hexdigest()


def journal_grew(registry: Path, before: dict | None, after: dict) -> bool:
    """Whether the registry went from state ``before`` to ``after`` (registry_state) only by new
    journal lines: the same file, the same journal, longer, with its old end where it was."""
    if not isinstance(before, dict) or before.get("file") != after["file"]:
        return False
    old, new = before.get("journal"), after["journal"]
    if old is None:
        return True
    if new is None or not (isinstance(old, list) and len(old) == 3):
        return False
    if old[0] != new[0] or not isinstance(old[1], int) or old[1] > new[1]:
        return False
    try:
        return _journal_tail(journal_path(registry), old[1]) == old[2]
    except OSError:
        return False


def journal_lines_since(registry: Path, before: dict | None, after: dict) -> list:
    """The journal lines added between states ``before`` and ``after`` (journal_grew holds),
    parsed; a line that is not one raises InputError."""
    old, new = (before or {}).get("journal"), after["journal"]
    start = old[1] if old else 0
    if new is None or new[1] == start:
        return []
    with open(journal_path(registry), "rb") as handle:
        handle.seek(start)
        added = handle.read(new[1] - start)
    changes = []
    for line in added.splitlines():
        try:
            change = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"registry journal line is not JSON: {exc.msg}", file=registry)
        if not journal_line_ok(change):
            raise InputError("registry journal line is not a registry change", file=registry)
        changes.append(change)
    return changes


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


MIRRORED = "registry"  # the local index's state row: the registry_state its entries reflect


def entries_in_folders(path: Path, folders) -> tuple[dict, dict] | None:
    """``({name: entry}, registry_state)``: the registry's entries in ``folders``
    (local_index.folder_of) as the registry stands, read from the local index's mirror after
    bringing it up to date; None where there is no index.

    Under the registry's lock: the journal's new lines are applied (the
    cost follows what was added), or, when the registry file was rewritten
    since (not by a fold: _fold carries the mirror over), the mirror is
    built again from the whole registry.
    """
    path = Path(path)
    with local_index.opened(path) as db:
        if db is None:
            return None
        try:
            with holding(lock_for(path), path):
                state = _sync_mirror(path, db)
                found = {}
                for folder in sorted(set(folders)):
                    for name, entry in db.execute(
                        "SELECT name, entry FROM entries WHERE folder = ?", (folder,)
                    ):
                        found[name] = orjson.loads(entry)
                return found, state
        except sqlite3.Error:
            return None


def _mirrored_state(db) -> dict | None:
    row = db.execute("SELECT value FROM state WHERE key = ?", (MIRRORED,)).fetchone()
    return orjson.loads(row[0]) if row else None


def _set_mirrored_state(db, state: dict) -> None:
    db.execute(
        "INSERT OR REPLACE INTO state VALUES (?, ?)", (MIRRORED, orjson.dumps(state).decode())
    )


def _sync_mirror(path: Path, db) -> dict:
    state = registry_state(path)
    mirrored = _mirrored_state(db)
    if mirrored == state:
        return state
    with local_index.transaction(db):
        if journal_grew(path, mirrored, state):
            for change in journal_lines_since(path, mirrored, state):
                db.executemany(
                    "DELETE FROM entries WHERE folder = ? AND name = ?",
                    [(local_index.folder_of(name), name) for name in change.get("drop", [])],
                )
                _insert_entries(db, change.get("set", {}))
        else:
            db.execute("DELETE FROM entries")
            _insert_entries(db, read_registry(path))
        _set_mirrored_state(db, state)
    return state


def _insert_entries(db, files: dict) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO entries VALUES (?, ?, ?)",
        ((local_index.folder_of(name), name, orjson.dumps(entry)) for name, entry in files.items()),
    )


def _mirror_follows_fold(path: Path, before: dict) -> None:
    """After a fold (the same entries, a new file): a mirror that held ``before`` holds the folded
    registry too. Call it holding the lock."""
    if not local_index.path_for(path).exists():
        return
    with local_index.opened(path) as db:
        if db is None:
            return
        try:
            with local_index.transaction(db):
                if _mirrored_state(db) == before:
                    _set_mirrored_state(db, registry_state(path))
        except sqlite3.Error:
            pass


# --------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------

_buffers = threading.local()


def stat_key(stat) -> list:
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def hash_file(path) -> dict:
    """SHA-256, CRC32 (8 hex digits), size, and the stat seen before reading, in one pass."""
    buffer = getattr(_buffers, "buffer", None)
    if (
        buffer is None
    ):  # one buffer per thread, reused: allocating 1 MiB per file costs more than hashing it
        buffer = _buffers.buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    sha, crc, size = hashlib.sha256(), 0, 0
    with open(path, "rb", buffering=0) as handle:
        stat = os.fstat(handle.fileno())
        while count := handle.readinto(buffer):
            chunk = view[:count]
            sha.update(chunk)
            crc = crc32(chunk, crc)
            size += count
    return {"sha256": sha.hexdigest(), "crc32": f"{crc:08x}", "size": size, "stat": stat_key(stat)}


def bytes_entry(data: bytes) -> dict:
    """The registry fields of bytes already in memory (a report just written)."""
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "crc32": f"{crc32(data):08x}",
        "size": len(data),
    }


def registry_entry(hashed: dict, run_id: str) -> dict:
    return {
        "sha256": hashed["sha256"],
        "crc32": hashed["crc32"],
        "size": hashed["size"],
        "run": run_id,
    }


class StatCache:
    """Hashes of files whose stat has not changed since they were computed (see the module
    docstring), in the local index (local_index.py): looked up a folder at a time, saved as one
    transaction of the rows this process hashed."""

    def __init__(self, registry_path: Path, empty: bool = False):
        self.registry_path = Path(registry_path)
        self.empty = empty  # start from nothing (hash everything again), still saving
        self.folders: dict = {}  # {folder: {name: (stat, sha256, crc32, size, generation)}}
        self.written: dict | None = None  # {generation: written_ns}, read on first lookup
        self.updates: dict = {}  # {name: hashed entry} to save
        self._db = None
        self._unusable = False

    @classmethod
    def load(cls, registry_path: Path, empty: bool = False) -> StatCache:
        """The cache beside ``registry_path``; nothing is read before the first lookup, and a
        missing or unreadable index is simply empty."""
        return cls(registry_path, empty)

    def _index(self):
        if self._db is None and not self._unusable:
            self._db = local_index.open_index(self.registry_path)
            self._unusable = self._db is None
        return self._db

    def _folder(self, folder: str) -> dict:
        rows = self.folders.get(folder)
        if rows is not None:
            return rows
        rows = {}
        db = None if self.empty else self._index()
        if db is not None:
            try:
                if self.written is None:
                    self.written = dict(
                        db.execute("SELECT generation, written_ns FROM generations")
                    )
                rows = {
                    name: rest
                    for name, *rest in db.execute(
                        "SELECT name, stat, sha256, crc32, size, generation FROM stats "
                        "WHERE folder = ?",
                        (folder,),
                    )
                }
            except sqlite3.Error:
                rows = {}
        self.folders[folder] = rows
        return rows

    def lookup(self, name: str, stat) -> dict | None:
        """The cached hashes of ``name`` if ``stat`` (an os.stat_result) shows it unchanged, else
        None."""
        hit = self._folder(local_index.folder_of(name)).get(name)
        if hit is None:
            return None
        key, sha256, crc, size, generation = hit
        written_ns = self.written.get(generation)
        if key == stat_text(stat) and written_ns is not None and stat.st_mtime_ns < written_ns:
            return {"sha256": sha256, "crc32": crc, "size": size, "stat": stat_key(stat)}
        return None

    def remember(self, name: str, hashed: dict) -> None:
        self.updates[name] = hashed

    def save(self) -> None:
        """Write this process's updates in one transaction, then stamp them with the file
        system's time of that write. Failing to save is harmless."""
        self._unusable = False  # the workspace's data folder may have been made since a lookup
        db = self._index()
        if not self.updates or db is None:
            self.close()
            return
        rows = [
            (
                local_index.folder_of(name),
                name,
                ":".join(map(str, hashed["stat"])),
                hashed["sha256"],
                hashed["crc32"],
                hashed["size"],
            )
            for name, hashed in self.updates.items()
        ]
        try:
            with local_index.transaction(db):
                generation = db.execute("INSERT INTO generations VALUES (NULL, NULL)").lastrowid
                db.executemany(
                    "INSERT OR REPLACE INTO stats VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [row + (generation,) for row in rows],
                )
            written_ns = local_index.file_time_now(self.registry_path)
            with local_index.transaction(db):  # entries of a save never stamped are never trusted
                db.execute(
                    "UPDATE generations SET written_ns = ? WHERE generation = ?",
                    (written_ns, generation),
                )
        except sqlite3.Error:
            pass
        self.updates = {}
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._db, self._unusable = None, False


def stat_text(stat) -> str:
    """A stat as the cache keeps it: inode, size, mtime_ns and ctime_ns (an inode may not fit
    SQLite's 64-bit integers)."""
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


def hash_files(
    files,
    cache: StatCache | None = None,
    executor: Executor | None = None,
    workers: int = 1,
    progress=None,
    on_error=None,
) -> dict:
    """``{name: {sha256, crc32, size, stat}}`` for ``files``, in name order (an entry the cache
    vouches for is the cache's own: read it, do not change it).

    ``files`` holds ``(name, path)`` or ``(name, path, os.stat_result)``: a
    stat taken while listing saves a second one. A file the cache vouches for
    is not read. Files are hashed on ``executor`` in batches (a cluster's:
    utils/compute/cluster.py), or in a thread pool of ``workers`` (hashlib releases
    the GIL). Results come back in input order either way. A file that
    cannot be read raises InputError, unless ``on_error(name, reason)`` is
    given: then it is left out and reported there.
    """
    results, to_hash, known_sizes = {}, [], {}
    for name, path, *known in files:
        if known and executor is not None:  # batches are cut by size; the local paths need none
            known_sizes[name] = known[0].st_size
        if cache is not None:
            try:
                stat = known[0] if known else os.stat(path)
            except OSError:
                stat = None
            hit = cache.lookup(name, stat) if stat is not None else None
            if hit is not None:
                results[name] = hit
                continue
        to_hash.append((name, path))

    own_pool = executor is None and workers > 1 and len(to_hash) > 1
    pool = ThreadPoolExecutor(max_workers=workers) if own_pool else executor
    try:
        if pool is None:
            hashed = map(_hash_or_error, (path for _, path in to_hash))
        elif own_pool:
            hashed = pool.map(_hash_or_error, (path for _, path in to_hash))
        else:  # any executor, a cluster's included: batches of files, each one task (cluster.py)
            from scripts.utils.compute import cluster

            paths = [str(path) for _, path in to_hash]
            sizes = [
                known_sizes[name] if name in known_sizes else cluster.size_or_zero(path)
                for name, path in to_hash
            ]
            hashed = cluster.map_batches(
                pool, hash_batch, cluster.batches(paths, cluster.worker_count(pool), sizes)
            )
        for (name, _), result in zip(to_hash, hashed):
            if progress is not None:
                progress.update(1)
            if isinstance(result, str):
                if on_error is None:
                    raise InputError(result, file=name)
                on_error(name, result)
                continue
            results[name] = result
            if cache is not None:
                cache.remember(name, result)
    finally:
        if own_pool:
            pool.shutdown()
    names = list(results)
    if all(
        map(str.__lt__, names, names[1:])
    ):  # listed in name order and all cached: already sorted
        return results
    return {name: results[name] for name in sorted(results)}


def _hash_or_error(path):
    """``hash_file(path)``, or the reason it cannot be read (a str: it travels back from any
    worker)."""
    try:
        return hash_file(path)
    except OSError as exc:
        return f"cannot read file: {exc.strerror}"


def hash_batch(paths: list) -> list:
    """One task of hashing: ``_hash_or_error`` of each path, in order."""
    return [_hash_or_error(path) for path in paths]


def damaged_files(entries: dict, locate, cache: StatCache | None = None) -> list:
    """The names among registry ``entries`` whose file is missing or differs from its entry.

    ``locate(name)`` gives the file's path. A stat that matches the cache and
    a cached SHA-256 equal to the entry's cost no read; anything else is
    hashed again. Sorted; each item is ``{"file", "problem"}``.
    """
    damaged = []
    for name in sorted(entries):
        expected = entries[name]
        path = locate(name)
        try:
            stat = os.stat(path)
        except OSError:
            damaged.append({"file": name, "problem": "missing"})
            continue
        if stat.st_size != expected.get("size"):
            damaged.append({"file": name, "problem": "size differs"})
            continue
        hit = cache.lookup(name, stat) if cache is not None else None
        if hit is not None and hit.get("sha256") == expected.get("sha256"):
            continue
        try:
            hashed = hash_file(path)
        except OSError:
            damaged.append({"file": name, "problem": "unreadable"})
            continue
        if hashed["sha256"] != expected.get("sha256"):
            damaged.append({"file": name, "problem": "content differs"})
        elif cache is not None:
            cache.remember(name, hashed)
    return damaged
