"""Input files anywhere: the workspace's own, or under named data roots.

A folder given as input that lies outside the workspace (another disk, a
read-only mount, a network share) is a *data root*. Nothing is ever written
into it. Its files are named in every record as

    @<root name>/<root-relative POSIX path>        e.g. @scans/case01/slice001.dcm

The root name is the folder's own name, or ``--data-name NAME``; it is the
only trace of the root in reports, tables and registries, so the same data
at two absolute paths (or on Linux and Windows) gives byte-identical
records. A run that reads a data root records it once, in its report's
``data_roots`` section: ``{name: {files, listing_sha256}}``, where the
listing fingerprint is the SHA-256 of every root-relative path and size.
The absolute path appears only in the logs. Names starting with ``@`` are
never workspace files (workspace.relative_to_workspace refuses them).

Two different folders must not share a name in one workspace: the workspace
binds each name to the folder it was first used with (a hash of its
location, in ``meta/chronicle/.data_roots.json``, machine-local bookkeeping
like the lock files). Using the name for another folder is bad input (exit 2)
unless that folder holds exactly the same listing (names, sizes and
modification times, as ``mv`` or ``rsync -a`` keep them): then the data was
moved, and the name follows it.

Listing skips what is not a regular file, with the reason: symbolic links
(not followed, so a link loop is never entered), FIFOs, sockets and devices
(never opened), and names that are not valid UTF-8. Records are UTF-8 JSON,
so such a name is written with each byte that is not UTF-8 as ``\\xNN`` and,
in ``name_hex``, as the exact bytes of its path in hex (``bytes.fromhex``
gives them back): ``{"file": "@scans/caf\\xe9.dcm", "name_hex": "...",
"reason": "file name is not valid UTF-8"}``. Rename such files to process
them (``convmv -f latin1 -t utf8``, say).
"""

from __future__ import annotations

import gc
import hashlib
import os
import stat as stat_module
from array import array
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter, itemgetter
from pathlib import Path

import orjson

from scripts.utils.errors import InputError
from scripts.utils.jsonio import locked_update
from scripts.utils.limits import name_hex, printable_name
from scripts.utils.records.local_index import folder_of
from scripts.utils.workspace import DATA_ROOT_MARK, inside, relative_to_workspace

BINDINGS = "meta/chronicle/.data_roots.json"
FORBIDDEN_IN_NAMES = set('/\\:*?"<>|') | {chr(code) for code in range(32)}
BOOKKEEPING_SUFFIXES = (
    ".lock",
    ".tmp",
    ".statcache.json",
    ".snapshots.json",
    ".index.sqlite",
    ".index.sqlite-journal",
    ".reads.json",
)


@dataclass
class DataRoot:
    name: str
    path: Path  # absolute, resolved; logs only
    listed: list = field(default_factory=list, repr=False)  # its files, as the listing gives them
    known: dict | None = None  # its listing hashes, when a tree snapshot vouches for them

    @property
    def files(self) -> int:
        return len(self.listed)

    @cached_property
    def listings(self) -> dict:
        """``listing_sha256`` (names and sizes) and ``quick_check`` (the listing with times: tells
        a moved folder from another one, bindings only), computed on first use."""
        if self.known is not None:
            return self.known
        plain, timed = listing_sha256s(self.listed, len(DATA_ROOT_MARK) + len(self.name) + 1)
        return {"listing_sha256": plain, "quick_check": timed}

    @property
    def listing_sha256(self) -> str:
        return self.listings["listing_sha256"]

    @property
    def quick_check(self) -> str:
        return self.listings["quick_check"]

    def record(self) -> dict:
        """What a report says of the root: never its location."""
        return {"files": self.files, "listing_sha256": self.listing_sha256}


@dataclass
class Inputs:
    workspace: Path
    files: (
        list  # [(name, absolute path as str, os.stat_result)], sorted by name (a str: making 20,000
    )
    # pathlib.Path objects costs more than listing and stat-ing the files)
    roots: dict  # {root name: DataRoot}
    skipped: list  # [{"file": name, "reason": why}], sorted by name
    given: list  # the record name of each input given ("" for the workspace itself), sorted
    stat_digest: str = ""  # names and stats as listed, and what was skipped (StatTally)
    newest_ns: int = 0  # the newest mtime or ctime listed
    tally: StatTally | None = field(default=None, repr=False)  # per folder: digest and newest

    def root_records(self) -> dict:
        return {name: root.record() for name, root in sorted(self.roots.items())}

    def workspace_inputs(self) -> list:
        """The inputs given that are workspace files or folders (another run's outputs, so a
        run declares them with ``RunRecorder.consume``)."""
        return [name for name in self.given if name and not name.startswith("@")]


