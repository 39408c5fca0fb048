"""The files a run opens for reading (see sitecustomize.py here), gathered into workspace names.

from scripts.utils import read_tracing
read_tracing.start(folder); ...; read_tracing.stop(folder)
names = read_tracing.files_read(folder, workspace)   # {"data/sample/...", "@scans/..."}
"""

from __future__ import annotations

import os
from pathlib import Path

SITE_FOLDER = Path(__file__).resolve().parent  # put first on an external command's PYTHONPATH
READS_ENV = "CRH_READS_DIR"


def traced_paths(folder: Path) -> set:
    """Every absolute path the traced processes opened for reading (any process, any order;
    an external command's processes write into a folder of their own inside ``folder``)."""
    found = set()
    for part in sorted(Path(folder).rglob("*.txt")):
        for line in part.read_bytes().splitlines():
            if line:
                found.add(os.fsdecode(line))
    return found
