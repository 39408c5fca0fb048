"""Launch a reproducible experiment run: the built-in reference Dreamer + Learner, or yours.

    python scripts/orchestration/run_experiment.py --config trainer/config/phase7.toml \\
        --seeds scripts/utils/seeds.toml --logdir experiments/results/run_2025_10_31
    python scripts/orchestration/run_experiment.py --config trainer/config/phase5.toml \\
        --sweep sweep.toml --scheduler local:2

The config (TOML/JSON/YAML, ``--set key.sub=value`` overrides) is validated
first: a missing key or a wrong type names the key and the expected type.
``experiment.kind = "reference"`` runs ``reference_experiment.py`` into the
log folder; ``"external"`` runs ``external.command`` in the log folder with
``{config}`` (``config.json``: the resolved config, written there),
``{seed}`` (the run's ``external`` seed stream, 0 .. 2**32-1, which NumPy,
scikit-learn and torch all take) and ``{logdir}`` (``.``) filled in, the same
text in every run and rerun, and captures its stdout and stderr through the
log converter into ``output.jsonl`` and ``stderr.jsonl``. Arguments naming a
file or folder relative to the config's folder (or ``--code-dir``) are given
as absolute paths. An external config needs no ``phase``. A command that fails
is exit 1 with its exit code and the last lines of its stderr and stdout
(``stderr_tail``, ``output_tail``), in the error record and the report.

The run is recorded (docs/design.md, run records) with the resolved config and
its hash, the seeds, the environment hash, the backend, the git commit and
whether the tree was dirty, and the command line (workspace paths made
relative; --workspace, --log-file, --quiet, --scheduler and --workers left out: they
change where a run executes, not what it computes); every file in the log
folder is registered. ``--seed N`` replaces the seeds file's base seed.

``--sweep SWEEP.toml`` runs a grid or list of configurations (seeds and
``--set`` overrides), each an ordinary recorded run byte-identical to the
same run launched alone, then writes a summary; ``--scheduler ADDRESS``
computes them on a Dask cluster (scripts/orchestration/sweep.py).

A log folder that is not empty is refused unless ``--resume``, which
continues from the last checkpoint and ends with the same bytes as an
uninterrupted run. SIGINT or SIGTERM stops the run between cycles; it is
recorded with status ``interrupted`` and exits 130 (SIGINT) or 143 (SIGTERM).
``--dry-run`` validates the config and seeds and prints the plan, writing
nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

import orjson

from scripts.orchestration.external_runs import (
    code_record,
    external_command,
    interpreter_environment,
)
from scripts.utils import cli, read_tracing
from scripts.utils.compute.environment import git_state
from scripts.utils.config.loading import config_sha256, load_config
from scripts.utils.config.schema import validate
from scripts.utils.config.seeds import SeedManager
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.formats.arrays import BACKENDS, array_module
from scripts.utils.formats.run_metrics import metrics_summary
from scripts.utils.jsonio import (
    atomic_output,
    atomic_write_bytes,
    canonical_json,
    remove_temps_under,
)
from scripts.utils.records.run_records import RunRecorder, portable_argv
from scripts.utils.workspace import REPO_ROOT, inside, relative_to_workspace, resolve_workspace

DEFAULT_CONFIG = "trainer/config/phase7.toml"
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


def plan(config: dict, logdir_name: str, backend: str) -> dict:
    exp = config["experiment"]
    if exp["kind"] == "external":
        return {
            "kind": "external",
            "logdir": logdir_name,
            "command": config["external"]["command"],
            "outputs": ["plan.json", "config.json", "output.jsonl", "stderr.jsonl"],
        }
    cycles, every = exp["cycles"], exp["checkpoint_every"]
    checkpoints = sorted({c for c in range(every, cycles + 1, every)} | {cycles})
    return {
        "kind": "reference",
        "logdir": logdir_name,
        "phase": config["phase"],
        "cycles": cycles,
        "checkpoint_every": every,
        "checkpoints": checkpoints,
        "backend": backend,
        "data_source": config["data"]["source"],
        "outputs": [
            "plan.json",
            "metrics.csv",
            "metrics.jsonl",
            "dreams/cycle_NNNN.cten",
            "bridge/cycle_NNNN.sten",
            "checkpoints/cycle_NNNN.npz",
        ],
    }


EXTERNAL_SEED_RANGE = (
    2**32
)  # {seed}: what numpy's legacy seed, random_state and torch.manual_seed all take
OUTPUT_TAIL_LINES = 20


def external_seed(seeds: SeedManager) -> int:
    """The seed an external command gets as {seed}: the run's "external" stream, reduced to 0 ..
    2**32-1."""
    return seeds.seed("external") % EXTERNAL_SEED_RANGE


def record_external(
    config: dict, seed: int, command: list, code_dir: Path, workspace: Path, logdir: Path
) -> dict:
    """The command (as the config words it, placeholders filled), its own code and its
    interpreter's environment (external_runs.py), and the code folder when it lies in the
    workspace: the run's record holds no absolute path."""
    found = {
        "command": external_command(config, seed),
        "code": code_record(command, code_dir, config["external"].get("code", []), logdir),
        "environment": interpreter_environment(
            command, command_environment(command, code_dir), logdir
        ),
    }
    if inside(workspace, code_dir):
        found["code_dir"] = relative_to_workspace(workspace, code_dir)
    return found


