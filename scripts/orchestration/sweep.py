"""Experiment sweeps: ``run_experiment --sweep SWEEP.toml``, locally or on a Dask cluster.

    python scripts/orchestration/run_experiment.py --config trainer/config/phase5.toml \\
        --sweep sweep.toml
    python scripts/orchestration/run_experiment.py --config trainer/config/phase5.toml \\
        --sweep sweep.toml \\
        --scheduler local:2

A sweep file (TOML, JSON or YAML) lists the configurations, either as a grid
(every combination) or as a list, optionally times a list of base seeds::

    # optional; default: the seeds file's base seed (alone: a seed sweep)
    seeds = [1, 2, 3]
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

With ``--scheduler`` (utils/compute/cluster.py) the configurations are computed on
the cluster's workers (each in a scratch folder of its own; the workspace is
read by path, for ``data.source``) and sent back; this process writes and
records them one by one in sweep order, so run ids, the registry and the
manifest are what a local sweep gives. External commands (``experiment.kind
= "external"``) run only locally.

A sweep that was stopped (killed, a failed run, a machine gone) is
continued with the same command and ``--resume``: each configuration that
already has a complete run in the workspace (found by its recorded command
line) keeps it, the one that was cut short continues from its last
checkpoint (a reference run with a log folder) or starts again, and the
rest run; the summary is the one an uninterrupted sweep writes. Without
``--resume`` the same command refuses the log folders that hold runs.

The sweep ends with a run of its own, ``run_experiment_sweep_<stamp>``:
``summary.jsonl`` and ``summary.csv``, one row per run: index, overrides,
seed, the final metrics (an external script's come from its own metrics
file: utils/formats/run_metrics.py), the run's report and its command; and, for each
configuration run under two or more seeds, ``aggregates.jsonl``: every final
metric's mean, standard deviation (n - 1), min and max across the seeds.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import tempfile
from pathlib import Path

import orjson

from scripts.utils.config.loading import load_config_file
from scripts.utils.config.schema import validate
from scripts.utils.config.seeds import SeedManager
from scripts.utils.errors import InputError

MAX_RUNS = 10_000
SUMMARY_COLUMNS = ("index", "run_id", "seed", "overrides", "final", "report", "command")


def override_text(key: str, value) -> str:
    """``key=value`` for ``--set``, the value written so that it parses back as the same TOML
    value."""
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
    """The configurations of a sweep file: ``[{"overrides": [key=value, ...], "seed": int or
    None}]``.

    The file is checked against the sweep schema (config_schema.py) first: every problem at once,
    exit 2.
    """
    spec = load_config_file(path)
    validate(spec, "sweep", source=path)
    seeds = spec.get("seeds", [None])
    if "grid" not in spec and "runs" not in spec:  # seeds alone: the config as it is, once per seed
        spec["runs"] = [{}]
    if "grid" in spec:
        grid = spec["grid"]
        tables = (
            [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
            if math.prod(len(values) for values in grid.values()) * len(seeds) <= MAX_RUNS
            else None
        )
    else:
        tables = spec["runs"] if len(spec["runs"]) * len(seeds) <= MAX_RUNS else None
    if tables is None:
        raise InputError(f"the sweep has more than {MAX_RUNS:,} runs (the limit)", file=path)
    members = []
    for seed in seeds:
        for table in tables:
            overrides, own_seed = (
                (table, seed) if "grid" in spec else (table.get("set", {}), table.get("seed", seed))
            )
            members.append(
                {"overrides": [override_text(k, v) for k, v in overrides.items()], "seed": own_seed}
            )
    return members


def member_argv(args, member: dict, logdir: Path | None) -> list:
    """The ``run_experiment`` arguments that launch this configuration alone (recorded as its
    argv)."""
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


def finished_runs(workspace: Path, argvs: list) -> dict:
    """``{index: report}`` of the configurations (by their recorded command line, ``argvs``) that
    already have a complete run in the workspace: a stopped sweep continued with ``--resume``
    keeps them."""
    from scripts.utils.records.holdings import WorkspaceRecords

    wanted = {tuple(argv): index for index, argv in enumerate(argvs)}
    found = {}
    records = WorkspaceRecords(workspace)
    for run_id in records.runs("run_experiment", finished=True):
        report = records.report(run_id)
        index = wanted.get(tuple(report.get("argv") or ()))
        if index is not None:
            found.setdefault(index, report)
    return found


def finished_summary(workspace: Path, config: dict) -> str | None:
    """The run id of a recorded sweep summary with this config, if there is one."""
    from scripts.utils.config.loading import config_sha256
    from scripts.utils.records.holdings import WorkspaceRecords

    wanted = config_sha256(config)
    records = WorkspaceRecords(workspace)
    return next(
        (
            run_id
            for run_id in records.runs("run_experiment_sweep")
            if records.manifest()[run_id].get("config_sha256") == wanted
        ),
        None,
    )


def compute_member(
    workspace: str, config: dict, base_seed: int, streams: dict, backend: str
) -> dict:
    """One configuration's experiment, in a scratch folder (runs on a cluster worker).

    Returns its files (``{relative path: bytes}``), the summary and the seeds it drew.
    """
    from scripts.orchestration import reference_experiment as experiment

    seeds = SeedManager(base_seed, dict(streams))
    with tempfile.TemporaryDirectory(prefix="crh-sweep-") as scratch:
        folder = Path(scratch)
        summary = experiment.run_reference(Path(workspace), folder, config, seeds, backend)
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
    return {"files": files, "summary": summary, "seeds_used": seeds.used}


def summary_csv(rows: list) -> bytes:
    """The summary as CSV: nested values (overrides, final metrics, command) as canonical JSON
    text."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row[c]
                if isinstance(row[c], (str, int))
                else orjson.dumps(row[c], option=orjson.OPT_SORT_KEYS).decode()
                for c in SUMMARY_COLUMNS
            ]
        )
    return text.getvalue().encode("utf-8")


def seed_aggregates(rows: list) -> list:
    """Per configuration run under several seeds: each final metric's mean, standard deviation (n -
    1), min, max.

    ``[{"overrides": [...], "seeds": [...], "runs": n, "metrics": {name: {"mean", "std", "min",
    "max", "n"}}}]`` for every configuration with two or more seeds; metrics a run lacks are left
    out of its configuration's n.
    """
    groups: dict = {}
    for row in rows:
        groups.setdefault(tuple(row["overrides"]), []).append(row)
    aggregates = []
    for overrides, members in groups.items():
        if len(members) < 2:
            continue
        names = sorted({name for row in members for name in (row.get("final") or {})})
        metrics = {}
        for name in names:
            values = [
                float(row["final"][name])
                for row in members
                if isinstance((row.get("final") or {}).get(name), (int, float))
            ]
            if not values:
                continue
            mean = math.fsum(values) / len(values)
            spread = (
                math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
                if len(values) > 1
                else 0.0
            )
            metrics[name] = {
                "mean": mean,
                "std": spread,
                "min": min(values),
                "max": max(values),
                "n": len(values),
            }
        aggregates.append(
            {
                "overrides": list(overrides),
                "seeds": [row["seed"] for row in members],
                "runs": len(members),
                "metrics": metrics,
            }
        )
    return aggregates
