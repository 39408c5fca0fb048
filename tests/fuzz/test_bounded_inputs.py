"""Memory and time bounded before the work, and nothing left by a run that fails (issue 28, items
7 and 8)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import orjson
import pytest

from scripts.utils.records.data_roots import BOOKKEEPING_SUFFIXES
from tests.conftest import SMALL_RUN, script_path
from tests.fuzz.harness import check_outcome, run_script

EPOCH = {"SOURCE_DATE_EPOCH": "1761912000"}


def expect(outcome, rc: int, *words):
    check_outcome(outcome)
    assert outcome.rc == rc, outcome.describe()
    message = orjson.dumps(outcome.last).decode().lower() if rc else ""
    for word in words:
        assert word.lower() in message, outcome.describe()
    return outcome


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.size=512", "learner.hidden=4096"], "learner.hidden"),
        (["data.size=512", "data.samples=100000"], "data.samples"),
        (["data.size=512", "learner.batch=100000"], "learner.batch"),
    ],
)
def test_an_experiment_too_large_for_memory_is_refused_before_it_starts(tmp_path, overrides, key):
    args = [a for o in overrides for a in ("--set", o)]
    outcome = expect(
        run_script(
            "run_experiment", [*args, "--dry-run", "--workspace", tmp_path / "ws"], env=EPOCH
        ),
        2,
        key,
        "CRH_MAX_EXPERIMENT_BYTES",
    )
    assert outcome.last["key"].startswith(key) and outcome.peak_mib < 300
    raised = run_script(
        "run_experiment",
        [*args, "--dry-run", "--workspace", tmp_path / "ws"],
        env={**EPOCH, "CRH_MAX_EXPERIMENT_BYTES": str(1 << 50)},
    )
    expect(raised, 0)  # the cap is the user's to raise


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
@pytest.mark.parametrize(
    "key", ["data.val_fraction", "learner.lr", "dreamer.blend", "bridge.f_min"]
)
def test_nan_and_infinity_pass_no_bound(tmp_path, key, value):
    outcome = run_script(
        "run_experiment",
        ["--set", f"{key}={value}", "--dry-run", "--workspace", tmp_path],
        env=EPOCH,
    )
    expect(outcome, 2, key, "finite")


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"phase": NaN}', ["nan"]),
        ('{"phase": Infinity}', ["infinity"]),
        ('{"phase": 1e400}', ["1e400"]),
        ('{"phase": -1e999}', ["1e999"]),
    ],
)
def test_json_configs_refuse_what_json_has_no_number_for(tmp_path, text, words):
    config = tmp_path / "c.json"
    config.write_text(text)
    expect(run_script("config_loader", [config]), 2, *words)


def npz_claiming(shape) -> bytes:
    """An .npz whose one array's header claims ``shape`` float64 values and holds a few bytes
    (deflated)."""
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    with io.BytesIO() as out:
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("image.npy", buffer.getvalue() + bytes(1 << 16))
        return out.getvalue()


def test_an_npz_sample_claiming_a_huge_array_is_refused_from_its_header(tmp_path):
    source = tmp_path / "ws/experiments/results/prep"
    source.mkdir(parents=True)
    (source / "a.npz").write_bytes(npz_claiming((100_000, 100_000)))
    (source / "records.jsonl").write_bytes(b'{"source": "a", "output": "a.npz"}\n' * 4)
    outcome = run_script(
        "run_experiment",
        [
            *SMALL_RUN[:-4],
            "--set",
            "data.source=experiments/results/prep",
            "--set",
            "learner.steps_per_cycle=2",
            "--workspace",
            tmp_path / "ws",
        ],
        env=EPOCH,
    )
    expect(outcome, 2, "a.npz", "cap")
    assert outcome.peak_mib < 400


def test_a_sample_record_naming_a_file_outside_is_refused(tmp_path):
    source = tmp_path / "ws/experiments/results/prep"
    source.mkdir(parents=True)
    (tmp_path / "outside.npz").write_bytes(b"")
    (source / "records.jsonl").write_bytes(
        b'{"source": "a", "output": "../../../../outside.npz"}\n' * 4
    )
    outcome = run_script(
        "run_experiment",
        [
            *SMALL_RUN,
            "--set",
            "data.source=experiments/results/prep",
            "--workspace",
            tmp_path / "ws",
        ],
        env=EPOCH,
    )
    expect(outcome, 2, "outside")


@pytest.mark.skipif(
    not hasattr(os, "posix_spawn") or sys.platform != "linux", reason="ulimit -v is Linux's"
)
def test_reads_allocate_what_the_file_holds_so_a_small_address_space_works(tmp_path):
    config = Path(__file__).resolve().parents[2] / "trainer/config/phase7.toml"
    result = subprocess.run(
        [
            "bash",
            "-c",
            f"ulimit -v 2000000 && exec {sys.executable} "
            f"{script_path('utils', 'config_loader')} {config}",
        ],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_files_of_zeros_are_not_dicom_within_a_bounded_read(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "zeros.dcm", "wb") as handle:  # sparse: 1 GiB that takes no disk
        handle.truncate(1 << 30)
    with open(data / "header_then_zeros.dcm", "wb") as handle:
        handle.write(b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100")
        handle.truncate(1 << 30)
    started = time.monotonic()
    outcome = run_script(
        "metadata_extractor", [data, "--workspace", tmp_path / "ws"], env=EPOCH, timeout=120
    )
    check_outcome(outcome)
    assert time.monotonic() - started < 60
    rows = [
        orjson.loads(line)
        for line in (
            tmp_path / "ws/experiments/results/metadata_extractor_20251031T120000Z/metadata.jsonl"
        )
        .read_bytes()
        .splitlines()
    ]
    assert len(rows) == 2 and all("not a DICOM" in row["error"] for row in rows)


def test_a_run_that_fails_leaves_no_log_folder_and_the_command_works_again(tmp_path):
    workspace, logdir = tmp_path / "ws", tmp_path / "ws/experiments/results/x"
    failing = [
        "--set",
        "data.source=experiments/results/none",
        "--logdir",
        logdir,
        "--workspace",
        workspace,
    ]
    expect(run_script("run_experiment", [*SMALL_RUN, *failing], env=EPOCH), 2)
    assert not logdir.exists()
    expect(
        run_script("run_experiment", [*SMALL_RUN, *failing], env=EPOCH), 2, "data.source must be"
    )


SWEEP = '[grid]\n"learner.lr" = [0.01, 0.02, 0.05]\n'
LONG = [
    "--set",
    "experiment.cycles=300",
    "--set",
    "experiment.checkpoint_every=50",
    "--set",
    "data.samples=16",
    "--set",
    "data.size=16",
    "--set",
    "data.source=synthetic",
    "--set",
    "learner.steps_per_cycle=4",
]


def files(workspace: Path) -> dict:
    return {
        p.relative_to(workspace).as_posix(): p.read_bytes()
        for p in sorted(workspace.rglob("*"))
        if p.is_file() and not p.name.endswith(BOOKKEEPING_SUFFIXES)
    }


@pytest.mark.timeout(600)
def test_a_killed_sweep_is_resumed_to_the_uninterrupted_result(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP)

    def command(workspace, *extra):
        return [
            sys.executable,
            str(script_path("orchestration", "run_experiment")),
            "--sweep",
            sweep,
            *LONG,
            "--logdir",
            workspace / "experiments/results/sw",
            "--workspace",
            workspace,
            *extra,
        ]

    env = {**os.environ, **EPOCH}
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert subprocess.run(command(clean), capture_output=True, env=env, timeout=300).returncode == 0
    child = subprocess.Popen(
        command(killed), stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    first = killed / "experiments/results/run_experiment_20251031T120000Z.json"
    deadline = time.monotonic() + 120
    while not first.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into the second run
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert not (killed / "experiments/results/run_experiment_sweep_20251031T120000Z.json").exists()
    again = subprocess.run(command(killed), capture_output=True, env=env, timeout=300)
    assert again.returncode == 2 and b"--resume" in again.stderr  # refused, naming the way on
    resumed = subprocess.run(command(killed, "--resume"), capture_output=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert files(killed) == files(clean)
    twice = subprocess.run(command(killed, "--resume"), capture_output=True, env=env, timeout=300)
    assert twice.returncode == 0 and files(killed) == files(clean)
