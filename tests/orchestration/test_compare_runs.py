import pytest

from tests.conftest import json_lines, run_script, single_error, small_experiment


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import os

    os.environ["SOURCE_DATE_EPOCH"] = "1761912000"  # module fixtures run before the autouse one
    workspace = tmp_path_factory.mktemp("compare") / "ws"
    elsewhere = tmp_path_factory.mktemp("colleague") / "ws"
    small_experiment(workspace, "experiments/results/a")
    report = small_experiment(
        elsewhere, "experiments/results/a"
    )  # the same run in a colleague's workspace
    small_experiment(workspace, "experiments/results/c", "--set", "learner.lr=0.2")
    return workspace, elsewhere / "experiments/results" / f"{report['run_id']}.json"


def compare(workspace, *args):
    return run_script(
        "orchestration", "compare_runs", *args, "--workspace", workspace, cwd=workspace
    )


def test_the_same_run_in_another_workspace_gives_identical_results(runs):
    workspace, colleague = runs
    result = compare(workspace, "experiments/results/a", colleague)
    assert result.returncode == 0, result.stderr
    found = json_lines(result.stdout)[0]
    assert (
        found["identical_results"]
        and found["config"] == []
        and found["artifacts"]["counts"]["different"] == 0
    )
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


def test_two_runs_of_an_external_script_compare_by_argument_and_by_its_own_metrics(
    workspace, tmp_path
):
    import re

    from tests.orchestration.test_run_experiment import sgd_config
    from tests.visualization.test_html_report import CHECK_IMAGES, chromium

    config = sgd_config(tmp_path, seed="3")
    for name, lr in (("slow", "0.01"), ("fast", "0.5")):
        ran = run_script(
            "orchestration",
            "run_experiment",
            "--config",
            config,
            "--set",
            f"train.lr={lr}",
            "--logdir",
            workspace / f"experiments/results/{name}",
            "--workspace",
            workspace,
            cwd=workspace,
        )
        assert ran.returncode == 0, ran.stderr
    result = compare(workspace, "experiments/results/slow", "experiments/results/fast", "--html")
    said = json_lines(result.stdout)[0]
    assert [row["change"] for row in said["arguments"]] == ["--lr 0.01 -> 0.5"]
    slow, fast = (said["metrics"][run] for run in said["runs"])
    assert (
        set(slow) == set(fast) == {"val_loss", "val_accuracy"}
        and slow["val_loss"]["final"] != fast["val_loss"]["final"]
    )
    text = open(said["html"], encoding="utf-8").read()
    assert "<h2>Arguments that differ" in text and "<h2>Metrics" in text and "<svg" in text
    page = tmp_path / "compare.html"
    page.write_text(text.replace("</body>", CHECK_IMAGES + "</body>"))
    import subprocess

    dom = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert re.search(rb"<title>images \d+ broken 0</title>", dom.stdout), dom.stdout[:300]
