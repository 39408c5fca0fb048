"""The metrics a training script wrote, whatever it calls them: found, read, and summed up as final
and best values.

    from scripts.utils.formats.run_metrics import metrics_summary
    metrics_summary(Path("experiments/results/run_1"), named=None)
    # {"metrics_file": "metrics.csv", "x": "epoch", "final": {"loss": 0.21, "accuracy": 0.93},
    #  "best": {"loss": {"value": 0.21, "goal": "min", "at": 5}, ...}}

The file is the one the config names (``[external] metrics = "history.csv"``),
else the first of the run folder's CSV, JSON-lines and JSON files whose name
says metrics, history, log, scores, results, train, eval, loss, accuracy,
epoch, step or stats (our own ``output.jsonl``, ``stderr.jsonl``, ``config.json`` and
``plan.json`` left out), else its CSV or JSON-lines file with the most
numeric columns. Read as: CSV with a header; JSON lines of objects; JSON as a list of
objects, an object of equal-length lists, or an object holding one of those
(``{"history": [...]}``). Every column whose values are all numbers (or
empty) is a metric; ``step``, ``epoch``, ``iteration``, ``cycle`` or
``global_step`` is the x axis. The best value is the minimum for names that
say loss or error, the maximum for names that say accuracy or a score
(``[external] goals = {name = "min"}`` decides for others); other columns
get a final value only.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np
import orjson

from scripts.utils.jsonio import json_objects
from scripts.utils.limits import MAX_TABLE_BYTES, read_input_bytes

X_COLUMNS = ("global_step", "step", "epoch", "iteration", "iter", "cycle")
OURS = {"output.jsonl", "stderr.jsonl", "config.json", "plan.json"}
NAMED = re.compile(
    r"metric|history|log|score|result|progress|train|eval|loss|acc|epoch|step|stat", re.I
)
LOWER_IS_BETTER = re.compile(
    r"loss|err|mae|mse|rmse|nll|perplexity|ppl|bpb|wer|cer|time|latency", re.I
)
HIGHER_IS_BETTER = re.compile(
    r"acc|f1|auc|precision|recall|score|iou|dice|r2|map|bleu|rouge|reward|return", re.I
)
MAX_ROWS = 1_000_000


def find_metrics_file(folder: Path, named: str | None = None) -> Path | None:
    if named:
        path = folder / named
        return path if path.is_file() else None
    candidates = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.name not in OURS
        and p.suffix.lower() in (".csv", ".jsonl", ".json")
        and ".partial" not in p.parts
    )
    by_name = [p for p in candidates if NAMED.search(p.stem)]
    if by_name:
        return min(by_name, key=lambda p: (p.suffix.lower() == ".json", len(p.parts), p.as_posix()))
    tables = []  # no name says it: the CSV or JSON-lines file with the most numeric columns
    for path in (p for p in candidates if p.suffix.lower() in (".csv", ".jsonl")):
        try:
            tables.append((-len(read_metrics(path)["columns"]), path.as_posix(), path))
        except (orjson.JSONDecodeError, OSError, ValueError):
            continue
    best = min(tables, default=None)
    return best[2] if best and best[0] < 0 else None


def _records(path: Path) -> list:
    data = read_input_bytes(path, MAX_TABLE_BYTES, "metrics file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return list(csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace"))))[:MAX_ROWS]
    if suffix == ".jsonl":  # what parses: a script may still be writing its last line
        return [row for _, row in json_objects(data.splitlines()[:MAX_ROWS], skip_bad=True)]
    document = orjson.loads(data)
    if isinstance(document, dict):
        lists = {k: v for k, v in document.items() if isinstance(v, list)}
        nested = [v for v in lists.values() if v and all(isinstance(r, dict) for r in v)]
        if nested:
            return nested[0][:MAX_ROWS]
        if lists and len({len(v) for v in lists.values()}) == 1:
            return [dict(zip(lists, values)) for values in zip(*lists.values())][:MAX_ROWS]
        return [document]
    return (
        [row for row in document if isinstance(row, dict)][:MAX_ROWS]
        if isinstance(document, list)
        else []
    )


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def read_metrics(path: Path) -> dict:
    """{"x": column or None, "columns": {name: [float or None per row]}} of every numeric column."""
    rows = _records(path)
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        numbers = [_number(v) for v in values]
        if all(n is not None or v in (None, "") for n, v in zip(numbers, values)) and any(
            n is not None for n in numbers
        ):
            columns[str(name)] = numbers
    x = next((name for name in X_COLUMNS if name in columns), None)
    return {"x": x, "columns": columns}


def plot_series(metrics: dict, names: list) -> dict:
    """read_metrics' columns as float arrays for metric_plotter.plot_curves: the x values as
    "cycle", gaps as NaN."""
    x_name = metrics["x"]
    length = len(next(iter(metrics["columns"].values()), []))
    series = {
        "cycle": np.array(metrics["columns"][x_name] if x_name else range(length), dtype=np.float64)
    }
    for name in names:
        series[name] = np.array(
            [np.nan if v is None else v for v in metrics["columns"][name]], dtype=np.float64
        )
    return series


def goal_of(name: str, goals: dict) -> str | None:
    if name in goals:
        return goals[name]
    if LOWER_IS_BETTER.search(name):
        return "min"
    if HIGHER_IS_BETTER.search(name):
        return "max"
    return None


def metrics_summary(folder: Path, named: str | None = None, goals: dict | None = None) -> dict:
    """The run's metrics file (relative to ``folder``), its x column, final values and best
    values ({} if none)."""
    path = find_metrics_file(folder, named)
    if path is None:
        return {}
    try:
        metrics = read_metrics(path)
    except (orjson.JSONDecodeError, OSError, ValueError):
        return {
            "metrics_file": path.relative_to(folder).as_posix(),
            "metrics_error": "not readable as metrics",
        }
    x_values = metrics["columns"].get(metrics["x"]) if metrics["x"] else None
    final, best = {}, {}
    for name, values in metrics["columns"].items():
        if name == metrics["x"]:
            continue
        present = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
        if not present:
            continue
        final[name] = present[-1][1]
        goal = goal_of(name, goals or {})
        if goal in ("min", "max"):
            index, value = (min if goal == "min" else max)(present, key=lambda pair: pair[1])
            best[name] = {
                "value": value,
                "goal": goal,
                "at": x_values[index] if x_values else index,
            }
    return {
        "metrics_file": path.relative_to(folder).as_posix(),
        "x": metrics["x"],
        "final": final,
        "best": best,
    }