def check_root_name(name: str, given_as=None) -> str:
    """A data root name: a plain folder-like name (no separators, no ':' or control characters)."""
    if (
        not name
        or name in (".", "..")
        or name.startswith(DATA_ROOT_MARK)
        or FORBIDDEN_IN_NAMES & set(name)
        or printable_name(name) != name
    ):
        raise InputError(
            "not a usable data root name: give one with --data-name (letters, digits, '.', '-', "
            "'_')",
            value=printable_name(name),
            file=given_as,
        )
    return name


def is_bookkeeping(name: str) -> bool:
    """Hidden lock, temp and cache files of the records (never inputs)."""
    return name.startswith(".") and name.endswith(BOOKKEEPING_SUFFIXES)


def not_utf8(name: str) -> dict:
    """The skip record of a file whose name is not valid UTF-8 (see the module docstring)."""
    return {
        "file": printable_name(name),
        "name_hex": name_hex(name),
        "reason": "file name is not valid UTF-8",
    }


MTIME, CTIME = attrgetter("st_mtime_ns"), attrgetter("st_ctime_ns")


class StatTally:
    """The stat digest of a listing, taken as it is listed: per folder, a digest of its entry
    names and, per file, Python's 64-bit hash of (inode, size, mtime_ns, ctime_ns), with the
    newest mtime or ctime seen there; the listing's digest is the SHA-256 of the folders' digests
    in listing order. Integers are not salted, so the digests are the same in every process; a
    changed stat goes unnoticed with a chance of 2^-64, and a ctime cannot be chosen by whoever
    changes a file. Two listings of an unchanged tree give the same digests as long as the file
    system lists each folder in the same order (tree_snapshots.py)."""

    def __init__(self):
        self.sha = hashlib.sha256()
        self.newest_ns = 0
        self.folders: dict = {}  # {folder (folder_of its files): (digest, newest)}
        self.alone: set = set()  # the keys of `folders` that are a file given on its own

    def add_file(self, name: str, info) -> None:
        """One file listed on its own (an input that is a file): its own key is its name."""
        self.alone.add(name)
        self.add_folder(name, [name], [info])

    def add_folder(self, folder: str, names: list, infos: list) -> None:
        stats = array(
            "q", [hash((i.st_ino, i.st_size, i.st_mtime_ns, i.st_ctime_ns)) for i in infos]
        )
        newest = max(max(map(MTIME, infos)), max(map(CTIME, infos))) if infos else 0
        self.newest_ns = max(self.newest_ns, newest)
        text = "\0".join([folder, *names]).encode("utf-8", "surrogateescape")
        digest = hashlib.sha256(len(text).to_bytes(8, "little") + text + stats.tobytes()).digest()
        self.sha.update(digest)
        key = folder[:-1] if folder.endswith("/") else folder
        self.folders[key] = (digest[:16], newest)

    def key_of(self, name: str) -> str:
        """The key in ``folders`` a record name belongs to: its folder, or itself when it is a
        file given on its own."""
        return name if name in self.alone else folder_of(name)

    def folder_of_key(self, key: str) -> str:
        """The folder (local_index.folder_of) holding the files of key ``key``."""
        return folder_of(key) if key in self.alone else key

    def digest(self, skipped=()) -> str:
        sha = self.sha.copy()
        sha.update(orjson.dumps(list(skipped)))
        return sha.hexdigest()


def list_folder(
    folder: Path, prefix: str, skipped: list, skip_bookkeeping: bool, tally: StatTally | None = None
) -> list:
    """``[(name, absolute path (str), stat)]`` of the regular files under ``folder`` (names
    ``prefix`` + relative); ``tally`` takes their stat digest on the way."""
    found = []
    stack = [(str(folder), prefix)]
    collecting = gc.isenabled()
    gc.disable()  # a million small tuples: the cyclic collector would scan them over and over
    try:
        _walk(stack, found, skipped, skip_bookkeeping, tally or StatTally())
    finally:
        if collecting:
            gc.enable()
    return found


