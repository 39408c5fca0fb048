import hashlib
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from scripts.utils import jsonio
from scripts.utils.errors import InputError
from scripts.utils.jsonio import read_json, read_json_lines
from scripts.utils.records import registry, run_records
from scripts.utils.records.registry import MANIFEST, REGISTRY, read_registry, register_files
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import SEED_LOG
from tests.conftest import REPO, single_error

WORKER = Path(__file__).with_name("record_worker.py")


def record_demo(workspace, outputs=("a.txt",), config=None, script="demo"):
    with RunRecorder(script, workspace=workspace, config=config) as run:
        for name in outputs:
            run.output_path(name).write_text(f"content of {name}\n")
        run.results["count"] = len(outputs)
    return run.run_id


def test_a_run_writes_report_registry_manifest_and_seed_log(workspace):
    run_id = record_demo(workspace, outputs=("a.txt", "sub/b.txt"), config={"lr": 0.1})
    assert run_id == "demo_20251031T120000Z"
    report_path = workspace / "experiments/results" / f"{run_id}.json"
    report = read_json(report_path)
    assert report["results"] == {"count": 2}
    assert report["seed"]["base_seed"] == 20251031
    assert report["config"] == {"lr": 0.1} and len(report["config_sha256"]) == 64
    assert set(report["outputs"]) == {
        f"experiments/results/{run_id}/a.txt",
        f"experiments/results/{run_id}/sub/b.txt",
    }

    registry = read_json(workspace / REGISTRY)["files"]
    assert set(registry) == set(report["outputs"]) | {f"experiments/results/{run_id}.json"}
    for path, entry in registry.items():
        data = (workspace / path).read_bytes()
        assert entry == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "crc32": f"{zlib.crc32(data):08x}",
            "size": len(data),
            "run": run_id,
        }

    manifest = read_json(workspace / MANIFEST)["runs"]
    assert manifest[run_id]["report"] == f"experiments/results/{run_id}.json"
    assert manifest[run_id]["report_sha256"] == hashlib.sha256(report_path.read_bytes()).hexdigest()
    assert (
        manifest[run_id]["seed"] == 20251031 and manifest[run_id]["env_hash"] == report["env_hash"]
    )
    assert [line["run_id"] for line in read_json_lines(workspace / SEED_LOG)] == [run_id]
    assert not list(workspace.rglob("*.partial"))


def test_a_report_names_the_runs_whose_outputs_it_consumed(workspace, tmp_path):
    first = record_demo(workspace, outputs=("table.jsonl",))
    with RunRecorder("logdir_writer", workspace=workspace) as run:  # a log folder outside runs
        (workspace / "experiments/results/logs").mkdir()
        run.claim_output(workspace / "experiments/results/logs/metrics.csv").write_text("a\n1\n")
    writer = run.run_id
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("x\n")
    with RunRecorder("reader", workspace=workspace) as run:
        run.consume(workspace / f"experiments/results/{first}/table.jsonl")
        run.consume(workspace / "experiments/results/logs")
        run.consume(workspace / "data/unregistered.txt")
        run.consume(outside)  # not another run's output: not noted
    report = read_json(workspace / f"experiments/results/{run.run_id}.json")
    assert report["consumed"] == {
        "data/unregistered.txt": None,
        f"experiments/results/{first}/table.jsonl": first,
        "experiments/results/logs": writer,
    }
    assert "consumed" not in read_json(workspace / f"experiments/results/{first}.json")


def test_global_rngs_are_seeded_for_every_run(workspace):
    import random

    import numpy as np

    draws = []
    for _ in range(2):
        with RunRecorder("demo", workspace=workspace):
            draws.append((random.random(), np.random.random()))
    assert draws[0] == draws[1]


def test_paths_are_relative_posix(workspace):
    record_demo(workspace, outputs=("deep/er/x.txt",))
    text = (workspace / REGISTRY).read_text() + (workspace / MANIFEST).read_text()
    assert str(workspace) not in text and "\\\\" not in text


