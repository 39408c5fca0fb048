"""Records, pages and make variables as a hostile colleague would hand them over (issue 28).

Each class: a record edited to run code, climb out of the workspace or
break a reader; a page fed values that would script it; a folder name that
would run a command through make. Every case must end in exit 0, 1 or 2
with JSON on stderr, run nothing, and touch nothing outside.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from scripts.utils.records.data_roots import BOOKKEEPING_SUFFIXES
from tests.conftest import REPO, small_experiment
from tests.fuzz.harness import check_outcome, run_script

EPOCH = {"SOURCE_DATE_EPOCH": "1761912000"}
MANIFEST = "meta/chronicle/manifest.json"
REGISTRY = "data/hash_registry.json"


def expect(outcome, rc: int, *words):
    check_outcome(outcome)
    assert outcome.rc == rc, outcome.describe()
    if rc == 2:
        message = orjson.dumps(outcome.last).decode().lower()
        for word in words:
            assert word.lower() in message, outcome.describe()
    return outcome


def read(path: Path):
    return orjson.loads(path.read_bytes())


def forge(workspace: Path, run_id: str, change) -> Path:
    """Edit a run's report as a colleague who also rewrote the manifest's hash of it (so only
    checks of the content itself can catch it)."""
    path = workspace / "experiments/results" / f"{run_id}.json"
    report = read(path)
    change(report)
    data = orjson.dumps(report)
    path.write_bytes(data)
    manifest = read(workspace / MANIFEST)
    manifest["runs"][run_id]["report_sha256"] = hashlib.sha256(data).hexdigest()
    (workspace / MANIFEST).write_bytes(orjson.dumps(manifest))
    return path


@pytest.fixture
def two_runs(tmp_path):
    """A workspace with two small reference runs (the second is the one re-run)."""
    os.environ.update(EPOCH)
    workspace = tmp_path / "ws"
    first = small_experiment(workspace, "experiments/results/one")
    second = small_experiment(workspace, "experiments/results/two")
    return workspace, first["run_id"], second["run_id"]


def rerun(workspace: Path, target, *extra):
    return run_script(
        "rerun", [target, "--workspace", workspace, *extra], cwd=workspace, env=EPOCH, timeout=300
    )


# --------------------------------------------------------------------------
# rerun trusts nothing in the record
# --------------------------------------------------------------------------

EVIL = "import pathlib, sys; pathlib.Path(sys.argv[0]).with_suffix('.ran').write_text('ran')\n"


@pytest.mark.parametrize(
    "script", ["../../../../{evil}", "/{evil}", "bootstrap", "no_such_command", "Run-Experiment"]
)
def test_rerun_runs_only_the_projects_own_commands(two_runs, tmp_path, script):
    workspace, _, run_id = two_runs
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL)
    name = script.format(
        evil=str(evil.with_suffix(""))[1:]
        if script.startswith("/")
        else os.path.relpath(evil.with_suffix(""), REPO / "scripts" / "orchestration")
    )
    path = forge(workspace, run_id, lambda report: report.update(script=name))
    expect(rerun(workspace, path, "--force"), 2)
    assert not evil.with_suffix(".ran").exists()


def test_an_edited_external_command_is_refused_by_the_manifests_hash(tmp_path):
    workspace = tmp_path / "ws"
    marker = tmp_path / "edited.ran"
    config = tmp_path / "external.toml"
    config.write_text(
        f'phase = 7\n[experiment]\nkind = "external"\n[external]\n'
        f'command = ["{sys.executable}", "-c", "print(1)"]\n'
    )
    made = run_script("run_experiment", ["--config", config, "--workspace", workspace], env=EPOCH)
    expect(made, 0)
    report_path = next((workspace / "experiments/results").glob("run_experiment_*.json"))
    report = read(report_path)
    report["config"]["external"]["command"] = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    report_path.write_bytes(orjson.dumps(report))
    expect(rerun(workspace, report_path), 2, "manifest", "--force")
    assert not marker.exists()


def test_registry_keys_that_climb_out_are_refused_and_nothing_is_linked(two_runs, tmp_path):
    workspace, first, second = two_runs
    registry = read(workspace / REGISTRY)
    victim = next(name for name, entry in registry["files"].items() if entry["run"] == first)
    registry["files"]["../../escaped.csv"] = registry["files"][victim]
    registry["files"]["experiments/../../../escaped2.csv"] = registry["files"][victim]
    (workspace / REGISTRY).write_bytes(orjson.dumps(registry))
    keep = tmp_path / "kept"
    expect(
        rerun(workspace, f"experiments/results/{second}.json", "--force", "--keep", keep),
        2,
        "workspace",
    )
    assert not list(tmp_path.glob("escaped*")) and not list(keep.glob("escaped*"))


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-file", "{outside}"],
        ["--log-file={outside}"],
        ["--workspace", "/"],
        ["--config", "{outside}"],
        ["--config", "../../x.toml"],
        ["--seeds=/etc/x"],
    ],
)
def test_recorded_arguments_naming_outside_files_are_refused(two_runs, tmp_path, argv):
    workspace, _, run_id = two_runs
    outside = tmp_path / "outside.log"
    path = forge(
        workspace,
        run_id,
        lambda report: report.update(
            argv=[a.format(outside=outside) for a in argv] + report["argv"], config=None, seed=None
        ),
    )
    expect(rerun(workspace, path, "--force"), 2)
    assert not outside.exists()


# --------------------------------------------------------------------------
# The pipeline's own bookkeeping
# --------------------------------------------------------------------------


def phase(workspace: Path, name: str = "phase9"):
    return run_script("pipeline", [name, "--workspace", workspace], env=EPOCH, timeout=300)


def files(workspace: Path) -> dict:
    return {
        p.relative_to(workspace).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(workspace.rglob("*"))
        if p.is_file() and not p.name.endswith(BOOKKEEPING_SUFFIXES)
    }


@pytest.mark.parametrize(
    "state",
    [
        {
            "env_check": {
                "status": "running",
                "fingerprint": "",
                "retract": ["../../../victim"],
                "before": [],
            }
        },
        {
            "env_check": {
                "status": "done",
                "fingerprint": "x",
                "run": "../victim/env_check_20251031T120000Z",
            }
        },
        {"env_check": {"report": "../../victim.json"}},
        {"env_check": {"status": "done", "retract": "env_check_20251031T120000Z"}},
        ["not", "a", "state"],
    ],
)
def test_a_state_file_naming_paths_is_refused_and_nothing_outside_is_touched(tmp_path, state):
    workspace = tmp_path / "ws"
    expect(phase(workspace), 0)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    (tmp_path / "victim.json").write_text("{}")
    (workspace / "meta/chronicle/pipeline_state.json").write_bytes(orjson.dumps(state))
    expect(phase(workspace), 2, "pipeline_state.json")
    assert (victim / "keep.txt").read_text() == "keep" and (tmp_path / "victim.json").exists()


@pytest.mark.parametrize(
    "lost", ["meta/chronicle/pipeline_state.json", "meta/chronicle/seeds.jsonl", "both"]
)
def test_lost_bookkeeping_is_rebuilt_and_the_workspace_equals_a_clean_run(tmp_path, lost):
    clean, damaged = tmp_path / "clean", tmp_path / "damaged"
    for workspace in (
        clean,
        damaged,
    ):  # a run made by hand first: not the pipeline's, so it must stay
        (workspace / "data/mine").mkdir(parents=True)
        (workspace / "data/mine/a.txt").write_text("mine")
        expect(
            run_script(
                "hash_integrity",
                ["hash", "data/mine", "--workspace", workspace],
                cwd=workspace,
                env=EPOCH,
            ),
            0,
        )
        expect(phase(workspace), 0)
    for name in (
        ["meta/chronicle/pipeline_state.json", "meta/chronicle/seeds.jsonl"]
        if lost == "both"
        else [lost]
    ):
        (damaged / name).unlink()
    outcome = expect(phase(damaged), 0)
    assert b"bookkeeping_rebuilt" in outcome.stderr
    assert files(damaged) == files(clean)
    again = expect(phase(damaged), 0)  # and it stays converged
    assert b"bookkeeping_rebuilt" not in again.stderr and files(damaged) == files(clean)


# --------------------------------------------------------------------------
# Pages never run script, never embed outside files, never crash
# --------------------------------------------------------------------------

HOSTILE_KEY = "<script>Object.assign(document,{title:'PWNED'})</script>"


def page_of(workspace: Path, *target, rc: int = 0):
    outcome = expect(run_script("html_report", [*target, "--workspace", workspace], env=EPOCH), rc)
    return orjson.loads(outcome.stdout.splitlines()[0])["html"] if rc == 0 else None


def test_hostile_config_keys_and_values_are_text_on_the_page_and_in_chromium(tmp_path):
    workspace = tmp_path / "ws"
    config = tmp_path / "external.toml"
    config.write_text(
        f'phase = 7\n[experiment]\nkind = "external"\n[external]\ncommand = ["{sys.executable}", '
        f'"-c", "1"]\n'
    )
    made = run_script(
        "run_experiment",
        [
            "--config",
            config,
            "--workspace",
            workspace,
            "--logdir",
            workspace / "experiments/results/x$y$<b>",
            "--set",
            f"{HOSTILE_KEY}=1",
            "--set",
            f'v="{HOSTILE_KEY}"',
            "--set",
            'w="</style><img src=x onerror=alert(1)>"',
        ],
        env=EPOCH,
    )
    expect(made, 0)
    html = Path(page_of(workspace)).read_text(encoding="utf-8")
    assert "<script" not in html and "<img src=x" not in html and "PWNED" in html
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        assert not os.environ.get("CI"), "CI must have Chromium (.ci/run installs it)"
        pytest.skip("no Chromium on this machine")
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=2000",
            "--dump-dom",
            Path(page_of(workspace)).as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert b"<title>" in dom.stdout and b"<title>PWNED" not in dom.stdout


def hostile_everywhere(report: dict) -> None:
    """A hostile string in every free-form field a page shows."""
    h = HOSTILE_KEY
    report["config"] = {h: h, "learner": {h: [h, 1]}}
    report["argv"] = ["--set", f"{h}=1", h]
    report["seed"] = {"base_seed": 1, "streams": {h: 2}, "seeds_file_sha256": h}
    report["environment"] = {
        "os": h,
        "python": {"implementation": h, "version": h},
        "blas": [{"internal_api": h, "version": h, "architecture": h}],
        "byte_relevant": {h: h},
    }
    report["env_hash"], report["git"], report["backend"], report["status"] = h, {h: h}, h, h
    report["results"] = {h: h, "warnings": [h, {h: h}], "skipped": [{"file": h, "reason": h}]}
    report["outputs"] = {f"experiments/results/{h}.png": {"sha256": "0" * 64, "size": 1}}


def test_hostile_values_in_every_field_of_a_report_are_text_in_chromium(two_runs, tmp_path):
    workspace, _, second = two_runs
    path = forge(workspace, second, hostile_everywhere)
    html = Path(page_of(workspace, path)).read_text(encoding="utf-8")
    assert "<script" not in html and html.count("PWNED") >= 10
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        assert not os.environ.get("CI"), "CI must have Chromium (.ci/run installs it)"
        pytest.skip("no Chromium on this machine")
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=2000",
            "--dump-dom",
            Path(page_of(workspace, path)).as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert b"<title>" in dom.stdout and b"<title>PWNED" not in dom.stdout


def verify_like(report: dict, artifact: str) -> None:
    report.update(
        script="verify",
        results={
            "identical": False,
            "causes": [],
            "differences": [
                {
                    "artifact": artifact,
                    "type": "image",
                    "differences": [{"where": "pixels: rows 0-1, columns 0-1"}],
                }
            ],
        },
    )


@pytest.mark.parametrize(
    "change, words",
    [
        (
            lambda r: verify_like(r, "../../../../../../etc/hostname"),
            ["results.differences.0.artifact"],
        ),
        (lambda r: verify_like(r, "/etc/hostname"), ["artifact"]),
        (lambda r: r.update(outputs=["a"]), ["outputs"]),
        (lambda r: r.update(outputs={"../x": {"sha256": "0" * 64}}), ["outputs"]),
        (lambda r: r.update(argv="--set x=1"), ["argv"]),
        (lambda r: r.update(results=[1]), ["results"]),
        (lambda r: r.update(seed="x"), ["seed"]),
        (lambda r: r.update(results={"logdir": "../../"}), ["logdir"]),
        (lambda r: r.update(results={"causes": [{"artifacts": []}]}), ["causes"]),
        (
            lambda r: r.update(script="verify", results={"differences": [{"artifact": "a.png"}]}),
            ["differences"],
        ),
        (lambda r: r.update(environment={"blas": ["x", 1], "python": 3, "byte_relevant": []}), []),
    ],
)
def test_malformed_reports_are_bad_input_for_the_page_and_compare(two_runs, change, words):
    workspace, first, second = two_runs
    path = forge(workspace, second, change)
    shown = run_script("html_report", [path, "--workspace", workspace], env=EPOCH)
    expect(shown, 0 if not words else 2, *words)
    compared = run_script(
        "compare_runs",
        [f"experiments/results/{first}.json", path, "--workspace", workspace],
        cwd=workspace,
        env=EPOCH,
    )
    check_outcome(compared)


def test_an_edited_report_needs_force_to_be_shown(two_runs):
    workspace, _, second = two_runs
    path = workspace / "experiments/results" / f"{second}.json"
    path.write_bytes(path.read_bytes().replace(b'"status":"ok"', b'"status":"OK"'))
    expect(run_script("html_report", [path, "--workspace", workspace], env=EPOCH), 2, "manifest")
    expect(run_script("html_report", [path, "--workspace", workspace, "--force"], env=EPOCH), 0)


@pytest.mark.parametrize(
    "rows",
    [
        "cycle,loss,val_loss,coherence\n0,1e308,-1e308,0.5\n1,-1e308,1e308,0.5\n2,1,1,1\n",
        "cycle,loss,val_loss,coherence\nnan,1,1,1\n1,2,2,2\n",
        "cycle,loss,val_loss,coherence\ninf,1,1,1\n-inf,2,2,2\n",
        "cycle,loss,val_loss,coherence\n0,nan,inf,-inf\n1,nan,nan,nan\n",
    ],
)
def test_extreme_metrics_never_crash_the_page_or_the_plotter(tmp_path, rows):
    workspace = tmp_path / "ws"
    small_experiment(workspace, "experiments/results/exp")
    (workspace / "experiments/results/exp/metrics.csv").write_text(rows)
    page_of(workspace, "experiments/results/exp", "--force")
    check_outcome(
        run_script(
            "metric_plotter",
            [workspace / "experiments/results/exp", "--workspace", workspace],
            env=EPOCH,
        )
    )


def test_a_million_row_metrics_file_gives_a_small_page_in_bounded_memory(tmp_path):
    workspace = tmp_path / "ws"
    small_experiment(workspace, "experiments/results/exp")
    import numpy as np

    cycles = np.arange(1_000_000)
    noise = np.random.Generator(np.random.PCG64(0)).random(cycles.size)
    table = np.column_stack([cycles, 1 / (1 + cycles) + noise, noise, noise])
    np.savetxt(
        workspace / "experiments/results/exp/metrics.csv",
        table,
        delimiter=",",
        fmt="%.6g",
        header="cycle,loss,val_loss,coherence",
        comments="",
    )
    outcome = run_script(
        "html_report",
        ["experiments/results/exp", "--workspace", workspace, "--force"],
        env=EPOCH,
        timeout=300,
    )
    check_outcome(outcome, peak_mib=900)
    html = Path(orjson.loads(outcome.stdout.splitlines()[0])["html"])
    assert html.stat().st_size < 3_000_000
    plotted = run_script(
        "metric_plotter",
        [workspace / "experiments/results/exp", "--format", "svg", "--workspace", workspace],
        env=EPOCH,
        timeout=300,
    )
    check_outcome(plotted, peak_mib=900)
    svgs = list((workspace / "experiments/results").glob("metric_plotter_*/*.svg"))
    assert len(svgs) == 2 and all(svg.stat().st_size < 3_000_000 for svg in svgs), svgs


# --------------------------------------------------------------------------
# make passes variables as data
# --------------------------------------------------------------------------

HOSTILE_NAMES = [
    "a`touch {m}1`b",
    "a$(touch {m}2)b",
    "a$$(touch {m}3)b",
    "a$(shell touch {m}4)b",
    'a"; touch {m}5; "b',
    "a'; touch {m}6; 'b",
    "a\ntouch {m}7\nb",
    "a ${{HOME}} %PATH% b",
]


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
@pytest.mark.parametrize("variable", ["DATA", "RUN", "WORKSPACE", "SCHEDULER", "DATA_NAME"])
def test_make_passes_variables_as_data_never_as_shell_text(tmp_path, variable):
    marker = tmp_path / "ran"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "note.txt").write_text("not an image")
    for template in HOSTILE_NAMES:
        value = str(tmp_path / template.format(m=marker))
        target = {"RUN": "report", "WORKSPACE": "phase9"}.get(variable, "phase5")
        extra = {
            "DATA": [],
            "RUN": [f"WORKSPACE={tmp_path / 'ws'}"],
            "WORKSPACE": [],
            "SCHEDULER": [f"DATA={tmp_path / 'data'}", f"WORKSPACE={tmp_path / 'ws'}"],
            "DATA_NAME": [f"DATA={tmp_path / 'missing'}", f"WORKSPACE={tmp_path / 'ws'}"],
        }[variable]
        if variable == "SCHEDULER":
            value = "tcp://" + template.format(m=marker)
        result = subprocess.run(
            ["make", "-s", target, f"{variable}={value}", *extra],
            cwd=REPO,
            capture_output=True,
            timeout=300,
            env={**os.environ, **EPOCH},
        )
        assert not list(tmp_path.glob("ran*")), (template, result.stderr[-2000:])
        if variable == "WORKSPACE":
            assert result.returncode == 0 and (Path(value) / "env/environment.json").is_file(), (
                result.stderr[-2000:]
            )
        else:
            assert result.returncode != 0
            errors = [
                orjson.loads(line) for line in result.stderr.splitlines() if line.startswith(b"{")
            ]
            assert errors and errors[-1]["level"] == "error", result.stderr[-2000:]
            if variable in ("DATA", "RUN"):
                assert errors[-1]["file"] == value, errors[-1]
