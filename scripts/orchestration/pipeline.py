"""The phase pipeline behind ``make phase5`` ... ``make phase9``.

    python scripts/orchestration/pipeline.py phase7
    python scripts/orchestration/pipeline.py phase5 --data /path/to/dicoms --workspace /tmp/ws

Phases (the spec's phase table), each building on the steps before it:

* phase5, phase6 (Dreamer + Learner testing): sample data (unless ``--data``)
  -> metadata -> split -> preprocess -> hash registry -> run_experiment with
  ``trainer/config/phaseN.toml`` into ``experiments/results/phaseN/`` ->
  tensor_visualizer. Outputs: loss/coherence CSVs, renders.
* phase7 (Bridge & Sonic Encoding): the same chain for phase 7, then
  dream_animation and metric_plotter: FFT and loss/coherence plots, GIF and
  MP4 replay, the WAV and its spectrogram.
* phase8 (Full System Validation): a phase-8 run, moved by archive_results
  into ``experiments/results/archive/phase8/`` with a deterministic
  ``phase8.tar.gz``, the archive re-verified, and hash_integrity verifying
  the archive folder and the data against the registry.
* phase9 (Deployment Tooling): env_check's snapshot in ``env/`` and every
  phase config resolved by config_loader into ``env/config_phaseN.json``.

Every step is a real run of its script, recorded like any other. A step is
skipped when its fingerprint (the command, the contents of its configs, the
seeds, the data listing, the code, and the fingerprints of the steps it
depends on) matches the last successful run and its outputs are there; a
changed input or config redoes that step and everything after it.
The fingerprints live in ``meta/chronicle/pipeline_state.json``.

The last JSON record is a summary of what was produced and where; on a
terminal a plain table follows on stderr. Bad input (a missing or empty
``--data`` folder, an unknown phase, an unwritable workspace) is exit 2
before any work starts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import orjson

from scripts.utils import cli
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.jsonio import atomic_write_bytes, canonical_json, read_json
from scripts.utils.run_records import REPO_ROOT, ensure_layout, relative_to_workspace, resolve_workspace

PHASES = ("phase5", "phase6", "phase7", "phase8", "phase9")
STATE = "meta/chronicle/pipeline_state.json"
SEEDS = REPO_ROOT / "scripts/utils/seeds.toml"


def script(category: str, name: str) -> str:
    return str(REPO_ROOT / "scripts" / category / f"{name}.py")


def code_fingerprint() -> str:
    """Changes whenever a script or config of the project changes."""
    digest = hashlib.sha256()
    for folder in ("scripts", "trainer/config"):
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".toml"):
                digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def tree_fingerprint(folder: Path) -> str:
    """The names, sizes and contents' SHA-256 of every file under ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def steps_for(phase: str, data: str, external_data: bool) -> list:
    """``(name, argv, depends on, output checked)`` for each step of a phase, in order."""
    number = phase[-1]
    config = f"trainer/config/phase{number}.toml"
    if phase == "phase9":  # deployment tooling needs no data
        steps = [("env_check", [script("orchestration", "env_check")], [], "env/environment.json")]
        for n in "56789":
            steps.append((f"config_phase{n}", [script("utils", "config_loader"),
                                               str(REPO_ROOT / f"trainer/config/phase{n}.toml")], [],
                          f"env/config_phase{n}.json"))
        return steps
    steps = [] if external_data else [("sample", [script("data_tools", "sample_data")], [], data)]
    base = [] if external_data else ["sample"]
    steps += [
        ("metadata", [script("data_tools", "metadata_extractor"), data], base, None),
        ("split", [script("data_tools", "dataset_splitter")], ["metadata"], None),
        ("preprocess", [script("data_tools", "image_preprocessor"), data], base, None),
        ("hash", [script("data_tools", "hash_integrity"), "hash", data], base, None),
    ]
    data_steps = ["metadata", "split", "preprocess", "hash"]
    if phase in ("phase5", "phase6", "phase7"):
        logdir = f"experiments/results/{phase}"
        steps += [
            (f"experiment_{phase}", [script("orchestration", "run_experiment"), "--config", str(REPO_ROOT / config),
                                     "--seeds", str(SEEDS), "--logdir", logdir], data_steps, f"{logdir}/plan.json"),
            (f"render_{phase}", [script("visualization", "tensor_visualizer"), logdir], [f"experiment_{phase}"], None),
        ]
        if phase == "phase7":
            steps += [
                ("animate_phase7", [script("visualization", "dream_animation"), logdir], ["experiment_phase7"], None),
                ("plot_phase7", [script("visualization", "metric_plotter"), logdir], ["experiment_phase7"], None),
            ]
    elif phase == "phase8":
        steps += [
            ("experiment_phase8", [script("orchestration", "run_experiment"), "--config", str(REPO_ROOT / config),
                                   "--seeds", str(SEEDS), "--logdir", "experiments/results/phase8"], data_steps, None),
            ("archive_phase8", [script("orchestration", "archive_results"), "experiments/results/phase8",
                                "--archive", "tar.gz"], ["experiment_phase8"],
             "experiments/results/archive/phase8.tar.gz"),
            ("verify_archive_phase8", [script("orchestration", "archive_results"), "--verify",
                                       "experiments/results/archive/phase8.tar.gz"], ["archive_phase8"], None),
            ("verify_hashes_phase8", [script("data_tools", "hash_integrity"), "verify",
                                      "experiments/results/archive/phase8", data], ["archive_phase8", "hash"], None),
        ]
    return steps


