"""Test helper: record one run and SIGKILL this process at a chosen point of it.

    python tests/utils/records/crash_worker.py WORKSPACE POINT

POINT is one of: body (while writing outputs), report (right after the
report is written), rename (after the run folder is in place), registry
(after the registry rewrite or journal line), manifest (after the manifest: the commit
point), seeds (after the seed line). The kill is real (SIGKILL on POSIX,
TerminateProcess elsewhere): nothing in the process gets to clean up.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from scripts.utils.records import run_records  # noqa: E402


def die() -> None:
    sys.stdout.flush()
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)


def after(function, point: str, wanted: str, when=lambda *a, **k: True):
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        if point == wanted and when(*args, **kwargs):
            die()
        return result

    return wrapper


def main() -> None:
    workspace, point = sys.argv[1], sys.argv[2]
    is_report = lambda path, *rest: str(path).endswith(".json") and "experiments" in str(path)
    run_records.atomic_write_bytes = after(
        run_records.atomic_write_bytes, point, "report", is_report
    )
    run_records.os.replace = after(
        os.replace, point, "rename", lambda source, target: str(source).endswith(".partial")
    )
    run_records.add_to_registry = after(run_records.add_to_registry, point, "registry")
    run_records.update_manifest = after(run_records.update_manifest, point, "manifest")
    with run_records.RunRecorder("crash", workspace=workspace) as run:
        run.output_path("a.txt").write_text("a\n")
        if point == "body":
            die()
        run.output_path("b.txt").write_text("b\n")
    if point == "seeds":
        die()
    print("finished", run.run_id)


if __name__ == "__main__":
    main()
