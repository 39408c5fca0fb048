import numpy as np
import pytest

from scripts.utils.formats.tensors import ChromaticTensor, SpectralTensor, write_cten, write_sten
from scripts.utils.jsonio import read_json
from scripts.visualization import renders
from scripts.visualization import tensor_visualizer as tv
from tests.conftest import json_lines, run_script, single_error, tree


def visualize(workspace, *inputs, expect=0):
    result = run_script(
        "visualization", "tensor_visualizer", *inputs, "--workspace", workspace, cwd=workspace
    )
    assert result.returncode == expect, result.stderr
    run_id = [r for r in json_lines(result.stderr) if r["event"] == "run_recorded"][0]["run_id"]
    return (
        workspace / "experiments/results" / run_id,
        read_json(workspace / f"experiments/results/{run_id}.json"),
        result,
    )


def test_renders_a_run_and_is_byte_identical_twice(run_workspace):
    first, report, _ = visualize(run_workspace, "run")
    second, _, _ = visualize(run_workspace, "run")
    assert (
        tree(first) == tree(second) and len(tree(first)) == 6 * 6 + 6
    )  # 6 dreams x 6 PNGs, 6 spectra
    for name in tree(first):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert report["results"]["max_abs_drift_db"] <= 0.5 and report["results"]["failing"] == []
    views = {
        r["view"] for item in report["results"]["items"] for r in item["renders"] if "view" in r
    }
    assert views == {"rgb", "hue", "saturation", "lightness", "coherence"}


def test_hand_made_tensors_dark_adapts_and_out_of_range_fails(workspace):
    folder = workspace / "tensors"
    ramp = np.linspace(0, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    write_cten(folder / "ramp.cten", ChromaticTensor(ramp, ramp[..., 0]))
    write_cten(folder / "dark.cten", ChromaticTensor(np.full((8, 8, 3), 0.0013, np.float32)))
    write_sten(
        folder / "spectrum.sten",
        SpectralTensor(
            np.linspace(1, 0, 16, dtype=np.float32), 110.0, 10.0, np.full(16, 0.1, np.float32)
        ),
    )
    np.save(folder / "gray.npy", np.linspace(0, 1, 64).reshape(8, 8))
    _, report, _ = visualize(workspace, "tensors")
    dark = [i for i in report["results"]["items"] if i["source"].endswith("dark.cten")][0]
    rgb = [r for r in dark["renders"] if r["view"] == "rgb"][0]
    assert (
        rgb["bits"] == 16 and abs(rgb["drift_db"]) <= 0.5
    )  # 8 bits would erase it; 16 bits pass honestly

    write_cten(folder / "hot.cten", ChromaticTensor(np.full((8, 8, 3), 3.0, np.float32)))
    _, report, result = visualize(workspace, "tensors", expect=1)
    error = single_error(result.stderr)
    assert error["event"] == "check_failed" and error["first"]["source"].endswith("hot.cten")
    assert report["status"] == "check_failed" and report["results"]["failing"]


def test_energy_drift_formula():
    assert renders.energy_drift_db(np.ones(4), np.ones(4)) == 0.0
    assert renders.energy_drift_db(np.ones(4), np.full(4, np.sqrt(2))) == pytest.approx(
        3.0103, abs=1e-3
    )
    assert renders.energy_drift_db(np.zeros(4), np.zeros(4)) == 0.0
    assert renders.energy_drift_db(np.full(4, 1e-4), np.zeros(4)) == -np.inf


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "bad array"])
def test_bad_input(workspace, case):
    folder = workspace / "in"
    folder.mkdir()
    if case == "corrupt":
        write_cten(folder / "x.cten", ChromaticTensor(np.zeros((2, 2, 3), np.float32)))
        data = (folder / "x.cten").read_bytes()
        (folder / "x.cten").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    if case == "bad array":
        np.save(folder / "x.npy", np.zeros((2, 2, 2, 2)))
    target = "nowhere" if case == "missing" else "in"
    result = run_script(
        "visualization", "tensor_visualizer", target, "--workspace", workspace, cwd=workspace
    )
    assert result.returncode == 2
    single_error(result.stderr)
    assert not (workspace / "experiments").exists() or not list(
        (workspace / "experiments/results").glob("tensor_*")
    )


def test_the_drift_check_is_measured_on_dreams_that_differ_and_fails_a_distorted_render(
    run_workspace, monkeypatch
):
    """Every cycle's dream is its own, so the check sees different tensors; a render made wrong
    on purpose (a gamma of 0.8, as a colour-management slip would make it) drifts beyond 0.5 dB
    and fails the run."""
    first, report, _ = visualize(run_workspace, "run")
    rgb_renders = sorted(first.glob("*dreams__cycle_*/rgb.png"))
    assert len(rgb_renders) == 6 and len({path.read_bytes() for path in rgb_renders}) == 6
    assert 0 < report["results"]["max_abs_drift_db"] <= 0.5

    honest = renders.png_bytes
    monkeypatch.setattr(
        renders,
        "png_bytes",
        lambda values, bits, xp: honest(xp.clip(values, 0, 1) ** 0.8, bits, xp),
    )
    monkeypatch.chdir(run_workspace)
    code = tv.main(["run", "--workspace", str(run_workspace), "--quiet"])
    assert code == 1
    [run_id] = [
        p.stem
        for p in (run_workspace / "experiments/results").glob("tensor_visualizer_*.json")
        if p.stem != first.name
    ]
    failing = read_json(run_workspace / f"experiments/results/{run_id}.json")["results"]["failing"]
    assert {f["source"] for f in failing if f["view"] == "rgb"} == {
        f"run/dreams/cycle_{c:04d}.cten" for c in range(1, 7)
    }
    assert all(f["drift_db"] > 0.5 for f in failing)