def run_step(name: str, argv: list, workspace: Path, log) -> dict:
    """Run one step's script; return what it recorded (run id, report) or raise."""
    query = argv[0].endswith("config_loader.py")  # prints to stdout; the pipeline records what it writes
    command = [sys.executable, *argv] + ([] if query else ["--workspace", str(workspace)])
    result = subprocess.run(command, cwd=workspace, capture_output=True)
    records = []
    for line in result.stderr.splitlines():
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            records.append({"event": "raw", "text": line.decode(errors="replace")})
    if query and result.returncode == 0:
        from scripts.utils.run_records import RunRecorder

        resolved = orjson.loads(result.stdout)
        resolved["file"] = relative_or_name(resolved["file"], workspace)
        with RunRecorder("config_loader", workspace=workspace, config={"file": resolved["file"]}) as record:
            atomic_write_bytes(record.claim_output(workspace / f"env/{name}.json"), canonical_json(resolved))
        return {"run_id": record.run_id, "report": f"experiments/results/{record.run_id}.json"}
    if result.returncode != 0:
        error = next((r for r in records if r.get("level") == "error"), {"error": "no error record"})
        raise CheckFailed(f"step {name!r} failed (exit {result.returncode})", step=name,
                          exit_code=result.returncode, cause=error)
    recorded = next((r for r in records if r.get("event") == "run_recorded"), None)
    return {"run_id": recorded["run_id"] if recorded else None, "report": recorded["report"] if recorded else None}


def run_phase(phase: str, workspace: Path, data_arg: str | None, log, force: bool = False) -> list:
    if phase not in PHASES:
        raise InputError(f"unknown phase {phase!r}: choose one of {', '.join(PHASES)}", value=phase)
    external = data_arg is not None
    if external:
        data_path = Path(data_arg).absolute()
        if not data_path.is_dir():
            raise InputError("DATA must be a folder", file=data_arg)
        if not any(p.is_file() for p in data_path.rglob("*")):
            raise InputError("DATA folder is empty", file=data_arg)
        data = str(data_path)
    else:
        data = "data/sample"
    ensure_layout(workspace)
    state_path = workspace / STATE
    state = read_json(state_path) if state_path.exists() else {}
    code = code_fingerprint()
    seeds = hashlib.sha256(SEEDS.read_bytes()).hexdigest()
    data_fingerprint = tree_fingerprint(Path(data)) if external else "sample"
    fingerprints, summary, redone = {}, [], set()
    for name, argv, depends, output in steps_for(phase, data, external):
        fingerprint = hashlib.sha256(canonical_json({
            "argv": [relative_or_name(a, workspace) for a in argv], "code": code, "seeds": seeds,
            "data": data_fingerprint, "after": [fingerprints.get(d) for d in depends],
        })).hexdigest()
        fingerprints[name] = fingerprint
        previous = state.get(name)
        output_ok = output is None or (workspace / output).exists()
        if not force and previous and previous["fingerprint"] == fingerprint and output_ok \
                and not redone.intersection(depends) \
                and (previous.get("report") is None or (workspace / previous["report"]).exists()):
            summary.append({"step": name, "status": "up to date", "report": previous.get("report")})
            continue
        for folder in _fresh_folders(name, argv, workspace):
            shutil.rmtree(folder, ignore_errors=True)  # a redone step starts from an empty log folder
        log.info("step", step=name)
        done = run_step(name, argv, workspace, log)
        state[name] = {"fingerprint": fingerprint, "report": done["report"]}
        atomic_write_bytes(state_path, canonical_json(state))
        redone.add(name)
        summary.append({"step": name, "status": "done", "report": done["report"]})
    return summary


def _fresh_folders(name: str, argv: list, workspace: Path) -> list:
    if name.startswith("experiment_"):
        logdir = argv[argv.index("--logdir") + 1]
        return [workspace / logdir]
    if name.startswith("archive_"):
        return [workspace / "experiments/results/archive" / name.split("_", 1)[1]]
    return []


def relative_or_name(arg: str, workspace: Path) -> str:
    path = Path(arg)
    if not path.is_absolute():
        return arg
    for root in (REPO_ROOT, workspace):
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return path.name


PRODUCES = {
    "phase5": "loss/coherence CSVs (experiments/results/phase5/metrics.csv) and renders (tensor_visualizer_*)",
    "phase6": "loss/coherence CSVs (experiments/results/phase6/metrics.csv) and renders (tensor_visualizer_*)",
    "phase7": "experiments/results/phase7/ (metrics, dreams, bridge); FFT and curve plots (metric_plotter_*); "
              "replay.gif, replay.mp4, sonification.wav, spectrogram.png (dream_animation_*); renders",
    "phase8": "experiments/results/archive/phase8/ and phase8.tar.gz, verified",
    "phase9": "env/environment.json and env/config_phase5..9.json",
}


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "pipeline",
        description="Run a phase of the pipeline (phase5 ... phase9) on the sample data or --data.",
        example="python scripts/orchestration/pipeline.py phase7",
    )
    parser.add_argument("phase", help=", ".join(PHASES))
    parser.add_argument("--data", metavar="DIR", default=None, help="your DICOM/PNG folder (default: the sample data)")
    parser.add_argument("--force", action="store_true", help="redo every step")
    cli.add_common_options(parser)

    def run(args, log):
        workspace = resolve_workspace(args.workspace)
        summary = run_phase(args.phase, workspace, args.data or None, log, args.force)
        reports = [item["report"] for item in summary if item["report"]]
        log.info("summary", phase=args.phase, workspace=str(workspace), produced=PRODUCES[args.phase],
                 steps=summary, reports=len(reports))
        if sys.stderr.isatty():
            width = max(len(item["step"]) for item in summary)
            lines = [f"{args.phase}: {PRODUCES[args.phase]}", ""]
            lines += [f"  {item['step']:<{width}}  {item['status']:<10}  {item['report'] or ''}" for item in summary]
            sys.stderr.write("\n".join(lines) + "\n")
        return 0

    return cli.run(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
