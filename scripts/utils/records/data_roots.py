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

import hashlib
import os
import stat as stat_module
from dataclasses import dataclass
from pathlib import Path

from scripts.utils.errors import InputError
from scripts.utils.jsonio import locked_update
from scripts.utils.limits import name_hex, printable_name
from scripts.utils.workspace import DATA_ROOT_MARK, inside, relative_to_workspace

BINDINGS = "meta/chronicle/.data_roots.json"
FORBIDDEN_IN_NAMES = set('/\\:*?"<>|') | {chr(code) for code in range(32)}
BOOKKEEPING_SUFFIXES = (".lock", ".tmp", ".statcache.json")


@dataclass
class DataRoot:
    name: str
    path: Path  # absolute, resolved; logs only
    files: int = 0
    listing_sha256: str = ""
    quick_check: str = (
        ""  # the listing with times: tells a moved folder from another one (bindings only)
    )

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

    def root_records(self) -> dict:
        return {name: root.record() for name, root in sorted(self.roots.items())}


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


def list_folder(folder: Path, prefix: str, skipped: list, skip_bookkeeping: bool) -> list:
    """``[(name, absolute path (str), stat)]`` of the regular files under ``folder`` (names
    ``prefix`` + relative)."""
    found = []
    stack = [(str(folder), prefix)]
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
        for entry in entries:
            name = relative + entry.name
            if printable_name(entry.name) != entry.name:
                skipped.append(not_utf8(name))
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                skipped.append({"file": name, "reason": f"cannot stat: {exc.strerror}"})
                continue
            if stat_module.S_ISDIR(info.st_mode):
                stack.append((entry.path, name + "/"))
            elif stat_module.S_ISREG(info.st_mode):
                if not (skip_bookkeeping and entry.name[:1] == "." and is_bookkeeping(entry.name)):
                    found.append((name, entry.path, info))
            elif stat_module.S_ISLNK(info.st_mode):
                skipped.append({"file": name, "reason": "symbolic link (not followed)"})
            else:
                skipped.append(
                    {"file": name, "reason": "not a regular file (FIFO, socket or device)"}
                )
    return found


def listing_sha256(files, strip: int, with_times: bool = False) -> str:
    """SHA-256 of every (root-relative path, size[, mtime in whole seconds]), in name order.

    Reports use names and sizes, so that a copy of the data gives the same
    record; the binding of a root name adds the times, the quick check that
    tells a moved folder (``mv``, ``rsync -a``) from another one.
    """
    digest = hashlib.sha256()
    for name, _, info in files:
        times = f"\0{info.st_mtime_ns // 10**9}" if with_times else ""
        digest.update(f"{name[strip:]}\0{info.st_size}{times}\n".encode())
    return digest.hexdigest()


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
                    resolved, "" if relative == "." else relative + "/", skipped, True
                )
            elif resolved.is_file():
                info = resolved.stat()
                files.append((relative_to_workspace(workspace, resolved), str(resolved), info))
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
            listed = list_folder(resolved, prefix, skipped, False)
        elif resolved.is_file():
            listed = [(prefix + resolved.name, str(resolved), resolved.stat())]
        else:
            skipped.append(
                {
                    "file": prefix + resolved.name,
                    "reason": "not a regular file (FIFO, socket or device)",
                }
            )
            listed = []
        files += listed

    unique = {}
    for item in files:
        unique.setdefault(item[0], item)
    files = [unique[name] for name in sorted(unique)]
    for name, root in roots.items():
        prefix = f"{DATA_ROOT_MARK}{name}/"
        own = [item for item in files if item[0].startswith(prefix)]
        root.files, root.listing_sha256 = len(own), listing_sha256(own, len(prefix))
        root.quick_check = listing_sha256(own, len(prefix), with_times=True)
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
    return Inputs(workspace, files, roots, skipped, sorted(given_names))


def bind_roots(workspace: Path, roots: dict, log=None) -> None:
    """Bind each root name to its folder in this workspace (see the module docstring)."""
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
