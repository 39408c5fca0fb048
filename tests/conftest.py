"""Shared fixtures: a fresh workspace, and running scripts as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXED_EPOCH = "1761912000"  # 2025-10-31T12:00:00Z
# The files that take longest (a minute or more of one worker each), in that order
LONGEST_FILES = ("test_pipeline_recovery.py", "test_bench.py", "test_verify.py")


def pytest_collection_modifyitems(items):
    """The longest files first. ``make test`` hands whole files to its workers in collection
    order (xdist's --dist loadfile), so a long file collected last (test_bench.py: tests/ is
    collected after its folders) ran alone at the end while the other worker sat idle."""
    rank = {name: number for number, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace folder (the scripts create its layout)."""
    folder = tmp_path / "ws"
    folder.mkdir()
    return folder


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """No test touches the repository's own workspace or depends on the clock."""
    monkeypatch.setenv("CRH_WORKSPACE", str(tmp_path / "default-ws"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)


def script_path(category: str, name: str) -> Path:
    return REPO / "scripts" / category / f"{name}.py"


def run_script(category: str, name: str, *args, cwd=None, env=None, input_bytes=None, timeout=120):
    """Run ``python scripts/<category>/<name>.py ARGS`` in a subprocess.

    The child gets the current environment (CRH_WORKSPACE, SOURCE_DATE_EPOCH
    from the fixtures) plus ``env``; ``cwd`` defaults to a folder outside the
    repository, to prove scripts run from any working directory.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(script_path(category, name)), *map(str, args)],
        cwd=cwd or tempfile.gettempdir(),
        env=full_env,
        input=input_bytes,
        capture_output=True,
        timeout=timeout,
    )


def json_lines(data: bytes) -> list:
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]


def single_error(stderr: bytes) -> dict:
    """The one JSON error record a failing script must print on stderr."""
    records = json_lines(stderr)
    errors = [r for r in records if r.get("level") == "error"]
    assert len(errors) == 1, stderr.decode(errors="replace")
    assert all(isinstance(r, dict) for r in records)
    return errors[0]


def tree(folder: Path) -> list:
    """Every file under ``folder`` (relative, sorted): to prove nothing was written."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


SMALL_RUN = [
    "--set",
    "experiment.cycles=4",
    "--set",
    "experiment.checkpoint_every=2",
    "--set",
    "data.samples=8",
    "--set",
    "data.size=8",
    "--set",
    "data.source=synthetic",
    "--set",
    "learner.steps_per_cycle=2",
]


def small_experiment(workspace: Path, logdir: str, *extra) -> dict:
    """A few-second reference experiment recorded in ``workspace``; returns its run report."""
    result = run_script(
        "orchestration",
        "run_experiment",
        *SMALL_RUN,
        *extra,
        "--logdir",
        workspace / logdir,
        "--workspace",
        workspace,
    )
    assert result.returncode == 0, result.stderr
    run_id = [r for r in json_lines(result.stderr) if r.get("event") == "run_recorded"][-1][
        "run_id"
    ]
    return orjson.loads((workspace / "experiments/results" / f"{run_id}.json").read_bytes())
