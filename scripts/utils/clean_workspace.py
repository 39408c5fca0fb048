"""Remove generated outputs from a workspace, keeping its folders.

Empties data/, meta/chronicle/, experiments/results/ and env/ (each folder's
.gitkeep stays). Source files, configs and the venv are never touched. A
folder that is not a workspace (no meta/chronicle/, the mark every run
leaves) is refused (exit 2): ``--workspace ~`` must never empty a ``~/data``.

Usage:
    python scripts/utils/clean_workspace.py --workspace /tmp/ws
"""

from __future__ import annotations

import shutil
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
from scripts.utils.errors import InputError
from scripts.utils.workspace import LAYOUT, resolve_workspace


def clean(workspace: Path) -> int:
    """Delete every generated entry under the layout folders; return the count."""
    removed = 0
    for folder in LAYOUT:
        root = workspace / folder
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir()):
            if entry.name == ".gitkeep":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
    return removed


def clean_from_args(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    if not workspace.is_dir():
        raise InputError("the workspace is not a folder", file=str(workspace))
    if not (workspace / "meta/chronicle").is_dir() and any(
        (workspace / f).exists() for f in LAYOUT
    ):
        raise InputError(
            "not a workspace (no meta/chronicle/): nothing is deleted", file=str(workspace)
        )
    log.info("cleaned", workspace=str(workspace), removed=clean(workspace))
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "clean_workspace",
        doc=__doc__,
        description="Remove generated outputs "
        "(data/, meta/chronicle/, experiments/results/, env/).",
        example="python scripts/utils/clean_workspace.py --workspace /tmp/ws",
    )
    cli.add_common_options(parser)
    return cli.run(parser, clean_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
