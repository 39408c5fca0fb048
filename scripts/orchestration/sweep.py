"""Experiment sweeps: ``run_experiment --sweep SWEEP.toml``, locally or on a Dask cluster.

    python scripts/orchestration/run_experiment.py --config trainer/config/phase5.toml --sweep sweep.toml
    python scripts/orchestration/run_experiment.py --config trainer/config/phase5.toml --sweep sweep.toml \\
        --scheduler local:2

A sweep file (TOML, JSON or YAML) lists the configurations, either as a grid
(every combination) or as a list, optionally times a list of base seeds::

    seeds = [1, 2, 3]                 # optional; default: the seeds file's base seed
    [grid]                            # every combination of these --set overrides
    "learner.lr" = [0.01, 0.05]
    "experiment.cycles" = [4, 8]

    # or, instead of [grid]:
    [[runs]]
    set = { "learner.lr" = 0.01 }     # this run's --set overrides
    seed = 7                          # optional: this run's base seed

Each configuration is an ordinary recorded run of ``run_experiment``, in its
own log folder (``--logdir DIR`` gives ``DIR/run_NNN/``; else its run folder)
and byte-identical to the same run launched alone: the summary gives each
run's ``command``, the ``run_experiment`` arguments that launch it alone.
Every configuration is validated before the first run starts (a bad key or
value: exit 2, nothing run).

With ``--scheduler`` (utils/cluster.py) the configurations are computed on
the cluster's workers (each in a scratch folder of its own; the workspace is
read by path, for ``data.source``) and sent back; this process writes and
records them one by one in sweep order, so run ids, the registry and the
manifest are what a local sweep gives. External commands (``experiment.kind
= "external"``) run only locally.

The sweep ends with a run of its own, ``run_experiment_sweep_<stamp>``:
``summary.jsonl`` and ``summary.csv``, one row per run: index, overrides,
seed, the final metrics, the run's report and its command.
"""

from __future__ import annotations

import csv
import io
import itertools
import tempfile
from pathlib import Path

import orjson

from scripts.utils import cluster
from scripts.utils.config_loader import load_config, load_config_file
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.jsonio import atomic_output, canonical_json
from scripts.utils.run_records import RunRecorder
from scripts.utils.seed_manager import SeedManager

MAX_RUNS = 10_000
SUMMARY_COLUMNS = ("index", "run_id", "seed", "overrides", "final", "report", "command")


def override_text(key: str, value) -> str:
    """``key=value`` for ``--set``, the value written so that it parses back as the same TOML value."""
    if isinstance(value, str):
        return f"{key}={orjson.dumps(value).decode()}"  # a TOML basic string: quoted, JSON escapes
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"{key}={value!r}"
    if isinstance(value, list):
        return f"{key}={orjson.dumps(value).decode()}"
    raise InputError(f"sweep value of {key!r} must be a string, number, boolean or list", key=key)


def expand_sweep(path) -> list:
    """The configurations of a sweep file: ``[{"overrides": [key=value, ...], "seed": int or None}]``."""
    spec = load_config_file(path)
    unknown = sorted(set(spec) - {"seeds", "grid", "runs"})
    if unknown:
        raise InputError(f"unknown keys in the sweep file: {', '.join(unknown)} (expected seeds, grid, runs)",
                         file=path, key=unknown[0])
    if ("grid" in spec) == ("runs" in spec):
        raise InputError("a sweep file needs either [grid] or [[runs]] (not both)", file=path)
    seeds = spec.get("seeds", [None])
    if not isinstance(seeds, list) or not seeds or not all(
            s is None or (isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**63) for s in seeds):
        raise InputError("seeds must be a non-empty list of integers from 0 to 2^63-1", file=path, key="seeds")
    members = []
    if "grid" in spec:
        grid = spec["grid"]
        if not isinstance(grid, dict) or not grid:
            raise InputError("[grid] must be a table of key = [values]", file=path, key="grid")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise InputError(f"grid.{key} must be a non-empty list of values", file=path, key=f"grid.{key}")
        combos = 1
        for values in grid.values():
            combos *= len(values)
        if combos * len(seeds) > MAX_RUNS:
            raise InputError(f"the sweep has {combos * len(seeds):,} runs; the limit is {MAX_RUNS:,}", file=path)
        for seed in seeds:
            for combo in itertools.product(*grid.values()):
                members.append({"overrides": [override_text(k, v) for k, v in zip(grid, combo)], "seed": seed})
    else:
        runs = spec["runs"]
        if not isinstance(runs, list) or not runs or not all(isinstance(run, dict) for run in runs):
            raise InputError("[[runs]] must be a list of tables", file=path, key="runs")
        if len(runs) * len(seeds) > MAX_RUNS:
            raise InputError(f"the sweep has {len(runs) * len(seeds):,} runs; the limit is {MAX_RUNS:,}", file=path)
        for seed in seeds:
            for number, run in enumerate(runs):
                extra = sorted(set(run) - {"set", "seed"})
                if extra:
                    raise InputError(f"runs[{number}] has unknown keys: {', '.join(extra)} (expected set, seed)",
                                     file=path, key=f"runs[{number}].{extra[0]}")
                overrides = run.get("set", {})
                if not isinstance(overrides, dict):
                    raise InputError(f"runs[{number}].set must be a table of key = value", file=path,
                                     key=f"runs[{number}].set")
                own = run.get("seed", seed)
                if own is not None and (not isinstance(own, int) or isinstance(own, bool) or not 0 <= own < 2**63):
                    raise InputError(f"runs[{number}].seed must be an integer from 0 to 2^63-1", file=path,
                                     key=f"runs[{number}].seed")
                members.append({"overrides": [override_text(k, v) for k, v in overrides.items()], "seed": own})
    return members


