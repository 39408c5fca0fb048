"""The GPU check: does CuPy give NumPy's bytes, and how much faster is it? One command, ready
before a GPU is.

    make device-wheels         # here: the wheels the GPU machine lacks, into device-wheels/
    make device-check          # there (or anywhere): python3 bench/device_check.py
    python3 bench/device_check.py --out device-report --configs phase7

On a machine with a usable CUDA device it runs, with whatever ``python3``
is there (plus the wheels, installed by ``make device-check`` into
``.device-site/`` with ``pip install --no-index --target``):

* the reference experiment on ``trainer/config/phase7.toml`` and
  ``large.toml``, once with ``--backend numpy`` and once with ``--backend
  cupy``, and compares every output file: its products are exact integer
  sums, so they must be the same bytes (each difference is listed, by
  type, as verify lists them);
* the image preprocessor on the sample data under both backends: each
  array within ``PREPROCESS_TOLERANCE`` (float32 values in [0, 1]);
* the tensor renders (tensor_visualizer) of the first experiment's dreams
  and bridge under both backends: every PNG's pixels within
  ``RENDER_TOLERANCE_LEVELS`` (the views are element-wise and correctly
  rounded, so the same bytes are expected);
* the GPU's time against the CPU's, as ratios; ``nvidia-smi`` and the
  CuPy and CUDA versions.

It writes ``device_check.json`` and ``device_check.txt`` (a short summary)
into ``--out`` and prints the summary. Without a usable GPU it says
``skipped: no CUDA device`` (why, in the report) and exits 0: CI runs it so.
Exit 1 when the backends differ beyond what is allowed. ``--device-backend
numpy`` runs the whole check with NumPy in the GPU's place (the check's own
test, on any machine).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"phase7": "trainer/config/phase7.toml", "large": "trainer/config/large.toml"}
PREPROCESS_TOLERANCE = 1e-6  # max |cupy - numpy| per value of a [0, 1] float32 array
RENDER_TOLERANCE_LEVELS = 1  # max |cupy - numpy| per pixel value of a render, in PNG levels
EPOCH = "1761912000"  # every run at the same stamp: the same run ids, the same bytes
TIME_LIMIT_S = 280  # the whole check fits a 5-minute slot


WHEELS = REPO / "device-wheels"  # make device-wheels puts them here (git ignores it)
SITE = REPO / ".device-site"  # where they are installed on the device machine


def use_device_wheels() -> None:
    """Install the wheels ``make device-wheels`` downloaded (once, with the machine's own pip,
    no index) and put them on this process's and its children's path."""
    wheels = sorted(WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
    if wheels and not SITE.is_dir():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
             "--target", str(SITE), *map(str, wheels)],
            capture_output=True,
        )  # fmt: skip
        if done.returncode != 0:  # wheels for another Python (make device-wheels: CPython 3.12)
            shutil.rmtree(SITE, ignore_errors=True)
            sys.stderr.write(
                f"device-wheels/ could not be installed for Python {sys.version.split()[0]} "
                "(make device-wheels downloads them for CPython 3.12): going on without them\n"
            )
    if SITE.is_dir():
        sys.path.insert(0, str(SITE))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p
        )


def device_status(device_backend: str) -> dict:
    """{"usable": bool, "reason"|versions} of the device backend, without importing our code."""
    if device_backend == "numpy":
        return {
            "usable": True,
            "backend": "numpy",
            "note": "NumPy in the GPU's place (a self-test)",
        }
    try:
        import cupy
    except ImportError as exc:
        return {"usable": False, "reason": f"CuPy cannot be imported: {exc}"}
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - a missing or broken driver raises many kinds
        return {"usable": False, "reason": f"CUDA is not usable: {exc}"}
    if count < 1:
        return {"usable": False, "reason": "no CUDA device is visible"}
    properties = cupy.cuda.runtime.getDeviceProperties(0)
    return {
        "usable": True,
        "backend": "cupy",
        "cupy": cupy.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
        "devices": count,
        "device": properties["name"].decode(errors="replace"),
        "nvidia_smi": nvidia_smi(),
    }


def nvidia_smi() -> str | None:
    found = shutil.which("nvidia-smi")
    if found is None:
        return None
    done = subprocess.run([found], capture_output=True, timeout=30)
    return done.stdout.decode(errors="replace")[-4000:]


def run(script: str, *args, workspace: Path) -> float:
    """Run one of our scripts as a user would; its wall time (it must succeed)."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "CRH_WORKSPACE": str(workspace)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(REPO / script), *map(str, args), "--workspace", str(workspace)],
        capture_output=True,
        env=env,
        cwd=workspace,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{script} {' '.join(map(str, args))} failed: {tail}")
    return seconds


