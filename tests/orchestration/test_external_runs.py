"""A researcher's project as it is laid out: relative paths, local modules, a package, a launcher
program."""

import hashlib
import os
import sys
from pathlib import Path

from scripts.orchestration.external_runs import (
    anchored,
    code_record,
    command_interpreter,
    external_command,
    local_imports,
)
from scripts.utils.jsonio import read_json
from tests.conftest import json_lines, run_script, single_error

TRAIN = """
import argparse, csv
import numpy as np
from sklearn.datasets import load_digits
from model import build_model
from nets.heads import HEAD_NAME

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--labels", default="labels.txt")
parser.add_argument("--output-dir", default="out")
args = parser.parse_args()
X, y = load_digits(return_X_y=True)
names = open(args.labels).read().split()
clf = build_model(args.lr, args.seed)
with open(f"{args.output_dir}/log.csv", "w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["epoch", "loss", "accuracy"])
    for epoch in range(1, 4):
        clf.partial_fit(X / 16.0, y, classes=np.arange(10))
        writer.writerow([epoch, round(1.0 / epoch, 6), clf.score(X / 16.0, y)])
print(HEAD_NAME, names[0], "done")
"""


def project(tmp_path: Path) -> Path:
    """train.py importing model.py and nets/heads.py (through nets/__init__.py), a data file
    beside them, and a config whose command names them relative to its folder."""
    folder = tmp_path / "proj"
    (folder / "nets").mkdir(parents=True)
    (folder / "train.py").write_text(TRAIN)
    (folder / "model.py").write_text(
        "from sklearn.linear_model import SGDClassifier\n\n\ndef build_model(lr, seed):\n    "
        "return SGDClassifier(eta0=lr, learning_rate='constant', random_state=seed)\n"
    )
    (folder / "nets/__init__.py").write_text("from .heads import HEAD_NAME\n")
    (folder / "nets/heads.py").write_text("HEAD_NAME = 'linear'\n")
    (folder / "labels.txt").write_text("zero one two\n")
    (folder / "config.toml").write_text(
        '[experiment]\nkind = "external"\n[external]\ncommand = ["python", "train.py", "--lr", '
        '"{train.lr}", "--seed", "{seed}", "--labels", "labels.txt", "--output-dir", '
        '"{logdir}"]\n[train]\nlr = 0.01\n'
    )
    return folder


