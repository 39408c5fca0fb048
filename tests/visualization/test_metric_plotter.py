import numpy as np

from scripts.utils.jsonio import read_json
from scripts.visualization import metric_plotter as mp
from tests.conftest import json_lines, run_script, single_error, tree


def plot(workspace, *args, expect=0):
    result = run_script(
        "visualization", "metric_plotter", *args, "--workspace", workspace, cwd=workspace
    )
    assert result.returncode == expect, result.stderr
    if expect == 2:
        return None, None, result
    run_id = [r for r in json_lines(result.stderr) if r["event"] == "run_recorded"][0]["run_id"]
    return (
        workspace / "experiments/results" / run_id,
        read_json(workspace / f"experiments/results/{run_id}.json"),
        result,
    )


def test_png_and_svg_are_byte_identical_and_nan_is_marked(run_workspace):
    other = run_workspace / "run_b"
    other.mkdir()
    rows = (run_workspace / "run/metrics.jsonl").read_bytes()
    (other / "metrics.jsonl").write_bytes(
        rows + b'{"cycle": 7, "phase": 7, "loss": "NaN", "val_loss": "-Infinity", '
        b'"coherence": 0.5, "mean_r": 0.1, "mean_g": 0.1, "mean_b": 0.1}\n'
    )
    # Plotted and marked, so the diverged run is visible, and still exit 1 naming the count and the
    # first.
    first, report, result = plot(
        run_workspace, "run", "run_b/metrics.jsonl", "--log-scale", expect=1
    )
    error = json_lines(result.stderr)[-1]
    assert error["event"] == "check_failed" and error["non_finite"] == 2
    assert error["first"]["metric"] == "loss" and error["first"]["cycle"] == 7
    second, _, _ = plot(run_workspace, "run", "run_b/metrics.jsonl", "--log-scale", expect=1)
    assert tree(first) == ["curves.png", "curves.svg", "fft.png", "fft.svg"]
    for name in tree(first):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    marked = report["results"]["non_finite_points"]
    assert {(m["metric"], m["value"]) for m in marked} == {("loss", "NaN"), ("val_loss", "-Inf")}
    assert {p["series"] for p in report["results"]["dominant_periods"]} >= {"loss", "mean_r"}


def test_csv_input_and_missing_column(run_workspace):
    assert plot(run_workspace, "run/metrics.csv", "--format", "png")[0] is not None
    _, _, result = plot(run_workspace, "run/metrics.csv", "--metrics", "loss,accuracy", expect=2)
    assert single_error(result.stderr)["column_name"] == "accuracy"


def test_garbage_values_and_missing_files_are_bad_input(workspace):
    (workspace / "m.csv").write_text(
        "cycle,loss,val_loss,coherence\n1,0.5,0.4,0.9\n2,oops,0.4,0.9\n"
    )
    _, _, result = plot(workspace, "m.csv", expect=2)
    error = single_error(result.stderr)
    assert (error["row"], error["line"]) == (2, 3)
    _, _, result = plot(workspace, "nothing.csv", expect=2)
    single_error(result.stderr)


def test_dominant_period_finds_an_oscillation():
    cycles = np.arange(64)
    _, _, period = mp.dominant_period(np.sin(2 * np.pi * cycles / 8) + 0.01 * cycles)
    assert period == 8.0
    assert mp.dominant_period(np.array([1.0, np.nan, 2.0]))[2] is None