def digests(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def experiment(scratch: Path, name: str, backend: str, side: str) -> dict:
    workspace = scratch / f"{name}-{side}"
    workspace.mkdir(parents=True)
    seconds = run(
        "scripts/orchestration/run_experiment.py",
        "--config",
        REPO / CONFIGS[name],
        "--backend",
        backend,
        "--set",
        "data.source=synthetic",
        "--logdir",
        workspace / "run",
        workspace=workspace,
    )
    return {"seconds": seconds, "folder": workspace / "run"}


def compare_experiment(scratch: Path, name: str, device: str) -> dict:
    host = experiment(scratch, name, "numpy", "host")
    gpu = experiment(scratch, name, device, "device")
    before, after = digests(host["folder"]), digests(gpu["folder"])
    differing = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    details = []
    if differing:
        sys.path.insert(0, str(REPO))
        from scripts.utils.formats.artifact_diff import compare

        for relative in differing[:20]:
            a, b = host["folder"] / relative, gpu["folder"] / relative
            if a.is_file() and b.is_file():
                details.append(
                    {"file": relative, **compare(relative, a.read_bytes(), b.read_bytes())}
                )
            else:
                details.append({"file": relative, "where": "only one backend wrote it"})
    return {
        "config": CONFIGS[name],
        "numpy_run": host["folder"],  # the renders are compared on it (not in the report)
        "files": len(before),
        "identical": not differing,
        "differing": differing,
        "differences": details,
        **timings(host["seconds"], gpu["seconds"]),
    }


def timings(numpy_seconds: float, device_seconds: float) -> dict:
    return {
        "numpy_seconds": round(numpy_seconds, 3),
        "device_seconds": round(device_seconds, 3),
        "speedup": round(numpy_seconds / device_seconds, 3),
    }


def compare_preprocessing(scratch: Path, device: str) -> dict:
    import numpy as np

    arrays, seconds = {}, {}
    for side, backend in (("host", "numpy"), ("device", device)):
        workspace = scratch / f"preprocess-{side}"
        workspace.mkdir(parents=True)
        run("scripts/data_tools/sample_data.py", workspace=workspace)
        seconds[side] = run(
            "scripts/data_tools/image_preprocessor.py", "--backend", backend, workspace=workspace
        )
        found = {}
        for path in sorted(
            (workspace / "experiments/results").glob("image_preprocessor_*/**/*.npz")
        ):
            with np.load(path) as npz:
                for key in npz.files:
                    found[f"{path.name}:{key}"] = npz[key]
        arrays[side] = found
    worst, over = 0.0, []
    host, gpu = arrays["host"], arrays["device"]
    for key in sorted(set(host) | set(gpu)):
        if key not in host or key not in gpu or host[key].shape != gpu[key].shape:
            over.append({"array": key, "where": "missing or another shape"})
            continue
        if host[key].size == 0:
            continue
        delta = float(np.max(np.abs(host[key].astype(np.float64) - gpu[key].astype(np.float64))))
        worst = max(worst, delta)
        if delta > PREPROCESS_TOLERANCE:
            over.append({"array": key, "max_abs_difference": delta})
    return {
        "arrays": len(host),
        "tolerance": PREPROCESS_TOLERANCE,
        "max_abs_difference": worst,
        "within_tolerance": not over,
        "over": over[:20],
        **timings(seconds["host"], seconds["device"]),
    }


def compare_renders(scratch: Path, run_folder: Path, device: str) -> dict:
    """tensor_visualizer on one run's dreams and bridge under both backends: each PNG's pixels."""
    import imageio.v3 as iio
    import numpy as np

    folders, seconds = {}, {}
    for side, backend in (("host", "numpy"), ("device", device)):
        workspace = scratch / f"renders-{side}"
        workspace.mkdir(parents=True)
        seconds[side] = run(
            "scripts/visualization/tensor_visualizer.py",
            run_folder,
            "--backend",
            backend,
            workspace=workspace,
        )
        (folders[side],) = (workspace / "experiments/results").glob("tensor_visualizer_*/")
    host, gpu = digests(folders["host"]), digests(folders["device"])
    worst, over = 0, []
    for name in sorted(set(host) | set(gpu)):
        if host.get(name) == gpu.get(name):
            continue
        if name not in host or name not in gpu:
            over.append({"png": name, "where": "only one backend wrote it"})
            continue
        a, b = (iio.imread(folders[side] / name).astype(np.int64) for side in ("host", "device"))
        if a.shape != b.shape:
            over.append({"png": name, "where": f"shape {a.shape} against {b.shape}"})
            continue
        levels = int(np.max(np.abs(a - b))) if a.size else 0
        worst = max(worst, levels)
        if levels > RENDER_TOLERANCE_LEVELS:
            over.append({"png": name, "max_level_difference": levels})
    return {
        "pngs": len(host),
        "identical": sum(host.get(n) == gpu.get(n) for n in host),
        "tolerance_levels": RENDER_TOLERANCE_LEVELS,
        "max_level_difference": worst,
        "within_tolerance": not over,
        "over": over[:20],
        **timings(seconds["host"], seconds["device"]),
    }


def summary_text(report: dict) -> str:
    if report.get("skipped"):
        return f"skipped: {report['skipped']}\n"
    status = report["device"]
    lines = [
        f"device      {status.get('device', status['backend'])}  CuPy {status.get('cupy', '-')}  "
        f"CUDA runtime {status.get('cuda_runtime', '-')}",
    ]
    for name, result in report["experiments"].items():
        lines.append(
            f"experiment  {name}: {'IDENTICAL' if result['identical'] else 'DIFFERENT'} "
            f"({result['files']} files, {len(result['differing'])} differ); "
            f"numpy {result['numpy_seconds']} s, device {result['device_seconds']} s, "
            f"x{result['speedup']}"
        )
    pre = report["preprocessing"]
    lines.append(
        f"preprocess  {'within' if pre['within_tolerance'] else 'OVER'} {pre['tolerance']:g} "
        f"(max |d| {pre['max_abs_difference']:.3g} over {pre['arrays']} arrays); "
        f"numpy {pre['numpy_seconds']} s, device {pre['device_seconds']} s, x{pre['speedup']}"
    )
    renders = report["renders"]
    lines.append(
        f"renders     {'within' if renders['within_tolerance'] else 'OVER'} "
        f"{renders['tolerance_levels']} level ({renders['identical']} of {renders['pngs']} PNGs "
        f"identical, max {renders['max_level_difference']} levels); "
        f"numpy {renders['numpy_seconds']} s, device {renders['device_seconds']} s, "
        f"x{renders['speedup']}"
    )
    lines.append(f"verdict     {'PASS' if report['passed'] else 'FAIL'} in {report['seconds']} s")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python3 bench/device_check.py --out device-report",
    )
    parser.add_argument("--out", default="device-report", help="folder for the report")
    parser.add_argument(
        "--configs", default="phase7,large", help="reference configs to compare (phase7,large)"
    )
    parser.add_argument(
        "--device-backend", choices=("cupy", "numpy"), default="cupy", help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    use_device_wheels()
    status = device_status(args.device_backend)
    start = time.perf_counter()
    if not status["usable"]:
        report = {"skipped": "no CUDA device", "reason": status["reason"]}
    else:
        names = [n for n in args.configs.split(",") if n]
        unknown = sorted(set(names) - set(CONFIGS))
        if unknown:
            parser.error(f"unknown configs {unknown}: choose from {sorted(CONFIGS)}")
        with tempfile.TemporaryDirectory(prefix="crh-device-") as scratch:
            experiments = {
                name: compare_experiment(Path(scratch), name, args.device_backend) for name in names
            }
            preprocessing = compare_preprocessing(Path(scratch), args.device_backend)
            first_run = experiments[names[0]].pop("numpy_run")
            for result in experiments.values():
                result.pop("numpy_run", None)
            renders = compare_renders(Path(scratch), first_run, args.device_backend)
        passed = all(e["identical"] for e in experiments.values())
        passed = passed and preprocessing["within_tolerance"] and renders["within_tolerance"]
        report = {
            "device": status,
            "python": sys.version.split()[0],
            "experiments": experiments,
            "preprocessing": preprocessing,
            "renders": renders,
            "passed": passed,
            "seconds": round(time.perf_counter() - start, 1),
        }
    text = summary_text(report)
    (out / "device_check.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out / "device_check.txt").write_text(text)
    sys.stdout.write(text)
    return 0 if report.get("skipped") or report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
