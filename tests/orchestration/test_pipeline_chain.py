"""The reference experiment on the data tools' outputs: the preprocessed sample and its split."""

from scripts.utils.jsonio import read_json
from tests.conftest import json_lines, run_script


def test_experiment_uses_the_preprocessed_sample_and_its_split(workspace):
    for script, args in (
        ("sample_data", []),
        ("metadata_extractor", []),
        ("dataset_splitter", []),
        ("image_preprocessor", ["--size", "16x16"]),
    ):
        result = run_script("data_tools", script, *args, "--workspace", workspace, cwd=workspace)
        assert result.returncode == 0, (script, result.stderr)
    result = run_script(
        "orchestration",
        "run_experiment",
        "--logdir",
        workspace / "run",
        "--workspace",
        workspace,
        "--set",
        "experiment.cycles=3",
        "--set",
        "data.size=8",
        cwd=workspace,
    )
    assert result.returncode == 0, result.stderr
    finished = [r for r in json_lines(result.stderr) if r["event"] == "finished"][0]
    assert finished["data"].startswith("image_preprocessor run ")
    assert finished["split"].startswith("dataset_splitter run ")
    split = read_json(
        sorted((workspace / "experiments/results").glob("dataset_splitter_*/split.json"))[0]
    )
    records = json_lines(
        sorted((workspace / "experiments/results").glob("image_preprocessor_*/records.jsonl"))[
            0
        ].read_bytes()
    )
    samples = read_json(workspace / "experiments/results/run_experiment_20251031T120000Z.json")[
        "config"
    ]["data"]["samples"]
    loaded = [r["source"] for r in records if not r["error"]][:samples]
    expected = [split["assignments"].get(source) for source in loaded]
    assert finished["val_samples"] == expected.count("val") >= 1
    assert finished["train_samples"] == expected.count("train") >= 1