def command_environment(command: list, code_dir: Path) -> dict | None:
    """The environment the command runs in: ours, plus the config's folder on PYTHONPATH for
    ``python -m pkg.mod`` (the command runs in its log folder, where the project's packages are
    not); None (unchanged) otherwise."""
    if "-m" not in command[1:]:
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_dir), env.get("PYTHONPATH", "")) if p)
    return env


def traced_environment(env: dict | None, reads_folder) -> dict | None:
    """``env`` (None: ours) with read tracing on, when there is a folder to trace into."""
    if reads_folder is None:
        return env
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(read_tracing.SITE_FOLDER), env.get("PYTHONPATH", "")) if p
    )
    env[read_tracing.READS_ENV] = str(reads_folder)
    return env


def run_external(
    config: dict, logdir: Path, command: list, code_dir: Path, log, reads_folder=None
) -> dict:
    """Run ``command`` (external_command's filling) in its log folder; its stdout and its stderr
    become JSON lines in output.jsonl and stderr.jsonl (two files, so that neither depends on how
    the two streams interleave). The placeholders are the same text in every run and rerun: {config}
    is ``config.json`` and {logdir} is ``.`` (the command's working directory is its log folder),
    {seed} a number below 2**32. With ``reads_folder``, a Python command's reads are traced
    into a folder of its own there (read_tracing's ``sitecustomize`` first on its
    ``PYTHONPATH``), and the summary's ``command_traced`` says whether any of its processes
    was: not for a command that runs no Python (bookkeeping, not for the report).
    """
    from scripts.utils.formats.log_convert import convert_stream

    atomic_write_bytes(logdir / "config.json", canonical_json(config))
    command_reads = None
    if reads_folder is not None:
        command_reads = Path(reads_folder) / "command"
        command_reads.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryFile() as stderr
    ):  # nameless: nothing is left behind if this process is killed
        try:
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=logdir,
                env=traced_environment(command_environment(command, code_dir), command_reads),
            )
        except OSError as exc:
            raise InputError(
                f"cannot start the external command: {exc.strerror}",
                file=command[0],
                key="external.command",
            )
        with atomic_output(
            logdir / "output.jsonl"
        ) as sink:  # bytes as written: bars' carriage returns kept
            records = convert_stream(process.stdout, sink)["records"]
        code = process.wait()
        stderr.seek(0)
        with atomic_output(logdir / "stderr.jsonl") as sink:
            error_records = convert_stream(stderr, sink)["records"]
    log.info("external_done", exit_code=code, records=records, stderr_records=error_records)
    summary = {"exit_code": code, "output_records": records, "stderr_records": error_records}
    if command_reads is not None:
        summary["command_traced"] = any(command_reads.glob("*.txt"))
    if code != 0:
        summary["stderr_tail"] = output_tail(logdir / "stderr.jsonl")
        summary["output_tail"] = output_tail(logdir / "output.jsonl")
    return summary