def python_on_path() -> dict:
    """``python`` on PATH is this interpreter (the one with scikit-learn), as in an activated
    environment."""
    return {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def test_a_project_with_relative_paths_and_local_modules_runs_anywhere_and_records_its_code(
    workspace, tmp_path
):
    folder = project(tmp_path)
    result = run_script(
        "orchestration",
        "run_experiment",
        "--config",
        folder / "config.toml",
        "--workspace",
        workspace,
        "--logdir",
        workspace / "experiments/results/a",
        cwd=tmp_path,
        env=python_on_path(),
    )
    assert result.returncode == 0, result.stderr
    logdir = workspace / "experiments/results/a"
    assert [
        r.get("msg") or r.get("raw") for r in json_lines((logdir / "output.jsonl").read_bytes())
    ] == ["linear zero done"]
    [report_path] = (workspace / "experiments/results").glob("run_experiment_*.json")
    report = read_json(report_path)
    files = report["external"]["code"]["files"]
    assert sorted(files) == [
        "labels.txt",
        "model.py",
        "nets/__init__.py",
        "nets/heads.py",
        "train.py",
    ]  # named or imported
    assert (
        files["nets/heads.py"]
        == hashlib.sha256((folder / "nets/heads.py").read_bytes()).hexdigest()
    )
    assert report["external"]["command"][:2] == ["python", "train.py"]  # as the config words it
    assert report["results"]["metrics_file"] == "log.csv" and report["results"]["x"] == "epoch"

    (folder / "nets/heads.py").write_text(
        "HEAD_NAME = 'mlp'\n"
    )  # an edit two imports away from the script
    refused = run_script(
        "orchestration",
        "rerun",
        report_path,
        "--workspace",
        workspace,
        cwd=folder,
        env=python_on_path(),
    )
    assert refused.returncode == 2, refused.stderr
    assert [r["file"] for r in single_error(refused.stderr)["refused"] if "file" in r] == [
        "nets/heads.py"
    ]

    second = run_script(
        "orchestration",
        "run_experiment",
        "--config",
        folder / "config.toml",
        "--workspace",
        workspace,
        "--logdir",
        workspace / "experiments/results/b",
        cwd=folder,
        env=python_on_path(),
    )
    assert second.returncode == 0, second.stderr
    compared = run_script(
        "orchestration",
        "compare_runs",
        workspace / "experiments/results/a",
        workspace / "experiments/results/b",
        "--workspace",
        workspace,
    )
    comparison = json_lines(compared.stdout)[0]
    [changes] = comparison["code"].values()
    assert [(c["what"], c["file"]) for c in changes] == [
        ("a file of the command's code changed", "nets/heads.py")
    ]
    assert comparison["artifacts"]["files"]["output.jsonl"] == "different"
    assert (
        comparison["artifacts"]["files"]["plan.json"] == "same"
    )  # the log folder's name is not in it


def test_rerun_finds_the_code_in_the_project_folder_or_where_code_dir_says(workspace, tmp_path):
    folder = project(tmp_path)
    made = run_script(
        "orchestration",
        "run_experiment",
        "--config",
        folder / "config.toml",
        "--workspace",
        workspace,
        cwd=folder,
        env=python_on_path(),
    )
    assert made.returncode == 0, made.stderr
    [report_path] = (workspace / "experiments/results").glob("run_experiment_*.json")
    moved = tmp_path / "moved"
    folder.rename(
        moved
    )  # the project moved: the record names no absolute path, so it still matches
    again = run_script(
        "orchestration",
        "rerun",
        report_path,
        "--workspace",
        workspace,
        "--code-dir",
        moved,
        "--force",
        env=python_on_path(),
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    said = json_lines(again.stdout)[0]
    assert said["identical"] is True and not [f for f in said["forced"] if "command's" in f]


def test_a_failed_command_keeps_its_stderr_apart_from_its_stdout(workspace, tmp_path):
    folder = project(tmp_path)
    (folder / "labels.txt").unlink()  # the script dies reading it: a traceback on stderr
    result = run_script(
        "orchestration",
        "run_experiment",
        "--config",
        folder / "config.toml",
        "--workspace",
        workspace,
        cwd=folder,
        env=python_on_path(),
    )
    assert result.returncode == 1
    error = single_error(result.stderr)
    assert (
        error["stderr_tail"][0].startswith("Traceback") and "labels.txt" in error["stderr_tail"][-1]
    )
    assert error["output_tail"] == []


def test_arguments_naming_files_beside_the_config_become_absolute(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "train.py").write_text("")
    assert anchored("train.py", tmp_path) == str((tmp_path / "train.py").resolve())
    assert anchored("--data=data", tmp_path) == "--data=" + str((tmp_path / "data").resolve())
    assert [anchored(a, tmp_path) for a in ("0.01", "--lr", ".", "missing.csv", "/abs")] == [
        "0.01",
        "--lr",
        ".",
        "missing.csv",
        "/abs",
    ]
    config = {
        "external": {"command": ["python", "train.py", "--seed", "{seed}", "--out", "{logdir}"]}
    }
    assert external_command(config, 7, tmp_path)[:2] == [
        "python",
        str((tmp_path / "train.py").resolve()),
    ]
    assert external_command(config, 7)[1:] == ["train.py", "--seed", "7", "--out", "."]


def test_the_code_of_a_module_run_with_dash_m_and_its_relative_imports(tmp_path):
    package = tmp_path / "src" / "trainer"
    package.mkdir(parents=True)
    (tmp_path / "src/__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(
        "from . import layers\nfrom ..util import helpers\nimport numpy\n"
    )
    (package / "layers.py").write_text("")
    (tmp_path / "src/util").mkdir()
    (tmp_path / "src/util/__init__.py").write_text("")
    (tmp_path / "src/util/helpers.py").write_text("import os\n")
    record = code_record(["python", "-m", "src.trainer.main"], tmp_path, [], None)
    assert sorted(record["files"]) == [
        "src/__init__.py",
        "src/trainer/__init__.py",
        "src/trainer/layers.py",
        "src/trainer/main.py",
        "src/util/__init__.py",
        "src/util/helpers.py",
    ]
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")  # not Python: kept, its imports unknown
    assert local_imports([broken]) == [broken]


def test_the_python_of_a_launcher_program_is_read_from_its_first_line(tmp_path, monkeypatch):
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for name, first_line in (
        ("torchrun", f"#!{sys.executable}"),
        ("accelerate", "#!/usr/bin/env -S python3 -u"),
        ("tool", "#!/bin/sh"),
    ):
        program = bin_folder / name
        program.write_text(first_line + "\n")
        program.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_folder))
    assert command_interpreter(["torchrun", "train.py"]) == sys.executable
    assert command_interpreter(["accelerate", "launch"]) == "python3"
    assert (
        command_interpreter(["tool"]) is None
        and command_interpreter(["python3.12", "x.py"]) == "python3.12"
    )
