"""Benchmarks: each figure beside an anchor measured in the same run, as a ratio.

Writes ``experiments/results/bench_<stamp>.json`` through the run records.
Timings are the point of this report, so unlike every other artifact it
differs from run to run (``make verify`` does not include it).

Anchors and targets (from the issues):

* log_converter: ``log_formatter.convert_stream`` on a mixed realistic log
  (Python logging, env_logger with continuations, logfmt, plain) against a
  trivial loop that only wraps each line as ``{"msg": line}`` with orjson.
  Target: ratio >= 0.5.

Each pair is timed in alternation (anchor, ours, anchor, ours, ...), best of
``--repeat``, so that drift on a shared machine hits both alike.

Usage:
    python bench/run_bench.py
    python bench/run_bench.py --quick --only log_converter
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from bench.sample_logs import write_sample_log  # noqa: E402
from scripts.utils import cli  # noqa: E402
from scripts.utils.log_formatter import convert_stream  # noqa: E402
from scripts.utils.run_records import RunRecorder  # noqa: E402


def _best_of_alternating(functions: dict, repeat: int) -> dict:
    """Run each function in turn, ``repeat`` rounds; best wall time of each."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_log_converter(scratch: Path, quick: bool, repeat: int) -> dict:
    lines = 100_000 if quick else 1_000_000
    source = scratch / "sample.log"
    size = write_sample_log(source, lines)
    target = scratch / "out.jsonl"

    def trivial_loop():
        with open(source, "rb") as reader, open(target, "wb") as writer:
            for line in reader:
                writer.write(orjson.dumps({"msg": line.rstrip(b"\n").decode("utf-8", "replace")}) + b"\n")

    def converter():
        with open(source, "rb") as reader, open(target, "wb") as writer:
            convert_stream(reader, writer)

    best = _best_of_alternating({"anchor": trivial_loop, "ours": converter}, repeat)
    ours, anchor = lines / best["ours"], lines / best["anchor"]
    return {
        "name": "log_converter",
        "what": "log_formatter.convert_stream on a mixed 5-format log, file to file",
        "value": round(ours), "unit": "lines/s",
        "anchor": {"what": 'trivial loop: orjson.dumps({"msg": line}) per line, file to file',
                   "value": round(anchor), "unit": "lines/s"},
        "ratio": round(ours / anchor, 3),
        "target": {"ratio_at_least": 0.5},
        "met": ours / anchor >= 0.5,
        "input": {"lines": lines, "bytes": size},
        "seconds": {"ours": round(best["ours"], 4), "anchor": round(best["anchor"], 4)},
    }


BENCHMARKS = {"log_converter": bench_log_converter}


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "bench",
        description="Run the benchmarks and write experiments/results/bench_<stamp>.json.",
        example="python bench/run_bench.py --quick",
    )
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only these (repeatable)")
    parser.add_argument("--quick", action="store_true", help="small inputs (a smoke test, not a measurement)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per benchmark (best is kept)")
    cli.add_common_options(parser)

    def run(args, log):
        names = args.only or sorted(BENCHMARKS)
        results = []
        with RunRecorder("bench", workspace=args.workspace, log=log) as record:
            with tempfile.TemporaryDirectory(prefix="crh-bench-") as scratch:
                for name in names:
                    log.info("bench_start", benchmark=name)
                    figure = BENCHMARKS[name](Path(scratch), args.quick, max(1, args.repeat))
                    log.info("bench_done", **figure)
                    results.append(figure)
            record.results.update({
                "benchmarks": results,
                "quick": args.quick,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "machine": platform.machine(), "os": platform.system()},
            })
        summary = {f["name"]: {"ratio": f["ratio"], "met": f["met"]} for f in results}
        log.info("bench_report", report=f"experiments/results/{record.run_id}.json", summary=summary)
        return 0

    return cli.run(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
