"""Download the wheels the GPU machine lacks (``make device-wheels``), pinned as in
requirements.lock, for CPython 3.12 on manylinux x86-64.

    python bench/device_wheels.py                      # into device-wheels/ (git ignores it)
    python bench/device_wheels.py --python-version 3.11 --dest /tmp/w   # another Python

The GPU machines come with NumPy, SciPy, matplotlib, imageio (and Pillow),
PyYAML, filelock, tqdm, pyarrow, PyTorch and CuPy; what the device check's
scripts import beyond those is ``DEVICE_PACKAGES``. Their total must stay
under ``MAX_BYTES`` (the working tree that travels to the machine holds 64
MiB in all). bench/device_check.py installs them there with ``pip install
--no-index --target .device-site``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICE_PACKAGES = (
    "orjson",
    "ruamel.yaml",
    "jsonschema",
    "jsonschema-specifications",
    "referencing",
    "rpds-py",
    "attrs",
    "typing-extensions",
    "threadpoolctl",
    "pydicom",
    "fastcrc",
    "isal",
)
MAX_BYTES = 40 << 20


def pins(lock: Path) -> dict:
    """{package: version} from requirements.lock (for every Python the lock allows)."""
    found = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            found.setdefault(name, match.group(2))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", default=str(REPO / "device-wheels"))
    parser.add_argument("--python-version", default="3.12")
    args = parser.parse_args(argv)
    locked = pins(REPO / "requirements.lock")
    wanted = []
    for package in DEVICE_PACKAGES:
        key = re.sub(r"[-_.]+", "-", package).lower()
        if key not in locked:
            sys.stderr.write(f"{package} is not in requirements.lock\n")
            return 2
        wanted.append(f"{package}=={locked[key]}")
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--implementation", "cp", "--python-version", args.python_version,
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
        "--platform", "manylinux_2_28_x86_64", "--dest", str(dest), *wanted,
    ]  # fmt: skip
    done = subprocess.run(command)
    if done.returncode != 0:
        return done.returncode
    total = sum(p.stat().st_size for p in dest.glob("*.whl"))
    sys.stdout.write(f"{len(list(dest.glob('*.whl')))} wheels, {total / 2**20:.1f} MiB in {dest}\n")
    if total > MAX_BYTES:
        sys.stderr.write(f"over {MAX_BYTES >> 20} MiB: the working tree could not carry them\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
