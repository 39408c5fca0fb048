"""How the cost of a data folder grows with its files: 10^4 -> 10^5 (-> 10^6 with ``--large``).

Imported by ``bench/run_bench.py`` (``make bench``; ``make bench-large`` adds the 10^6 point).
Each point is a folder of small generated files outside the workspace (a data root, as
``make phase7 DATA=...`` reads one), 1,000 to a folder. For each point, run as a user runs
them (one process each, so the time includes Python's start and the run records, and the
peak memory is the process's own):

* first call: ``hash_integrity.py hash`` of the folder (every file read);
* the first ``verify`` (the stat cache vouches for every file; it leaves a snapshot);
* second call: ``verify`` again on the unchanged folder (the snapshot: a walk and a stat);
* one file changed: ``verify`` (finds it: only the changed folder is checked; the first such
  call also builds the registry's mirror in the local index), a second file changed:
  ``verify`` again and ``hash`` (records both);
* the pipeline's data fingerprint on the unchanged folder (in this process, as the pipeline
  computes it before it decides that no step needs redoing);

beside a bare ``os.scandir`` + ``stat`` pass over the same tree, the floor of any check.
Figures: the second call and the fingerprint at the largest point against that pass (target:
at most 2x), and the verify after a file changed against the unchanged second call (target:
at most 2x: the cost follows what changed). For context, each point also times ``hash_files``
alone on the same files (the hashing engine without records: on files this small, the
records' per-file cost shows); it and the fingerprint run in processes of their own. The
first call's throughput on the hashing benchmark's files is in bench_data_tools.bench_hashing.
The points are plotted in ``growth.png`` beside the report (run_bench.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import best_of_alternating, figure
from scripts.orchestration.pipeline import DataSnapshot
from scripts.utils.records.data_roots import collect_inputs
from scripts.utils.records.registry import REGISTRY, StatCache, hash_files

REPO = Path(__file__).resolve().parents[1]
HASH_INTEGRITY = REPO / "scripts/data_tools/hash_integrity.py"
LARGE_ENV = "CRH_BENCH_LARGE"  # set by run_bench.py --large (make bench-large)
PER_FOLDER = 1000


def points(quick: bool) -> tuple:
    if quick:
        return (1_000, 3_000)  # a smoke test: two points make a curve
    if os.environ.get(LARGE_ENV) == "1":
        return (10_000, 100_000, 1_000_000)
    return (10_000, 100_000)


def write_small_files(root: Path, files: int) -> None:
    """``files`` files of 64 bytes, each different, 1,000 to a folder."""
    for index in range(files):
        folder = root / f"d{index // PER_FOLDER:04d}"
        if index % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index:07d}.bin").write_bytes(index.to_bytes(8, "little") * 8)


def stat_pass(root: Path) -> None:
    """Walk the folders and stat every file, nothing else: the floor of any re-check."""
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat(follow_symlinks=False)


def run_cli(*args) -> dict:
    """One ``hash_integrity.py`` call as its own process: wall seconds, peak memory, exit code."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(HASH_INTEGRITY), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak_mib = None
    if hasattr(os, "wait4"):  # POSIX: the child's own peak resident memory
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
    else:
        process.wait()
    return {
        "seconds": round(time.perf_counter() - start, 4),
        "peak_mib": None if peak_mib is None else round(peak_mib, 1),
        "exit_code": process.returncode,
    }


def fingerprint_seconds(workspace: str, data: str, repeat: int) -> float:
    """The pipeline's data fingerprint, second call (the first one leaves the snapshot)."""
    workspace, data = Path(workspace), Path(data)

    def fingerprint():
        inputs = collect_inputs(workspace, [data], "growth", bind=False)
        snapshot = DataSnapshot(workspace, inputs)
        return snapshot.fingerprint(StatCache.load(workspace / REGISTRY))

    fingerprint()
    return best_of_alternating({"f": fingerprint}, repeat)["f"]


def engine_seconds(workspace: str, data: str) -> float:
    """The hashing engine alone on the same files: no records, no stat cache."""
    listed = collect_inputs(Path(workspace), [Path(data)], "growth", bind=False).files
    return best_of_alternating(
        {"engine": lambda: hash_files(listed, workers=os.cpu_count() or 1)}, 1
    )["engine"]


def in_child(function: str, *args) -> float:
    """``function(*args)`` of this module, run in a new Python process; its result."""
    code = (
        f"import json, sys; from bench.bench_growth import {function}; "
        f"print(json.dumps({function}(*json.loads(sys.argv[1]))))"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            json.dumps([str(arg) if isinstance(arg, Path) else arg for arg in args]),
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        check=True,
    )
    return json.loads(done.stdout)


