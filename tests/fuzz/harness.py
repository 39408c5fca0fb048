"""Run a script as a user would and judge its answer to hostile input.

``run_script`` starts ``python scripts/<category>/<name>.py ARGS`` in a
subprocess and returns an ``Outcome``: the exit code, the last stderr line
parsed as JSON (None when it is not JSON), and the child's own peak resident
memory in MiB (Linux and macOS; None elsewhere). The peak is measured by a
tiny launcher process that starts the script and reads its resource usage
with ``os.wait4``: Linux carries a process's peak across fork and exec, so
measuring from a large parent (pytest) would report the parent's size.
``check_outcome`` asserts the contract of issue 10: exit 0, 1 or 2, a JSON
last line on stderr when the exit is not 0, no plain text on stderr, and
peak memory under a bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]
PEAK_MIB_BOUND = 1024
_PEAK_FD = 63

# Started with -S (no site): small, so the script's own peak is what wait4 reports.
_LAUNCHER = """
import os, sys
fd = int(sys.argv[1])
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], dict(os.environ))
_, status, usage = os.wait4(pid, 0)
os.write(fd, b"%d %d" % (os.waitstatus_to_exitcode(status), usage.ru_maxrss))
sys.exit(0)
"""


@dataclass
class Outcome:
    rc: int
    stdout: bytes
    stderr: bytes
    last: dict | None
    peak_mib: float | None
    timed_out: bool

    def describe(self) -> str:
        return (
            f"rc={self.rc} peak={self.peak_mib} MiB timed_out={self.timed_out}\n"
            f"stderr tail: {self.stderr[-1500:].decode('utf-8', 'replace')}"
        )


def script_path(script: str) -> Path:
    found = list((REPO / "scripts").glob(f"*/{script}.py"))
    if len(found) != 1:
        raise LookupError(script)
    return found[0]


def run_script(
    script: str, args, *, cwd=None, env=None, stdin: bytes | None = None, timeout: float = 120.0
) -> Outcome:
    argv = [
        sys.executable,
        str(script_path(script)),
        *[os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args],
    ]
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONHASHSEED", "0")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        launch = (
            [sys.executable, "-S", "-c", _LAUNCHER, str(report_fd := _PEAK_FD), *argv]
            if hasattr(os, "wait4")
            else argv
        )
        read_end, write_end = os.pipe() if hasattr(os, "wait4") else (None, None)
        if read_end == _PEAK_FD:  # many files open: the pipe itself got the launcher's fd number
            read_end, stale = os.dup(read_end), read_end
            os.close(stale)
        pass_fds = ()
        if write_end is not None:
            os.dup2(write_end, report_fd, inheritable=True) if write_end != report_fd else None
            pass_fds = (report_fd,)
        try:
            process = subprocess.Popen(
                launch,
                cwd=cwd or REPO,
                env=full_env,
                stdout=out,
                stderr=err,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                pass_fds=pass_fds,
                start_new_session=True,
            )
        finally:
            if write_end is not None:
                os.close(write_end)
                if write_end != report_fd:
                    os.close(report_fd)
        timed_out = []

        def kill():
            timed_out.append(True)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (OSError, AttributeError):
                process.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            if stdin is not None:
                try:
                    process.stdin.write(stdin)
                    process.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
            process.wait()
        finally:
            timer.cancel()
        peak, rc = None, process.returncode
        if read_end is not None:
            with os.fdopen(read_end, "rb") as report:
                fields = report.read().split()
            if len(fields) == 2:
                rc, peak = int(fields[0]), int(fields[1]) / 1024
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return Outcome(rc, stdout, stderr, _last_json(stderr), peak, bool(timed_out))


def _last_json(stderr: bytes):
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = orjson.loads(lines[-1])
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def plain_text_lines(stderr: bytes) -> list:
    """stderr lines that are not JSON objects (plain-text warnings, tracebacks)."""
    bad = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        try:
            if isinstance(orjson.loads(line), dict):
                continue
        except orjson.JSONDecodeError:
            pass
        bad.append(line.decode("utf-8", "replace"))
    return bad


def check_outcome(outcome: Outcome, allowed=(0, 1, 2), peak_mib: float = PEAK_MIB_BOUND) -> None:
    assert not outcome.timed_out, "timed out: " + outcome.describe()
    assert outcome.rc in allowed, outcome.describe()
    if outcome.rc != 0:
        assert outcome.last is not None and outcome.last.get("level") == "error", outcome.describe()
    assert not plain_text_lines(outcome.stderr), outcome.describe()
    if outcome.peak_mib is not None:
        assert outcome.peak_mib < peak_mib, outcome.describe()
