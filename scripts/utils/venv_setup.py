"""Create the project's virtual environment from requirements.lock.

Stdlib only: this runs with the system Python before any dependency exists.
The venv is (re)created when it is missing, or when the lock's content or
the Python version differ from those recorded at the last install;
otherwise it is left as it is. Every package is installed with ``--require-hashes``;
then the project itself is installed in editable mode (pyproject.toml, offline:
setuptools comes from the lock), which puts the ``crh-<script>`` commands in
the venv.

Usage (the Makefile does this for you):
    python3 scripts/utils/venv_setup.py --venv .venv --lock requirements.lock
    python3 scripts/utils/venv_setup.py --venv .venv --gpu     # make setup-gpu: CuPy, CUDA 12 or 13

``--gpu`` adds CuPy to the venv for the CUDA the driver supports (the
``CUDA Version`` nvidia-smi reports: 13 or later takes requirements-gpu13.lock,
else requirements-gpu.lock, CUDA 12).
"""

from __future__ import annotations

import argparse
import hashlib
import json  # stdlib only here: orjson is not installed yet
import os
import re
import shutil
import subprocess
import sys
import venv
from datetime import datetime, timezone
from pathlib import Path

MIN_PYTHON = (3, 10)
PROJECT = Path(__file__).resolve().parents[2]
STAMP = ".lock-sha256"


def log(level: str, event: str, **fields) -> None:
    record = {
        "ts": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "level": level,
        "script": "venv_setup",
        "event": event,
        **fields,
    }
    sys.stderr.write(json.dumps(record) + "\n")
    sys.stderr.flush()


def venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


GPU_LOCKS = {12: "requirements-gpu.lock", 13: "requirements-gpu13.lock"}


def driver_cuda_major() -> int | None:
    """The newest CUDA major version the driver supports (nvidia-smi's header), or None."""
    found = shutil.which("nvidia-smi")
    if found is None:
        return None
    try:
        text = subprocess.run([found], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*(\d+)", text)
    return int(match.group(1)) if match else None


def gpu_lock(major: int | None) -> Path:
    """The GPU lock for a driver's CUDA major version (CUDA 12 when unknown)."""
    return PROJECT / GPU_LOCKS[13 if (major or 12) >= 13 else 12]


def install_gpu(folder: Path) -> int:
    major = driver_cuda_major()
    lock = gpu_lock(major)
    log("info", "gpu_install", venv=str(folder), cuda_driver=major, lock=lock.name)
    command = [str(venv_python(folder)), "-m", "pip", "install", "--no-input",
               "--disable-pip-version-check", "--require-hashes", "-r", str(lock)]  # fmt: skip
    if subprocess.run(command).returncode != 0:
        log(
            "error",
            "gpu_install_failed",
            error="pip could not install the GPU lock",
            lock=lock.name,
        )
        return 2
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Create or refresh the virtual environment from the lock file.",
        epilog="example:\n  python3 scripts/utils/venv_setup.py --venv .venv --lock "
        "requirements.lock",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--venv", default=".venv", help="venv folder (default: .venv)")
    parser.add_argument(
        "--lock", default="requirements.lock", help="hashed lock file (default: requirements.lock)"
    )
    parser.add_argument(
        "--gpu", action="store_true", help="add CuPy for the driver's CUDA (12 or 13) to the venv"
    )
    args = parser.parse_args(argv)
    if args.gpu:
        return install_gpu(Path(args.venv))

    if sys.version_info < MIN_PYTHON:
        log(
            "error",
            "bad_input",
            error=f"Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} is required, "
            f"this is {sys.version.split()[0]}",
            file=sys.executable,
        )
        return 2
    lock = Path(args.lock)
    if not lock.is_file():
        log("error", "bad_input", error="lock file not found", file=str(lock))
        return 2
    folder = Path(args.venv)
    # The venv is rebuilt when the lock or the Python that builds it changes.
    pyproject = PROJECT / "pyproject.toml"
    digest = hashlib.sha256(
        lock.read_bytes() + sys.version.encode() + pyproject.read_bytes()
    ).hexdigest()
    stamp = folder / STAMP
    python = venv_python(folder)
    if python.exists() and stamp.is_file() and stamp.read_text().strip() == digest:
        stamp.touch()  # the lock's mtime changed but not its content
        log("info", "venv_up_to_date", venv=str(folder), stamp=digest)
        return 0

    log(
        "info",
        "venv_create",
        venv=str(folder),
        lock=str(lock),
        stamp=digest,
        python=sys.version.split()[0],
    )
    try:
        venv.EnvBuilder(clear=True, with_pip=True).create(folder)
    except Exception as exc:  # e.g. Debian without python3-venv
        log(
            "error",
            "venv_failed",
            error=f"cannot create the venv: {exc}",
            hint="install Python's venv module (Debian/Ubuntu: apt install python3-venv)",
        )
        return 2
    # the pinned, hashed lock; then the project itself (offline: setuptools came with the lock)
    installs = [
        (["--require-hashes", "-r", str(lock)], "pip could not install the lock"),
        (
            ["--no-deps", "--no-build-isolation", "--no-index", "--editable", str(PROJECT)],
            "pip could not install the project in editable mode",
        ),
    ]
    for arguments, failure in installs:
        command = [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-input",
            "--disable-pip-version-check",
            "--quiet",
            *arguments,
        ]
        result = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if result.returncode != 0:
            log(
                "error",
                "install_failed",
                error=failure,
                exit_code=result.returncode,
                pip_output=result.stdout.splitlines()[-30:],
            )
            return 2
    stamp.write_text(digest + "\n")
    log("info", "venv_ready", venv=str(folder), stamp=digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
