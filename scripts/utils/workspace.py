"""The workspace: where it is, its folders, and workspace-relative names.

A workspace is a folder holding ``data/``, ``meta/chronicle/``,
``experiments/results/`` and ``env/`` (docs/design.md). It is ``--workspace``,
else ``$CRH_WORKSPACE``, else the repository root. Every name written into
a record is workspace-relative POSIX; a file outside the workspace is named
through a data root instead (data_roots.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from scripts.utils.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE_ENV = "CRH_WORKSPACE"
LAYOUT = ("data", "meta/chronicle", "experiments/results", "env")
RESULTS = "experiments/results"
SEED_LOG = "meta/chronicle/seeds.jsonl"
PIPELINE_STATE = "meta/chronicle/pipeline_state.json"  # each step: its fingerprint and run
DATA_ROOT_MARK = "@"  # names starting with it are data-root files, never workspace files
RUN_ID = re.compile(r"^[A-Za-z0-9_]{1,64}_[0-9]{8}T[0-9]{6}Z(-[0-9]{1,6})?$")
MAX_NAME_CHARS = 4096
# A recorded name: relative POSIX, no empty, "." or ".." part, no backslash, NUL or drive letter.
SAFE_NAME = r"^(?![A-Za-z]:)(?!/)(?!.*//)(?!(?:.*/)?\.{1,2}(?:/|$))[^\x00\\]{1,4096}$"
_SAFE_NAME = re.compile(SAFE_NAME, re.DOTALL)


def resolve_workspace(workspace=None) -> Path:
    """``--workspace``, else $CRH_WORKSPACE, else the repository root."""
    chosen = workspace or os.environ.get(WORKSPACE_ENV) or REPO_ROOT
    return Path(chosen).expanduser().resolve()


def ensure_layout(workspace: Path) -> None:
    """Create the workspace folders; an unwritable workspace is bad input."""
    for folder in LAYOUT:
        target = workspace / folder
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create workspace folder: {exc.strerror}", file=target)
        if not os.access(target, os.W_OK):
            raise InputError("workspace folder is not writable", file=target)


def relative_to_workspace(workspace: Path, path, check_text: bool = True) -> str:
    """Workspace-relative POSIX form of ``path``; outside the workspace is an error.

    A name that is not valid UTF-8 cannot be recorded: bad input, unless
    ``check_text=False`` (for a skip record, which escapes it).
    """
    absolute = Path(path).resolve()
    try:
        relative = absolute.relative_to(workspace).as_posix()
    except ValueError:
        raise InputError("path lies outside the workspace", file=path, workspace=str(workspace))
    if check_text:
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("file name is not valid UTF-8: rename it to record it", file=path)
    if relative.startswith(DATA_ROOT_MARK):
        raise InputError(
            f"workspace names starting with {DATA_ROOT_MARK!r} are reserved for data roots",
            file=path,
        )
    return relative


def inside(folder: Path, path: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def run_folder(run_id: str) -> str:
    """The workspace-relative folder of a run's bulky outputs."""
    return f"{RESULTS}/{run_id}"


def run_report(run_id: str) -> str:
    """The workspace-relative path of a run's report."""
    return f"{RESULTS}/{run_id}.json"


def checked_run_id(run_id, file=None) -> str:
    """``run_id`` if it has the shape ``<script>_<stamp>[-N]``; a record naming anything else is
    bad input."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise InputError(
            "not a run id (expected <script>_YYYYMMDDTHHMMSSZ[-N])",
            file=file,
            value=repr(run_id)[:200],
        )
    return run_id


def checked_name(name, file=None, data_root: bool = False) -> str:
    """A workspace-relative name read from a record, refused unless it stays inside whatever it is
    joined to.

    ``data_root``: names of data-root files (``@root/...``) are allowed too.
    """
    if (
        not isinstance(name, str)
        or not _SAFE_NAME.match(name)
        or (name.startswith(DATA_ROOT_MARK) and not data_root)
    ):
        raise InputError(
            "a recorded path must be workspace-relative and stay inside it (no '..', no absolute "
            "path)",
            file=file,
            value=repr(name)[:200],
        )
    return name


def path_inside(workspace: Path, name, file=None) -> Path:
    """``workspace / name`` for a recorded ``name``, refused when it (through links too) leaves
    ``workspace``."""
    target = Path(workspace) / checked_name(name, file)
    if not inside(workspace, target):
        raise InputError(
            "a recorded path leads outside the workspace (through a link)",
            file=file,
            value=repr(name)[:200],
        )
    return target
