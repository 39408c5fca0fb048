"""Convert raw log text into standardized JSON lines (the converter is
utils/formats/log_convert.py).

    python scripts/utils/log_formatter.py raw.log > raw.jsonl
    python scripts/utils/log_formatter.py train.log -o experiments/results/train.jsonl
    torchrun train.py 2>&1 | \\
        python scripts/utils/log_formatter.py --utc-offset +01:00 --progress last
    python scripts/utils/log_formatter.py --year 2026-01-02 slurm-4242.out > job.jsonl

Recognises Python logging (with Hydra, loguru and Hugging Face forms),
transformers, Lightning, Python warnings, glog/absl, PyTorch C10, NCCL,
Rust env_logger, syslog (RFC 3164 and 5424), Slurm, any line starting with
an ISO date-time, tqdm/rich progress bars, logfmt, JSON and plain text
(the table is in utils/formats/log_convert.py and docs/scripts.md). Each record gets
``ts`` (UTC, or null; the line's own text in ``ts_raw`` when it differs),
``level``, ``source``, ``msg``, ``format`` and ``line``. With ``-o`` the
output is written atomically and recorded as a run output.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

from scripts.utils import cli, timestamps
from scripts.utils.errors import InputError
from scripts.utils.formats.log_convert import (
    PROGRESS_MODES,
    convert_stream,
    parse_utc_offset,
    parse_year_reference,
)
from scripts.utils.json_logger import progress
from scripts.utils.jsonio import atomic_output
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import relative_to_workspace, resolve_workspace


def convert_files(
    names: list,
    sink,
    utc_offset,
    workers: int,
    log,
    year_reference=None,
    progress_mode: str = "all",
) -> dict:
    """Convert each file ('-': stdin) into ``sink``, in order; returns the total lines and
    records."""
    label_files = len(names) > 1
    totals = {"lines": 0, "records": 0}
    options = {"year_reference": year_reference, "progress": progress_mode}
    for name in names:
        label = name if label_files else None
        if name == "-":
            with progress(desc="stdin", unit="B") as bar:
                stats = convert_stream(
                    sys.stdin.buffer, sink, utc_offset, label, workers, bar.update, **options
                )
        else:
            with (
                open(name, "rb") as source,
                progress(total=os.fstat(source.fileno()).st_size, desc=name, unit="B") as bar,
            ):
                stats = convert_stream(
                    source, sink, utc_offset, label, workers, bar.update, **options
                )
        log.info("converted", file=name, **stats)
        totals["lines"] += stats["lines"]
        totals["records"] += stats["records"]
    return totals


def format_logs(args, log) -> int:
    utc_offset = parse_utc_offset(args.utc_offset)
    year_reference = parse_year_reference(args.year)
    log.info(
        "year_reference",
        year_reference=year_reference.isoformat(),
        source="--year" if args.year else "the run's stamp (SOURCE_DATE_EPOCH or the clock)",
    )
    names = args.files or ["-"]
    options = {"year_reference": year_reference, "progress_mode": args.progress}
    for name in names:
        if name != "-" and not Path(name).is_file():
            raise InputError(
                "input log not found" if not Path(name).exists() else "input is not a file",
                file=name,
            )
    timer = timestamps.Stopwatch()
    if args.output:
        relative_to_workspace(
            resolve_workspace(args.workspace), args.output
        )  # refused before any work
        with RunRecorder(
            "log_formatter", argv=args.argv, workspace=args.workspace, log=log
        ) as run_record:
            target = run_record.claim_output(args.output)
            with atomic_output(target) as sink:
                totals = convert_files(names, sink, utc_offset, args.workers, log, **options)
            run_record.results.update(totals)
    else:
        totals = convert_files(names, sys.stdout.buffer, utc_offset, args.workers, log, **options)
        sys.stdout.flush()
    elapsed = timer.elapsed()
    log.info(
        "done",
        **totals,
        seconds=round(elapsed, 3),
        lines_per_s=round(totals["lines"] / elapsed) if elapsed > 0 else None,
    )
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "log_formatter",
        doc=__doc__,
        description="Convert raw log text (Python logging, glog/absl, PyTorch C10, NCCL, syslog, "
        "Slurm,\nprogress bars, env_logger, logfmt, JSON, ...) into standardized JSON "
        "lines.\nReads stdin when no FILE is given.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="raw log files ('-' for stdin)")
    parser.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="write here (atomically) instead of stdout; "
        "the file is recorded as a run output and must lie in the workspace",
    )
    parser.add_argument(
        "--utc-offset",
        default="+00:00",
        help="zone of time stamps that carry none (Python asctime, glog, syslog, Slurm); "
        "-12:00 to +14:00",
    )
    parser.add_argument(
        "--year",
        metavar="YYYY|YYYY-MM-DD",
        help="year of stamps written without one (glog/absl, C10, RFC 3164 syslog): a year, or "
        "the log's last day, which places each stamp in the twelve months up to it "
        "(default: the run's stamp, from SOURCE_DATE_EPOCH or the clock)",
    )
    parser.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="all",
        help="tqdm/rich bars: a record per state, each bar's last state only, or none",
    )
    cli.add_workers_option(
        parser, "processes for large inputs (the output bytes are the same for any count)"
    )
    cli.add_common_options(parser)
    return cli.run(parser, format_logs, argv)


if __name__ == "__main__":
    sys.exit(main())
