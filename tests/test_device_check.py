"""The GPU check, ready before a GPU is: it skips cleanly without one, runs whole with NumPy in the
GPU's place, and its wheels and GPU locks are the ones the lock pins."""

import importlib.util
import json
import subprocess
import sys

import pytest

from bench import device_wheels
from scripts.utils import venv_setup
from tests.conftest import REPO

CHECK = REPO / "bench" / "device_check.py"


def cuda_usable() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(cuda_usable(), reason="a GPU is here: the check runs for real")
def test_without_a_gpu_the_check_says_skipped_and_exits_0(tmp_path):
    done = subprocess.run(
        [sys.executable, str(CHECK), "--out", str(tmp_path)], capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"skipped: no CUDA device\n"
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["skipped"] == "no CUDA device" and report["reason"]
    assert (tmp_path / "device_check.txt").read_bytes() == done.stdout


def test_the_whole_check_runs_with_numpy_in_the_gpus_place(tmp_path):
    done = subprocess.run(
        [sys.executable, str(CHECK), "--out", str(tmp_path), "--device-backend", "numpy",
         "--configs", "phase7"],
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["passed"]
    phase7 = report["experiments"]["phase7"]
    assert phase7["identical"] and phase7["files"] > 50 and phase7["differing"] == []
    assert report["preprocessing"]["arrays"] > 50
    assert report["preprocessing"]["max_abs_difference"] == 0.0
    renders = report["renders"]  # the first experiment's dreams and bridge, both backends
    assert renders["within_tolerance"] and renders["pngs"] > 100
    assert renders["identical"] == renders["pngs"] and renders["max_level_difference"] == 0
    assert b"experiment  phase7: IDENTICAL" in done.stdout and b"renders     within" in done.stdout


def test_every_device_wheel_is_pinned_by_the_lock():
    pins = device_wheels.pins(REPO / "requirements.lock")
    for package in device_wheels.DEVICE_PACKAGES:
        assert package.replace("_", "-").replace(".", "-").lower() in pins, package


def test_setup_gpu_takes_the_lock_of_the_drivers_cuda():
    assert venv_setup.gpu_lock(13).name == "requirements-gpu13.lock"
    assert venv_setup.gpu_lock(14).name == "requirements-gpu13.lock"
    assert venv_setup.gpu_lock(12).name == "requirements-gpu.lock"
    assert venv_setup.gpu_lock(None).name == "requirements-gpu.lock"
    for lock in ("requirements-gpu.lock", "requirements-gpu13.lock"):
        assert "--hash=sha256:" in (REPO / lock).read_text()
