import pytest

from tests.conftest import json_lines, run_script, single_error, small_experiment


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import os

    os.environ["SOURCE_DATE_EPOCH"] = "1761912000"  # module fixtures run before the autouse one
    workspace = tmp_path_factory.mktemp("compare") / "ws"
    elsewhere = tmp_path_factory.mktemp("colleague") / "ws"
    small_experiment(workspace, "experiments/results/a")
    report = small_experiment(elsewhere, "experiments/results/a")  # the same run in a colleague's workspace
    small_experiment(workspace, "experiments/results/c", "--set", "learner.lr=0.2")
    return workspace, elsewhere / "experiments/results" / f"{report['run_id']}.json"


def compare(workspace, *args):
    return run_script("orchestration", "compare_runs", *args, "--workspace", workspace, cwd=workspace)


def test_the_same_run_in_another_workspace_gives_identical_results(runs):
    workspace, colleague = runs
    result = compare(workspace, "experiments/results/a", colleague)
    assert result.returncode == 0, result.stderr
    found = json_lines(result.stdout)[0]
    assert found["identical_results"] and found["config"] == [] and found["artifacts"]["counts"]["different"] == 0
    assert not found["environment"]["env_hash_differs"]
    assert found["metrics"][found["runs"][0]] == found["metrics"][found["runs"][1]]


def test_another_learning_rate_shows_in_config_metrics_and_artifacts_and_the_page(runs):
    result = compare(runs[0], "experiments/results/a", "experiments/results/c", "--html")
    assert result.returncode == 1
    found = json_lines(result.stdout)[0]
    assert found["config"] == [{"key": "learner.lr", "values": [0.05, 0.2]}]
    assert found["artifacts"]["files"]["metrics.csv"] == "different"
    first, second = (found["metrics"][run]["loss"]["final"] for run in found["runs"])
    assert first != second
    assert single_error(result.stderr)["event"] == "check_failed"
    page = open(found["html"], encoding="utf-8").read()
    assert "learner.lr" in page and "<svg" in page and "metrics.csv" in page


def test_one_run_is_not_a_comparison(runs):
    result = compare(runs[0], "experiments/results/a")
    assert result.returncode == 2 and "two or more" in single_error(result.stderr)["error"]
