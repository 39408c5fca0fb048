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

from scripts.utils.config_loader import load_config_file
from scripts.utils.errors import InputError
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


def summary_csv(rows: list) -> bytes:
    """The summary as CSV: nested values (overrides, final metrics, command) as canonical JSON text."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for row in rows:
        writer.writerow([row[c] if isinstance(row[c], (str, int)) else orjson.dumps(row[c], option=orjson.OPT_SORT_KEYS)
                         .decode() for c in SUMMARY_COLUMNS])
    return text.getvalue().encode("utf-8")
