"""Run a script under the project's Python: the spec's commands work with any interpreter.

Every script starts with::

    if __name__ == "__main__" and __package__ in (None, ""):
        sys.path[0] = str(Path(__file__).resolve().parents[2])
        from scripts.utils.bootstrap import use_project_python
        use_project_python()

so that ``python3 scripts/orchestration/run_experiment.py --help`` works from
any folder and with any Python >= 3.10. When the interpreter lacks the
project's dependencies (the system ``python3`` on a fresh machine), the
script runs again under the project's ``.venv`` with the same arguments and
working directory; when there is no ``.venv`` it prints one JSON error
saying to run ``make setup`` and exits 2. An interpreter that has the
dependencies (the ``.venv``, or an environment of yours after
``pip install -e .``) runs the script itself.

Stdlib only, and cheap: it runs before anything else is imported.
"""

from __future__ import annotations

import importlib.util
import json  # stdlib only: orjson may be exactly what is missing
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = Path(
    os.environ.get("CRH_VENV") or REPO_ROOT / ".venv"
)  # the Makefile's VENV; CRH_VENV names another
REEXEC_MARK = "CRH_BOOTSTRAPPED"  # set in the re-executed process: never loop
# The modules every script imports first (the JSON logger and the command-line frame): if they are
# importable, the interpreter has the project's environment; test_declared_dependencies keeps them
# declared.
CORE_MODULES = ("orjson", "numpy", "filelock", "tqdm", "ruamel.yaml", "jsonschema")


def venv_python(venv: Path = VENV) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def missing_modules(names=CORE_MODULES) -> list:
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package that is absent
            found = False
        if not found:
            missing.append(name)
    return missing


def _refuse(script: str, missing: list, reason: str) -> None:
    record = {
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": "error",
        "script": Path(script).stem,
        "event": "bad_input",
        "error": f"{reason}; run 'make setup' in {REPO_ROOT} (it creates .venv from "
        f"requirements.lock), then run the command again",
        "missing": missing,
        "python": sys.executable,
    }
    sys.stderr.write(json.dumps(record) + "\n")
    sys.stderr.flush()
    sys.exit(2)


def use_project_python(argv=None) -> None:
    """Return when this interpreter can run the scripts; otherwise re-run under .venv, or exit 2."""
    missing = missing_modules()
    if not missing:
        return
    script = os.path.abspath(sys.argv[0])
    argv = sys.argv[1:] if argv is None else argv
    python = venv_python()
    if os.environ.get(REEXEC_MARK) or not python.exists():
        reason = (
            ("the project's .venv lacks " if os.environ.get(REEXEC_MARK) else "this Python lacks ")
            + ", ".join(missing)
            + " and there is no usable .venv" * (not python.exists())
        )
        _refuse(script, missing, reason)
    command = [str(python), script, *argv]
    environ = dict(os.environ, **{REEXEC_MARK: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "nt":  # Windows has no exec: run it as a child and pass its exit code on
        sys.exit(subprocess.run(command, env=environ).returncode)
    os.execve(command[0], command, environ)
