import numpy as np

from scripts.orchestration import pipeline_monitor as pm
from tests.conftest import json_lines, run_script, single_error

SMALL = ["--set", "experiment.cycles=8", "--set", "data.size=8", "--set", "data.samples=8"]


def finished_run(workspace):
    logdir = workspace / "run"
    result = run_script(
        "orchestration", "run_experiment", "--logdir", logdir, "--workspace", workspace, *SMALL
    )
    assert result.returncode == 0, result.stderr
    return logdir


def monitor(workspace, logdir, *args):
    return run_script("orchestration", "pipeline_monitor", logdir, "--workspace", workspace, *args)


def test_a_finished_run_has_no_anomalies(workspace):
    logdir = finished_run(workspace)
    result = monitor(workspace, logdir, "--once")
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[0]
    assert summary["finished"] and summary["cycles_done"] == 8 and summary["latest"]["cycle"] == 8
    assert [c["status"] for c in summary["checkpoints"]] == ["ok", "ok"] and summary[
        "anomalies"
    ] == []
    assert monitor(workspace, logdir, "--follow", "--interval", "0.01").returncode == 0


def test_garbage_nan_and_a_partial_line(workspace):
    logdir = finished_run(workspace)
    with open(logdir / "metrics.jsonl", "ab") as live:
        live.write(b"garbage that is not json\n")
        live.write(b'{"cycle": 9, "phase": 7, "loss": "NaN", "val_loss": 0.1}\n')
        live.write(b'{"cycle": 10, "loss": 0.')  # the writer is mid-append
    result = monitor(workspace, logdir)
    assert result.returncode == 1
    kinds = [a["kind"] for a in json_lines(result.stdout)[0]["anomalies"]]
    assert kinds == ["garbage_line", "non_finite"]
    assert single_error(result.stderr)["first"]["kind"] == "garbage_line"


def test_missing_and_corrupt_checkpoints(workspace):
    logdir = finished_run(workspace)
    (logdir / "checkpoints/cycle_0004.npz").unlink()
    data = (logdir / "checkpoints/cycle_0008.npz").read_bytes()
    (logdir / "checkpoints/cycle_0008.npz").write_bytes(data[: len(data) // 2])
    summary = json_lines(monitor(workspace, logdir).stdout)[0]
    assert [c["status"] for c in summary["checkpoints"]] == ["missing", "corrupt"]
    assert {a["kind"] for a in summary["anomalies"]} == {"missing_checkpoint", "corrupt_checkpoint"}


def test_a_stalled_and_a_diverging_run(workspace):
    logdir = finished_run(workspace)
    plan = (logdir / "plan.json").read_text().replace('"cycles":8', '"cycles":20')
    (logdir / "plan.json").write_text(plan)
    with open(logdir / "metrics.jsonl", "ab") as live:
        live.write(b'{"cycle": 9, "phase": 7, "loss": 1000.0}\n')
    summary = pm.summarize(workspace, logdir, stall_seconds=0.0, diverge_factor=10.0, now=1e12)
    kinds = {a["kind"] for a in summary["anomalies"]}
    assert {"stalled", "diverging_loss"} <= kinds and not summary["finished"]


def test_not_a_run_folder_is_bad_input(workspace):
    (workspace / "empty").mkdir()
    result = monitor(workspace, workspace / "empty")
    assert result.returncode == 2 and "plan.json" in single_error(result.stderr)["error"]


def test_read_rows_waits_for_a_partial_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"cycle": 1}\n{"cycle": 2')
    assert pm.read_rows(path) == ([{"cycle": 1}], [])
    assert np.isnan(pm._number("NaN"))
