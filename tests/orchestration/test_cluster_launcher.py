"""cluster_launcher: the shipped dask-jobqueue settings give working Slurm and PBS job scripts
(nothing submitted)."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO, run_script, single_error

pytest.importorskip("dask_jobqueue")


@pytest.mark.parametrize("system, directive", [("slurm", "#SBATCH"), ("pbs", "#PBS")])
def test_the_shipped_config_gives_a_job_script_running_this_checkout(system, directive):
    result = run_script("orchestration", "cluster_launcher", system, "--job-script")
    assert result.returncode == 0, result.stderr.decode()
    script = result.stdout.decode()
    assert f"{directive} " in script and "crh-worker" in script
    assert f"export PYTHONPATH={REPO}" in script and f"cd {REPO}" in script
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script
    assert "--nthreads 1" in script and "--nworkers 16" in script  # one process per core


def test_a_config_without_sizes_is_bad_input(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text("jobqueue:\n  slurm:\n    queue: cpu\n")
    result = run_script(
        "orchestration", "cluster_launcher", "slurm", "--config", config, "--job-script"
    )
    error = single_error(result.stderr)
    assert (
        result.returncode == 2
        and "cores and memory" in error["error"]
        and error["key"] == "jobqueue.slurm.cores"
    )
    result = run_script(
        "orchestration", "cluster_launcher", "pbs", "--config", config, "--job-script"
    )
    assert result.returncode == 2 and "jobqueue.pbs" in single_error(result.stderr)["error"]