def member_argv(args, member: dict, logdir: Path | None) -> list:
    """The ``run_experiment`` arguments that launch this configuration alone (recorded as its argv)."""
    argv = ["--config", args.config]
    if args.seeds:
        argv += ["--seeds", args.seeds]
    for override in [*args.overrides, *member["overrides"]]:
        argv += ["--set", override]
    seed = member["seed"] if member["seed"] is not None else args.seed
    if seed is not None:
        argv += ["--seed", str(seed)]
    if args.backend:
        argv += ["--backend", args.backend]
    if logdir is not None:
        argv += ["--logdir", str(logdir)]
    return argv


def compute_member(workspace: str, config: dict, base_seed: int, streams: dict, backend: str) -> dict:
    """One configuration's experiment, in a scratch folder (runs on a cluster worker).

    Returns its files (``{relative path: bytes}``), the summary and the seeds it drew.
    """
    from scripts.orchestration import reference_experiment as experiment

    seeds = SeedManager(base_seed, dict(streams))
    with tempfile.TemporaryDirectory(prefix="crh-sweep-") as scratch:
        folder = Path(scratch)
        summary = experiment.run_reference(Path(workspace), folder, config, seeds, backend)
        files = {path.relative_to(folder).as_posix(): path.read_bytes()
                 for path in sorted(folder.rglob("*")) if path.is_file()}
    return {"files": files, "summary": summary, "seeds_used": seeds.used}


def run_sweep(args, workspace: Path, log) -> int:
    from scripts.orchestration import reference_experiment as experiment
    from scripts.orchestration.run_experiment import launch, prepare_logdir, resolve_backend

    if args.resume or args.dry_run:
        raise InputError("--sweep runs fresh runs: --resume and --dry-run apply to one run")
    members = expand_sweep(args.sweep)
    base_logdir = Path(args.logdir).absolute() if args.logdir else None
    prepared = []
    for index, member in enumerate(members):  # everything is checked before the first run
        config, _ = load_config(args.config, [*args.overrides, *member["overrides"]], log)
        experiment.validate_config(config, args.config)
        seeds = SeedManager.from_file(args.seeds)
        seed = member["seed"] if member["seed"] is not None else args.seed
        if seed is not None:
            seeds.base_seed = seed
        logdir = base_logdir / f"run_{index:03d}" if base_logdir else None
        prepare_logdir(logdir, str(logdir), False)
        prepared.append((member, config, seeds, resolve_backend(config, args.backend), logdir))
    address = cluster.scheduler_address(args.scheduler)
    if address and any(config["experiment"]["kind"] != "reference" for _, config, *_ in prepared):
        raise InputError("external experiments run only locally: drop --scheduler", key="experiment.kind")
    log.info("sweep", runs=len(prepared), file=args.sweep, scheduler=address or "this process")
    rows = []
    with cluster.cluster_executor(address, log) as executor:
        computed = iter([None] * len(prepared))
        if executor is not None:
            computed = executor.map(compute_member, [str(workspace)] * len(prepared),
                                    [config for _, config, *_ in prepared],
                                    [seeds.base_seed for _, _, seeds, *_ in prepared],
                                    [seeds.streams for _, _, seeds, *_ in prepared],
                                    [backend for *_, backend, _ in prepared])
        for index, ((member, config, seeds, backend, logdir), work) in enumerate(zip(prepared, computed)):
            argv = member_argv(args, member, logdir)
            record, summary = launch(workspace, config, seeds, backend, logdir, argv, log, computed=work)
            if record.status == "failed":
                raise CheckFailed("the external command of a sweep run failed", index=index,
                                  report=f"experiments/results/{record.run_id}.json")
            rows.append({"index": index, "run_id": record.run_id, "seed": seeds.base_seed,
                         "overrides": member["overrides"], "final": summary.get("final"),
                         "report": f"experiments/results/{record.run_id}.json",
                         "command": ["python", "scripts/orchestration/run_experiment.py",
                                     *record.extra["argv"]]})
            log.info("sweep_run", index=index, of=len(prepared), run_id=record.run_id)
    with RunRecorder("run_experiment_sweep", workspace=workspace, log=log,
                     config={"sweep": members, "config": Path(args.config).name, "overrides": args.overrides}) as record:
        with atomic_output(record.output_path("summary.jsonl")) as handle:
            for row in rows:
                handle.write(canonical_json(row))
        with atomic_output(record.output_path("summary.csv")) as handle:
            handle.write(summary_csv(rows))
        record.results.update(runs=len(rows), run_ids=[row["run_id"] for row in rows],
                              summary=f"experiments/results/{record.run_id}/summary.jsonl")
    log.info("sweep_done", runs=len(rows), summary=f"experiments/results/{record.run_id}/summary.jsonl")
    return 0


def summary_csv(rows: list) -> bytes:
    """The summary as CSV: nested values (overrides, final metrics, command) as canonical JSON text."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for row in rows:
        writer.writerow([row[c] if isinstance(row[c], (str, int)) else orjson.dumps(row[c], option=orjson.OPT_SORT_KEYS)
                         .decode() for c in SUMMARY_COLUMNS])
    return text.getvalue().encode("utf-8")
