"""verify on a real PyTorch training script (pytorch/examples' mnist, on scikit-learn's digits), one
defect each.

Runs only where torch can be imported (it is several GB, so not in CI):

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch -r requirements.lock
    /tmp/torchvenv/bin/python -m pytest tests/orchestration/test_verify_torch.py

The script pins its threads (torch.set_num_threads(1)) and seeds torch; each test changes one line
of it the way the defect is written in practice. The seeded script's weights follow the CPU's
instruction set (PyTorch's and oneDNN's kernel dispatch), so ``cpu`` is a true cause of every
variant where this machine has more than the baseline instruction set; the tests require the
defect's own cause and allow only ``cpu`` beside it.
"""

import sys

import orjson
import pytest

from tests.conftest import REPO, json_lines, run_script

pytest.importorskip("torch")
SCRIPT = REPO / "tests/orchestration/training/torch_digits_cnn.py"
NOISE = "none: run-to-run noise"


def verify(workspace, tmp_path, old: str = "", new: str = "", *extra):
    source = SCRIPT.read_text()
    assert old in source
    script = tmp_path / "train.py"
    script.write_text(source.replace(old, new))
    result = run_script(
        "orchestration",
        "verify",
        "--command",
        f"{sys.executable} {script} --save-model",
        *extra,
        "--workspace",
        workspace,
        cwd=workspace,
        timeout=900,
    )
    assert result.returncode in (0, 1), result.stderr
    summary = json_lines(result.stdout)[0]
    return summary, {tuple(c["variations"]): c for c in summary.get("causes", [])}


def test_the_seeded_script_differs_only_with_the_cpu_and_its_model_differs_by_tensor(
    workspace, tmp_path
):
    summary, causes = verify(workspace, tmp_path)
    assert set(causes) <= {("cpu",)} and summary["unexplained"] == []
    if causes:
        cause = causes[("cpu",)]
        assert "ATEN_CPU_CAPABILITY unset -> default" in cause["changed"]
        model = next(a for a in cause["artifacts"] if a["artifact"] == "digits_cnn.pt")
        weights = {d["where"]: d for d in model["differences"]}
        assert set(weights) <= {
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias",
        }
        conv = weights.get("conv1.weight") or next(iter(weights.values()))
        assert (
            conv["dtype"] == "float32"
            and conv["differing_values"] > 0
            and conv["max_abs_difference"] > 0
        )
    assert summary["runs"] <= 15


def test_without_a_seed_it_is_noise_and_nothing_else(workspace, tmp_path):
    summary, causes = verify(workspace, tmp_path, "    torch.manual_seed(args.seed)\n", "")
    assert set(causes) == {(NOISE,)} and summary["runs"] <= 4
    assert "torch.manual_seed" in causes[(NOISE,)]["fix"]
    assert "digits_cnn.pt" in {a["artifact"] for a in causes[(NOISE,)]["artifacts"]}


def test_a_time_stamp_in_the_model_name_is_time(workspace, tmp_path):
    summary, causes = verify(
        workspace,
        tmp_path,
        'torch.save(model.state_dict(), "digits_cnn.pt")',
        "torch.save(model.state_dict(), "
        "f\"digits_cnn_{__import__('datetime').datetime.now():%Y%m%d-%H%M%S}.pt\")",
    )
    assert ("time",) in causes and set(causes) <= {("time",), ("cpu",)}
    [named] = causes[("time",)]["artifacts"]
    assert [d["where"] for d in named["differences"]] == ["file name"]
    assert named["differences"][0]["note"] == "the name contains a time stamp"
    assert summary["unexplained"] == [] and summary["runs"] <= 15


def test_data_loader_workers_sized_from_the_machine_are_cpus(workspace, tmp_path):
    summary, causes = verify(
        workspace,
        tmp_path,
        "num_workers=args.num_workers",
        "num_workers=__import__('os').cpu_count()",
    )
    assert ("cpus",) in causes and set(causes) <= {("cpus",), ("cpu",)}
    assert summary["unexplained"] == [] and summary["runs"] <= 15


def test_threads_sized_from_the_machine_are_never_blamed_on_anything_else(workspace, tmp_path):
    summary, causes = verify(
        workspace,
        tmp_path,
        "torch.set_num_threads(1)",
        "torch.set_num_threads(__import__('os').cpu_count())",
    )
    assert set(causes) <= {("cpus",), ("cpu",)} and summary["unexplained"] == []


def test_a_clock_in_the_metrics_is_time_and_the_losses_beside_it_are_not_noise(workspace, tmp_path):
    summary, causes = verify(
        workspace,
        tmp_path,
        '"args": vars(args)}',
        '"args": vars(args), "finished": __import__("time").time()}',
    )
    assert ("time",) in causes and set(causes) <= {("time",), ("cpu",)}
    assert [
        (a["artifact"], [d["where"] for d in a["differences"]])
        for a in causes[("time",)]["artifacts"]
    ] == [("metrics.json", ["$.finished"])]
    assert summary["unexplained"] == [] and summary["runs"] <= 15


def test_the_script_wrapped_as_an_external_run_records_torch_and_rerun_refuses_an_edit(
    workspace, tmp_path
):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.read_text())
    config = tmp_path / "torch.toml"
    config.write_text(
        f'[experiment]\nkind = "external"\n[external]\ncommand = ["{sys.executable}", "{script}", '
        f'"--epochs", "1", "--seed", "{{seed}}", "--save-model"]\n'
    )
    ran = run_script(
        "orchestration",
        "run_experiment",
        "--config",
        config,
        "--logdir",
        workspace / "experiments/results/torch",
        "--workspace",
        workspace,
        cwd=workspace,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    [path] = (workspace / "experiments/results").glob("run_experiment_*.json")
    report = orjson.loads(path.read_bytes())
    torch_info = report["external"]["environment"]["torch"]
    assert (
        torch_info["version"]
        and "deterministic_algorithms" in torch_info
        and "cudnn_benchmark" in torch_info
    )
    assert report["results"]["metrics_file"] == "metrics.csv" and set(
        report["results"]["final"]
    ) >= {"loss"}
    script.write_text(SCRIPT.read_text().replace("default=0.7", "default=0.5"))
    refused = run_script(
        "orchestration", "rerun", path, "--workspace", workspace, cwd=tmp_path, timeout=600
    )
    assert refused.returncode == 2
    changed = [r for r in json_lines(refused.stderr)[-1]["refused"] if r.get("file") == "train.py"]
    assert changed and changed[0]["what"] == "a file of the command's code changed"
