"""What verify varies between two runs: each variation's settings, what it changes from what to
what, and the fix.

    from scripts.orchestration.variations import VARIATIONS, run_environment, changed_settings
    env, umask, cpus = run_environment({"threads", "time"}, epoch="1761912000")
    changed_settings("threads", epoch="1761912000")   # ['OMP_NUM_THREADS 1 -> 2', ...]

A run's environment is the caller's, with every knob verify varies set to its
base value; a varied run sets the knobs of its variations to the other value.
Two variations reach into Python itself, through ``verify_site/sitecustomize.py``
(put first on ``PYTHONPATH``): ``time`` (the wall clock starts each run at a
fixed instant, ``SOURCE_DATE_EPOCH``, or years later) and ``cpus`` (what
``os.cpu_count()`` reports; the process's CPU affinity is narrowed too).
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import subprocess
from pathlib import Path

from scripts.utils import cli

VARIATIONS = (
    "path",
    "time",
    "tz",
    "locale",
    "umask",
    "hashseed",
    "threads",
    "cpu",
    "cpus",
    "workers",
    "resume",
)
BASE = {
    "tz": "Etc/GMT+12",
    "locale": "C.UTF-8",
    "umask": 0o022,
    "hashseed": "0",
    "threads": "1",
    "workers": "1",
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CLOCK_SHIFT = (
    (3 * 365 + 40) * 86400 + 7 * 3600 + 13 * 60
)  # +3 years 40 days 7 h 13 min, as reprotest shifts it
CLOCK_ENV, CPU_COUNT_ENV = "CRH_CLOCK_START", "CRH_CPU_COUNT"
SITE = Path(__file__).resolve().parent / "verify_site"
CPU_VARIABLES = (
    "OPENBLAS_CORETYPE",
    "NPY_DISABLE_CPU_FEATURES",
    "MKL_CBWR",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
)
# Set by verify for every run: the caller's values would hide what a variation changes.
CONTROLLED = (
    "CRH_WORKSPACE",
    "LANG",
    "LANGUAGE",
    "PYTHON_CPU_COUNT",
    CLOCK_ENV,
    CPU_COUNT_ENV,
    *CPU_VARIABLES,
)

FIXES = {
    "path": "record paths relative to the run's folder (or its inputs), never absolute",
    "time": "write times in UTC from SOURCE_DATE_EPOCH, or drop them; name files by run number or "
    "config hash, not by date; never seed from the clock",
    "tz": "format times in UTC (datetime.now(timezone.utc)), never in local time",
    "locale": "format numbers and dates without the locale, and open files with encoding='utf-8'",
    "umask": "set file modes explicitly (os.chmod), or leave them out of archives",
    "hashseed": "sort sets and dict keys before iterating or writing them (sorted(set(...)))",
    "threads": "pin the thread count (torch.set_num_threads(1), OMP_NUM_THREADS) or use "
    "order-independent reductions",
    "cpu": "results follow the CPU's instruction set (BLAS kernels, SIMD, oneDNN): pin it for "
    "exact results (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_CBWR, "
    "NPY_DISABLE_CPU_FEATURES) or compare with a tolerance",
    "cpus": "size threads, workers and batches from the config, not from os.cpu_count() or the "
    "machine",
    "workers": "make results independent of the worker count (collect results in input order, not "
    "completion order)",
    "resume": "make the script safe to kill: write outputs atomically, restart from a checkpoint, "
    "never append to a file a killed run left",
}
NOISE_SOURCES = [
    "an unseeded random generator (torch, numpy, random, a DataLoader or train/test split without "
    "a seeded generator)",
    "a nondeterministic kernel (GPU atomics, some torch ops)",
    "uninitialised memory (torch.empty, np.empty) written out",
    "a wall-clock time written with sub-second precision or a process id",
]
NOISE_FIX = (
    "seed every generator (torch.manual_seed, np.random.default_rng(seed), random.seed, "
    "DataLoader(generator=torch.Generator().manual_seed(seed)), random_state= in scikit-learn); "
    "torch.use_deterministic_algorithms(True)"
)


@functools.cache
def other_locale() -> str | None:
    """A UTF-8 locale other than C.UTF-8 that this machine has (POSIX if none; None if unknown)."""
    try:
        names = subprocess.run(
            ["locale", "-a"], capture_output=True, text=True, timeout=10
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    for name in names:
        if name.lower().replace("-", "") not in ("c.utf8", "posix", "c") and "utf" in name.lower():
            return name
    return "POSIX" if "POSIX" in names else None


def narrowed_cpu() -> dict:
    """Environment variables that make this machine compute like an older CPU (NumPy, BLAS, MKL,
    PyTorch, oneDNN)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__

    arm = platform.machine().lower() in ("aarch64", "arm64")
    settings = {
        "OPENBLAS_CORETYPE": "ARMV8" if arm else "Prescott",
        "NPY_DISABLE_CPU_FEATURES": " ".join(__cpu_dispatch__),
        "MKL_CBWR": "COMPATIBLE",
        "ATEN_CPU_CAPABILITY": "default",
    }
    if not arm:
        settings["ONEDNN_MAX_CPU_ISA"] = "SSE41"
    return settings


