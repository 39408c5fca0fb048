import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orjson
import pytest

from scripts.orchestration import reference_experiment as rx
from scripts.utils.compute import exact
from scripts.utils.config.loading import load_config
from scripts.utils.formats.tensors import read_cten, read_sten
from scripts.utils.jsonio import read_json
from tests.conftest import REPO, json_lines, run_script, single_error, tree

SMALL = ["--set", "experiment.cycles=6", "--set", "data.size=8", "--set", "data.samples=8"]


def experiment(workspace, logdir, *args, env=None, cwd=None):
    return run_script(
        "orchestration",
        "run_experiment",
        "--logdir",
        logdir,
        "--workspace",
        workspace,
        *args,
        env=env,
        cwd=cwd or workspace,
    )


def folder_bytes(folder):
    return {name: (folder / name).read_bytes() for name in tree(folder)}


def test_the_spec_example_runs_from_the_repository_root(workspace):
    logdir = workspace / "experiments/results/run_2025_10_31"
    result = run_script(
        "orchestration",
        "run_experiment",
        "--config",
        "trainer/config/phase7.toml",
        "--seeds",
        "scripts/utils/seeds.toml",
        "--logdir",
        logdir,
        "--workspace",
        workspace,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    plan = read_json(logdir / "plan.json")
    names = tree(logdir)
    assert {"metrics.csv", "metrics.jsonl", "plan.json"} <= set(names)
    assert (
        sum(n.startswith("dreams/") for n in names)
        == plan["cycles"]
        == sum(n.startswith("bridge/") for n in names)
    )
    assert [n for n in names if n.startswith("checkpoints/")] == [
        f"checkpoints/cycle_{c:04d}.npz" for c in plan["checkpoints"]
    ]
    size = load_config(REPO / "trainer/config/phase7.toml")[0]["data"]["size"]
    dream = read_cten(logdir / "dreams/cycle_0001.cten")
    assert dream.rgb.shape == (size, size, 3) and dream.coherence.shape == (size, size)
    assert 0 <= dream.rgb.min() and dream.rgb.max() <= 1
    assert read_sten(logdir / "bridge/cycle_0001.sten").log_layout
    report = read_json(workspace / "experiments/results/run_experiment_20251031T120000Z.json")
    assert (
        report["status"] == "ok"
        and report["backend"] == "numpy"
        and len(report["config_sha256"]) == 64
    )
    assert report["git"]["commit"] is None or len(report["git"]["commit"]) == 40
    assert (
        report["argv"][report["argv"].index("--logdir") + 1] == "experiments/results/run_2025_10_31"
    )
    registry = read_json(workspace / "data/hash_registry.json")["files"]
    assert all(f"experiments/results/run_2025_10_31/{n}" in registry for n in names)
    rows = json_lines((logdir / "metrics.jsonl").read_bytes())
    assert [r["cycle"] for r in rows] == list(range(1, plan["cycles"] + 1))
    assert set(rows[0]) == set(rx.METRIC_COLUMNS)


def test_same_seeds_same_bytes_under_varied_threads_and_hash_seeds(tmp_path):
    outputs, registries = [], []
    for index, env in enumerate(
        (
            {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "TZ": "Etc/GMT-14"},
            {
                "OMP_NUM_THREADS": "2",
                "OPENBLAS_NUM_THREADS": "2",
                "PYTHONHASHSEED": "99",
                "TZ": "Etc/GMT+12",
            },
        )
    ):
        workspace = tmp_path / f"ws{index}"
        workspace.mkdir()
        result = experiment(workspace, workspace / "run", *SMALL, env=env)
        assert result.returncode == 0, result.stderr
        outputs.append(folder_bytes(workspace / "run"))
        registries.append(read_json(workspace / "data/hash_registry.json")["files"])
    assert outputs[0] == outputs[1]
    assert registries[0] == registries[1]  # every artifact, the run's report included


def test_interrupt_then_resume_ends_with_the_same_bytes(tmp_path):
    args = [
        "--set",
        "experiment.cycles=200",
        "--set",
        "data.size=8",
        "--set",
        "data.samples=8",
        "--set",
        "dreamer.candidates=2",
    ]
    reference = tmp_path / "ws_ref"
    reference.mkdir()
    assert experiment(reference, reference / "run", *args).returncode == 0

    workspace = tmp_path / "ws"
    workspace.mkdir()
    logdir = workspace / "run"
    command = [
        sys.executable,
        str(REPO / "scripts/orchestration/run_experiment.py"),
        "--logdir",
        str(logdir),
        "--workspace",
        str(workspace),
        *args,
    ]
    child = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ)
    )
    deadline = time.monotonic() + 60
    while not (logdir / "checkpoints/cycle_0004.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err.decode()
    interrupted = [r for r in json_lines(err) if r["event"] == "interrupted"][0]
    assert interrupted["cycles_done"] < 200
    report = read_json(workspace / f"experiments/results/{interrupted['run_id']}.json")
    assert report["status"] == "interrupted"

    assert (
        experiment(workspace, logdir, *args).returncode == 2
    )  # not empty: refused without --resume
    resumed = experiment(workspace, logdir, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert folder_bytes(logdir) == folder_bytes(reference / "run")


def test_resuming_from_a_truncated_checkpoint_is_bad_input(workspace):
    logdir = workspace / "run"
    assert experiment(workspace, logdir, *SMALL).returncode == 0
    checkpoint = sorted((logdir / "checkpoints").glob("*.npz"))[-1]
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    result = experiment(workspace, logdir, *SMALL, "--resume")
    assert result.returncode == 2 and "checkpoint" in single_error(result.stderr)["error"]


def test_dry_run_prints_the_plan_and_writes_nothing(workspace):
    result = experiment(workspace, workspace / "run", "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = json_lines(result.stdout)[0]["plan"]
    experiment_config = load_config(REPO / "trainer/config/phase7.toml")[0]["experiment"]
    cycles, every = experiment_config["cycles"], experiment_config["checkpoint_every"]
    assert plan["cycles"] == cycles and plan["logdir"] == "run"
    assert plan["checkpoints"] == sorted(set(range(every, cycles + 1, every)) | {cycles})
    assert tree(workspace) == []


@pytest.mark.parametrize(
    "args, key",
    [
        (["--set", "learner.lr=fast"], "learner.lr"),
        (["--set", "experiment.cycles=0"], "experiment.cycles"),
        (["--set", "experiment.backend=tpu"], "experiment.backend"),
        (["--set", "experiment.kind=magic"], "experiment.kind"),
    ],
)
def test_bad_config_values_name_the_key_and_type(workspace, args, key):
    result = experiment(workspace, workspace / "run", *args)
    assert result.returncode == 2
    error = single_error(result.stderr)
    assert error["key"] == key and error["expected"]
    assert not (workspace / "run").exists()


def test_a_missing_key_is_named(workspace, tmp_path):
    text = (REPO / "trainer/config/phase7.toml").read_text().replace("lr = 0.05\n", "")
    config = tmp_path / "no_lr.toml"
    config.write_text(text)
    result = experiment(workspace, workspace / "run", "--config", config)
    assert result.returncode == 2 and single_error(result.stderr)["key"] == "learner.lr"


def test_cupy_without_a_gpu_and_unwritable_logdirs_are_bad_input(workspace):
    cupy = experiment(workspace, workspace / "run", "--backend", "cupy")
    if cupy.returncode != 0:
        assert cupy.returncode == 2 and "cupy" in single_error(cupy.stderr)["error"].lower()
    blocker = workspace / "a-file"
    blocker.write_text("x")
    result = experiment(workspace, blocker / "run", *SMALL)
    assert result.returncode == 2 and single_error(result.stderr)["event"] == "bad_input"


def test_external_command_output_is_captured(workspace, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        "import sys\nprint('INFO:trainer:seed', sys.argv[1])\nprint('plain progress')\n"
        "sys.exit(int(sys.argv[3]))\n"
    )
    config = tmp_path / "external.toml"
    for code, expected in ((0, 0), (3, 1)):
        config.write_text(
            f'phase = 7\n[experiment]\nkind = "external"\n[external]\n'
            f'command = ["{sys.executable}", "{script}", "{{seed}}", "x", "{code}"]\n'
        )
        logdir = workspace / f"ext{code}"
        result = experiment(workspace, logdir, "--config", config)
        assert result.returncode == expected, result.stderr
        records = json_lines((logdir / "output.jsonl").read_bytes())
        assert records[0]["source"] == "trainer" and records[0]["msg"].startswith("seed ")
        assert read_json(logdir / "config.json")["experiment"]["kind"] == "external"


def test_fixed_point_arithmetic_is_exact_and_order_free():
    rng = np.random.Generator(np.random.PCG64(0))
    a, b = rng.random((8, 96)), rng.random((96, 5))
    product = exact.exact_matmul(np, a, b)
    np.testing.assert_allclose(product, a @ b, atol=1e-4)
    assert np.array_equal(
        exact.exact_matmul(np, a[::-1], b)[::-1], product
    )  # row order cannot matter
    values = rng.random(10_000)
    assert exact.fixed_sum(np, values) == exact.fixed_sum(np, values[::-1])


def test_coherence_prefers_smooth_images():
    rng = np.random.Generator(np.random.PCG64(1))
    smooth = np.full((16, 16, 3), 0.5)
    assert rx.coherence(np, smooth) == 1.0 and rx.coherence(np, rng.random((16, 16, 3))) < 0.8


def test_sigterm_stops_cleanly_with_a_partial_record(workspace):
    logdir = workspace / "run"
    command = [
        sys.executable,
        str(REPO / "scripts/orchestration/run_experiment.py"),
        "--logdir",
        str(logdir),
        "--workspace",
        str(workspace),
        "--set",
        "experiment.cycles=500",
        "--set",
        "data.size=8",
        "--set",
        "data.samples=8",
        "--set",
        "dreamer.candidates=2",
    ]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (logdir / "metrics.jsonl").exists() or not (logdir / "metrics.jsonl").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err.decode()
    run_id = [r for r in json_lines(err) if r["event"] == "interrupted"][0]["run_id"]
    report = read_json(workspace / f"experiments/results/{run_id}.json")
    assert report["status"] == "interrupted" and report["results"]["stopped"] is True
    manifest = read_json(workspace / "meta/chronicle/manifest.json")["runs"]
    assert manifest[run_id]["status"] == "interrupted"


ARGPARSE_TRAINER = """
import argparse, json, sys
import numpy as np
from sklearn.linear_model import SGDClassifier
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int)
parser.add_argument("--out", default=".")
parser.add_argument("--config")
parser.add_argument("--fail", action="store_true")
args = parser.parse_args()
np.random.seed(args.seed)                              # the legacy seed: 0 .. 2**32 - 1 only
SGDClassifier(random_state=args.seed)                  # scikit-learn takes the same range
json.dump(vars(args), open(f"{args.out}/args.json", "w"), sort_keys=True)
if args.fail:
    print("epoch 1 loss 0.5")
    print("RuntimeError: CUDA out of memory", file=sys.stderr)
    sys.exit(4)
"""


def external_config(tmp_path, *extra) -> object:
    script = tmp_path / "train.py"
    script.write_text(ARGPARSE_TRAINER)
    config = tmp_path / "external.toml"
    arguments = ", ".join(
        f'"{a}"' for a in ("--seed", "{seed}", "--out", "{logdir}", "--config", "{config}", *extra)
    )
    config.write_text(
        f'[experiment]\nkind = "external"\n[external]\ncommand = ["{sys.executable}", "{script}", '
        f"{arguments}]\n"
    )  # no phase: phases are the pipeline's
    return config


def test_an_external_script_gets_a_seed_any_library_takes_and_the_same_paths_in_every_run(
    workspace, tmp_path
):
    config = external_config(tmp_path)
    for name in ("a", "b"):
        result = experiment(workspace, workspace / name, "--config", config)
        assert result.returncode == 0, result.stderr
    first, second = (read_json(workspace / name / "args.json") for name in ("a", "b"))
    assert first == second and first["out"] == "." and first["config"] == "config.json"
    assert 0 <= first["seed"] < 2**32


def test_a_failed_external_command_says_how_it_failed(workspace, tmp_path):
    result = experiment(
        workspace, workspace / "run", "--config", external_config(tmp_path, "--fail")
    )
    assert result.returncode == 1
    error = single_error(result.stderr)
    assert error["exit_code"] == 4 and error["stderr_tail"] == ["RuntimeError: CUDA out of memory"]
    report = read_json(workspace / error["report"])
    assert report["status"] == "failed" and report["results"]["exit_code"] == 4
    assert report["results"]["stderr_tail"] == error["stderr_tail"]
    assert report["results"]["output_tail"] == [
        "epoch 1 loss 0.5"
    ]  # stdout apart: a traceback is not buried


def test_a_seed_sweep_reaches_the_command_and_a_pinned_stream_is_refused(workspace, tmp_path):
    config = external_config(tmp_path)
    sweep = tmp_path / "seeds.toml"
    sweep.write_text("seeds = [1, 2, 3]\n")  # seeds alone are a sweep
    result = experiment(workspace, workspace / "sweep", "--config", config, "--sweep", sweep)
    assert result.returncode == 0, result.stderr
    seeds = {read_json(workspace / f"sweep/run_{i:03d}/args.json")["seed"] for i in range(3)}
    assert len(seeds) == 3
    pinned = tmp_path / "pinned.toml"
    pinned.write_text("base_seed = 5\n[streams]\nexternal = 42\n")
    refused = experiment(
        workspace, workspace / "sweep2", "--config", config, "--sweep", sweep, "--seeds", pinned
    )
    assert refused.returncode == 2 and single_error(refused.stderr)["streams"] == ["external"]
    assert not (workspace / "sweep2" / "run_000").exists()


def test_an_external_run_records_its_code_and_python_and_rerun_refuses_an_edited_script(
    workspace, tmp_path
):
    config = external_config(tmp_path)
    result = experiment(workspace, workspace / "experiments/results/ext", "--config", config)
    assert result.returncode == 0, result.stderr
    [report_path] = (workspace / "experiments/results").glob("run_experiment_*.json")
    report = read_json(report_path)
    script = "train.py"  # named relative to the config's folder: records hold no absolute path
    code, environment = report["external"]["code"], report["external"]["environment"]
    assert code["files"] == {
        script: __import__("hashlib").sha256((tmp_path / "train.py").read_bytes()).hexdigest()
    }
    recorded = {
        k: v for k, v in report["external"].items() if k != "command"
    }  # the command is the config's words
    assert str(tmp_path) not in str(recorded)
    assert environment["python"] == ".".join(map(str, sys.version_info[:3]))
    assert any(d.lower().startswith("scikit-learn==") for d in environment["distributions"])
    forced = run_script(
        "orchestration",
        "rerun",
        report_path,
        "--force",
        "--workspace",
        workspace,
        cwd=tmp_path,
        timeout=300,
    )  # from the project's folder, where its code is
    assert forced.returncode == 0, (
        forced.stderr
    )  # --force: only this checkout's own state may be forced here
    assert not [f for f in json_lines(forced.stdout)[0]["forced"] if "command's" in f]
    elsewhere = run_script(
        "orchestration", "rerun", report_path, "--workspace", workspace, cwd=workspace
    )
    gone = [r for r in single_error(elsewhere.stderr)["refused"] if r.get("file") == script]
    assert elsewhere.returncode == 2 and gone[0]["what"] == "a file of the command's code is gone"
    assert gone[0]["looked_in"] == str(workspace.resolve()) and "--code-dir" in gone[0]["note"]
    (tmp_path / "train.py").write_text(ARGPARSE_TRAINER + "# tuned\n")
    refused = run_script(
        "orchestration",
        "rerun",
        report_path,
        "--workspace",
        workspace,
        "--code-dir",
        tmp_path,
        cwd=workspace,
        timeout=300,
    )
    assert refused.returncode == 2
    changed = [r for r in single_error(refused.stderr)["refused"] if r.get("file") == script]
    assert changed and changed[0]["what"] == "a file of the command's code changed"
    page = run_script(
        "visualization", "html_report", report_path, "--workspace", workspace, cwd=workspace
    )
    assert page.returncode == 0, page.stderr
    html = (workspace / json_lines(page.stdout)[0]["html"]).read_text()
    assert "The command and its code" in html and (
        "The command&#x27;s Python" in html or "The command's Python" in html
    )
    assert script in html and "scikit-learn==" in html.lower()


def test_rerun_of_a_failed_external_run_says_it_failed_and_failed_the_same_way(workspace, tmp_path):
    experiment(
        workspace,
        workspace / "experiments/results/bad",
        "--config",
        external_config(tmp_path, "--fail"),
    )
    [report_path] = (workspace / "experiments/results").glob("run_experiment_*.json")
    again = run_script(
        "orchestration",
        "rerun",
        report_path,
        "--force",
        "--workspace",
        workspace,
        cwd=workspace,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    said = json_lines(again.stdout)[0]
    assert said["original"] == said["rerun"] == {"status": "failed", "exit_code": 4}
    assert any(r["event"] == "failed_the_same_way" for r in json_lines(again.stderr))


SGD_TRAINER = """
import argparse, csv
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.01)
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
X, y = load_digits(return_X_y=True)
X_train, X_val, y_train, y_val = train_test_split(
    X / 16.0, y, test_size=0.3, random_state=args.seed)
model = SGDClassifier(
    loss="log_loss", learning_rate="constant", eta0=args.lr, random_state=args.seed)
with open("history.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["epoch", "val_loss", "val_accuracy"])
    for epoch in range(1, args.epochs + 1):
        model.partial_fit(X_train, y_train, classes=np.arange(10))
        loss = log_loss(y_val, model.predict_proba(X_val))
        writer.writerow([epoch, loss, model.score(X_val, y_val)])
"""


def sgd_config(tmp_path, seed: str = "{seed}"):
    """An external config running SGD_TRAINER unedited: --lr from [train] lr, --seed from
    ``seed``."""
    script = tmp_path / "train_sgd.py"
    script.write_text(SGD_TRAINER)
    config = tmp_path / "sgd.toml"
    config.write_text(
        f'[experiment]\nkind = "external"\n[external]\ncommand = ["{sys.executable}", "{script}", '
        f'"--lr", "{{train.lr}}", "--seed", "{seed}"]\n[train]\nlr = 0.01\n'
    )
    return config


def test_an_unedited_argparse_script_is_swept_over_its_arguments_and_seeds_with_aggregates(
    workspace, tmp_path
):
    config = sgd_config(tmp_path)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('seeds = [1, 2, 3]\n[grid]\n"train.lr" = [0.01, 0.1]\n')
    result = experiment(workspace, workspace / "sweep", "--config", config, "--sweep", sweep)
    assert result.returncode == 0, result.stderr
    [summary_report] = (workspace / "experiments/results").glob("run_experiment_sweep_*.json")
    aggregates = read_json(summary_report)["results"]["aggregates"]
    assert [a["overrides"] for a in aggregates] == [["train.lr=0.01"], ["train.lr=0.1"]]
    rows = [
        orjson.loads(line)
        for line in (summary_report.parent / summary_report.stem / "summary.jsonl")
        .read_bytes()
        .splitlines()
    ]
    for aggregate in aggregates:
        members = [row for row in rows if row["overrides"] == aggregate["overrides"]]
        finals = []
        for row in members:  # independently: the last row of each run's own history.csv
            run = read_json(workspace / row["report"])
            with open(workspace / run["results"]["logdir"] / "history.csv", newline="") as handle:
                finals.append(float(list(csv.DictReader(handle))[-1]["val_accuracy"]))
        accuracy = aggregate["metrics"]["val_accuracy"]
        assert accuracy["n"] == 3 and len(set(finals)) > 1  # the seeds reached the script
        assert accuracy["mean"] == pytest.approx(np.mean(finals)) and accuracy[
            "std"
        ] == pytest.approx(np.std(finals, ddof=1))
        assert (accuracy["min"], accuracy["max"]) == (min(finals), max(finals))
    first = read_json(workspace / rows[0]["report"])["results"]
    assert first["metrics_file"] == "history.csv" and first["x"] == "epoch"
    page = run_script(
        "visualization", "html_report", summary_report, "--workspace", workspace, cwd=workspace
    )
    text = open(json_lines(page.stdout)[0]["html"], encoding="utf-8").read()
    mean = f"{aggregates[0]['metrics']['val_accuracy']['mean']!r}"
    assert "<h2>Across seeds" in text and f"<td>val_accuracy</td><td>{mean}</td>" in text
    assert (
        first["best"]["val_loss"]["goal"] == "min"
        and first["best"]["val_accuracy"]["goal"] == "max"
    )


def test_the_pipeline_fingerprint_of_an_external_config_covers_the_script(tmp_path):
    from scripts.orchestration.pipeline import external_code_of

    config = external_config(tmp_path)
    before = external_code_of(config)
    assert list(before) == ["external:train.py"]
    (tmp_path / "train.py").write_text(ARGPARSE_TRAINER + "# tuned\n")
    assert external_code_of(config) != before
    assert (
        external_code_of(REPO / "trainer/config/phase7.toml") == {}
    )  # the reference experiment: no script


def test_every_cycle_dreams_its_own_dream(workspace):
    """Each cycle's dream and its spectrum differ from the cycle before's (the replay and the
    spectra move)."""
    logdir = workspace / "run"
    result = experiment(
        workspace, logdir, "--config", REPO / "trainer/config/phase5.toml", "--backend", "numpy"
    )
    assert result.returncode == 0, result.stderr
    dreams = [read_cten(path).rgb for path in sorted((logdir / "dreams").glob("cycle_*.cten"))]
    spectra = [read_sten(path) for path in sorted((logdir / "bridge").glob("cycle_*.sten"))]
    assert len(dreams) == len(spectra) == 24
    for before, after in zip(dreams, dreams[1:]):
        assert not np.array_equal(before, after)
    for before, after in zip(spectra, spectra[1:]):
        assert not np.array_equal(before.bins, after.bins)
