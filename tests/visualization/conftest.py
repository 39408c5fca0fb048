"""A finished reference run to visualize."""

import pytest

from tests.conftest import run_script

SMALL = ["--set", "experiment.cycles=6", "--set", "data.size=12", "--set", "data.samples=8"]


@pytest.fixture
def run_workspace(workspace):
    result = run_script(
        "orchestration",
        "run_experiment",
        "--logdir",
        workspace / "run",
        "--workspace",
        workspace,
        *SMALL,
        cwd=workspace,
    )
    assert result.returncode == 0, result.stderr
    return workspace