def measure_point(scratch: Path, files: int, repeat: int) -> dict:
    data, workspace = scratch / f"growth_data_{files}", scratch / f"growth_ws_{files}"
    write_small_files(data, files)
    workspace.mkdir()
    common = [data, "--workspace", workspace, "--data-name", "growth"]
    past = time.time() - 2  # every file older than what the calls write, past any clock tick
    for folder, _, names in os.walk(data):
        for name in names:
            os.utime(os.path.join(folder, name), (past, past))

    first = run_cli("hash", *common)
    cached = run_cli("verify", *common)
    second = min((run_cli("verify", *common) for _ in range(max(2, repeat))), key=_seconds)
    stat_seconds = best_of_alternating({"stat": lambda: stat_pass(data)}, max(2, repeat))["stat"]

    # in a process of their own: a child forked from a large bench process would count the
    # bench's memory as its own peak (Linux keeps the high-water mark across exec)
    fingerprint_time = in_child("fingerprint_seconds", workspace, data, max(2, repeat))
    engine_time = in_child("engine_seconds", workspace, data)

    def change(index: int) -> None:
        changed = data / f"d{index // PER_FOLDER:04d}" / f"f{index:07d}.bin"
        changed.write_bytes(b"changed, and longer than before")
        os.utime(changed, (past, past))  # the mtime put back: the ctime still tells

    change(0)
    change_first = run_cli("verify", *common)  # also builds the registry's mirror in the index
    change(files - 1)
    change_verify = run_cli("verify", *common)
    change_hash = run_cli("hash", *common)
    return {
        "files": files,
        "stat_pass_seconds": round(stat_seconds, 4),
        "first_call": first,
        "first_verify": cached,
        "second_call": second,
        "data_fingerprint_seconds": round(fingerprint_time, 4),
        "hash_engine_seconds": round(engine_time, 4),
        "one_file_changed": {
            "first_verify": change_first,
            "verify": change_verify,
            "hash": change_hash,
        },
    }


def _seconds(call: dict) -> float:
    return call["seconds"]


def plot_growth(rows: list, path: Path) -> None:
    from scripts.utils.formats.plotting import pyplot

    plt = pyplot()
    fig, (times, memory) = plt.subplots(1, 2, figsize=(10, 4))
    files = [row["files"] for row in rows]
    series = {
        "first call (hash)": [row["first_call"] for row in rows],
        "second call (verify, unchanged)": [row["second_call"] for row in rows],
        "one file changed (verify)": [row["one_file_changed"]["verify"] for row in rows],
        "one file changed (hash)": [row["one_file_changed"]["hash"] for row in rows],
    }
    for label, calls in series.items():
        times.loglog(files, [call["seconds"] for call in calls], "o-", label=label)
        if all(call["peak_mib"] is not None for call in calls):
            memory.semilogx(files, [call["peak_mib"] for call in calls], "o-", label=label)
    times.loglog(files, [row["stat_pass_seconds"] for row in rows], "k--", label="bare stat pass")
    times.set(xlabel="files", ylabel="seconds", title="hash_integrity on a data folder")
    times.yaxis.set_major_formatter(lambda value, _: f"{value:g}")  # plain numbers, no mathtext
    memory.set(xlabel="files", ylabel="peak MiB", title="peak memory per call")
    for axis in (times, memory):
        axis.set_xticks(files, [f"{count:,}" for count in files])
        axis.minorticks_off()
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def bench_tree_growth(scratch: Path, quick: bool, repeat: int) -> list:
    rows = [measure_point(scratch, files, repeat) for files in points(quick)]
    largest = rows[-1]
    growth = {"points": rows}  # run_bench.py plots them (plot_growth)
    files = largest["files"]
    return [
        figure(
            "reverify_unchanged_tree",
            f"hash_integrity.py verify, second call on an unchanged folder of {files:,} files "
            "(a process: start, walk, stat, records)",
            largest["second_call"]["seconds"],
            "s",
            "a bare os.scandir + stat pass over the same tree",
            largest["stat_pass_seconds"],
            # the 2x target is set for 10^6 files (make bench-large); below that the process's
            # fixed start-up cost is a large part of the time, and the figure is context
            0.5 if files >= 10**6 else None,
            {"growth": growth, "peak_mib": largest["second_call"]["peak_mib"]},
            higher_is_better=False,
        ),
        figure(
            "data_fingerprint_unchanged_tree",
            f"the pipeline's data fingerprint, second call on {files:,} unchanged files "
            "(listing included)",
            largest["data_fingerprint_seconds"],
            "s",
            "a bare os.scandir + stat pass over the same tree",
            largest["stat_pass_seconds"],
            0.5,
            higher_is_better=False,
        ),
        figure(
            "reverify_one_changed_file",
            f"hash_integrity.py verify after one of {files:,} files changed, since a verify "
            "that found the folder right (the changed folders only)",
            largest["one_file_changed"]["verify"]["seconds"],
            "s",
            "the second call on the unchanged folder",
            largest["second_call"]["seconds"],
            0.5,
            {"first_verify_seconds": largest["one_file_changed"]["first_verify"]["seconds"]},
            higher_is_better=False,
        ),
    ]


BENCHMARKS = {"tree_growth": bench_tree_growth}