def test_run_names_get_suffixes_never_overwrite(workspace):
    ids = [record_demo(workspace) for _ in range(3)]
    assert ids == ["demo_20251031T120000Z", "demo_20251031T120000Z-2", "demo_20251031T120000Z-3"]
    (
        workspace / "experiments/results/demo_20251031T120000Z-4.partial"
    ).mkdir()  # a killed run's leftover
    assert (
        record_demo(workspace) == "demo_20251031T120000Z-4"
    )  # removed, and its name given out again
    assert not list((workspace / "experiments/results").glob("*.partial"))


def test_a_live_run_keeps_its_name_and_folder(workspace):
    with RunRecorder("demo", workspace=workspace) as outer:
        outer.output_path("a.txt").write_text("outer\n")
        inner = record_demo(
            workspace
        )  # its recovery must not take the live run's folder for a leftover
        assert outer.output_dir.is_dir() and (outer.output_dir / "a.txt").exists()
    assert (outer.run_id, inner) == ("demo_20251031T120000Z", "demo_20251031T120000Z-2")
    assert (workspace / "experiments/results/demo_20251031T120000Z/a.txt").read_text() == "outer\n"


def test_a_failing_run_records_nothing(workspace):
    with pytest.raises(RuntimeError):
        with RunRecorder("demo", workspace=workspace) as run:
            run.output_path("half.bin").write_bytes(b"partial")
            raise RuntimeError("bad input found halfway")
    assert not (workspace / REGISTRY).exists() and not (workspace / MANIFEST).exists()
    assert list((workspace / "experiments/results").iterdir()) == []


def test_claimed_outputs_must_be_in_the_workspace(workspace, tmp_path):
    inside = workspace / "exports" / "x.jsonl"
    inside.parent.mkdir()
    with RunRecorder("demo", workspace=workspace) as run:
        run.claim_output(inside).write_text("{}\n")
    assert "exports/x.jsonl" in read_json(workspace / REGISTRY)["files"]
    with pytest.raises(InputError, match="outside the workspace"):
        with RunRecorder("demo", workspace=workspace) as run:
            run.claim_output(tmp_path / "elsewhere.txt")


def test_workspace_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CRH_WORKSPACE", str(tmp_path / "from-env"))
    record_demo(None)
    assert (tmp_path / "from-env" / MANIFEST).exists()


