"""The two start-up hooks an external command can get at once: verify's (the clock, the CPU count:
variations.SITE) and the read tracer's (read_tracing.SITE_FOLDER), with the command's own
``sitecustomize`` after them on the path. Each runs once, in any order, and the one they shadow
still runs."""

import os
import subprocess
import sys

import pytest

from scripts.orchestration.variations import SITE as VERIFY_SITE
from scripts.utils import read_tracing

PROGRAM = """
import datetime, os, sys, time
from pathlib import Path
Path(sys.argv[1]).read_text()
print(int(time.time()), datetime.datetime.now().year, os.cpu_count())
"""
USERS_OWN = """
from pathlib import Path
import os
with open(os.environ["USER_HOOK_RAN"], "a") as handle:
    handle.write("ran\\n")
"""
CLOCK_START = 1761912000  # 2025-10-31


@pytest.mark.parametrize("tracer_first", [True, False], ids=["tracer first", "verify's first"])
def test_both_hooks_and_the_one_they_shadow_run_exactly_once(tmp_path, tracer_first):
    users = tmp_path / "users_site"
    users.mkdir()
    (users / "sitecustomize.py").write_text(USERS_OWN)
    data = tmp_path / "labels.txt"
    data.write_text("a,b")
    reads = tmp_path / "reads"
    reads.mkdir()
    hooks = [str(read_tracing.SITE_FOLDER), str(VERIFY_SITE)]
    path = [*(hooks if tracer_first else hooks[::-1]), str(users)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(path),
        read_tracing.READS_ENV: str(reads),
        "CRH_CLOCK_START": str(CLOCK_START),
        "CRH_CPU_COUNT": "3",
        "USER_HOOK_RAN": str(tmp_path / "user_hook_ran.txt"),
    }
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    result = subprocess.run(
        [sys.executable, str(script), str(data)], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == b"", result.stderr  # no "Error in ..."
    now, year, cpus = map(int, result.stdout.split())
    assert CLOCK_START <= now < CLOCK_START + 60 and year == 2025  # shifted once, not twice
    assert cpus == 3
    assert (tmp_path / "user_hook_ran.txt").read_text() == "ran\n"
    assert str(data) in read_tracing.traced_paths(reads)
