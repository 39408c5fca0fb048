"""What this environment is, and a stable hash of what in it can change results.

``snapshot()`` gathers, on Linux, macOS and Windows alike (no ``/proc``
without a fallback): OS and kernel, the Python build and compiler, ``cc
--version``, CPU model and SIMD features (NumPy's CPU feature table), BLAS
and thread pools (threadpoolctl), CUDA and the GPU through CuPy when it is
installed (absent otherwise), the versions of libraries whose output bytes
can change between releases, and the installed packages against
``requirements.lock`` (missing, extra, mismatched).

``env_hash(snapshot)`` covers only the fields that can change results: OS
family and architecture, Python implementation and version, the SIMD
features, BLAS builds, CUDA and GPU, byte-relevant versions and installed
packages. Not the host name, the time, the kernel release, thread counts
(``make verify`` varies them on purpose; ``thread_counts()`` reports them
for logs) or paths. The same machine gives the
same hash, run after run.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from scripts.utils.jsonio import canonical_json

REPO_ROOT = Path(__file__).resolve().parents[3]
LOCK_FILE = REPO_ROOT / "requirements.lock"
# Libraries whose output bytes can differ between releases.
BYTE_RELEVANT = (
    "numpy",
    "pyarrow",
    "scipy",
    "orjson",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pillow",
    "imageio",
    "imageio-ffmpeg",
    "matplotlib",
    "isal",
    "cupy-cuda12x",
)
# Installed by venv itself, not by the lock.
VENV_TOOLS = {"pip", "setuptools", "wheel"}
PROJECT_DISTRIBUTION = (
    "crh-scripts"  # this project, installed editable: its code is fingerprinted as code, not here
)
HASHED_FIELDS = ("os", "python", "cpu_features", "blas", "cuda", "byte_relevant", "packages")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_packages() -> dict:
    """``{normalized name: version}`` of every installed distribution.

    Only the ``Name`` and ``Version`` headers at the top of each METADATA
    file are read: the full email-format parse of ~100 distributions took
    most of a run's record keeping.
    """
    packages = {}
    for dist in metadata.distributions():
        name, version = _name_and_version(
            dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        )
        if name and version and _normalize(name) != PROJECT_DISTRIBUTION:
            packages[_normalize(name)] = version
    return dict(sorted(packages.items()))


def _name_and_version(text: str) -> tuple:
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line
        if line.startswith("Name:"):
            name = line[5:].strip()
        elif line.startswith("Version:"):
            version = line[8:].strip()
        if name and version:
            break
    return name, version


def locked_packages(lock: Path = LOCK_FILE) -> dict:
    """``{name: version}`` of the lock's lines whose markers hold here."""
    from packaging.markers import Marker

    pins = {}
    if not lock.is_file():
        return pins
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if not match:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate():
            continue
        pins[_normalize(name)] = version
    return dict(sorted(pins.items()))


def compare_with_lock(installed: dict, locked: dict) -> dict:
    missing = sorted(name for name in locked if name not in installed)
    extra = sorted(name for name in installed if name not in locked and name not in VENV_TOOLS)
    mismatched = {
        name: {"locked": locked[name], "installed": installed[name]}
        for name in sorted(locked)
        if name in installed and installed[name] != locked[name]
    }
    return {
        "missing": missing,
        "extra": extra,
        "mismatched": mismatched,
        "matches": not (missing or extra or mismatched),
    }