def output_tail(path: Path, lines: int = OUTPUT_TAIL_LINES) -> list:
    """The last lines the command printed to one stream, from the tail of its JSON-lines file."""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - (256 << 10)))
        records = handle.read().splitlines()[-lines:]
    tail = []
    for line in records:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            text = (
                record.get("raw")
                or record.get("msg")
                or record.get("message")
                or canonical_json(record).decode()
            )
            tail.append(str(text)[:500])
    return tail


def prepare_logdir(
    logdir: Path | None, given: str | None, resume: bool, hint: str = "use --resume to continue it"
) -> None:
    """Refuse a log folder that is a file, or not empty without ``resume``; check it can be
    written."""
    if logdir is None:
        return
    if logdir.exists() and not logdir.is_dir():
        raise InputError("the log folder is a file", file=given)
    if logdir.is_dir() and any(logdir.iterdir()) and not resume:
        raise InputError(f"the log folder is not empty: {hint}, or give another folder", file=given)
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        probe = logdir / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the log folder: {exc.strerror}", file=given)


def resolve_backend(config: dict, backend_arg: str | None) -> str:
    backend = backend_arg or config.get("experiment", {}).get("backend", "numpy")
    if config["experiment"]["kind"] == "reference":
        _, backend = array_module(backend)  # CuPy asked for without a GPU: exit 2 here
    return backend


def launch(
    workspace: Path,
    config: dict,
    seeds: SeedManager,
    backend: str,
    logdir: Path | None,
    argv_record: list,
    log,
    resume: bool = False,
    should_stop=lambda: False,
    computed: dict | None = None,
    code_dir: Path | None = None,
):
    """One recorded run, as one ``run_experiment`` call makes it: ``(record, summary)``.

    ``code_dir`` (``code_folder``) anchors an external command's relative paths (default: the
    current folder).

    ``computed`` is the work of ``sweep.compute_member`` done elsewhere (a
    cluster worker): its files are written into the log folder and recorded
    exactly as if they had been computed here.
    """
    from scripts.orchestration import reference_experiment as experiment

    logdir_name = (
        relative_to_workspace(workspace, logdir) if logdir else "experiments/results/<run id>"
    )
    the_plan = plan(config, logdir_name, backend)
    extra = {
        "backend": backend,
        "git": git_state(),
        "argv": portable_argv(argv_record, workspace),
        "plan": the_plan,
    }
    if logdir is not None and resume:
        remove_temps_under(logdir)  # a killed writer's leftovers are no outputs
    with RunRecorder(
        "run_experiment", workspace=workspace, seeds=seeds, config=config, log=log, extra=extra
    ) as record:
        target = logdir or record.output_dir
        # the log folder's name stays out of the file: the same run in another folder writes the
        # same bytes
        atomic_write_bytes(
            target / "plan.json",
            canonical_json({k: v for k, v in the_plan.items() if k != "logdir"}),
        )
        if computed is not None:
            for name, data in computed["files"].items():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target / name, data)
            seeds.used.update(computed["seeds_used"])
            summary = computed["summary"]
        elif config["experiment"]["kind"] == "external":
            code_dir = (code_dir or Path.cwd()).resolve()
            command = external_command(config, external_seed(seeds), code_dir)
            record.extra["external"] = record_external(
                config, external_seed(seeds), command, code_dir, workspace, target
            )
            summary = run_external(config, target, command, code_dir, log, record.reads_folder)
            summary.update(
                metrics_summary(
                    target, config["external"].get("metrics"), config["external"].get("goals")
                )
            )
            if summary["exit_code"] != 0:
                record.status = "failed"
        else:
            summary = experiment.run_reference(
                workspace, target, config, seeds, backend, log, resume, should_stop=should_stop
            )
            if summary["stopped"]:
                record.status = "interrupted"
        for folder in summary.pop("read", []):
            record.consume(folder)
        record.command_traced = summary.pop("command_traced", None)
        if logdir is not None:
            for path in sorted(p for p in logdir.rglob("*") if p.is_file()):
                record.claim_output(path)
        record.results.update(
            summary, logdir=relative_to_workspace(workspace, target) if logdir else record.folder
        )
    return record, summary


