"""Print canonical UTC timestamps as JSON (the library is utils/timestamps.py).

    python scripts/utils/time_utils.py now
    SOURCE_DATE_EPOCH=1761912000 python scripts/utils/time_utils.py now
    python scripts/utils/time_utils.py parse 2025-10-31T13:00:00+01:00
    python scripts/utils/time_utils.py from-epoch 1761912000

``now`` is the artifact time: SOURCE_DATE_EPOCH when it is set, else the
clock. Each command prints ``iso``, ``compact``, ``epoch`` and ``source``.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

from scripts.utils import cli
from scripts.utils.errors import InputError
from scripts.utils.timestamps import (
    format_compact,
    format_iso,
    from_epoch,
    now,
    parse_timestamp,
    source_date_epoch,
    to_epoch,
)


def _describe(moment: datetime, source: str) -> dict:
    return {
        "iso": format_iso(moment, "microseconds" if moment.microsecond else "seconds"),
        "compact": format_compact(moment),
        "epoch": to_epoch(moment),
        "source": source,
    }


def print_timestamp(args, log) -> int:
    """The ``now``, ``parse`` and ``from-epoch`` commands."""
    if args.command == "now":
        source = "SOURCE_DATE_EPOCH" if source_date_epoch() is not None else "clock"
        result = _describe(now(), source)
    elif args.command == "parse":
        result = _describe(parse_timestamp(args.text, assume_utc=args.assume_utc), "argument")
    else:
        try:
            result = _describe(from_epoch(args.seconds), "argument")
        except (OverflowError, OSError, ValueError):
            raise InputError("epoch seconds out of the range of dates", value=args.seconds)
    cli.print_json(result)
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "time_utils",
        doc=__doc__,
        description="Print canonical UTC timestamps as JSON.",
        example="SOURCE_DATE_EPOCH=1761912000 python scripts/utils/time_utils.py now",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("now", help="the artifact time: SOURCE_DATE_EPOCH when set, else the clock")
    parse_cmd = sub.add_parser("parse", help="parse an ISO 8601 or compact timestamp")
    parse_cmd.add_argument("text")
    parse_cmd.add_argument(
        "--assume-utc", action="store_true", help="read a zone-less timestamp as UTC"
    )
    epoch_cmd = sub.add_parser("from-epoch", help="format seconds since 1970-01-01T00:00:00Z")
    epoch_cmd.add_argument("seconds", type=float)

    return cli.run(parser, print_timestamp, argv, workspace=False)


if __name__ == "__main__":
    sys.exit(main())
