"""make phaseN DATA=... on data outside the workspace: read-only data, bad files, kills, damage,
fingerprints.

Every test runs the real pipeline through make, as a user would, on the
sample data written *outside* the workspace, and compares whole workspaces
file for file against one clean, uninterrupted run (lock files and the
machine-local stat cache and data-root bindings aside: they are bookkeeping,
not artifacts).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from bench.file_access import FileAccessWatch
from scripts.orchestration import pipeline
from scripts.utils.jsonio import read_json
from scripts.utils.records import crates, signing
from tests.conftest import FIXED_EPOCH, REPO, json_lines, run_script, single_error

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGKILL")

PHASE7_STEPS = [
    "metadata",
    "split",
    "preprocess",
    "hash",
    "experiment_phase7",
    "render_phase7",
    "animate_phase7",
    "plot_phase7",
    "report_phase7",
]
BOOKKEEPING = (
    ".lock",
    ".statcache.json",
    ".snapshots.json",
    ".index.sqlite",
    ".index.sqlite-journal",
    ".reads.json",
    ".data_roots.json",
)
R = "experiments/results"


def make(phase, workspace, data=None, *extra, kill_after=None, kill_on_step=None, timeout=600):
    """Run ``make phaseN`` in its own process group; kill the whole group with SIGKILL when
    asked."""
    command = [
        "make",
        "-s",
        phase,
        f"WORKSPACE={workspace}",
        *([f"DATA={data}"] if data else []),
        *extra,
    ]
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }
    env["SOURCE_DATE_EPOCH"] = FIXED_EPOCH  # module fixtures run before the autouse one
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines = []
    if kill_on_step is not None:
        for line in process.stderr:
            lines.append(line)
            if b'"event":"step"' in line and f'"step":"{kill_on_step}"'.encode() in line:
                os.killpg(process.pid, signal.SIGKILL)
                break
    elif kill_after is not None:
        try:
            process.wait(kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    lines += process.stderr.read().splitlines(keepends=True)
    process.wait(timeout)
    return process.returncode, b"".join(
        line for line in lines if line.startswith(b"{")
    )  # make's own lines aside


def summary(stderr: bytes) -> dict:
    return [r for r in json_lines(stderr) if r.get("event") == "summary"][-1]


def statuses(stderr: bytes) -> dict:
    return {item["step"]: item["status"] for item in summary(stderr)["steps"]}


def snapshot(workspace: Path) -> dict:
    """Every artifact of a workspace: relative path -> SHA-256."""
    return {
        p.relative_to(workspace).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(workspace.rglob("*"))
        if p.is_file() and not (p.name.startswith(".") and p.name.endswith(BOOKKEEPING))
    }


def differences(expected: dict, found: dict) -> list:
    return sorted(set(expected) ^ set(found)) + sorted(
        k for k in set(expected) & set(found) if expected[k] != found[k]
    )


def data_state(folder: Path) -> dict:
    """Names, sizes, mtimes and contents of a data folder: to prove nothing in it changed."""
    return {
        p.relative_to(folder).as_posix(): (
            p.stat().st_mode,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None,
        )
        for p in sorted([folder, *folder.rglob("*")])
    }


def make_read_only(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """The sample data in a read-only folder outside any workspace, and one clean phase7 run on
    it."""
    root = tmp_path_factory.mktemp("outside")
    made = run_script(
        "data_tools",
        "sample_data",
        "--workspace",
        root / "src",
        env={"SOURCE_DATE_EPOCH": FIXED_EPOCH},
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    data = root / "disk" / "scans"
    shutil.copytree(root / "src/data/sample", data)
    make_read_only(data)
    before = data_state(data)
    clean = root / "clean"
    code, stderr = make("phase7", clean, data)
    assert code == 0, stderr.decode()[-2000:]
    assert data_state(data) == before, "the data folder was written to"
    return {
        "root": root,
        "data": data,
        "clean": clean,
        "reference": snapshot(clean),
        "stderr": stderr,
    }


def test_data_outside_is_read_only_and_named_by_its_root(outside):
    clean, data = outside["clean"], outside["data"]
    assert [s["status"] for s in summary(outside["stderr"])["steps"]] == ["done"] * len(
        PHASE7_STEPS
    )
    registry = read_json(clean / "data/hash_registry.json")["files"]
    data_entries = [name for name in registry if name.startswith("@")]
    assert len(data_entries) == 75 and all(name.startswith("@scans/") for name in data_entries)
    hash_report = read_json(clean / summary(outside["stderr"])["steps"][3]["report"])
    assert (
        hash_report["data_roots"]["scans"]["files"] == 75
        and len(hash_report["data_roots"]["scans"]["listing_sha256"]) == 64
    )
    for artifact in clean.rglob("*"):  # the root's absolute path appears in no record
        if artifact.is_file() and artifact.suffix in (".json", ".jsonl", ".csv"):
            assert str(data).encode() not in artifact.read_bytes(), artifact


def test_same_data_at_another_path_gives_the_same_records(outside, tmp_path):
    elsewhere = tmp_path / "another" / "much" / "deeper" / "scans"
    shutil.copytree(outside["data"], elsewhere)
    for script, args in (
        ("metadata_extractor", [elsewhere]),
        ("hash_integrity", ["hash", elsewhere]),
    ):
        result = run_script(
            "data_tools", script, *args, "--workspace", tmp_path / "ws", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    clean = outside["clean"]
    ours = read_json(tmp_path / "ws/data/hash_registry.json")["files"]
    theirs = read_json(clean / "data/hash_registry.json")["files"]
    assert {
        k: {f: v[f] for f in ("sha256", "size")} for k, v in ours.items() if k.startswith("@")
    } == {k: {f: v[f] for f in ("sha256", "size")} for k, v in theirs.items() if k.startswith("@")}
    table = "metadata_extractor_20251031T120000Z/metadata.jsonl"
    assert (tmp_path / "ws" / R / table).read_bytes() == (clean / R / table).read_bytes()


def test_a_second_call_reads_no_data_and_redoes_nothing(outside, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(
        outside["clean"], workspace
    )  # new inodes: the first call re-reads, the second must not
    code, _ = make("phase7", workspace, outside["data"])
    assert code == 0
    if not FileAccessWatch.available():
        pytest.skip("inotify is Linux only")
    with FileAccessWatch(outside["data"]) as watch:
        code, stderr = make("phase7", workspace, outside["data"])
    assert code == 0 and set(statuses(stderr).values()) == {"up to date"}
    assert (watch.opened, watch.read_events, watch.overflowed) == (0, 0, False), watch.files_touched
    assert differences(outside["reference"], snapshot(workspace)) == []


def test_kills_at_every_step_boundary_converge_to_the_clean_run(outside, tmp_path):
    workspace = tmp_path / "ws"
    for step in PHASE7_STEPS:
        code, stderr = make("phase7", workspace, outside["data"], kill_on_step=step)
        assert code == -signal.SIGKILL, (step, stderr.decode()[-1000:])
    code, stderr = make("phase7", workspace, outside["data"])
    assert code == 0, stderr.decode()[-2000:]
    assert differences(outside["reference"], snapshot(workspace)) == []


def test_kills_at_random_moments_converge_to_the_clean_run(outside, tmp_path):
    workspace = tmp_path / "ws"
    rng = random.Random(20251031)  # ten seeded kill points, in any step or between them
    kills = []
    for _ in range(10):
        delay = rng.uniform(0.05, 4.0)
        code, _ = make("phase7", workspace, outside["data"], kill_after=delay)
        kills.append((round(delay, 2), code))
    assert sum(code == -signal.SIGKILL for _, code in kills) >= 5, kills
    code, stderr = make("phase7", workspace, outside["data"])
    assert code == 0, stderr.decode()[-2000:]
    assert differences(outside["reference"], snapshot(workspace)) == [], kills
    leftovers = [p for p in workspace.rglob("*") if p.name.endswith((".partial", ".tmp"))]
    assert leftovers == []


DAMAGE = [
    (
        "delete the metrics CSV",
        lambda w: (w / R / "phase7/metrics.csv").unlink(),
        ["experiment_phase7", "render_phase7", "animate_phase7", "plot_phase7", "report_phase7"],
    ),
    (
        "alter a render",
        lambda w: _append(sorted((w / R / "tensor_visualizer_20251031T120000Z").rglob("*.png"))[2]),
        ["render_phase7", "report_phase7"],
    ),
    (
        "delete the GIF",
        lambda w: (w / R / "dream_animation_20251031T120000Z/replay.gif").unlink(),
        ["animate_phase7", "report_phase7"],
    ),
    (
        "alter an npz, same size",
        lambda w: _flip(sorted((w / R / "image_preprocessor_20251031T120000Z").rglob("*.npz"))[0]),
        [
            "preprocess",
            "experiment_phase7",
            "render_phase7",
            "animate_phase7",
            "plot_phase7",
            "report_phase7",
        ],
    ),
    (
        "alter a report",
        lambda w: _append(w / R / "metric_plotter_20251031T120000Z.json"),
        ["plot_phase7", "report_phase7"],
    ),
    ("only touch an output", lambda w: os.utime(w / R / "phase7/metrics.csv"), []),
]


def _append(path: Path) -> None:
    with open(path, "ab") as handle:
        handle.write(b" ")


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_outputs_redo_exactly_their_step_and_dependents(outside, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(outside["clean"], workspace)
    for what, damage, expected in DAMAGE:
        damage(workspace)
        # One repair runs its steps on a Dask LocalCluster of 2 processes: the same files as the
        # clean local run, and the later repairs, local again, redo nothing more (where the work ran
        # is in no fingerprint).
        on_cluster = what.startswith("alter an npz")
        code, stderr = make(
            "phase7", workspace, outside["data"], *(["SCHEDULER=local:2"] if on_cluster else [])
        )
        assert code == 0, (what, stderr.decode()[-2000:])
        if on_cluster:
            assert any(
                r.get("event") == "cluster" and r["workers"] == 2 for r in json_lines(stderr)
            )
        redone = [step for step, status in statuses(stderr).items() if status == "done"]
        assert redone == expected, what
        assert differences(outside["reference"], snapshot(workspace)) == [], what


def test_changed_data_redoes_the_data_steps(outside, tmp_path):
    data = tmp_path / "scans"
    shutil.copytree(outside["data"], data)
    workspace = tmp_path / "ws"
    shutil.copytree(outside["clean"], workspace)
    code, stderr = make(
        "phase7", workspace, data
    )  # moved, same listing: the name follows, nothing to redo
    assert code == 0 and set(statuses(stderr).values()) == {"up to date"}
    target = data / "png/phantom_gray8.png"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes()[:-12])  # a truncated PNG now: a skipped file, not a stop
    code, stderr = make("phase7", workspace, data)
    assert code == 0, stderr.decode()[-2000:]
    assert all(status == "done" for status in statuses(stderr).values())
    skipped = summary(stderr)["skipped"]
    assert skipped == {"metadata": 1, "preprocess": 1}
    registry = read_json(workspace / "data/hash_registry.json")["files"]
    assert registry["@scans/png/phantom_gray8.png"]["size"] == target.stat().st_size


def test_a_file_rewritten_with_its_size_and_mtime_kept_is_still_a_change(outside, tmp_path):
    data = tmp_path / "scans"
    shutil.copytree(outside["data"], data)
    workspace = tmp_path / "ws"
    shutil.copytree(outside["clean"], workspace)
    assert make("phase7", workspace, data)[0] == 0
    code, stderr = make("phase7", workspace, data)  # the data's listing vouches for it now
    assert code == 0 and set(statuses(stderr).values()) == {"up to date"}
    target = data / "png/phantom_gray8.png"
    target.chmod(0o644)
    before = target.stat()
    damaged = bytearray(target.read_bytes())
    damaged[-20] ^= 0xFF  # one byte of the image data: same size
    target.write_bytes(bytes(damaged))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # the mtime put back
    code, stderr = make("phase7", workspace, data)
    assert code == 0, stderr.decode()[-2000:]
    assert statuses(stderr)["metadata"] == "done" and statuses(stderr)["hash"] == "done"
    registry = read_json(workspace / "data/hash_registry.json")["files"]
    assert registry["@scans/png/phantom_gray8.png"]["sha256"] == hashlib.sha256(damaged).hexdigest()


def test_a_damaged_sample_dicom_is_regenerated_identically(tmp_path):
    clean, damaged = tmp_path / "clean", tmp_path / "damaged"
    code, stderr = make("phase6", clean)
    assert code == 0, stderr.decode()[-2000:]
    shutil.copytree(clean, damaged)
    slice_file = sorted((damaged / "data/sample").rglob("*.dcm"))[7]
    _flip(slice_file)
    (damaged / R / "phase6/metrics.csv").unlink()
    code, stderr = make("phase6", damaged)
    assert code == 0
    assert set(statuses(stderr).values()) == {"done"}  # the sample step, and everything after it
    assert differences(snapshot(clean), snapshot(damaged)) == []


def test_bad_files_are_skipped_with_reasons_and_strict_fails(tmp_path):
    data = (
        Path(pydicom.data.__file__).parent / "test_files"
    )  # many vendors and codecs, some without pixels
    workspace = tmp_path / "ws"
    code, stderr = make("phase5", workspace, data, "CERTIFY=1")
    assert code == 0, stderr.decode()[-2000:]
    # every step declares what it read: the experiment read the split, though it did not cover
    # these samples (a seeded split was taken)
    envelope = (workspace / "experiments/proofs/phase5" / crates.ENVELOPE).read_bytes()
    assert signing.payload_of(envelope)["predicate"]["read_but_not_declared"] == {}
    found = summary(stderr)
    assert (
        found["skipped"]["metadata"] >= 5
        and found["skipped"]["preprocess"] > found["skipped"]["metadata"]
    )
    steps = {item["step"]: item for item in found["steps"]}
    report = read_json(workspace / steps["preprocess"]["report"])["results"]
    reasons = {item["file"]: item["reason"] for item in report["skipped"]}
    assert reasons["@test_files/README.txt"].startswith(
        "metadata_extractor: "
    )  # left out after metadata
    assert any("no pixel data" in reason for reason in reasons.values())
    assert len(reasons) == found["skipped"]["preprocess"]
    run_folder = workspace / steps["preprocess"]["report"][: -len(".json")]
    records = json_lines((run_folder / "records.jsonl").read_bytes())
    assert records and all(not r["source"].endswith("README.txt") for r in records)

    strict = tmp_path / "strict"
    code, stderr = make("phase5", strict, data, "STRICT=1")
    assert code == 2
    error = single_error(stderr)
    assert error["step"] == "metadata" and error["file"].startswith("@test_files/")
    assert not (strict / "meta/chronicle/manifest.json").exists()  # no run was recorded


@pytest.mark.parametrize(
    "case", ["missing", "empty", "the workspace", "holds the workspace", "workspace records"]
)
def test_unusable_data_folders_are_exit_2_before_any_work(tmp_path, case):
    workspace = tmp_path / "ws"
    empty = tmp_path / "empty"
    empty.mkdir()
    data = {
        "missing": tmp_path / "nope",
        "empty": empty,
        "the workspace": workspace,
        "holds the workspace": tmp_path,
        "workspace records": workspace / "data",
    }[case]
    if case in ("the workspace", "workspace records"):
        (workspace / "data").mkdir(parents=True)
        (workspace / "data/some.png").write_bytes(b"x")
    before = sorted(p for p in tmp_path.rglob("*"))
    code, stderr = make("phase7", workspace, data)
    assert code == 2
    assert single_error(stderr)["event"] == "bad_input"
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_a_root_name_never_names_two_folders_in_one_workspace(tmp_path):
    first, second = tmp_path / "a" / "scans", tmp_path / "b" / "scans"
    for folder, content in ((first, b"one"), (second, b"another")):
        folder.mkdir(parents=True)
        (folder / "x.txt").write_bytes(content)
    workspace = tmp_path / "ws"
    hash_tree = lambda folder, *extra: run_script(
        "data_tools",
        "hash_integrity",
        "hash",
        folder,
        *extra,  # noqa: E731
        "--workspace",
        workspace,
        cwd=tmp_path,
    )
    assert hash_tree(first).returncode == 0
    clash = hash_tree(second)
    assert clash.returncode == 2 and "--data-name" in single_error(clash.stderr)["error"]
    assert hash_tree(second, "--data-name", "scans_b").returncode == 0
    moved = tmp_path / "c" / "scans"
    shutil.move(first, moved)  # the same listing at a new place: the name follows it
    assert hash_tree(moved).returncode == 0
    registry = read_json(workspace / "data/hash_registry.json")["files"]
    assert set(registry) >= {"@scans/x.txt", "@scans_b/x.txt"}


def test_a_step_fingerprint_covers_its_own_code_only():
    plot = pipeline.code_fingerprint(REPO / "scripts/visualization/metric_plotter.py")
    closure = lambda name: {p.name for p in _closure(REPO / name)}  # noqa: E731
    assert "metric_plotter.py" not in closure("scripts/data_tools/metadata_extractor.py")
    assert "metric_plotter.py" not in closure("scripts/orchestration/run_experiment.py")
    assert {"run_records.py", "registry.py", "cli.py"} <= closure(
        "scripts/data_tools/metadata_extractor.py"
    )
    assert "reference_experiment.py" in closure(
        "scripts/orchestration/run_experiment.py"
    )  # a lazy import counts
    assert len(plot) == 64


def _closure(entry: Path) -> set:
    seen, pending = set(), [entry]
    while pending:
        path = pending.pop()
        if path not in seen:
            seen.add(path)
            pending += pipeline.project_imports(path)
    return seen


def test_one_pipeline_at_a_time_per_workspace(outside, tmp_path):
    """A second call waits for the first (say, left running by a killed make) and then finds its
    work done."""
    import threading

    from filelock import FileLock

    workspace = tmp_path / "ws"
    shutil.copytree(outside["clean"], workspace)
    lock = FileLock(
        str(workspace / pipeline.PIPELINE_LOCK), thread_local=False
    )  # released from a timer thread
    lock.acquire()
    threading.Timer(2.0, lock.release).start()
    code, stderr = make("phase7", workspace, outside["data"])
    assert code == 0 and any(r.get("event") == "waiting" for r in json_lines(stderr))
    assert differences(outside["reference"], snapshot(workspace)) == []