class PreparedRun(NamedTuple):
    """One configuration of a sweep, checked and ready to run."""

    member: dict
    config: dict
    seeds: SeedManager
    backend: str
    logdir: Path | None


def code_folder(args) -> Path:
    """Where an external command's relative paths are taken from: --code-dir, else the config
    file's folder."""
    return Path(args.code_dir or Path(args.config).parent).resolve()


def load_run_config(path, overrides, log) -> dict:
    """The resolved config, validated against the experiment schema (config_schema.py): every
    problem, exit 2."""
    config, _ = load_config(path, overrides, log)
    validate(config, "experiment", source=path)
    if config["experiment"]["kind"] == "reference":
        from scripts.orchestration.reference_experiment import check_memory

        check_memory(config, source=path)
    return config


def load_seeds(path, base_seed: int | None) -> SeedManager:
    """The seeds file, its base seed replaced by ``base_seed`` when given (``--seed``)."""
    seeds = SeedManager.from_file(path)
    if base_seed is not None:
        seeds.base_seed = base_seed
    return seeds


def run_sweep(args, workspace: Path, log) -> int:
    """``--sweep``: every configuration of the sweep file as a recorded run, then the summary
    run."""
    from scripts.orchestration import sweep
    from scripts.utils.compute import cluster

    if args.dry_run:
        raise InputError("--dry-run applies to one run, not to --sweep")
    members = sweep.expand_sweep(args.sweep)
    base_logdir = Path(args.logdir).absolute() if args.logdir else None
    prepared = []
    for index, member in enumerate(members):  # everything is checked before the first run
        config = load_run_config(args.config, [*args.overrides, *member["overrides"]], log)
        if member["seed"] is not None:
            pinned = sorted(SeedManager.from_file(args.seeds).streams)
            if (
                pinned
            ):  # a pinned stream ignores the base seed: the sweep's seeds would give identical runs
                raise InputError(
                    "the sweep varies seeds, but the seeds file pins streams to fixed seeds: "
                    "remove them from [streams] or drop the sweep's seeds",
                    file=args.seeds or "scripts/utils/seeds.toml",
                    streams=pinned,
                )
        logdir = base_logdir / f"run_{index:03d}" if base_logdir else None
        prepare_logdir(logdir, str(logdir), args.resume, hint="--resume continues the sweep")
        prepared.append(
            PreparedRun(
                member,
                config,
                load_seeds(args.seeds, member["seed"] if member["seed"] is not None else args.seed),
                resolve_backend(config, args.backend),
                logdir,
            )
        )
    address = cluster.scheduler_address(args.scheduler)
    if address and any(run.config["experiment"]["kind"] != "reference" for run in prepared):
        raise InputError(
            "external experiments run only locally: drop --scheduler", key="experiment.kind"
        )
    log.info("sweep", runs=len(prepared), file=args.sweep, scheduler=address or "this process")
    rows = []
    argvs = [sweep.member_argv(args, run.member, run.logdir) for run in prepared]
    finished = (
        sweep.finished_runs(workspace, [portable_argv(argv, workspace) for argv in argvs])
        if args.resume
        else {}
    )
    todo = [run for index, run in enumerate(prepared) if index not in finished]
    summary_config = {
        "sweep": members,
        "config": Path(args.config).name,
        "overrides": args.overrides,
    }
    if finished:
        log.info("sweep_resumed", done=len(finished), to_run=len(todo))
        if not todo and sweep.finished_summary(workspace, summary_config):
            log.info(
                "sweep_done",
                runs=len(finished),
                note="every run and the summary were recorded already",
            )
            return 0
    with cluster.cluster_executor(address, log) as executor:
        computed = iter([None] * len(todo))
        if executor is not None:
            computed = executor.map(
                sweep.compute_member,
                [str(workspace)] * len(todo),
                [run.config for run in todo],
                [run.seeds.base_seed for run in todo],
                [run.seeds.streams for run in todo],
                [run.backend for run in todo],
            )
        for index, (run, argv) in enumerate(zip(prepared, argvs)):
            member, seeds = run.member, run.seeds
            if index in finished:  # recorded before the sweep was stopped: its run stands
                report = finished[index]
                rows.append(
                    {
                        "index": index,
                        "run_id": report["run_id"],
                        "seed": seeds.base_seed,
                        "overrides": member["overrides"],
                        "final": (report.get("results") or {}).get("final"),
                        "report": f"experiments/results/{report['run_id']}.json",
                        "command": [
                            "python",
                            "scripts/orchestration/run_experiment.py",
                            *report["argv"],
                        ],
                    }
                )
                continue
            work = next(computed)
            started = run.logdir is not None and any(
                run.logdir.iterdir()
            )  # the run the stop cut short
            resume = started and work is None and run.config["experiment"]["kind"] == "reference"
            if started and not resume:  # what cannot continue starts again from nothing
                shutil.rmtree(run.logdir)
                run.logdir.mkdir()
            record, summary = launch(
                workspace,
                run.config,
                seeds,
                run.backend,
                run.logdir,
                argv,
                log,
                resume=resume,
                computed=work,
                code_dir=code_folder(args),
            )
            if record.status == "failed":
                raise CheckFailed(
                    "the external command of a sweep run failed",
                    index=index,
                    exit_code=summary["exit_code"],
                    stderr_tail=summary.get("stderr_tail", []),
                    output_tail=summary.get("output_tail", []),
                    report=record.report,
                )
            rows.append(
                {
                    "index": index,
                    "run_id": record.run_id,
                    "seed": seeds.base_seed,
                    "overrides": member["overrides"],
                    "final": summary.get("final"),
                    "report": record.report,
                    "command": [
                        "python",
                        "scripts/orchestration/run_experiment.py",
                        *record.extra["argv"],
                    ],
                }
            )
            log.info("sweep_run", index=index, of=len(prepared), run_id=record.run_id)
    with RunRecorder(
        "run_experiment_sweep", workspace=workspace, log=log, config=summary_config
    ) as record:
        with atomic_output(record.output_path("summary.jsonl")) as handle:
            for row in rows:
                handle.write(canonical_json(row))
        with atomic_output(record.output_path("summary.csv")) as handle:
            handle.write(sweep.summary_csv(rows))
        aggregates = sweep.seed_aggregates(rows)
        if aggregates:
            with atomic_output(record.output_path("aggregates.jsonl")) as handle:
                for row in aggregates:
                    handle.write(canonical_json(row))
        record.results.update(
            runs=len(rows),
            run_ids=[row["run_id"] for row in rows],
            summary=f"{record.folder}/summary.jsonl",
            aggregates=aggregates,
        )
    log.info("sweep_done", runs=len(rows), summary=f"{record.folder}/summary.jsonl")
    return 0


