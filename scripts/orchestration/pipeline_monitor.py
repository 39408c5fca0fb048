"""Watch a run folder, live or finished: progress, latest metrics, checkpoints, anomalies.

    python scripts/orchestration/pipeline_monitor.py experiments/results/run_2025_10_31 --once
    python scripts/orchestration/pipeline_monitor.py experiments/results/run_2025_10_31 --follow

Reads the run's ``plan.json`` (cycles, checkpoints) and its live
``metrics.jsonl``. A partial last line (the writer is mid-append) waits for
the next read; any other line that is not a JSON object is reported as an
anomaly, never a crash. Reports:

* progress: cycles done of the total, and an ETA from the pace at which the
  per-cycle files appeared (their modification times: nothing in the run's
  artifacts holds a wall-clock time);
* the latest metrics row;
* checkpoints: those the plan expects so far, present or missing, each
  loaded and checked against the SHA-256 the hash registry holds for it;
* anomalies: NaN/Inf metrics, a diverging loss (above ``--diverge-factor``
  times its best so far), a stalled run (nothing new for ``--stall-seconds``
  while unfinished), garbage lines, missing or corrupt checkpoints.

``--once`` (the default) prints one summary JSON; ``--follow`` keeps
watching until the run finishes (a progress bar on a terminal, JSON lines
otherwise). Exit 1 when anomalies were found, so CI can use it.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()


from scripts.utils import cli
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.formats.arrays import read_arrays
from scripts.utils.json_logger import progress
from scripts.utils.jsonio import as_float, json_objects, read_json
from scripts.utils.limits import MAX_TABLE_BYTES, read_input_bytes
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.workspace import relative_to_workspace, resolve_workspace


def read_rows(path: Path) -> tuple[list, list]:
    """Complete JSON rows of a live JSON-lines file, and the garbage lines (number, text)."""
    if not path.exists():
        return [], []
    data = read_input_bytes(path, MAX_TABLE_BYTES, "metrics file")
    complete = data[: data.rfind(b"\n") + 1]  # a partial last line waits for the next read
    garbage = []

    def note_garbage(number: int, line: bytes) -> None:
        garbage.append((number, line[:80].decode("utf-8", "backslashreplace")))

    rows = [row for _, row in json_objects(complete.splitlines(), on_bad=note_garbage)]
    return rows, garbage


def _number(value):
    try:
        return as_float(value)
    except (TypeError, ValueError):
        return None


def check_checkpoint(path: Path, registered: dict | None) -> str | None:
    """None when the checkpoint loads and matches the registry; else what is wrong."""

    data = read_input_bytes(path, MAX_TABLE_BYTES, "checkpoint")
    if registered is not None and hashlib.sha256(data).hexdigest() != registered.get("sha256"):
        return "its SHA-256 differs from the hash registry"
    try:
        arrays = read_arrays(path)
        for name in ("cycle", "w1", "w2", "b", "rows"):
            arrays[name]
    except (InputError, KeyError) as exc:
        return f"cannot be read ({type(exc).__name__})"
    return None


def summarize(
    workspace: Path, logdir: Path, stall_seconds: float, diverge_factor: float, now=None
) -> dict:
    plan_path = logdir / "plan.json"
    if not plan_path.exists():
        raise InputError("not a run folder: no plan.json", file=str(logdir))
    plan = read_json(plan_path)
    total = plan.get("cycles")
    rows, garbage = read_rows(logdir / "metrics.jsonl")
    anomalies = [{"kind": "garbage_line", "line": number, "text": text} for number, text in garbage]

    best_loss = math.inf
    for row in rows:
        for key, value in row.items():
            number = _number(value) if key not in ("cycle", "phase") else None
            if number is not None and not math.isfinite(number):
                anomalies.append(
                    {"kind": "non_finite", "cycle": row.get("cycle"), "metric": key, "value": value}
                )
        loss = _number(row.get("loss"))
        if loss is not None and math.isfinite(loss):
            if loss > diverge_factor * best_loss and loss > 1e-12:
                anomalies.append(
                    {
                        "kind": "diverging_loss",
                        "cycle": row.get("cycle"),
                        "loss": loss,
                        "best": best_loss,
                    }
                )
            best_loss = min(best_loss, loss)
    done = max((int(row["cycle"]) for row in rows if isinstance(row.get("cycle"), int)), default=0)
    finished = total is not None and done >= total

    registry = WorkspaceRecords(workspace).registry()
    checkpoints = []
    for cycle in plan.get("checkpoints", []):
        if cycle > done:
            continue
        path = logdir / f"checkpoints/cycle_{cycle:04d}.npz"
        name = relative_to_workspace(workspace, path)
        if not path.exists():
            checkpoints.append({"cycle": cycle, "status": "missing"})
            anomalies.append({"kind": "missing_checkpoint", "cycle": cycle})
            continue
        problem = check_checkpoint(path, registry.get(name))
        checkpoints.append(
            {
                "cycle": cycle,
                "status": "ok" if problem is None else "corrupt",
                "registered": name in registry,
            }
        )
        if problem:
            anomalies.append({"kind": "corrupt_checkpoint", "cycle": cycle, "problem": problem})

    dreams = sorted((logdir / "dreams").glob("cycle_*.cten"))
    times = [p.stat().st_mtime for p in dreams]
    eta = None
    if len(times) >= 2 and not finished and total:
        pace = (max(times) - min(times)) / (len(times) - 1)
        eta = round(pace * (total - done), 1)
    now = time.time() if now is None else now
    newest = max(
        [os.stat(logdir / "metrics.jsonl").st_mtime] if (logdir / "metrics.jsonl").exists() else [0]
    )
    if not finished and now - newest > stall_seconds:
        anomalies.append({"kind": "stalled", "seconds_since_last_record": round(now - newest, 1)})
    return {
        "logdir": relative_to_workspace(workspace, logdir),
        "cycles_done": done,
        "cycles": total,
        "finished": finished,
        "eta_seconds": eta,
        "latest": rows[-1] if rows else None,
        "checkpoints": checkpoints,
        "anomalies": anomalies,
    }


def monitor_run(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    logdir = Path(args.logdir).absolute()
    relative_to_workspace(workspace, logdir)
    summary = summarize(workspace, logdir, args.stall_seconds, args.diverge_factor)
    if args.follow:
        seen = -1
        with progress(total=summary["cycles"], desc="cycles", unit="cycle") as bar:
            while True:
                if summary["cycles_done"] != seen:
                    bar.update(summary["cycles_done"] - max(seen, 0))
                    seen = summary["cycles_done"]
                    if not sys.stderr.isatty():
                        log.info(
                            "progress",
                            **{k: summary[k] for k in ("cycles_done", "cycles", "eta_seconds")},
                            latest=summary["latest"],
                            anomalies=len(summary["anomalies"]),
                        )
                stalled = any(a["kind"] == "stalled" for a in summary["anomalies"])
                if summary["finished"] or stalled:
                    break
                time.sleep(args.interval)
                summary = summarize(workspace, logdir, args.stall_seconds, args.diverge_factor)
    cli.print_json(summary)
    if summary["anomalies"]:
        raise CheckFailed(
            f"{len(summary['anomalies'])} anomalies in the run",
            logdir=summary["logdir"],
            first=summary["anomalies"][0],
        )
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "pipeline_monitor",
        doc=__doc__,
        description="Report a run folder's progress, latest metrics, checkpoints and anomalies.",
        example="python scripts/orchestration/pipeline_monitor.py "
        "experiments/results/run_2025_10_31 --once",
    )
    parser.add_argument("logdir", metavar="RUN_DIR", help="the run's log folder")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--once", action="store_true", help="print one summary and exit (the default)"
    )
    mode.add_argument("--follow", action="store_true", help="keep watching until the run finishes")
    parser.add_argument(
        "--stall-seconds",
        type=cli.bounded(float, 1, 10**7),
        default=300.0,
        help="no new record for this long: stalled",
    )
    parser.add_argument(
        "--diverge-factor",
        type=cli.bounded(float, 1, 10**12),
        default=10.0,
        help="loss above this times its best: diverging",
    )
    parser.add_argument(
        "--interval",
        type=cli.bounded(float, 0.01, 3600),
        default=1.0,
        help="seconds between reads with --follow",
    )
    cli.add_common_options(parser)
    return cli.run(parser, monitor_run, argv)


if __name__ == "__main__":
    sys.exit(main())
