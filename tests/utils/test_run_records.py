import hashlib
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from scripts.utils import jsonio, run_records
from scripts.utils.errors import InputError
from scripts.utils.jsonio import read_json, read_json_lines
from scripts.utils.run_records import MANIFEST, REGISTRY, RunRecorder
from scripts.utils.seed_manager import SEED_LOG

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
    assert set(report["outputs"]) == {f"experiments/results/{run_id}/a.txt", f"experiments/results/{run_id}/sub/b.txt"}

    registry = read_json(workspace / REGISTRY)["files"]
    assert set(registry) == set(report["outputs"]) | {f"experiments/results/{run_id}.json"}
    for path, entry in registry.items():
        data = (workspace / path).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "crc32": f"{zlib.crc32(data):08x}",
                         "size": len(data), "run": run_id}

    manifest = read_json(workspace / MANIFEST)["runs"]
    assert manifest[run_id]["report"] == f"experiments/results/{run_id}.json"
    assert manifest[run_id]["report_sha256"] == hashlib.sha256(report_path.read_bytes()).hexdigest()
    assert manifest[run_id]["seed"] == 20251031 and manifest[run_id]["env_hash"] == report["env_hash"]
    assert [line["run_id"] for line in read_json_lines(workspace / SEED_LOG)] == [run_id]
    assert not list(workspace.rglob("*.partial"))


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
    (workspace / "experiments/results/demo_20251031T120000Z-4.partial").mkdir()  # a killed run's leftover
    assert record_demo(workspace) == "demo_20251031T120000Z-4"  # removed, and its name given out again
    assert not list((workspace / "experiments/results").glob("*.partial"))


def test_a_live_run_keeps_its_name_and_folder(workspace):
    with RunRecorder("demo", workspace=workspace) as outer:
        outer.output_path("a.txt").write_text("outer\n")
        inner = record_demo(workspace)  # its recovery must not take the live run's folder for a leftover
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
    monkeypatch.setattr(jsonio, "atomic_write_bytes", lambda path, data: (writes.append(Path(path).name), real(path, data)))
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
    for relative in (REGISTRY, MANIFEST, "experiments/results/demo_20251031T120000Z.json", SEED_LOG):
        assert (tmp_path / "one" / relative).read_bytes() == (tmp_path / "two" / relative).read_bytes()


def test_eight_processes_register_400_artifacts_at_once(workspace):
    workers = [subprocess.Popen([sys.executable, str(WORKER), str(workspace), "conc", "50", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
    acks = []
    for worker in workers:
        out, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err.decode()
        acks += [line.split()[1] for line in out.decode().splitlines()]
    assert len(acks) == len(set(acks)) == 400
    registry = read_json(workspace / REGISTRY)["files"]
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
    return (stat.st_size, stat.st_mtime_ns) if stat else None, temps


def _kill_during_next_registry_write(worker, data_dir: Path) -> None:
    """SIGKILL the worker the moment the registry file or a temp file beside it changes."""
    start = _registry_state(data_dir)
    deadline = time.monotonic() + 30
    while _registry_state(data_dir) == start and time.monotonic() < deadline:
        pass
    worker.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
    worker.wait()


def test_sigkill_mid_write_leaves_valid_files_with_every_acknowledged_entry(workspace):
    # A big registry makes every rewrite take a while; the kill is aimed at
    # the moment a rewrite starts, however the writer goes about it.
    run_records.register_files(workspace, {f"bulk/{i:06d}": {"sha256": "0" * 64, "crc32": "00000000", "size": 0,
                                                             "run": "seed"} for i in range(30_000)})
    acknowledged = []
    for kill_after in (0, 1, 2, 3, 5, 8):
        worker = subprocess.Popen([sys.executable, str(WORKER), str(workspace), "crash", "1000", "20"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(kill_after):
            acknowledged.append(worker.stdout.readline().split()[1].decode())
        _kill_during_next_registry_write(worker, workspace / "data")
        acknowledged += [line.split()[1].decode() for line in worker.stdout.read().splitlines()]

        registry = read_json(workspace / REGISTRY)["files"]  # parses: not torn
        manifest_path = workspace / MANIFEST  # absent only if no run ever got that far
        manifest = read_json(manifest_path)["runs"] if acknowledged or manifest_path.exists() else {}
        assert len(registry) >= 30_000
        for run_id in acknowledged:
            assert run_id in manifest
            assert f"experiments/results/{run_id}/out_19.txt" in registry
            assert f"experiments/results/{run_id}.json" in registry
        read_json_lines(workspace / SEED_LOG)  # a torn last line is tolerated, nothing else