def launch_from_args(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    if args.sweep:
        return run_sweep(args, workspace, log)
    config = load_run_config(args.config, args.overrides, log)
    seeds = load_seeds(args.seeds, args.seed)
    backend = resolve_backend(config, args.backend)
    logdir = Path(args.logdir).absolute() if args.logdir else None
    if args.dry_run:
        logdir_name = (
            relative_to_workspace(workspace, logdir) if logdir else "experiments/results/<run id>"
        )
        cli.print_json(
            {
                "plan": plan(config, logdir_name, backend),
                "config_sha256": config_sha256(config),
                "seeds": seeds.summary(),
            }
        )
        return 0
    fresh = logdir is not None and not (logdir.is_dir() and any(logdir.iterdir()))
    prepare_logdir(logdir, args.logdir, args.resume)

    received = {"signal": None}

    def on_signal(number, frame):
        received["signal"] = number
        log.warning(
            "stopping", signal=signal.Signals(number).name, note="finishing the current cycle"
        )

    previous = {sig: signal.signal(sig, on_signal) for sig in EXIT_SIGNAL}
    try:
        record, summary = launch(
            workspace,
            config,
            seeds,
            backend,
            logdir,
            args.argv,
            log,
            args.resume,
            should_stop=lambda: received["signal"] is not None,
            code_dir=code_folder(args),
        )
    except Exception:
        # nothing was recorded: a log folder this run made goes too, so the same command works again
        if fresh:
            shutil.rmtree(logdir, ignore_errors=True)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if record.status == "failed":
        raise CheckFailed(
            "the external command failed",
            exit_code=summary["exit_code"],
            stderr_tail=summary.get("stderr_tail", []),
            output_tail=summary.get("output_tail", []),
            report=record.report,
        )
    if record.status == "interrupted":
        log.info(
            "interrupted",
            run_id=record.run_id,
            cycles_done=summary["cycles_done"],
            resume=f"--resume --logdir {args.logdir}" if args.logdir else "give --logdir to resume",
        )
        return EXIT_SIGNAL[received["signal"]]
    log.info("finished", run_id=record.run_id, **{k: summary[k] for k in summary if k != "final"})
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "run_experiment",
        doc=__doc__,
        description="Run the reference Dreamer + Learner (or an external command) reproducibly "
        "into a log folder; --sweep runs a grid or list of them.",
        example="python scripts/orchestration/run_experiment.py --config "
        "trainer/config/phase7.toml "
        "--seeds scripts/utils/seeds.toml --logdir experiments/results/run_2025_10_31",
    )
    parser.add_argument(
        "--config",
        default=str(REPO_ROOT / DEFAULT_CONFIG),
        help="experiment config (.toml/.json/.yaml)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a config key (repeatable)",
    )
    cli.add_seeds_option(parser)
    parser.add_argument(
        "--seed",
        type=cli.bounded(int, 0, 2**63 - 1),
        default=None,
        help="use this base seed instead of the seeds file's (its [streams] still apply)",
    )
    parser.add_argument(
        "--logdir",
        metavar="DIR",
        help="log folder (default: experiments/results/<run id>/; "
        "with --sweep, the parent of run_NNN/ folders)",
    )
    parser.add_argument(
        "--code-dir",
        metavar="DIR",
        help="the folder an external command's relative paths (train.py, [external] code) are "
        "taken from (default: the config's folder; rerun gives the recorded one)",
    )
    parser.add_argument("--backend", choices=BACKENDS, help="override experiment.backend")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a run in a non-empty log folder, or a stopped --sweep",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate and print the plan; write nothing"
    )
    parser.add_argument(
        "--sweep",
        metavar="SWEEP",
        default=None,
        help="run every configuration of this sweep file (.toml/.json/.yaml: a grid or a list of "
        "seeds and --set overrides), each an ordinary recorded run, then a summary",
    )
    cli.add_scheduler_option(parser)
    cli.add_common_options(parser)
    return cli.run(parser, launch_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
