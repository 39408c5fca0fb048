"""The reference experiment's outputs are fixed bits, on any threads or BLAS kernel.

``reference_hashes.json`` holds the SHA-256 of every file each config's run
wrote (metrics, dreams, bridges, checkpoints), made by running
``run_experiment.py --config trainer/config/<name> --backend numpy`` into
``run/`` of an empty workspace with SOURCE_DATE_EPOCH=1761912000, as below.
They were first the bits of the int64 implementation (commit 564416c, before
products went through float64 BLAS, which gave the same bits); they were
re-recorded, deliberately, when each cycle's dream became its own (issue 31)
and when plan.json dropped the log folder's name.
"""

import hashlib
import platform
from pathlib import Path

import pytest

from scripts.utils.jsonio import read_json
from tests.conftest import REPO, run_script, single_error

RECORDED = read_json(Path(__file__).with_name("reference_hashes.json"))


def run_config(tmp_path: Path, name: str, env=None) -> dict:
    workspace = tmp_path / f"ws_{name}"
    logdir = workspace / "run"
    workspace.mkdir()
    result = run_script(
        "orchestration",
        "run_experiment",
        "--config",
        REPO / "trainer/config" / name,
        "--logdir",
        logdir,
        "--workspace",
        workspace,
        "--backend",
        "numpy",
        "--quiet",
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return {
        path.relative_to(logdir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(logdir.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_every_output_has_the_bits_of_the_int64_implementation(tmp_path, name):
    assert run_config(tmp_path, name) == RECORDED[name]["files"]


@pytest.mark.parametrize("threads, kernel", [("1", "Prescott"), ("2", "Haswell")])
def test_the_bits_do_not_depend_on_threads_or_blas_kernel(tmp_path, threads, kernel):
    env = {
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "OPENBLAS_CORETYPE": kernel,
        "MKL_NUM_THREADS": threads,
    }
    if platform.machine() not in ("x86_64", "AMD64"):
        env.pop("OPENBLAS_CORETYPE")  # x86 kernel names; other CPUs keep their own
    assert run_config(tmp_path, "phase7.toml", env) == RECORDED["phase7.toml"]["files"]


def test_values_past_what_int64_holds_stop_the_run_naming_the_product(tmp_path):
    """lr=1000 blows the weights up: the int64 implementation wrapped around silently; this stops
    (exit 2)."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    result = run_script(
        "orchestration",
        "run_experiment",
        "--config",
        REPO / "trainer/config/phase5.toml",
        "--set",
        "learner.lr=1000",
        "--set",
        "data.source=synthetic",
        "--logdir",
        workspace / "run",
        "--workspace",
        workspace,
        "--quiet",
    )
    assert result.returncode == 2, result.stderr
    error = single_error(result.stderr)
    assert (
        error["layer"].startswith(("encoder", "decoder", "gradient", "validation"))
        and "2**62" in error["error"]
    )
    assert not list(
        (workspace / "experiments" / "results").glob("run_experiment_*.json")
    )  # no run recorded
