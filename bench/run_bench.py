"""Benchmarks: each figure beside an anchor measured in the same run, as a ratio.

Writes ``experiments/results/bench_<stamp>.json`` through the run records.
Timings are the point of this report, so unlike every other artifact it
differs from run to run (``make verify`` does not include it).

Anchors and targets (from the issues); the data-tool benchmarks are in
``bench/bench_data_tools.py``:

* log_converter: ``log_convert.convert_stream`` on a mixed realistic log
  (Python logging, env_logger with continuations, logfmt, plain), in one
  process and with one worker per CPU (the CLI default), each against a
  trivial one-process loop that only wraps each line as ``{"msg": line}``
  with orjson. Target: ratio >= 0.5. Beside them, for context (no target):
  the converter on the test corpus of every format it recognises
  (tests/utils/formats/log_corpus/, repeated), against the same trivial loop.

Each pair is timed in alternation (anchor, ours, anchor, ours, ...), best of
``--repeat``, so that drift on a shared machine hits both alike.

Usage:
    python bench/run_bench.py
    python bench/run_bench.py --quick --only log_converter
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from bench import (  # noqa: E402
    bench_data_tools,
    bench_growth,
    bench_orchestration,
    bench_visualization,
)
from bench.common import best_of_alternating, figure, plot_scaling  # noqa: E402
from bench.sample_logs import write_corpus_log, write_sample_log  # noqa: E402
from scripts.utils import cli  # noqa: E402
from scripts.utils.formats.log_convert import convert_stream  # noqa: E402
from scripts.utils.records.run_records import RunRecorder  # noqa: E402


def bench_log_converter(scratch: Path, quick: bool, repeat: int) -> list:
    """The converter in one process and with all CPUs, each against the trivial loop."""
    lines = 100_000 if quick else 1_000_000
    source = scratch / "sample.log"
    size = write_sample_log(source, lines)
    target = scratch / "out.jsonl"
    cpus = os.cpu_count() or 1

    def trivial_loop():
        with open(source, "rb") as reader, open(target, "wb") as writer:
            for line in reader:
                writer.write(
                    orjson.dumps({"msg": line.rstrip(b"\n").decode("utf-8", "replace")}) + b"\n"
                )

    def converter(workers):
        def run():
            with open(source, "rb") as reader, open(target, "wb") as writer:
                convert_stream(reader, writer, workers=workers)

        return run

    header = re.compile(
        r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?) - (.*?) - ([A-Z]+) - (.*)"
    )

    # the least a per-line parser does: one header regex, one record, one dumps
    def one_regex_loop():
        with open(source, "rb") as reader, open(target, "wb") as writer:
            for number, line in enumerate(reader, start=1):
                text = line.rstrip(b"\n").decode("utf-8", "replace")
                match = header.match(text)
                record = {
                    "ts": None,
                    "level": None,
                    "source": None,
                    "msg": text,
                    "format": "plain",
                    "line": number,
                }
                if match:
                    record.update(
                        ts=match[1], source=match[2], level=match[3], msg=match[4], format="python"
                    )
                writer.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    corpus = scratch / "corpus.log"  # every format the converter knows, from the test corpus
    corpus_lines = lines // 10
    corpus_size = write_corpus_log(corpus, corpus_lines)

    def trivial_loop_on(path):
        def run():
            with open(path, "rb") as reader, open(target, "wb") as writer:
                for line in reader:
                    writer.write(
                        orjson.dumps({"msg": line.rstrip(b"\n").decode("utf-8", "replace")}) + b"\n"
                    )

        return run

    def converter_on(path):
        def run():
            with open(path, "rb") as reader, open(target, "wb") as writer:
                convert_stream(reader, writer, year_reference=date(2025, 12, 31))

        return run

    best = best_of_alternating(
        {
            "anchor": trivial_loop,
            "one": converter(1),
            "all": converter(cpus),
            "floor": one_regex_loop,
            "corpus_anchor": trivial_loop_on(corpus),
            "corpus": converter_on(corpus),
        },
        repeat,
    )
    anchor = lines / best["anchor"]
    common = {
        "input": {"lines": lines, "bytes": size},
        "bound": {
            "one_regex_loop_ratio": round(best["anchor"] / best["floor"], 3),
            "why": "a per-line Python loop that only matches one header regex and writes one "
            "6-field "
            "record per line, one process (no continuation lines, time stamps, logfmt or JSON)",
        },
    }
    return [
        figure(
            "log_converter_single_process",
            "log_convert.convert_stream, one process, on a mixed 5-format log",
            lines / best["one"],
            "lines/s",
            'trivial loop: orjson.dumps({"msg": line}) per line, one process',
            anchor,
            0.5,
            common,
        ),
        figure(
            f"log_converter_workers_{cpus}",
            f"log_convert.convert_stream, workers={cpus}, same log",
            lines / best["all"],
            "lines/s",
            'trivial loop: orjson.dumps({"msg": line}) per line, one process',
            anchor,
            0.5,
            common,
        ),
        figure(
            "log_converter_all_formats",
            "log_convert.convert_stream, one process, on the test corpus of every format (glog, "
            "c10, NCCL, syslog, Slurm, tqdm/rich with carriage returns and ANSI, ...) repeated",
            corpus_lines / best["corpus"],
            "lines/s",
            "the same trivial loop on the same log",
            corpus_lines / best["corpus_anchor"],
            None,
            {"input": {"lines": corpus_lines, "bytes": corpus_size}},
        ),
    ]


BENCHMARKS = {
    "log_converter": bench_log_converter,
    **bench_data_tools.BENCHMARKS,
    **bench_growth.BENCHMARKS,
    **bench_orchestration.BENCHMARKS,
    **bench_visualization.BENCHMARKS,
}


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "bench",
        description="Run the benchmarks and write experiments/results/bench_<stamp>.json.",
        example="python bench/run_bench.py --quick",
    )
    parser.add_argument(
        "--only", choices=sorted(BENCHMARKS), action="append", help="run only these (repeatable)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small inputs (a smoke test, not a measurement)"
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="add the 10^6-file point to tree_growth (make bench-large; about 6 minutes)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds per benchmark (best is kept)")
    cli.add_common_options(parser)

    def run(args, log):
        if args.large:
            os.environ[bench_growth.LARGE_ENV] = "1"
        names = args.only or sorted(BENCHMARKS)
        results = []
        with RunRecorder("bench", workspace=args.workspace, log=log) as record:
            with tempfile.TemporaryDirectory(prefix="crh-bench-") as scratch:
                for name in names:
                    log.info("bench_start", benchmark=name)
                    for result in BENCHMARKS[name](Path(scratch), args.quick, max(1, args.repeat)):
                        log.info("bench_done", **result)
                        results.append(result)
            curves = list(
                {
                    item["scaling"]["name"]: item["scaling"]
                    for item in results
                    if "scaling" in item
                }.values()
            )
            if curves:
                plot_scaling(curves, record.output_path("scaling.png"))
            growth = [item["growth"]["points"] for item in results if "growth" in item]
            if growth:
                bench_growth.plot_growth(growth[0], record.output_path("growth.png"))
            record.results.update(
                {
                    "benchmarks": results,
                    "scaling_plot": f"experiments/results/{record.run_id}/scaling.png"
                    if curves
                    else None,
                    "growth_plot": f"experiments/results/{record.run_id}/growth.png"
                    if growth
                    else None,
                    "quick": args.quick,
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "machine": platform.machine(),
                        "os": platform.system(),
                    },
                }
            )
        summary = {f["name"]: {"ratio": f["ratio"], "met": f["met"]} for f in results}
        log.info(
            "bench_report", report=f"experiments/results/{record.run_id}.json", summary=summary
        )
        return 0

    return cli.run(parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
