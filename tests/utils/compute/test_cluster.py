"""Scale-out on Dask distributed (scripts/utils/compute/cluster.py): real LocalClusters of worker
processes.

The scripts run as a user would (subprocesses) against one cluster of 2
worker processes started here, and their outputs are compared byte for byte
with local runs. A worker is killed mid-run; workers with other code or
without the project are refused.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom.data
import pytest

from scripts.utils.compute import cluster
from scripts.utils.errors import InputError
from scripts.utils.records.data_roots import BOOKKEEPING_SUFFIXES
from tests.conftest import REPO, json_lines, run_script, single_error

distributed = pytest.importorskip("distributed")

PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


@pytest.fixture(scope="module")
def scheduler():
    """The address of a LocalCluster of 2 single-threaded worker processes, shared by this
    module's tests."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
    ) as local:
        yield local.scheduler_address


def artifacts(workspace: Path) -> dict:
    """Every file a run leaves in a workspace, by relative path, except the stat cache (inodes,
    mtimes)."""
    return {
        p.relative_to(workspace).as_posix(): p.read_bytes()
        for p in sorted(workspace.rglob("*"))
        if p.is_file() and not p.name.endswith(BOOKKEEPING_SUFFIXES)
    }


# --------------------------------------------------------------------------
# Batches and addresses
# --------------------------------------------------------------------------


def test_batches_keep_the_order_and_respect_their_bounds():
    items = list(range(10_000))
    cut = cluster.batches(items, parallelism=2)
    assert [i for batch in cut for i in batch] == items
    assert max(map(len, cut)) <= cluster.BATCH_FILES and len(cut) == 10
    small = cluster.batches(list(range(40)), parallelism=2)
    assert len(small) == 8 and [i for b in small for i in b] == list(
        range(40)
    )  # 4 tasks per worker
    sized = cluster.batches(list(range(6)), parallelism=1, sizes=[100] * 6, max_bytes=250)
    assert sized == [[0, 1], [2, 3], [4, 5]]
    assert cluster.batches([], 4) == []
    assert cluster.batches(["huge"], 1, sizes=[10**12]) == [
        ["huge"]
    ]  # a file over the bound is a batch alone


def test_scheduler_addresses(monkeypatch):
    monkeypatch.delenv(cluster.SCHEDULER_ENV, raising=False)
    assert cluster.scheduler_address(None) is None
    monkeypatch.setenv(cluster.SCHEDULER_ENV, "head:8786")
    assert cluster.scheduler_address(None) == "tcp://head:8786"
    capacity = cluster.local_capacity()
    assert cluster.scheduler_address(f"local:{capacity}") == f"local:{capacity}"
    assert cluster.scheduler_address("tcp://[::1]:8786/") == "tcp://[::1]:8786"
    for bad in (
        "local:0",
        f"local:{capacity + 1}",
        "local:256",
        "local:99999999999999999999",
        "http://x:1",
        "tcp://",
        "tcp://[::1",
        "tcp://host:99999",
        "tcp://host:port",
        "tcp://user:pw@host:1",
        "tcp://host:1/path",
        "tcp://host:1?x=1",
        "tcp://ho st:1",
        "tcp://host\n:1",
        "inproc://x",
        "tcp://host:0",
        "tcp://-x:1",
        "tls://a_b:1",
    ):
        with pytest.raises(InputError):
            cluster.scheduler_address(bad)
    assert cluster.is_encrypted_or_local("tls://head:8786") and cluster.is_encrypted_or_local(
        "tcp://127.0.0.1:1"
    )
    assert cluster.is_encrypted_or_local("local:2") and not cluster.is_encrypted_or_local(
        "tcp://10.1.2.3:8786"
    )


def test_the_key_is_never_sent_in_clear_and_an_unreachable_scheduler_is_bad_input(workspace):
    result = run_script(
        "data_tools",
        "metadata_extractor",
        PYDICOM_TEST_FILES,
        "--scheduler",
        "tcp://192.0.2.1:8786",
        "--workspace",
        workspace,
    )
    error = single_error(result.stderr)
    assert (
        result.returncode == 2
        and "in clear" in error["error"]
        and error["scheduler"] == "tcp://192.0.2.1:8786"
    )
    result = run_script(
        "data_tools",
        "hash_integrity",
        "hash",
        PYDICOM_TEST_FILES,
        "--scheduler",
        "tcp://127.0.0.1:9",
        "--workspace",
        workspace,
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
    )
    assert (
        result.returncode == 2
        and "cannot reach the Dask scheduler" in single_error(result.stderr)["error"]
    )
    assert not (workspace / "data/hash_registry.json").exists()