def _walk(stack: list, found: list, skipped: list, skip_bookkeeping: bool, tally) -> None:
    is_dir, is_file, keep = stat_module.S_ISDIR, stat_module.S_ISREG, found.append  # hot loop
    while stack:
        current, relative = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            skipped.append(
                {
                    "file": relative.rstrip("/") or ".",
                    "reason": f"cannot list folder: {exc.strerror}",
                }
            )
            continue
        names, infos = [], []
        for entry in entries:
            base = entry.name
            name = relative + base
            if not base.isascii() and printable_name(base) != base:
                skipped.append(not_utf8(name))
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                skipped.append({"file": name, "reason": f"cannot stat: {exc.strerror}"})
                continue
            mode = info.st_mode
            if is_file(mode):
                if not (skip_bookkeeping and base[:1] == "." and is_bookkeeping(base)):
                    keep((name, entry.path, info))
                    names.append(base)
                    infos.append(info)
            elif is_dir(mode):
                stack.append((entry.path, name + "/"))
            elif stat_module.S_ISLNK(info.st_mode):
                skipped.append({"file": name, "reason": "symbolic link (not followed)"})
            else:
                skipped.append(
                    {"file": name, "reason": "not a regular file (FIFO, socket or device)"}
                )
        tally.add_folder(relative, names, infos)


def listing_sha256s(files, strip: int) -> tuple[str, str]:
    """SHA-256 of every (root-relative path, size), in name order, and of every (path, size, mtime
    in whole seconds).

    Reports use names and sizes, so that a copy of the data gives the same
    record; the binding of a root name uses the times too, the quick check that
    tells a moved folder (``mv``, ``rsync -a``) from another one.
    """
    plain, timed = hashlib.sha256(), hashlib.sha256()
    for start in range(0, len(files), 10_000):  # in blocks: a million lines are never held
        lines = [
            f"{name[strip:]}\0{info.st_size}" for name, _, info in files[start : start + 10_000]
        ]
        plain.update("".join(f"{line}\n" for line in lines).encode())
        timed.update(
            "".join(
                f"{line}\0{info.st_mtime_ns // 10**9}\n"
                for line, (_, _, info) in zip(lines, files[start : start + 10_000])
            ).encode()
        )
    return plain.hexdigest(), timed.hexdigest()