def cpu_model() -> str | None:
    system = platform.system()
    try:
        if system == "Linux" and Path("/proc/cpuinfo").exists():
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
        if system == "Darwin":
            return (
                subprocess.run(
                    ["sysctl", "-n", "machdep.cpu.brand_string"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.strip()
                or None
            )
        if system == "Windows":
            return os.environ.get("PROCESSOR_IDENTIFIER") or platform.processor() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or None


def cpu_features() -> dict:
    """NumPy's table of SIMD features the CPU has (SSE ... AVX2, AVX512*, NEON ...)."""
    import numpy as np

    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            table = importlib.import_module(module).__cpu_features__
            return {name: bool(value) for name, value in sorted(table.items())}
        except (ImportError, AttributeError):
            continue
    return {"unknown": np.__version__}


def blas_info() -> list:
    """BLAS/OpenMP pools (threadpoolctl), without paths; thread counts kept apart.

    threadpoolctl reports the libraries *loaded* in this process, so both
    NumPy's and SciPy's BLAS are loaded first: otherwise the answer would
    depend on what the process happened to import before.
    """
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info

    pools = []
    for pool in threadpool_info():
        pools.append(
            {
                key: pool.get(key)
                for key in (
                    "user_api",
                    "internal_api",
                    "prefix",
                    "version",
                    "architecture",
                    "threading_layer",
                    "num_threads",
                )
            }
        )
    return sorted(
        pools,
        key=lambda pool: canonical_json({k: v for k, v in pool.items() if k != "num_threads"}),
    )


def thread_counts() -> dict:
    """Threads per BLAS/OpenMP pool and the variables that set them: for logs, not snapshots."""
    return {
        "pools": [pool["num_threads"] for pool in blas_info()],
        **{
            var: os.environ.get(var)
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        },
    }


def cuda_info() -> dict:
    """CUDA and GPU through CuPy when it is installed; ``present: false`` otherwise."""
    if importlib.util.find_spec("cupy") is None:
        return {"present": False, "reason": "CuPy is not installed"}
    try:
        import cupy

        runtime = cupy.cuda.runtime
        count = runtime.getDeviceCount()
        devices = []
        for index in range(count):
            props = runtime.getDeviceProperties(index)
            name = props["name"]
            devices.append(
                {
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "compute_capability": f"{props['major']}.{props['minor']}",
                    "memory_bytes": int(props["totalGlobalMem"]),
                }
            )
        return {
            "present": count > 0,
            "cupy": cupy.__version__,
            "runtime": runtime.runtimeGetVersion(),
            "driver": runtime.driverGetVersion(),
            "devices": devices,
        }
    except Exception as exc:  # CuPy installed but no usable driver or device
        return {"present": False, "reason": f"CUDA not usable: {type(exc).__name__}: {exc}"}


def byte_relevant_versions(installed: dict) -> dict:
    versions = {name: installed.get(name) for name in BYTE_RELEVANT}
    try:
        import zlib

        versions["zlib"] = zlib.ZLIB_RUNTIME_VERSION
    except ImportError:
        pass
    if installed.get("matplotlib"):
        try:
            from matplotlib import ft2font

            versions["freetype"] = ft2font.__freetype_version__
        except Exception:
            versions["freetype"] = None
    if installed.get("imageio-ffmpeg"):
        try:
            import imageio_ffmpeg

            versions["ffmpeg"] = ffmpeg_version(imageio_ffmpeg, installed["imageio-ffmpeg"])
        except Exception:
            versions["ffmpeg"] = None
    return versions


def ffmpeg_version(imageio_ffmpeg, package_version: str) -> str:
    """The ffmpeg that imageio uses: the binary bundled in the imageio-ffmpeg wheel is named by its
    file and the wheel's version (running it takes a subprocess per run); any other is asked."""
    executable = Path(imageio_ffmpeg.get_ffmpeg_exe())
    bundled = Path(imageio_ffmpeg.__file__).resolve().parent / "binaries"
    if executable.resolve().parent == bundled:
        return f"{executable.name} (bundled with imageio-ffmpeg {package_version})"
    return imageio_ffmpeg.get_ffmpeg_version()


def compiler_version() -> str | None:
    """First line of ``cc --version`` (or ``cl``'s banner on Windows), where present."""
    for command in (["cc", "--version"], ["cl"]):
        if shutil.which(command[0]):
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                continue
            text = (result.stdout or result.stderr).strip()
            if text:
                return text.splitlines()[0]
    return None


def snapshot(lock: Path = LOCK_FILE, with_compiler: bool = True, with_lock: bool = True) -> dict:
    """Everything env_check records (see the module docstring).

    Run records need only the hashed part: they skip ``cc`` and the lock
    comparison (``with_compiler=False, with_lock=False``), which are slow.
    """
    installed = installed_packages()
    pools = blas_info()
    return {
        "os": {
            "system": platform.system(),
            "machine": platform.machine(),
            "byteorder": sys.byteorder,
        },
        "kernel": {"release": platform.release(), "version": platform.version()},
        "python": {
            "implementation": platform.python_implementation(),
            "version": platform.python_version(),
            "build": list(platform.python_build()),
            "compiler": platform.python_compiler(),
        },
        "compiler": compiler_version() if with_compiler else None,
        "cpu": {"model": cpu_model(), "logical_cpus": os.cpu_count()},
        "cpu_features": cpu_features(),
        "blas": [{k: v for k, v in pool.items() if k != "num_threads"} for pool in pools],
        "cuda": cuda_info(),
        "byte_relevant": byte_relevant_versions(installed),
        "packages": installed,
        "lock": None
        if not with_lock
        else {
            "file": lock.name,
            "sha256": hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None,
            **compare_with_lock(installed, locked_packages(lock)),
        },
    }


def hashed_part(snap: dict) -> dict:
    """The fields of a snapshot that can change results."""
    return {field: snap[field] for field in HASHED_FIELDS}


def env_hash(snap: dict) -> str:
    return hashlib.sha256(canonical_json(hashed_part(snap))).hexdigest()


def differences(saved: dict, current: dict, prefix: str = "") -> list:
    """Every leaf that differs between two snapshots: ``{"field", "saved", "current"}``."""
    found = []
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            found += differences(
                saved.get(key), current.get(key), f"{prefix}.{key}" if prefix else key
            )
    elif saved != current:
        found.append({"field": prefix, "saved": saved, "current": current})
    return found


@functools.cache
def captured_fingerprint() -> tuple:
    """The fingerprint's items, captured at the first call
    (``captured_fingerprint.cache_clear()`` forgets it)."""
    return tuple(hashed_part(snapshot(with_compiler=False, with_lock=False)).items())


def environment_fingerprint() -> dict:
    """The fields of this environment that can change output bytes, captured once per process.

    No host name, time, thread counts or paths: what run records and cluster workers compare.
    """
    return dict(captured_fingerprint())


def environment_hash(fingerprint=None) -> str:
    """SHA-256 of the fingerprint's canonical JSON: the same value env_check writes as env_hash."""
    return hashlib.sha256(canonical_json(fingerprint or environment_fingerprint())).hexdigest()


def git_state() -> dict:
    """The commit of the scripts and whether their tree has uncommitted changes (None without
    git)."""
    try:  # one call: the branch header holds the commit, the other lines the changes
        status = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if status.returncode != 0:
        return {"commit": None, "dirty": None}
    lines = status.stdout.splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    return {
        "commit": None if commit in (None, "(initial)") else commit,
        "dirty": any(not line.startswith("#") for line in lines),
    }