# --------------------------------------------------------------------------
# Same bytes as local
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script, args",
    [
        ("hash_integrity", ["hash", PYDICOM_TEST_FILES]),
        ("metadata_extractor", [PYDICOM_TEST_FILES, "--all-tags"]),
        (
            "image_preprocessor",
            [PYDICOM_TEST_FILES, "--skip-errors", "--size", "32x32", "--augment"],
        ),
    ],
)
def test_a_script_on_the_cluster_writes_the_bytes_of_a_local_run(script, args, scheduler, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    first = run_script("data_tools", script, *args, "--workers", "1", "--workspace", local)
    assert first.returncode == 0, first.stderr.decode()
    second = run_script(
        "data_tools", script, *args, "--scheduler", scheduler, "--workspace", remote
    )
    assert second.returncode == 0, second.stderr.decode()
    records = json_lines(second.stderr)  # JSON lines only, workers' C-library output included
    assert any(r["event"] == "cluster" and r["workers"] == 2 for r in records)
    assert artifacts(local) == artifacts(remote)


def test_a_killed_worker_is_retried_and_changes_nothing(tmp_path):
    from scripts.data_tools import metadata_extractor as mx

    files = sorted(p for p in PYDICOM_TEST_FILES.rglob("*") if p.is_file())
    items = [(str(path), f"copy{copy}/{path.name}") for copy in range(4) for path in files]
    settings = mx.Settings(b"k" * 32)
    expected = [mx.extract_row(Path(path), name, settings) for path, name in items]
    with cluster.cluster_executor("local:2") as executor:
        before = executor.client.run(os.getpid)
        rows, killed = [], None
        for row in cluster.map_batches(
            executor, mx.extract_batch, cluster.batches(items, 2), settings
        ):
            if (
                killed is None
            ):  # the first batch is back; the others are queued, running or held on the workers
                killed = sorted(before.values())[0]
                os.kill(killed, signal.SIGKILL)
            rows.append(row)
        deadline = time.monotonic() + 60
        while len(executor.client.nthreads()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        after = executor.client.run(os.getpid)
    assert killed not in after.values()  # the worker really died (its nanny started another)
    assert rows == expected


# A worker on a machine where the project is not installed: this venv's editable install (make
# setup) is hidden.
WITHOUT_THE_PROJECT = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
    "repr(f).lower()]; from distributed.cli.dask_worker import main; main()"
)


def test_a_worker_with_other_code_or_without_the_project_is_refused(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(
        REPO / "scripts", other / "scripts", ignore=shutil.ignore_patterns("__pycache__")
    )
    changed = other / "scripts/utils/jsonio.py"
    changed.write_text(changed.read_text() + "\n# a worker running other code\n")
    bare = tmp_path / "bare"
    bare.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    with (
        distributed.LocalCluster(n_workers=0, dashboard_address=":0", silence_logs=50) as local,
        distributed.Client(local) as client,
    ):
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    *start,
                    local.scheduler_address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--name",
                    name,
                ],
                cwd=folder,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, folder, start in (
                ("stale", other, ["-m", "distributed.cli.dask_worker"]),
                ("bare", bare, ["-c", WITHOUT_THE_PROJECT]),
            )
        ]
        try:
            client.wait_for_workers(2, timeout=60)
            with pytest.raises(InputError) as refused:
                cluster.check_workers(client)
        finally:
            for worker in workers:
                worker.kill()
                worker.wait()
    problems = {item["problem"] for item in refused.value.details["refused"]}
    assert any(problem.startswith("cannot import this project") for problem in problems)
    stale = next(item for item in refused.value.details["refused"] if "differences" in item)
    assert [d["field"] for d in stale["differences"]] == ["code_sha256"]


def test_a_file_changed_between_two_maps_is_read_again(scheduler, tmp_path):
    from scripts.utils.records.registry import hash_files

    path = tmp_path / "scan.bin"
    path.write_bytes(b"before")
    with cluster.cluster_executor(scheduler) as executor:
        first = hash_files([("scan.bin", path)], executor=executor)
        path.write_bytes(b"after!")
        second = hash_files([("scan.bin", path)], executor=executor)
    assert first["scan.bin"]["sha256"] != second["scan.bin"]["sha256"]


def test_with_the_key_every_worker_must_be_on_this_machine_or_behind_tls():
    cluster.check_worker_links(
        {"tcp://127.0.0.1:40001": {}, "tcp://[::1]:40002": {}, "tls://10.1.2.3:40003": {}}
    )
    with pytest.raises(
        InputError
    ) as refused:  # a loopback scheduler whose worker is on another host
        cluster.check_worker_links({"tcp://127.0.0.1:40001": {}, "tcp://10.1.2.3:40004": {}})
    assert (
        refused.value.details["worker"] == "tcp://10.1.2.3:40004"
        and "in clear" in refused.value.message
    )
