"""Run the pipeline twice under varied environments and prove every artifact identical.

    python scripts/orchestration/verify.py                       # make verify
    python scripts/orchestration/verify.py --no-vary locale --phases phase5,phase7
    python scripts/orchestration/verify.py --command "python my_pipeline.py --workspace {workspace}"

Two fresh workspaces (at different paths) each run the pipeline (phase5 to
phase9 by default, or your ``--command``s, ``{workspace}`` filled in) with
SOURCE_DATE_EPOCH fixed. The second run is varied the way reprotest varies
a build: another absolute path, TZ (GMT+12 against GMT-14), locale (C.UTF-8
against another locale the machine has), umask (0022 against 0002),
PYTHONHASHSEED, and the OMP/OpenBLAS/MKL thread counts; ``--vary`` and
``--no-vary`` pick them.

The two hash registries and manifests are compared: the same artifacts with
the same SHA-256. Each difference is explained by type: JSON (first
differing key path, both values), CSV (first differing row and column),
npz/npy/.cten/.sten (shapes and dtypes, how many elements differ, the
largest difference), PNG/GIF (differing pixels and their bounding box), WAV
(first differing sample), MP4 (first differing decoded frame), anything else
(first differing byte). When the runs differ, the variations are bisected:
more runs, each with a subset, until one variation is named as the cause.

The report (through the run records) also gives the spec's pass/fail table:
hash reproducibility, environment parity (same env_hash), dataset split
determinism, visualization energy drift. Exit 0 when identical, 1 otherwise.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python
    use_project_python()

import numpy as np
import orjson

from scripts.utils import cli, timestamps
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.jsonio import read_json
from scripts.utils.media import read_mp4_frames
from scripts.utils.registry import MANIFEST, REGISTRY, read_registry
from scripts.utils.run_records import RunRecorder
from scripts.utils.workspace import REPO_ROOT, RESULTS, resolve_workspace

VARIATIONS = ("path", "tz", "locale", "umask", "hashseed", "threads")
BASE = {"tz": "Etc/GMT+12", "locale": "C.UTF-8", "umask": 0o022, "hashseed": "0", "threads": "1"}
DEFAULT_EPOCH = "1761912000"


def other_locale() -> str | None:
    """A UTF-8 locale other than C.UTF-8 that this machine has (None if none or unknown)."""
    try:
        names = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    for name in names:
        if name.lower().replace("-", "") in ("c.utf8", "posix", "c"):
            continue
        if "utf" in name.lower():
            return name
    return "POSIX" if "POSIX" in names else None


def environment(varied: set, epoch: str) -> tuple[dict, int]:
    env = {key: value for key, value in os.environ.items() if key not in ("CRH_WORKSPACE", "LANG", "LANGUAGE")}
    env["SOURCE_DATE_EPOCH"] = epoch
    env["TZ"] = "Etc/GMT-14" if "tz" in varied else BASE["tz"]
    env["LC_ALL"] = (other_locale() or BASE["locale"]) if "locale" in varied else BASE["locale"]
    env["PYTHONHASHSEED"] = "12345" if "hashseed" in varied else BASE["hashseed"]
    threads = "2" if "threads" in varied else BASE["threads"]
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = threads
    return env, 0o002 if "umask" in varied else BASE["umask"]


def command_argv(template: str, workspace: Path) -> list:
    """A --command split as a POSIX shell would, with {workspace} filled in; bad quoting is bad input."""
    try:
        parts = shlex.split(template)
    except ValueError as exc:
        raise InputError(f"cannot split the command: {exc}", command=template)
    if not parts:
        raise InputError("empty command", command=template)
    return [part.replace("{workspace}", str(workspace)) for part in parts]


def run_pipeline(commands: list, workspace: Path, varied: set, epoch: str, log) -> None:
    env, umask = environment(varied, epoch)
    workspace.mkdir(parents=True)
    preexec = (lambda: os.umask(umask)) if os.name == "posix" else None
    for template in commands:
        try:
            result = subprocess.run(command_argv(template, workspace), cwd=workspace, env=env, capture_output=True,
                                    preexec_fn=preexec)
        except OSError as exc:
            raise InputError(f"cannot start the command: {exc.strerror or exc}", command=template)
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace").splitlines()[-3:]
            raise CheckFailed("a pipeline command failed", command=template, exit_code=result.returncode,
                              variations=sorted(varied), stderr_tail=tail)
    log.info("pipeline_done", workspace=str(workspace), variations=sorted(varied))


def registry_of(workspace: Path) -> dict:
    return read_registry(workspace / REGISTRY)


_REPORT = re.compile(r"^experiments/results/[^/]+\.json$")


def differing(first: Path, second: Path) -> list:
    """Artifacts whose SHA-256 differs; outputs first, then the run reports that differ because of them."""
    a, b = registry_of(first), registry_of(second)
    paths = sorted(set(a) | set(b))
    found = [p for p in paths if (a.get(p) or {}).get("sha256") != (b.get(p) or {}).get("sha256")]
    return sorted(found, key=lambda p: (bool(_REPORT.match(p)), p))


# --------------------------------------------------------------------------
# Explaining a difference, by file type
# --------------------------------------------------------------------------

def _json_difference(x, y, path="$"):
    if type(x) is not type(y):
        return path, x, y
    if isinstance(x, dict):
        for key in sorted(set(x) | set(y)):
            if key not in x or key not in y:
                return f"{path}.{key}", x.get(key, "<absent>"), y.get(key, "<absent>")
            found = _json_difference(x[key], y[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(x, list):
        for index, (u, v) in enumerate(zip(x, y)):
            found = _json_difference(u, v, f"{path}[{index}]")
            if found:
                return found
        return (f"{path}.length", len(x), len(y)) if len(x) != len(y) else None
    return None if x == y else (path, x, y)


def _arrays(path: Path, data: bytes) -> dict:
    if path.suffix == ".cten":
        from scripts.utils.tensors import decode_cten

        tensor = decode_cten(data)
        return {"rgb": tensor.rgb, **({"coherence": tensor.coherence} if tensor.coherence is not None else {})}
    if path.suffix == ".sten":
        from scripts.utils.tensors import decode_sten

        tensor = decode_sten(data)
        return {"bins": tensor.bins, **({"sigma": tensor.sigma} if tensor.sigma is not None else {})}
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    return {"array": loaded} if isinstance(loaded, np.ndarray) else {k: loaded[k] for k in loaded.files}


def explain_json(path: Path, a: bytes, b: bytes) -> dict:
    where, x, y = _json_difference(orjson.loads(a), orjson.loads(b))
    return {"type": "json", "key_path": where, "first": x, "second": y}


def explain_jsonl(path: Path, a: bytes, b: bytes) -> dict:
    for number, (x, y) in enumerate(zip(a.splitlines(), b.splitlines()), start=1):
        if x != y:
            where, u, v = _json_difference(orjson.loads(x), orjson.loads(y))
            return {"type": "jsonl", "line": number, "key_path": where, "first": u, "second": v}
    return {"type": "jsonl", "lines": [len(a.splitlines()), len(b.splitlines())]}


def explain_csv(path: Path, a: bytes, b: bytes) -> dict:
    rows_a = list(csv.reader(io.StringIO(a.decode()))), list(csv.reader(io.StringIO(b.decode())))
    for number, (x, y) in enumerate(zip(*rows_a), start=1):
        if x != y:
            column = next(i for i, (u, v) in enumerate(zip(x + [""], y + [""])) if u != v)
            header = rows_a[0][0]
            return {"type": "csv", "row": number, "column": header[column] if column < len(header) else column,
                    "first": x[column] if column < len(x) else None,
                    "second": y[column] if column < len(y) else None}
    return {"type": "csv", "rows": [len(rows_a[0]), len(rows_a[1])]}


def explain_arrays(path: Path, a: bytes, b: bytes) -> dict:
    x, y = _arrays(path, a), _arrays(path, b)
    for name in sorted(set(x) | set(y)):
        u, v = x.get(name), y.get(name)
        if u is None or v is None or u.shape != v.shape or u.dtype != v.dtype:
            return {"type": "array", "name": name,
                    "shapes": [None if u is None else list(u.shape), None if v is None else list(v.shape)],
                    "dtypes": [None if u is None else str(u.dtype), None if v is None else str(v.dtype)]}
        unequal = u != v
        if unequal.any():
            diff = np.abs(u.astype(np.float64) - v.astype(np.float64))
            return {"type": "array", "name": name, "shape": list(u.shape), "dtype": str(u.dtype),
                    "differing_elements": int(unequal.sum()), "max_abs_difference": float(np.nanmax(diff))}
    return {"type": "array", "note": "same values, different bytes"}


def explain_image(path: Path, a: bytes, b: bytes) -> dict:
    import imageio.v3 as iio

    suffix = path.suffix.lower()
    u, v = iio.imread(a, extension=suffix, index=None), iio.imread(b, extension=suffix, index=None)
    if u.shape != v.shape:
        return {"type": "image", "shapes": [list(u.shape), list(v.shape)]}
    mask = (u != v).reshape(u.shape[: 3 if suffix == ".gif" and u.ndim == 4 else 2] + (-1,)).any(axis=-1)
    spatial = mask.any(axis=0) if mask.ndim == 3 else mask
    rows, cols = np.nonzero(spatial)
    return {"type": "image", "differing_pixels": int(mask.sum()),
            "bounding_box": None if rows.size == 0 else
            {"top": int(rows.min()), "left": int(cols.min()), "bottom": int(rows.max()), "right": int(cols.max())}}


def explain_wav(path: Path, a: bytes, b: bytes) -> dict:
    u, v = np.frombuffer(a[44:], dtype="<i2"), np.frombuffer(b[44:], dtype="<i2")
    size = min(u.size, v.size)
    where = np.nonzero(u[:size] != v[:size])[0]
    return {"type": "wav", "first_differing_sample": int(where[0]) if where.size else size,
            "samples": [int(u.size), int(v.size)]}


def explain_mp4(path: Path, a: bytes, b: bytes) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "a.mp4").write_bytes(a)
        (Path(scratch) / "b.mp4").write_bytes(b)
        u, v = read_mp4_frames(Path(scratch) / "a.mp4"), read_mp4_frames(Path(scratch) / "b.mp4")
    for number, (x, y) in enumerate(zip(u, v)):
        if not np.array_equal(x, y):
            return {"type": "mp4", "first_differing_frame": number}
    return {"type": "mp4", "decoded_frames_equal": len(u) == len(v), "frames": [len(u), len(v)],
            "note": "only the container bytes differ"}


EXPLAINERS = {  # file suffix -> what differs, in that file type's own terms
    ".json": explain_json, ".jsonl": explain_jsonl, ".csv": explain_csv,
    ".npz": explain_arrays, ".npy": explain_arrays, ".cten": explain_arrays, ".sten": explain_arrays,
    ".png": explain_image, ".gif": explain_image, ".wav": explain_wav, ".mp4": explain_mp4,
}


def explain(path: Path, a: bytes, b: bytes) -> dict:
    """What differs between two versions of one artifact: by its type, else its first differing byte."""
    explainer = EXPLAINERS.get(path.suffix.lower())
    fallback = {}
    if explainer is not None:
        try:
            return explainer(path, a, b)
        except Exception as exc:  # a file that does not parse as its type: compare bytes
            fallback = {"parse_error": f"{type(exc).__name__}: {exc}"}
    offset = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return {"type": "bytes", "first_differing_byte": offset, "sizes": [len(a), len(b)], **fallback}


def explain_all(first: Path, second: Path, paths: list) -> list:
    out = []
    for relative in paths:
        x, y = first / relative, second / relative
        if not x.exists() or not y.exists():
            out.append({"artifact": relative, "only_in": "first" if x.exists() else "second"})
            continue
        out.append({"artifact": relative, **explain(x, x.read_bytes(), y.read_bytes())})
    return out


# --------------------------------------------------------------------------
# Bisecting the variations
# --------------------------------------------------------------------------

def bisect(commands, varied: list, base: Path, scratch: Path, epoch: str, log) -> dict:
    """Name one variation that alone makes the runs differ (or say that none does alone)."""
    probes = {"count": 0}

    def differs(subset: list) -> bool:
        probes["count"] += 1
        depth = "p" if "path" not in subset else "probe-with-a-much-longer-path/and/deeper"
        workspace = scratch / f"{depth}{probes['count']}" / "ws"
        run_pipeline(commands, workspace, set(subset), epoch, log)
        found = bool(differing(base, workspace))
        log.info("bisect_probe", variations=subset, differs=found)
        shutil.rmtree(workspace.parent, ignore_errors=True)
        return found

    candidates = list(varied)
    while len(candidates) > 1:
        half = candidates[: len(candidates) // 2]
        candidates = half if differs(half) else candidates[len(candidates) // 2:]
    if candidates and differs(candidates):
        return {"cause": candidates[0], "probes": probes["count"]}
    return {"cause": None, "probes": probes["count"], "note": "no single variation reproduces the difference"}


# --------------------------------------------------------------------------
# The spec's pass/fail table
# --------------------------------------------------------------------------

def spec_table(first: Path, second: Path, identical: bool) -> dict:
    def newest_report(workspace, prefix):
        reports = sorted((workspace / RESULTS).glob(f"{prefix}_*.json"))
        return read_json(reports[-1]) if reports else None

    table = {"hash_reproducibility": {"pass": identical}}
    env = [workspace / "env/environment.json" for workspace in (first, second)]
    if all(p.exists() for p in env):
        hashes = [read_json(p)["env_hash"] for p in env]
        table["environment_parity"] = {"pass": hashes[0] == hashes[1], "env_hash": hashes[0]}
    splits = [sorted((w / RESULTS).glob("dataset_splitter_*/split.json")) for w in (first, second)]
    if all(splits):
        table["dataset_split_determinism"] = {"pass": splits[0][-1].read_bytes() == splits[1][-1].read_bytes()}
    drift = [newest_report(w, "tensor_visualizer") for w in (first, second)]
    if all(drift):
        worst = max(report["results"]["max_abs_drift_db"] for report in drift)
        table["visualization_energy_drift"] = {"pass": worst <= 0.5, "max_abs_drift_db": worst}
    return table


def verify_twice(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    varied = [v for v in (args.vary or VARIATIONS) if v not in args.no_vary]
    if os.name != "posix" and "umask" in varied:
        varied.remove("umask")
    if "locale" in varied and other_locale() is None:
        log.warning("locale_not_varied", note="this machine has no second UTF-8 locale")
        varied.remove("locale")
    commands = args.command or [
        f"{shlex.quote(sys.executable)} {shlex.quote(str(REPO_ROOT / 'scripts/orchestration/pipeline.py'))} "
        f"{phase} --workspace {{workspace}}" for phase in args.phases.split(",") if phase.strip()]
    if not commands:
        raise InputError("nothing to run: give --phases (e.g. phase5,phase7) or --command", value=args.phases)
    for command in commands:
        command_argv(command, Path("."))  # a command that cannot be split is bad input before any run
    epoch = str(timestamps.source_date_epoch() or DEFAULT_EPOCH)
    scratch = Path(args.keep).absolute() if args.keep else Path(tempfile.mkdtemp(prefix="crh-verify-"))
    try:
        first = scratch / "a" / "ws"
        second = scratch / ("second-run-at-another-longer-path/ws" if "path" in varied else "b/ws")
        timer = timestamps.Stopwatch()
        run_pipeline(commands, first, set(), epoch, log)
        one_run = timer.elapsed()
        run_pipeline(commands, second, set(varied), epoch, log)
        paths = differing(first, second)
        manifests_equal = (first / MANIFEST).exists() and \
            (first / MANIFEST).read_bytes() == (second / MANIFEST).read_bytes()
        explained = explain_all(first, second, paths)
        cause = None
        if paths and not args.no_bisect and varied:
            cause = bisect(commands, varied, first, scratch, epoch, log)
        artifacts = len(registry_of(first))
        table = spec_table(first, second, not paths and manifests_equal)
        log.info("timing", one_run_seconds=round(one_run, 2), total_seconds=round(timer.elapsed(), 2))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    identical = not paths and manifests_equal
    with RunRecorder("verify", workspace=workspace, log=log,
                     config={"commands": [c.replace(str(REPO_ROOT), "<repo>") for c in commands],
                             "varied": varied, "source_date_epoch": epoch}) as record:
        record.results.update(identical=identical, artifacts=artifacts, differing=explained,
                              manifests_equal=manifests_equal, bisect=cause, spec_table=table,
                              settings={"base": {k: (oct(v) if k == "umask" else v) for k, v in BASE.items()},
                                        "varied": varied})
        if not identical:
            record.status = "check_failed"
    if not identical:
        raise CheckFailed(f"{len(paths)} artifacts differ between the runs", first=explained[0] if explained else None,
                          cause=(cause or {}).get("cause"), report=record.report)
    log.info("identical", artifacts=artifacts, varied=varied, spec_table=table,
             report=record.report)
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "verify", doc=__doc__,
        description="Run the pipeline twice (the second run varied), compare every artifact, explain and\n"
                    "bisect any difference.",
        example="python scripts/orchestration/verify.py --phases phase5,phase7",
    )
    parser.add_argument("--phases", default="phase5,phase6,phase7,phase8,phase9", help="phases to run")
    parser.add_argument("--command", action="append", default=[], metavar="CMD",
                        help="run CMD instead of the phases ({workspace} is filled in; repeatable)")
    parser.add_argument("--vary", action="append", default=[], choices=VARIATIONS,
                        help="vary only these (repeatable; default: all)")
    parser.add_argument("--no-vary", action="append", default=[], choices=VARIATIONS, help="do not vary this")
    parser.add_argument("--no-bisect", action="store_true", help="do not bisect a difference")
    parser.add_argument("--keep", metavar="DIR", help="keep the two workspaces under DIR")
    cli.add_common_options(parser)
    return cli.run(parser, verify_twice, argv)


if __name__ == "__main__":
    sys.exit(main())