def collect_inputs(
    workspace: Path, inputs, root_name: str | None = None, log=None, bind: bool = True
) -> Inputs:
    """Every regular file under ``inputs`` with its record name, the data roots used, and what was
    skipped.

    A workspace path is named workspace-relative; anything outside the
    workspace through its data root (see the module docstring). A missing
    input is bad input, as is a folder that contains the workspace (its
    outputs would become its inputs). An empty result is bad input too.
    ``bind=False`` leaves the binding of root names to the caller (``bind_roots``).
    """
    files, skipped, roots = [], [], {}
    outside, given_names = [], set()
    tally = StatTally()
    for given in inputs:
        path = Path(given)
        try:
            if not path.exists() and not path.is_symlink():
                raise InputError("input not found", file=printable_name(str(given)))
            resolved = path.resolve(strict=True)
        except OSError as exc:  # a symbolic link loop, a name too long, a permission
            raise InputError(
                f"cannot open input: {exc.strerror or exc}", file=printable_name(str(given))
            )
        except RuntimeError as exc:  # Python before 3.13: a symbolic link loop
            raise InputError(f"cannot open input: {exc}", file=printable_name(str(given)))
        if inside(workspace, resolved):
            relative = relative_to_workspace(workspace, resolved, check_text=False)
            if (
                printable_name(relative) != relative
            ):  # the name as recorded: the workspace's own path is never
                skipped.append(not_utf8(relative))
                continue
            given_names.add("" if relative == "." else relative)
            if resolved.is_dir():
                files += list_folder(
                    resolved, "" if relative == "." else relative + "/", skipped, True, tally
                )
            elif resolved.is_file():
                info = resolved.stat()
                files.append((relative_to_workspace(workspace, resolved), str(resolved), info))
                tally.add_file(files[-1][0], info)
            else:
                skipped.append(
                    {
                        "file": relative_to_workspace(workspace, resolved),
                        "reason": "not a regular file",
                    }
                )
            continue
        if inside(resolved, workspace):
            raise InputError(
                "the workspace lies inside this input folder: its own outputs would become inputs",
                file=given,
                workspace=str(workspace),
            )
        outside.append((given, resolved))

    if root_name is not None and len({(r if r.is_dir() else r.parent) for _, r in outside}) > 1:
        raise InputError(
            "--data-name names one data folder; several are given outside the workspace",
            value=root_name,
        )
    for given, resolved in outside:
        folder = resolved if resolved.is_dir() else resolved.parent
        name = check_root_name(root_name or folder.name, given)
        root = roots.get(name)
        if root is not None and root.path != folder:
            raise InputError(
                f"two data folders are both named {name!r}: give one at a time, each with "
                f"--data-name",
                file=given,
            )
        roots[name] = root or DataRoot(name, folder)
        prefix = f"{DATA_ROOT_MARK}{name}/"
        if (
            not resolved.is_dir() and printable_name(resolved.name) != resolved.name
        ):  # a root's own name is never
            skipped.append(not_utf8(prefix + resolved.name))  # recorded, only --data-name
            continue
        given_names.add(f"{DATA_ROOT_MARK}{name}" if resolved.is_dir() else prefix + resolved.name)
        if resolved.is_dir():
            listed = list_folder(resolved, prefix, skipped, False, tally)
        elif resolved.is_file():
            listed = [(prefix + resolved.name, str(resolved), resolved.stat())]
            tally.add_file(listed[0][0], listed[0][2])
        else:
            skipped.append(
                {
                    "file": prefix + resolved.name,
                    "reason": "not a regular file (FIFO, socket or device)",
                }
            )
            listed = []
        files += listed

    if len(inputs) > 1:  # overlapping inputs list a file twice
        files = list({item[0]: item for item in reversed(files)}.values())
    files.sort(key=itemgetter(0))  # fast: each folder is listed whole, so the list is in runs
    for name, root in roots.items():
        prefix = f"{DATA_ROOT_MARK}{name}/"
        root.listed = (
            files
            if len(roots) == 1 and len(outside) == len(inputs)
            else [item for item in files if item[0].startswith(prefix)]
        )
    if log is not None:
        for root in roots.values():
            log.info("data_root", name=root.name, path=str(root.path), files=root.files)
    if roots and bind:
        bind_roots(workspace, roots, log)
    skipped.sort(key=lambda item: item["file"])
    if not files:
        first = f": {skipped[0]['file']}: {skipped[0]['reason']}" if skipped else ""
        raise InputError(
            f"no files found ({len(skipped)} skipped{first})",
            file=printable_name(str(inputs[0])) if inputs else None,
            skipped=len(skipped) or None,
        )
    return Inputs(
        workspace,
        files,
        roots,
        skipped,
        sorted(given_names),
        tally.digest(skipped),
        tally.newest_ns,
        tally,
    )


def bind_roots(workspace: Path, roots: dict, log=None) -> None:
    """Bind each root name to its folder in this workspace (see the module docstring)."""
    if not roots:
        return
    path = Path(workspace) / BINDINGS
    moved = []

    def change(bindings):
        if not isinstance(bindings, dict):
            bindings = {}
        for name, root in roots.items():
            location = hashlib.sha256(os.fsencode(str(root.path))).hexdigest()
            known = bindings.get(name)
            if isinstance(known, dict) and known.get("location") != location:
                if known.get("listing") != root.quick_check:
                    raise InputError(
                        f"the data root name {name!r} already names another folder in this "
                        f"workspace; "
                        f"name this one differently with --data-name (make: DATA_NAME=...), or, if "
                        f"it is the same data moved and changed, delete {BINDINGS} to rebind it",
                        file=str(root.path),
                        data_root=name,
                    )
                moved.append(name)
            bindings[name] = {"location": location, "listing": root.quick_check}
        return bindings

    try:
        locked_update(path, change, dict)
    except InputError as exc:
        if "invalid JSON" not in exc.message:
            raise
        path.unlink(missing_ok=True)  # bookkeeping only: start it again
        locked_update(path, change, dict)
    if log is not None:
        for name in moved:
            log.info(
                "data_root_moved",
                name=name,
                note="same listing at a new location: the name follows it",
            )
