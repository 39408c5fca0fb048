"""Canonical UTC timestamps, SOURCE_DATE_EPOCH, and monotonic durations.

Two canonical forms, both UTC:

* ISO 8601 for fields:      2025-10-31T12:00:00Z   (optionally .123 or .123456)
* compact for file names:   20251031T120000Z       (no colons: Windows-safe)

``now()`` honours SOURCE_DATE_EPOCH (https://reproducible-builds.org/specs/
source-date-epoch/): when it is set, every timestamp that can reach an
artifact is that instant. A malformed value is bad input (exit 2); an empty
value counts as unset. Durations use the monotonic clock and belong in logs,
never in artifacts.

The command ``scripts/utils/time_utils.py`` prints these forms::

    python scripts/utils/time_utils.py now
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta, timezone

from scripts.utils.errors import InputError

UTC = timezone.utc
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"
_TIMESPECS = {"seconds": 0, "milliseconds": 3, "microseconds": 6}

_ISO_RE = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[T ](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:[.,](?P<frac>\d{1,9}))?\s*(?P<tz>Z|z|[+-]\d{2}:?\d{2})?"
)
_COMPACT_RE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")


def source_date_epoch(environ=None) -> int | None:
    """SOURCE_DATE_EPOCH as an int, ``None`` when unset or empty.

    Raises InputError when the value is not a plain decimal integer (the
    spec's "malformed"), or is too large to be a date.
    """
    raw = (os.environ if environ is None else environ).get(SOURCE_DATE_EPOCH)
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit():
        raise InputError(
            "SOURCE_DATE_EPOCH must be a non-negative integer number of seconds (like `date +%s`)",
            variable=SOURCE_DATE_EPOCH,
            value=raw,
        )
    value = int(raw)
    try:
        datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise InputError(
            "SOURCE_DATE_EPOCH is out of the range of dates", variable=SOURCE_DATE_EPOCH, value=raw
        )
    return value


def now(environ=None) -> datetime:
    """The instant for artifacts: SOURCE_DATE_EPOCH when set, else the clock."""
    fixed = source_date_epoch(environ)
    if fixed is not None:
        return datetime.fromtimestamp(fixed, UTC)
    return datetime.now(UTC)


def wall_clock() -> datetime:
    """The real time, for log records only (never for artifacts)."""
    return datetime.now(UTC)


def format_iso(moment: datetime, timespec: str = "seconds") -> str:
    """``2025-10-31T12:00:00Z`` (with .mmm or .uuuuuu for finer timespecs)."""
    digits = _TIMESPECS[timespec]
    moment = _as_utc(moment)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{moment.microsecond:06d}"[:digits]
    return text + "Z"


def format_compact(moment: datetime) -> str:
    """``20251031T120000Z``: the stamp used in file names."""
    return _as_utc(moment).strftime("%Y%m%dT%H%M%SZ")


def parse_timestamp(text: str, assume_utc: bool = False) -> datetime:
    """Parse ISO 8601 (Z or ±HH:MM offset, 'T' or space) or the compact form.

    Returns an aware UTC datetime. A timestamp without a zone is refused
    unless ``assume_utc`` is set. Fractions finer than microseconds are cut.
    """
    text = text.strip()
    compact = _COMPACT_RE.fullmatch(text)
    try:
        if compact:
            return datetime(*map(int, compact.groups()), tzinfo=UTC)
        match = _ISO_RE.fullmatch(text)
        if not match:
            raise InputError("not an ISO 8601 or compact UTC timestamp", value=text)
        frac = (match["frac"] or "").ljust(6, "0")[:6]
        moment = datetime(
            int(match["y"]),
            int(match["mo"]),
            int(match["d"]),
            int(match["h"]),
            int(match["mi"]),
            int(match["s"]),
            int(frac or 0),
        )
    except ValueError as exc:  # e.g. month 13
        raise InputError(f"invalid timestamp: {exc}", value=text)
    zone = match["tz"]
    if zone is None:
        if not assume_utc:
            raise InputError("timestamp has no time zone (add Z or an offset)", value=text)
        return moment.replace(tzinfo=UTC)
    if zone in ("Z", "z"):
        return moment.replace(tzinfo=UTC)
    sign = 1 if zone[0] == "+" else -1
    digits = zone[1:].replace(":", "")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment.replace(tzinfo=timezone(sign * offset)).astimezone(UTC)


def to_epoch(moment: datetime) -> float:
    return _as_utc(moment).timestamp()


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def run_stamp(environ=None) -> str:
    """The compact stamp for a run's report name."""
    return format_compact(now(environ))


class Stopwatch:
    """Monotonic elapsed time (immune to clock changes). For logs only."""

    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: attach a time zone first")
    return moment.astimezone(UTC)
