import orjson

from tests.conftest import json_lines, run_script, single_error, small_experiment


def rerun(workspace, *args):
    return run_script(
        "orchestration", "rerun", *args, "--workspace", workspace, cwd=workspace, timeout=300
    )


def test_a_recorded_run_is_rerun_from_its_record_and_proved_identical(workspace, tmp_path):
    report = small_experiment(workspace, "experiments/results/exp", "--set", "learner.hidden=8")
    path = workspace / "experiments/results" / f"{report['run_id']}.json"
    result = rerun(
        workspace, path, "--force"
    )  # forced only if this checkout differs from the recorded one
    assert result.returncode == 0, result.stderr
    found = json_lines(result.stdout)[0]
    assert found["identical"] and found["outputs"] == len(report["outputs"]) > 5
    recorded = orjson.loads((workspace / found["report"]).read_bytes())
    assert recorded["results"]["run"] == report["run_id"] and recorded["status"] == "ok"

    other = dict(report, env_hash="0" * 64)  # the record of a run made in another environment
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(orjson.dumps(other))
    refused = rerun(
        workspace, elsewhere
    )  # not the report the manifest holds: refused before anything runs
    assert refused.returncode == 2
    error = single_error(refused.stderr)
    assert (
        error["recorded_sha256"]
        == orjson.loads((workspace / "meta/chronicle/manifest.json").read_bytes())["runs"][
            report["run_id"]
        ]["report_sha256"]
        and error["actual_sha256"] != error["recorded_sha256"]
    )
    forced = rerun(workspace, elsewhere, "--force")
    assert forced.returncode == 0
    assert {"another environment", "the report is not the one the manifest holds"} <= set(
        json_lines(forced.stdout)[0]["forced"]
    )

    tampered = dict(report, outputs=dict(report["outputs"]))
    name = next(p for p in tampered["outputs"] if p.endswith("metrics.csv"))
    tampered["outputs"][name] = {"sha256": "0" * 64, "size": 1}
    changed = tmp_path / "changed.json"
    changed.write_bytes(orjson.dumps(tampered))
    differs = rerun(workspace, changed, "--force")
    assert differs.returncode == 1 and json_lines(differs.stdout)[0]["differing"] == 1
    assert single_error(differs.stderr)["first"] == name


def test_paths_typed_relative_to_another_folder_are_recorded_workspace_relative_and_rerun(tmp_path):
    from tests.conftest import SMALL_RUN

    made = run_script(
        "orchestration",
        "run_experiment",
        *SMALL_RUN,
        "--logdir",
        "ws/experiments/results/rel",
        "--workspace",
        "ws",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    report_path = next((tmp_path / "ws/experiments/results").glob("run_experiment_*.json"))
    argv = orjson.loads(report_path.read_bytes())["argv"]
    assert argv[argv.index("--logdir") + 1] == "experiments/results/rel"
    result = rerun(tmp_path / "ws", report_path, "--force")
    assert result.returncode == 0 and json_lines(result.stdout)[0]["identical"], result.stdout