def usable_cpus() -> list:
    """The CPUs this process may run on (all of them where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def other_cpu_count() -> int:
    """The CPU count of the other machine ``cpus`` simulates: half of this one's, or 2 where it
    has one."""
    count = len(usable_cpus())
    return count // 2 if count >= 2 else 2


def clock_start(varied: set, epoch: str) -> int:
    """The instant (Unix seconds) a run's wall clock starts at."""
    return int(epoch) + (CLOCK_SHIFT if "time" in varied else 0)


def run_environment(varied: set, epoch: str) -> tuple[dict, int, list | None]:
    """(environment, umask, CPUs to run on or None for all) of a run with ``varied`` changed."""
    env = {key: value for key, value in os.environ.items() if key not in CONTROLLED}
    env["SOURCE_DATE_EPOCH"] = epoch
    env[CLOCK_ENV] = str(clock_start(varied, epoch))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))
    env["TZ"] = "Etc/GMT-14" if "tz" in varied else BASE["tz"]
    env["LC_ALL"] = (other_locale() or BASE["locale"]) if "locale" in varied else BASE["locale"]
    env["PYTHONHASHSEED"] = "12345" if "hashseed" in varied else BASE["hashseed"]
    for name in THREAD_VARIABLES:
        env[name] = "2" if "threads" in varied else BASE["threads"]
    env[cli.WORKERS_ENV] = (
        str(max(2, os.cpu_count() or 1)) if "workers" in varied else BASE["workers"]
    )
    if "cpu" in varied:
        env.update(narrowed_cpu())
    cpus = None
    if "cpus" in varied:
        count = other_cpu_count()
        env[CPU_COUNT_ENV] = env["PYTHON_CPU_COUNT"] = str(count)
        cpus = usable_cpus()[:count] if count < len(usable_cpus()) else None
    return env, 0o002 if "umask" in varied else BASE["umask"], cpus


def _instant(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def _shown(value) -> str:
    text = "unset" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def changed_settings(variation: str, epoch: str, paths: tuple = ("<first>", "<second>")) -> list:
    """What ``variation`` changes, each as 'NAME first -> second' (both values as the runs had
    them)."""
    if variation == "path":
        return [f"workspace path {paths[0]} -> {paths[1]}"]
    if variation == "resume":
        return ["the run killed (SIGKILL, its whole process group) part-way, then run again"]
    if variation == "time":
        return [
            f"wall clock at the start {_instant(clock_start(set(), epoch))} -> "
            f"{_instant(clock_start({'time'}, epoch))} (+3 years 40 days 7 h)"
        ]
    if variation == "umask":
        return [f"umask {BASE['umask']:04o} -> 0002"]
    if variation == "cpus":
        count, usable = other_cpu_count(), usable_cpus()
        shown = [f"os.cpu_count() {os.cpu_count()} -> {count}"]
        if count < len(usable):
            shown.append(f"CPUs the process may use {len(usable)} -> {count}")
        return shown
    base, other = run_environment(set(), epoch)[0], run_environment({variation}, epoch)[0]
    names = sorted(name for name in set(base) | set(other) if base.get(name) != other.get(name))
    return [f"{name} {_shown(base.get(name))} -> {_shown(other.get(name))}" for name in names]
