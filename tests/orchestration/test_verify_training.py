"""verify on real scikit-learn training scripts (tests/orchestration/training/), one defect each,
and two at once.

Each script is written the way scikit-learn's examples are; verify runs it under every variation and
must name its defect, and nothing else, in a bounded number of runs.
"""

import sys

import pytest

from tests.conftest import REPO, json_lines, run_script

TRAINING = REPO / "tests/orchestration/training"
MAX_RUNS = 15  # the bound for one defect


def verify(workspace, *commands, extra=()):
    args = [
        arg
        for command in commands
        for arg in ("--command", f"{sys.executable} {TRAINING / command}")
    ]
    result = run_script(
        "orchestration",
        "verify",
        *args,
        *extra,
        "--workspace",
        workspace,
        cwd=workspace,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr
    return json_lines(result.stdout)[0]


def causes(summary) -> dict:
    """{variations: {artifact: [places]}}"""
    return {
        tuple(c["variations"]): {
            a["artifact"]: [d["where"] for d in a["differences"]] for a in c["artifacts"]
        }
        for c in summary.get("causes", [])
    }


def test_a_seeded_script_is_identical_under_every_variation_in_two_runs(workspace):
    summary = verify(workspace, "sgd_digits.py --out results")
    assert summary["identical"] and summary["runs"] == 2 and summary["artifacts"] == 3
    assert {"time", "cpus", "cpu", "threads", "hashseed", "resume"} <= set(summary["varied"])


def test_an_unseeded_script_is_run_to_run_noise_and_nothing_else(workspace):
    summary = verify(workspace, "forest_unseeded.py")
    [cause] = summary["causes"]
    assert cause["variations"] == ["none: run-to-run noise"] and summary["unexplained"] == []
    assert {a["artifact"] for a in cause["artifacts"]} == {
        "output/forest.joblib",
        "output/scores.json",
    }
    forest = next(a for a in cause["artifacts"] if a["artifact"] == "output/forest.joblib")[
        "differences"
    ]
    assert any(
        d["where"].startswith("estimators_[") and ".tree_.nodes" in d["where"] for d in forest
    )
    assert (
        any("unseeded" in source for source in cause["likely_sources"])
        and "random_state" in cause["fix"]
    )
    assert summary["runs"] <= 4  # first, varied, two controls: noise is not bisected


def test_a_clock_in_the_content_is_time(workspace):
    summary = verify(workspace, "ridge_timestamped.py")
    assert causes(summary) == {("time",): {"summary.json": ["$.trained_at"]}}
    [cause] = summary["causes"]
    assert cause["changed"][0].startswith(
        "wall clock at the start 2025-10-31T12:00:00Z -> 2028-12-09T19:13:00Z"
    )
    assert "UTC" in cause["fix"] and summary["runs"] <= MAX_RUNS


def test_a_clock_in_a_file_name_is_time_and_the_two_files_are_paired(workspace):
    summary = verify(workspace, "nb_checkpoint_named_by_date.py")
    [cause] = summary["causes"]
    assert cause["variations"] == ["time"] and summary["unexplained"] == []
    [artifact] = cause["artifacts"]
    [name] = artifact["differences"]
    assert artifact["artifact"].startswith("checkpoints/nb_2025") and name["where"] == "file name"
    assert (
        name["second"].startswith("checkpoints/nb_2028")
        and name["note"] == "the name contains a time stamp"
    )
    assert summary["runs"] <= MAX_RUNS


def test_work_sized_from_the_cpu_count_is_cpus(workspace):
    summary = verify(workspace, "sgd_one_chunk_per_core.py")
    assert set(causes(summary)) == {("cpus",)} and summary["unexplained"] == []
    [cause] = summary["causes"]
    assert (
        any(line.startswith("os.cpu_count() ") for line in cause["changed"])
        and "os.cpu_count()" in cause["fix"]
    )
    coef = next(a for a in cause["artifacts"] if a["artifact"] == "run/coef.npy")["differences"][0]
    assert coef["where"] == "array" and coef["shape"] == [10, 64] and coef["differing_values"] > 0
    assert summary["runs"] <= MAX_RUNS


def test_a_set_written_in_hash_order_is_hashseed_and_the_model_differs_by_tensor(workspace):
    summary = verify(workspace, "labels_from_a_set.py")
    found = causes(summary)
    assert set(found) == {("hashseed",)}
    assert found[("hashseed",)]["perceptron.npz"] == ["coef", "intercept"]
    assert all(place.startswith("$.labels[") for place in found[("hashseed",)]["labels.json"])
    [cause] = summary["causes"]
    assert cause["changed"] == ["PYTHONHASHSEED 0 -> 12345"] and "sorted" in cause["fix"]
    assert summary["runs"] <= MAX_RUNS


def test_two_defects_at_once_are_two_causes(workspace):
    summary = verify(workspace, "labels_from_a_set.py", "nb_checkpoint_named_by_date.py")
    found = causes(summary)
    assert set(found) == {("time",), ("hashseed",)} and summary["unexplained"] == []
    assert set(found[("hashseed",)]) == {"labels.json", "perceptron.npz"}
    assert list(found[("time",)].values()) == [["file name"]]


def test_noise_and_a_clock_in_one_script_are_told_apart(workspace, tmp_path):
    script = tmp_path / "unseeded_named_by_date.py"
    script.write_text(
        (TRAINING / "forest_unseeded.py")
        .read_text()
        .replace(
            '"output/forest.joblib"',
            "f\"output/forest_{__import__('time').strftime('%Y%m%d-%H%M%S')}.joblib\"",
        )
    )
    result = run_script(
        "orchestration",
        "verify",
        "--command",
        f"{sys.executable} {script}",
        "--workspace",
        workspace,
        cwd=workspace,
        timeout=600,
    )
    summary = json_lines(result.stdout)[0]
    by_cause = {tuple(c["variations"]): c for c in summary["causes"]}
    assert set(by_cause) == {("none: run-to-run noise",), ("time",)}
    [named] = by_cause[("time",)]["artifacts"]
    assert [d["where"] for d in named["differences"]] == ["file name"]
    noise = {a["artifact"] for a in by_cause[("none: run-to-run noise",)]["artifacts"]}
    assert noise == {
        "output/scores.json",
        named["artifact"],
    }  # the forest's content is noise, its name is time
    assert summary["runs"] <= 4


@pytest.mark.parametrize("variation", ["cpus"])
def test_the_cpu_count_reaches_python_and_the_affinity(workspace, variation):
    probe = (
        "import json, os; json.dump({'cpu_count': os.cpu_count(), "
        "'affinity': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None}, "
        "open('cpus.json', 'w'))"
    )
    result = run_script(
        "orchestration",
        "verify",
        "--command",
        f'{sys.executable} -c "{probe}"',
        "--vary",
        variation,
        "--workspace",
        workspace,
        cwd=workspace,
        timeout=600,
    )
    summary = json_lines(result.stdout)[0]
    [cause] = summary["causes"]
    [artifact] = cause["artifacts"]
    assert cause["variations"] == [variation] and "$.cpu_count" in [
        d["where"] for d in artifact["differences"]
    ]


def test_a_command_naming_its_script_relative_to_where_verify_was_started(workspace):
    """``python sgd_digits.py`` as typed in the project's folder: the command runs in each run's
    workspace, so the script's relative name is taken from where verify was started."""
    result = run_script(
        "orchestration",
        "verify",
        "--command",
        f"{sys.executable} sgd_digits.py --out results",
        "--vary",
        "path",
        "--workspace",
        workspace,
        cwd=TRAINING,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[0]
    assert summary["identical"] and summary["artifacts"] == 3


def test_a_script_wrapped_as_an_external_run_is_verified_with_its_records(workspace, tmp_path):
    """--config: run_experiment runs the script as a recorded run in each workspace; the records'
    descriptions of the machine (ours and the command's Python) are set aside, so a seeded script
    is identical."""
    config = tmp_path / "experiment.toml"
    config.write_text(
        f'[experiment]\nkind = "external"\n[external]\n'
        f'command = ["{sys.executable}", "{TRAINING / "sgd_digits.py"}", "--out", "results"]\n'
    )
    result = run_script(
        "orchestration", "verify", "--config", config, "--workspace", workspace, timeout=600
    )
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[0]
    assert summary["identical"] and summary["runs"] == 2
    assert {"time", "hashseed", "threads", "resume"} <= set(summary["varied"])
