import shutil
from pathlib import Path

from scripts.orchestration.pipeline import HANDOVER, PHASES, steps_for
from scripts.utils.jsonio import read_json
from tests.conftest import REPO, json_lines, run_script, single_error


def phase(workspace, name, *args):
    return run_script(
        "orchestration",
        "pipeline",
        name,
        "--workspace",
        workspace,
        *args,
        cwd=workspace,
        timeout=600,
    )


def summary_of(result):
    return [r for r in json_lines(result.stderr) if r["event"] == "summary"][0]


def test_phase5_runs_then_skips_then_redoes_what_changed(workspace):
    first = phase(workspace, "phase5")
    assert first.returncode == 0, first.stderr
    steps = summary_of(first)["steps"]
    assert [s["step"] for s in steps] == [
        "sample",
        "metadata",
        "split",
        "preprocess",
        "hash",
        "experiment_phase5",
        "render_phase5",
        "report_phase5",
    ]
    assert all(s["status"] == "done" and s["report"] for s in steps)
    assert (workspace / "experiments/results/phase5/metrics.csv").exists()
    # what a step consumes is handed over by the pipeline, and its report says so
    run_of = {s["step"]: s["report"].rsplit("/", 1)[-1][: -len(".json")] for s in steps}
    experiment = read_json(
        workspace / next(s["report"] for s in steps if s["step"] == "experiment_phase5")
    )
    assert experiment["argv"][-4:] == [
        "--set",
        f"data.source=experiments/results/{run_of['preprocess']}",
        "--set",
        f"data.split=experiments/results/{run_of['split']}",
    ]
    assert experiment["results"]["data"] == f"image_preprocessor run {run_of['preprocess']}"
    assert experiment["results"]["split"] == f"dataset_splitter run {run_of['split']}"
    assert experiment["consumed"] == {
        f"experiments/results/{run_of[step]}": run_of[step] for step in ("preprocess", "split")
    }
    table = f"experiments/results/{run_of['metadata']}/metadata.jsonl"
    splitter = read_json(workspace / next(s["report"] for s in steps if s["step"] == "split"))
    assert splitter["argv"][0] == table
    sample = {"data/sample": run_of["sample"]}  # the files read from the sample folder
    for step, consumed in (
        ("metadata", sample),
        ("split", {table: run_of["metadata"]}),
        ("preprocess", {table: run_of["metadata"], **sample}),
    ):
        report = read_json(workspace / next(s["report"] for s in steps if s["step"] == step))
        assert report["consumed"] == consumed, step
    render = read_json(workspace / next(s["report"] for s in steps if s["step"] == "render_phase5"))
    assert render["consumed"] == {"experiments/results/phase5": run_of["experiment_phase5"]}
    assert "consumed" not in read_json(workspace / steps[0]["report"])  # the sample reads no run

    again = phase(workspace, "phase5")
    assert [s["status"] for s in summary_of(again)["steps"]] == ["up to date"] * 8

    shutil.rmtree(
        workspace / "experiments/results/phase5"
    )  # a lost output is rebuilt, with what depends on it
    redone = {s["step"]: s["status"] for s in summary_of(phase(workspace, "phase5"))["steps"]}
    assert redone["experiment_phase5"] == "done" and redone["render_phase5"] == "done"
    assert redone["report_phase5"] == "done"
    assert redone["metadata"] == "up to date"


def test_user_data_and_bad_input(workspace, tmp_path):
    data = tmp_path / "mydata"
    shutil.copytree(
        REPO / "tests", data / "not-images", ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    result = phase(workspace, "phase9")
    assert result.returncode == 0, result.stderr
    assert (workspace / "env/environment.json").exists() and (
        workspace / "env/config_phase7.json"
    ).exists()
    registry = read_json(workspace / "data/hash_registry.json")["files"]
    assert "env/config_phase7.json" in registry

    for args, fragment in (
        ([], "unknown phase"),
        (["--data", str(tmp_path / "none")], "folder"),
        (["--data", str(tmp_path / "empty")], "empty"),
    ):
        (tmp_path / "empty").mkdir(exist_ok=True)
        name = "phase4" if not args else "phase5"
        bad = phase(workspace, name, *args)
        assert bad.returncode == 2 and fragment in single_error(bad.stderr)["error"]


def test_the_step_table_names_real_scripts_and_only_earlier_steps():
    for name in PHASES:
        for external in (False, True):
            steps = steps_for(name, "/data", external, "cohort", False)
            seen = set()
            for step in steps:
                assert Path(step.argv[0]).is_file(), step.argv[0]
                assert not any("{" in arg for arg in step.argv if not HANDOVER.search(arg))
                assert set(step.after) <= seen, (name, step.name)
                seen.add(step.name)
            assert ("sample" in seen) == (not external and name != "phase9")


def test_the_steps_of_a_phase_are_data_that_make_steps_prints():
    result = run_script("orchestration", "pipeline", "phase7", "--steps")
    assert result.returncode == 0, result.stderr
    steps = {step["step"]: step for step in json_lines(result.stdout)[0]["steps"]}
    assert steps["experiment_phase7"]["after"] == ["split", "preprocess", "hash"]
    assert "data.source={run:preprocess}" in steps["experiment_phase7"]["command"]
    assert steps["split"]["command"][1:] == ["scripts/data_tools/dataset_splitter.py", "{table}"]
    assert steps["report_phase7"]["command"][1] == "scripts/visualization/html_report.py"
