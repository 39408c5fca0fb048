"""The read tracer: every file a Python process (and its forks) opens for reading, nothing it
writes, nothing from the interpreter's own prefixes."""

import os
import subprocess
import sys

import pytest

from scripts.utils import read_tracing
from scripts.utils.read_tracing import sitecustomize as tracer

PROGRAM = """
import json, os, sys
from pathlib import Path
folder = Path(sys.argv[1])
(folder / "read.txt").read_text()
with open(folder / "written.txt", "w") as handle:
    handle.write("out")
with open(folder / "appended.txt", "a") as handle:
    handle.write("more")
os.close(os.open(folder / "low_level.txt", os.O_RDONLY))
json.loads("{}")  # the standard library's own files are not traced
if hasattr(os, "fork"):
    pid = os.fork()
    if pid == 0:
        (folder / "child.txt").read_bytes()
        os._exit(0)  # no atexit, no flush: each line was written as it happened
    os.waitpid(pid, 0)
"""


def test_a_process_and_its_forks_report_what_they_read_and_nothing_they_write(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("read.txt", "low_level.txt", "child.txt", "appended.txt"):
        (data / name).write_text(name)
    reads = tmp_path / "reads"
    reads.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(read_tracing.SITE_FOLDER)
    env[read_tracing.READS_ENV] = str(reads)
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    result = subprocess.run(
        [sys.executable, str(script), str(data)], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    traced = read_tracing.traced_paths(reads)
    inside = {os.path.relpath(p, data) for p in traced if p.startswith(str(data))}
    expected = {"read.txt", "low_level.txt"} | ({"child.txt"} if hasattr(os, "fork") else set())
    assert inside == expected
    assert not any(p.startswith(os.path.join(sys.base_prefix, "")) for p in traced)
    assert str(script) in traced  # the program itself is read: it lies outside the prefixes


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_start_and_stop_in_process_nest_and_leave_no_hook_writing(tmp_path):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    outer.mkdir(), inner.mkdir()
    probe = tmp_path / "probe.txt"
    probe.write_text("x")
    tracer.start(outer)
    tracer.start(inner)
    probe.read_text()
    tracer.stop(inner)
    (tmp_path / "probe.txt").read_bytes()
    tracer.stop(outer)
    probe.read_text()  # stopped: not traced anywhere
    assert read_tracing.traced_paths(inner) == {str(probe)}
    lines = b"".join(p.read_bytes() for p in outer.glob("*.txt")).splitlines()
    assert lines == [os.fsencode(probe)] * 2
