"""run_experiment --sweep: a grid or list of runs, locally and on a Dask LocalCluster,
byte-identical to single runs."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from scripts.orchestration import sweep
from scripts.utils.errors import InputError
from scripts.utils.records.data_roots import BOOKKEEPING_SUFFIXES
from tests.conftest import REPO, json_lines, run_script, single_error

pytest.importorskip("distributed")
R = "experiments/results"


def small_config(workspace):
    """phase5's config in the workspace, shortened to 2 cycles on synthetic data."""
    workspace.mkdir(parents=True, exist_ok=True)
    text = (REPO / "trainer/config/phase5.toml").read_text()
    text = text.replace("cycles = 24", "cycles = 2").replace(
        "checkpoint_every = 4", "checkpoint_every = 1"
    )
    (workspace / "config.toml").write_text(text.replace('source = "auto"', 'source = "synthetic"'))
    return workspace / "config.toml"


def files(workspace) -> dict:
    return {
        p.relative_to(workspace).as_posix(): p.read_bytes()
        for p in sorted(workspace.rglob("*"))
        if p.is_file() and not p.name.endswith(BOOKKEEPING_SUFFIXES)
    }


def test_expand_grid_and_list(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        'seeds = [1, 2]\n[grid]\n"learner.lr" = [0.01, 0.05]\n"dreamer.blend" = [0.5]\n'
    )
    members = sweep.expand_sweep(grid)
    assert [m["seed"] for m in members] == [1, 1, 2, 2]
    assert members[1]["overrides"] == ["learner.lr=0.05", "dreamer.blend=0.5"]
    listed = tmp_path / "list.yaml"
    listed.write_text(
        'runs:\n  - set: {"data.source": "synthetic", "experiment.backend": "numpy"}\n    seed: 9\n'
        '  - set: {"learner.hidden": 8}\n'
    )
    assert sweep.expand_sweep(listed) == [
        {"overrides": ['data.source="synthetic"', 'experiment.backend="numpy"'], "seed": 9},
        {"overrides": ["learner.hidden=8"], "seed": None},
    ]
    for bad in (
        '[grid]\n"a" = 1\n',
        'seeds = [-1]\n[grid]\n"a" = [1]\n',
        "[[runs]]\nset = {a = 1}\ntypo = 2\n",
        "grid = {}\n",
        'extra = 1\n[grid]\n"a" = [1]\n',
        "[[runs]]\nset = {a = {b = 1}}\n",
    ):
        broken = tmp_path / "bad.toml"
        broken.write_text(bad)
        with pytest.raises(InputError):
            sweep.expand_sweep(broken)


def test_a_sweep_locally_on_a_cluster_and_run_by_run_gives_the_same_bytes(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text('seeds = [3]\n[grid]\n"learner.lr" = [0.01, 0.05]\n')
    workspaces = {name: tmp_path / name for name in ("local", "cluster", "single")}
    for name in workspaces.values():
        small_config(name)
    for name, extra in (("local", []), ("cluster", ["--scheduler", "local:2"])):
        result = run_script(
            "orchestration",
            "run_experiment",
            "--config",
            workspaces[name] / "config.toml",
            "--sweep",
            spec,
            "--workspace",
            workspaces[name],
            *extra,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert all(isinstance(r, dict) for r in json_lines(result.stderr))
    assert files(workspaces["local"]) == files(workspaces["cluster"])
    summary = workspaces["local"] / R / "run_experiment_sweep_20251031T120000Z/summary.jsonl"
    rows = json_lines(summary.read_bytes())
    assert [(row["index"], row["seed"], row["overrides"]) for row in rows] == [
        (0, 3, ["learner.lr=0.01"]),
        (1, 3, ["learner.lr=0.05"]),
    ]
    assert rows[0]["final"]["loss"] != rows[1]["final"]["loss"]
    for row in rows:  # each row's command, launched alone, gives the same run
        single = subprocess.run(
            [
                sys.executable,
                str(REPO / row["command"][1]),
                *row["command"][2:],
                "--workspace",
                workspaces["single"],
            ],
            cwd=workspaces["single"],
            capture_output=True,
        )
        assert single.returncode == 0, single.stderr.decode()[-2000:]
    for row in rows:
        for suffix in (".json", ""):
            path = f"{R}/{row['run_id']}{suffix}"
            ours, theirs = workspaces["local"] / path, workspaces["single"] / path
            if suffix:
                assert ours.read_bytes() == theirs.read_bytes()
            else:
                assert files(ours) == files(theirs)


def test_a_bad_sweep_runs_nothing(tmp_path):
    workspace = tmp_path / "ws"
    config = small_config(workspace)
    spec = tmp_path / "sweep.toml"
    spec.write_text('[grid]\n"learner.lr" = [0.01, "fast"]\n')
    result = run_script(
        "orchestration",
        "run_experiment",
        "--config",
        config,
        "--sweep",
        spec,
        "--workspace",
        workspace,
    )
    assert result.returncode == 2 and "learner.lr" in str(single_error(result.stderr))
    assert not (workspace / R).exists() or not any((workspace / R).iterdir())
    shutil.rmtree(workspace)