def test_unwritable_workspace_is_bad_input(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot create workspace folder"):
        record_demo(blocker / "ws")


def test_corrupt_registry_is_bad_input_and_left_alone(workspace):
    record_demo(workspace)
    (workspace / REGISTRY).write_text('{"files": ')
    with pytest.raises(InputError) as caught:
        record_demo(workspace)
    assert caught.value.details["file"].endswith("hash_registry.json")
    assert (workspace / REGISTRY).read_text() == '{"files": '


def test_ten_thousand_outputs_cost_one_registry_write(workspace, monkeypatch):
    writes = []
    real = jsonio.atomic_write_bytes
    counting = lambda path, data: (writes.append(Path(path).name), real(path, data))  # noqa: E731
    monkeypatch.setattr(jsonio, "atomic_write_bytes", counting)
    monkeypatch.setattr(registry, "atomic_write_bytes", counting)
    with RunRecorder("bulk", workspace=workspace) as run:
        folder = run.output_path("many")
        folder.mkdir()
        for index in range(10_000):
            (folder / f"{index:05d}.txt").write_bytes(b"x")
    assert writes.count("hash_registry.json") == 1
    assert len(read_json(workspace / REGISTRY)["files"]) == 10_001


def test_same_inputs_same_bytes_in_two_workspaces(tmp_path):
    for name in ("one", "two"):
        record_demo(tmp_path / name, outputs=("a.txt", "b.txt"), config={"x": [1, 2]})
    for relative in (
        REGISTRY,
        MANIFEST,
        "experiments/results/demo_20251031T120000Z.json",
        SEED_LOG,
    ):
        assert (tmp_path / "one" / relative).read_bytes() == (
            tmp_path / "two" / relative
        ).read_bytes()


@pytest.fixture(params=["rewrite", "journal"])
def registry_mode(request, monkeypatch):
    """Both ways a commit reaches the registry: a rewrite, or (a large registry) a journal line."""
    if request.param == "journal":
        monkeypatch.setenv("CRH_REGISTRY_JOURNAL_BYTES", "0")  # every registry file counts as large
    return request.param


def test_eight_processes_register_400_artifacts_at_once(workspace, registry_mode):
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(workspace), "conc", "50", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    acks = []
    for worker in workers:
        out, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err.decode()
        acks += [line.split()[1] for line in out.decode().splitlines()]
    assert len(acks) == len(set(acks)) == 400
    registry = read_registry(workspace / REGISTRY)
    manifest = read_json(workspace / MANIFEST)["runs"]
    assert set(manifest) == set(acks)
    outputs = [path for path in registry if path.endswith("out_0.txt")]
    reports = [path for path in registry if path.endswith(".json")]
    assert len(outputs) == 400 and len(reports) == 400
    assert len(read_json_lines(workspace / SEED_LOG)) == 400


def _registry_state(data_dir: Path):
    """What a poller can see of a registry write in progress."""
    registry = data_dir / "hash_registry.json"
    stat = registry.stat() if registry.exists() else None
    temps = sorted(p.name for p in data_dir.glob(".hash_registry.json.*.tmp"))
    journal = data_dir / ".hash_registry.json.journal.jsonl"
    journal_size = journal.stat().st_size if journal.exists() else None
    return (stat.st_size, stat.st_mtime_ns) if stat else None, temps, journal_size


def _kill_during_next_registry_write(worker, data_dir: Path) -> None:
    """SIGKILL the worker the moment the registry file or a temp file beside it changes."""
    start = _registry_state(data_dir)
    deadline = time.monotonic() + 30
    while _registry_state(data_dir) == start and time.monotonic() < deadline:
        pass
    worker.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
    worker.wait()


def test_sigkill_mid_write_leaves_valid_files_with_every_acknowledged_entry(
    workspace, registry_mode
):
    # A big registry makes every rewrite take a while; the kill is aimed at
    # the moment a rewrite starts, however the writer goes about it.
    register_files(
        workspace,
        {
            f"bulk/{i:06d}": {"sha256": "0" * 64, "crc32": "00000000", "size": 0, "run": "seed"}
            for i in range(30_000)
        },
    )
    acknowledged = []
    for kill_after in (0, 1, 2, 3, 5, 8):
        worker = subprocess.Popen(
            [sys.executable, str(WORKER), str(workspace), "crash", "1000", "20"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(kill_after):
            acknowledged.append(worker.stdout.readline().split()[1].decode())
        _kill_during_next_registry_write(worker, workspace / "data")
        acknowledged += [line.split()[1].decode() for line in worker.stdout.read().splitlines()]

        registry = read_registry(
            workspace / REGISTRY
        )  # parses: not torn (a torn journal line is ignored)
        manifest_path = workspace / MANIFEST  # absent only if no run ever got that far
        manifest = (
            read_json(manifest_path)["runs"] if acknowledged or manifest_path.exists() else {}
        )
        assert len(registry) >= 30_000
        for run_id in acknowledged:
            assert run_id in manifest
            assert f"experiments/results/{run_id}/out_19.txt" in registry
            assert f"experiments/results/{run_id}.json" in registry
        read_json_lines(workspace / SEED_LOG)  # a torn last line is tolerated, nothing else


# --------------------------------------------------------------------------
# Killed runs, failed commits, invalid records
# --------------------------------------------------------------------------

CRASHER = Path(__file__).with_name("crash_worker.py")


def _files(workspace):
    """Every file of the workspace but the lock files (bookkeeping that outlives every run)."""
    return sorted(
        p.relative_to(workspace).as_posix()
        for p in workspace.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    )


def _clean_twin(tmp_path):
    twin = tmp_path / "twin"
    record_demo(twin, outputs=("x.txt",))
    record_demo(twin, outputs=("x.txt",))
    return twin


@pytest.mark.parametrize("point", ["body", "report", "rename", "registry", "manifest", "seeds"])
def test_a_run_killed_at_any_point_leaves_no_trace_after_the_next_run(workspace, tmp_path, point):
    record_demo(workspace, outputs=("x.txt",))
    crashed = subprocess.run(
        [sys.executable, str(CRASHER), str(workspace), point], capture_output=True, timeout=60
    )
    assert crashed.returncode != 0 and b"finished" not in crashed.stdout  # it really died
    if point in (
        "body",
        "report",
        "rename",
        "registry",
    ):  # before the commit point: a leftover is there
        assert list((workspace / "experiments/results").glob("crash_*"))
    second = record_demo(workspace, outputs=("x.txt",))
    results = workspace / "experiments/results"
    assert not list(results.glob("*.partial")) and not list(results.glob(".*.tmp"))
    manifest = read_json(workspace / MANIFEST)["runs"]
    registry = read_json(workspace / REGISTRY)["files"]
    if point in ("manifest", "seeds"):  # committed: a complete run, seed line included
        assert "crash_20251031T120000Z" in manifest
        assert "crash_20251031T120000Z" in [
            r["run_id"] for r in read_json_lines(workspace / SEED_LOG)
        ]
        return
    assert not list(results.glob("crash_*")), "a killed run's report or folder survived"
    assert all(entry["run"] != "crash_20251031T120000Z" for entry in registry.values())
    assert "crash_20251031T120000Z" not in manifest
    assert second == "demo_20251031T120000Z-2"
    twin = _clean_twin(tmp_path)  # the same two runs, never interrupted
    assert _files(workspace) == _files(twin)
    for relative in (REGISTRY, MANIFEST, SEED_LOG):
        assert (workspace / relative).read_bytes() == (twin / relative).read_bytes(), relative


def test_a_torn_seed_line_is_cut_not_glued(workspace):
    record_demo(workspace)
    log = workspace / SEED_LOG
    with open(log, "ab") as handle:
        handle.write(b'{"run_id": "demo_2025103')  # a writer killed mid-append
    record_demo(workspace)
    lines = log.read_bytes().splitlines()
    assert len(lines) == 2 and all(line.startswith(b'{"run_id":"demo_') for line in lines)
    assert [r["run_id"] for r in read_json_lines(log)] == [
        "demo_20251031T120000Z",
        "demo_20251031T120000Z-2",
    ]


def test_a_complete_last_seed_line_without_newline_keeps_its_record(workspace):
    record_demo(workspace)
    log = workspace / SEED_LOG
    log.write_bytes(log.read_bytes().rstrip(b"\n"))
    record_demo(workspace)
    assert len(read_json_lines(log)) == 2 and log.read_bytes().count(b"\n") == 2


@pytest.mark.parametrize("damage", ["registry", "manifest"])
@pytest.mark.parametrize(
    "content", [b'{"files": ', b"[1, 2]", b'{"runs": 3, "files": 3}', b"\xff\xfe"]
)
def test_an_invalid_registry_or_manifest_is_exit_2_with_nothing_written(workspace, damage, content):
    record_demo(workspace)
    target = workspace / (REGISTRY if damage == "registry" else MANIFEST)
    target.write_bytes(content)
    before = {
        p: p.read_bytes()
        for p in workspace.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    }
    result = subprocess.run(
        [sys.executable, str(WORKER), str(workspace), "next", "1", "2"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0 and b"ack" not in result.stdout
    after = {
        p: p.read_bytes()
        for p in workspace.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    }
    assert after == before  # no report, no outputs, no entries, and the bad file left as it was
    from scripts.data_tools import sample_data  # noqa: F401 (any script: the same answer)

    script = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/data_tools/sample_data.py"),
            "--workspace",
            str(workspace),
        ],
        capture_output=True,
        timeout=120,
    )
    assert script.returncode == 2
    errors = [line for line in script.stderr.splitlines() if b'"level":"error"' in line]
    assert len(errors) == 1 and target.name.encode() in errors[0]


def _limited_run(workspace, limit_bytes):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/utils/log_formatter.py"),
            str(REPO / "README.md"),
            "-o",
            str(workspace / "out.jsonl"),
            "--workspace",
            str(workspace),
        ],
        capture_output=True,
        timeout=120,
        preexec_fn=limit,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_file_too_large_anywhere_in_the_commit_is_rolled_back(workspace):
    # A registry bigger than the limit: the run's own files fit, the registry rewrite does not.
    register_files(
        workspace,
        {
            f"bulk/{i:05d}": {"sha256": "0" * 64, "crc32": "0" * 8, "size": 0, "run": "seed"}
            for i in range(3000)
        },
    )
    record_demo(workspace)
    size = (workspace / REGISTRY).stat().st_size
    before = {
        p: p.read_bytes()
        for p in workspace.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    }
    for limit in (
        200,
        size - 100,
        size + 150,
    ):  # fails at the output, at the registry, at the manifest or seeds
        result = _limited_run(workspace, limit)
        after = {
            p: p.read_bytes()
            for p in workspace.rglob("*")
            if p.is_file() and not p.name.endswith(".lock")
        }
        if result.returncode == 0:
            continue  # it fitted: nothing to roll back
        assert result.returncode == 2, result.stderr
        error = single_error(result.stderr)
        assert error["errno"] == "EFBIG" and error["file"]
        assert after == before, limit  # no report, no output, no entries
    assert not list((workspace / "experiments/results").glob("*.partial"))


def _mount_tmpfs(folder, size):
    folder.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    return result.returncode == 0


@pytest.mark.skipif(sys.platform != "linux", reason="needs mount")
def test_disk_full_is_exit_2_and_nothing_is_half_done(tmp_path):
    disk = tmp_path / "small-disk"
    if not _mount_tmpfs(disk, "600k"):
        pytest.skip("cannot mount a small tmpfs here (not root?)")
    try:
        workspace = disk / "ws"
        record_demo(workspace)
        (disk / "filler").write_bytes(b"\0" * 300_000)
        before = {
            p: p.read_bytes()
            for p in workspace.rglob("*")
            if p.is_file() and not p.name.endswith(".lock")
        }
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts/data_tools/sample_data.py"),
                "--workspace",
                str(workspace),
            ],
            capture_output=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        error = single_error(result.stderr)
        assert error["errno"] == "ENOSPC" and error["file"]
        after = {
            p: p.read_bytes()
            for p in workspace.rglob("*")
            if p.is_file() and not p.name.endswith(".lock")
        }
        assert {p for p in after if "data/sample" not in p.as_posix()} == set(
            before
        )  # claimed files may stay
        assert all(after[p] == before[p] for p in before)
        assert not list((workspace / "experiments/results").glob("*.partial"))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_retraction_in_a_large_registry_is_a_journal_line_with_the_same_result(
    workspace, tmp_path, monkeypatch
):
    monkeypatch.setenv(registry.JOURNAL_BYTES_ENV, "0")  # every registry counts as large
    first = record_demo(workspace, outputs=("a.txt",))
    second = record_demo(workspace, outputs=("b.txt",))
    before = (workspace / REGISTRY).read_bytes()
    assert run_records.retract_runs(workspace, [first]) == []
    assert (workspace / REGISTRY).read_bytes() == before  # not rewritten: a journal line
    assert all(e["run"] != first for e in read_registry(workspace / REGISTRY).values())
    registry.fold_journal(workspace / REGISTRY, force=True)
    monkeypatch.delenv(registry.JOURNAL_BYTES_ENV)
    twin = tmp_path / "twin"
    record_demo(twin, outputs=("a.txt",)), record_demo(twin, outputs=("b.txt",))
    run_records.retract_runs(twin, [first])
    for relative in (REGISTRY, MANIFEST, f"experiments/results/{second}.json"):
        assert (workspace / relative).read_bytes() == (twin / relative).read_bytes(), relative


def test_retracted_runs_vanish_and_their_names_and_seed_lines_are_reused(workspace, tmp_path):
    first = record_demo(workspace, outputs=("a.txt",))
    second = record_demo(workspace, outputs=("b.txt",))
    elsewhere = run_records.retract_runs(workspace, [first])
    assert elsewhere == []
    assert not (workspace / "experiments/results" / first).exists()
    assert first not in read_json(workspace / MANIFEST)["runs"]
    assert all(e["run"] != first for e in read_json(workspace / REGISTRY)["files"].values())
    assert record_demo(workspace, outputs=("a.txt",)) == first  # the redo takes the name back
    twin = tmp_path / "twin"
    record_demo(twin, outputs=("a.txt",)), record_demo(twin, outputs=("b.txt",))
    for relative in (REGISTRY, MANIFEST, SEED_LOG, f"experiments/results/{second}.json"):
        assert (workspace / relative).read_bytes() == (twin / relative).read_bytes(), relative
