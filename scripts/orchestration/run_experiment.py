"""Launch a reproducible experiment run: the built-in reference Dreamer + Learner, or yours.

    python scripts/orchestration/run_experiment.py --config trainer/config/phase7.toml \\
        --seeds scripts/utils/seeds.toml --logdir experiments/results/run_2025_10_31

The config (TOML/JSON/YAML, ``--set key.sub=value`` overrides) is validated
first: a missing key or a wrong type names the key and the expected type.
``experiment.kind = "reference"`` runs ``reference_experiment.py`` into the
log folder; ``"external"`` runs ``external.command`` with ``{config}`` (the
resolved config, written as ``config.json`` in the log folder), ``{seed}``
and ``{logdir}`` filled in, and captures its output through the log
converter into ``output.jsonl``.

The run is recorded (design.md run records) with the resolved config and
its hash, the seeds, the environment hash, the backend, the git commit and
whether the tree was dirty, and the command line (workspace paths made
relative); every file in the log folder is registered.

A log folder that is not empty is refused unless ``--resume``, which
continues from the last checkpoint and ends with the same bytes as an
uninterrupted run. SIGINT or SIGTERM stops the run between cycles; it is
recorded with status ``interrupted`` and exits 130 (SIGINT) or 143 (SIGTERM).
``--dry-run`` validates the config and seeds and prints the plan, writing
nothing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from scripts.utils import cli
from scripts.utils.arrays import BACKENDS, array_module
from scripts.utils.config_loader import load_config
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.jsonio import atomic_output, atomic_write_bytes, canonical_json, json_line
from scripts.utils.run_records import REPO_ROOT, RunRecorder, relative_to_workspace, resolve_workspace
from scripts.utils.seed_manager import SeedManager

DEFAULT_CONFIG = "trainer/config/phase7.toml"
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


def git_state() -> dict:
    """The commit of the scripts and whether their tree has uncommitted changes (None without git)."""
    try:  # one call: the branch header holds the commit, the other lines the changes
        status = subprocess.run(["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if status.returncode != 0:
        return {"commit": None, "dirty": None}
    lines = status.stdout.splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    return {"commit": None if commit in (None, "(initial)") else commit,
            "dirty": any(not line.startswith("#") for line in lines)}


def portable_argv(argv, workspace: Path) -> list:
    """The command line with absolute paths inside the workspace made relative (no host paths in records)."""
    out = []
    for arg in argv:
        path = Path(arg)
        if path.is_absolute():
            try:
                arg = relative_to_workspace(workspace, path)
            except InputError:
                arg = "<outside workspace>/" + path.name
        out.append(arg)
    return out


def plan(config: dict, logdir_name: str, backend: str) -> dict:
    exp = config["experiment"]
    if exp["kind"] == "external":
        return {"kind": "external", "logdir": logdir_name, "command": config["external"]["command"],
                "outputs": ["config.json", "output.jsonl"]}
    cycles, every = exp["cycles"], exp["checkpoint_every"]
    checkpoints = sorted({c for c in range(every, cycles + 1, every)} | {cycles})
    return {"kind": "reference", "logdir": logdir_name, "phase": config["phase"], "cycles": cycles,
            "checkpoint_every": every, "checkpoints": checkpoints, "backend": backend,
            "data_source": config["data"]["source"],
            "outputs": ["plan.json", "metrics.csv", "metrics.jsonl", "dreams/cycle_NNNN.cten",
                        "bridge/cycle_NNNN.sten", "checkpoints/cycle_NNNN.npz"]}


def run_external(config: dict, logdir: Path, seed: int, log) -> dict:
    """Run the configured command; its stdout and stderr become JSON lines in output.jsonl."""
    from scripts.utils.log_formatter import convert_lines

    config_path = logdir / "config.json"
    atomic_write_bytes(config_path, canonical_json(config))
    fill = {"config": str(config_path), "seed": str(seed), "logdir": str(logdir)}
    try:
        command = [part.format(**fill) for part in config["external"]["command"]]
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"external.command has an unknown placeholder: {exc}", key="external.command")
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="backslashreplace", cwd=logdir)
    except OSError as exc:
        raise InputError(f"cannot start the external command: {exc.strerror}", file=command[0], key="external.command")
    records = 0
    with atomic_output(logdir / "output.jsonl") as sink:
        for record in convert_lines(process.stdout):
            sink.write(json_line(record))
            records += 1
    code = process.wait()
    log.info("external_done", exit_code=code, records=records)
    return {"exit_code": code, "output_records": records}


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "run_experiment",
        description="Run the reference Dreamer + Learner (or an external command) reproducibly into a log folder.",
        example="python scripts/orchestration/run_experiment.py --config trainer/config/phase7.toml "
                "--seeds scripts/utils/seeds.toml --logdir experiments/results/run_2025_10_31",
    )
    parser.add_argument("--config", default=str(REPO_ROOT / DEFAULT_CONFIG), help="experiment config (.toml/.json/.yaml)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="override a config key (repeatable)")
    cli.add_seeds_option(parser)
    parser.add_argument("--logdir", metavar="DIR", help="log folder (default: experiments/results/<run id>/)")
    parser.add_argument("--backend", choices=BACKENDS, help="override experiment.backend")
    parser.add_argument("--resume", action="store_true", help="continue a run in a non-empty log folder")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; write nothing")
    cli.add_common_options(parser)

    def run(args, log):
        from scripts.orchestration import reference_experiment as experiment

        workspace = resolve_workspace(args.workspace)
        config, config_hash = load_config(args.config, args.overrides, log)
        experiment.validate_config(config, args.config)
        seeds = SeedManager.from_file(args.seeds)
        backend = args.backend or config.get("experiment", {}).get("backend", "numpy")
        if config["experiment"]["kind"] == "reference":
            _, backend = array_module(backend)  # CuPy asked for without a GPU: exit 2 here
        logdir = Path(args.logdir).absolute() if args.logdir else None
        logdir_name = relative_to_workspace(workspace, logdir) if logdir else "experiments/results/<run id>"
        the_plan = plan(config, logdir_name, backend)
        if args.dry_run:
            cli.print_json({"plan": the_plan, "config_sha256": config_hash, "seeds": seeds.summary()})
            return 0
        if logdir is not None:
            if logdir.exists() and not logdir.is_dir():
                raise InputError("the log folder is a file", file=args.logdir)
            if logdir.is_dir() and any(logdir.iterdir()) and not args.resume:
                raise InputError("the log folder is not empty: use --resume to continue it, or another folder",
                                 file=args.logdir)
            try:
                logdir.mkdir(parents=True, exist_ok=True)
                probe = logdir / ".write-probe"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise InputError(f"cannot write the log folder: {exc.strerror}", file=args.logdir)

        received = {"signal": None}

        def on_signal(number, frame):
            received["signal"] = number
            log.warning("stopping", signal=signal.Signals(number).name, note="finishing the current cycle")

        previous = {sig: signal.signal(sig, on_signal) for sig in EXIT_SIGNAL}
        try:
            extra = {"backend": backend, "git": git_state(), "argv": portable_argv(sys.argv[1:] if argv is None else argv,
                                                                                    workspace), "plan": the_plan}
            with RunRecorder("run_experiment", workspace=workspace, seeds=seeds, config=config, log=log,
                             extra=extra) as record:
                target = logdir or record.output_dir
                atomic_write_bytes(target / "plan.json", canonical_json(the_plan))
                if config["experiment"]["kind"] == "external":
                    summary = run_external(config, target, seeds.seed("external"), log)
                    if summary["exit_code"] != 0:
                        record.status = "failed"
                else:
                    summary = experiment.run_reference(workspace, target, config, seeds, backend, log, args.resume,
                                                       should_stop=lambda: received["signal"] is not None)
                    if summary["stopped"]:
                        record.status = "interrupted"
                if logdir is not None:
                    for path in sorted(p for p in logdir.rglob("*") if p.is_file()):
                        record.claim_output(path)
                record.results.update(summary, logdir=relative_to_workspace(workspace, target)
                                      if logdir else f"experiments/results/{record.run_id}")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if record.status == "failed":
            raise CheckFailed("the external command failed", exit_code=summary["exit_code"],
                              report=f"experiments/results/{record.run_id}.json")
        if record.status == "interrupted":
            log.info("interrupted", run_id=record.run_id, cycles_done=summary["cycles_done"],
                     resume=f"--resume --logdir {args.logdir}" if args.logdir else "give --logdir to resume")
            return EXIT_SIGNAL[received["signal"]]
        log.info("finished", run_id=record.run_id, **{k: summary[k] for k in summary if k != "final"})
        return 0

    return cli.run(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
