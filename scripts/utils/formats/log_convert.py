"""The log converter: raw log text to standardized JSON lines (the command is log_formatter.py).

Every record has ``ts`` (canonical UTC ``...Z``, or null), ``level``,
``source`` (a logger, a program or ``file:line``), ``msg``, ``format``
(what the line was recognised as) and ``line`` (where the record starts),
plus the fields its format carries. The formats, by ``format`` name:

================  ===========================================================================
python            Python logging: ``LEVEL:name:msg``; asctime forms such as
                  ``2025-10-31 12:00:00,123 - name - LEVEL - msg``, ``... LEVEL name: msg``,
                  ``[ts] LEVEL in module: msg``; Hydra's ``[ts][name][LEVEL] - msg``;
                  Hugging Face examples' ``10/31/2025 12:00:00 - LEVEL - name - msg``
transformers      ``transformers`` explicit format ``[LEVEL|file.py:42] ts >> msg``
lightning         Lightning's rank prefix ``[rank: 0] msg``
python_warning    ``path.py:12: UserWarning: msg`` (and Lightning's form without the category)
python_dict       a printed dict such as the HF Trainer's ``{'loss': 0.69, 'epoch': 1.0}``
traceback         ``Traceback (most recent call last):`` when no record is open (an uncaught
                  exception)
level_prefix      a level and the message: ``WARNING: msg`` (absl before it is set up, pip),
                  ``[INFO] msg``
glog              glog/absl (C++ and Python, JAX, torch.distributed.elastic):
                  ``I1126 12:00:00.123456 140123 train.py:42] msg`` (``I20251126`` too;
                  ``I0000 00:00:<Unix time>``)
tensorflow        TensorFlow < 2.16: ``2025-11-26 12:00:04.500000: W tensorflow/...cc:290] msg``
c10               PyTorch's C++ core: ``[W1126 12:00:04.123456789 ProcessGroupNCCL.cpp:1234] msg``
nccl              ``host:pid:tid [dev] NCCL INFO msg`` (WARN with ``file:line``, optional ``[ts]``)
env_logger        Rust: ``[2025-10-31T12:00:00Z INFO  crate::module] msg``
syslog            RFC 3164 / traditional files: ``<PRI>Nov 26 12:00:02 host tag[pid]: msg``
                  (PRI optional), and rsyslog's ``2025-11-26T12:00:02.123456+01:00 host tag: msg``
syslog_rfc5424    ``<165>1 2025-11-26T12:00:02.003Z host app procid msgid [sd] msg``
slurm             ``slurmstepd: error: *** JOB 42 ON node01 CANCELLED AT 2025-11-26T12:00:00 ***``,
                  ``srun: error: ...``
datetime          any line starting with an ISO 8601 date-time (``T`` or space, zone optional)
progress          tqdm and rich progress bars: ``n``, ``total``, ``rate``, ``unit``, ...
logfmt, json      ``ts=... level=info msg="..."``; JSON objects (known fields mapped, the rest kept)
plain             anything else
================  ===========================================================================

Launcher prefixes: torchrun's ``[rank0]:`` / ``[default1]:`` and mpirun's
``[1,0]<stderr>:`` are taken off every line and kept as ``rank`` (with
``role`` or ``stream``).

Multi-line records: a line that starts no record joins the open record
above it (tracebacks, Rust's indented lines) when that record's format can
continue (``CONTINUED_FORMATS``; a warning takes indented lines only) and
both carry the same rank prefix. A line that starts a record of any known
format never continues another, and progress output never joins anything.

Progress bars: tqdm redraws with carriage returns, so a physical line holds
many states; each state becomes a ``progress`` record (``progress="all"``),
or only each bar's last state before something else is kept
(``progress="last"``), or none (``progress="none"``). Log text written
after a bar on the same line is split off and parsed on its own.

Time: stamps carrying a zone are converted with it; stamps without one are
read in ``utc_offset``. A stamp without a year (glog, c10, RFC 3164) takes
it from ``year_reference``: each month-day is placed in the twelve months
ending on that date (so a log that crosses New Year reads right when the
reference is its last day). ``ts`` is always UTC; whenever it differs from
the text in the line, that text is kept in ``ts_raw``. A date that does not
exist leaves ``ts`` null.

Bytes: invalid UTF-8 is kept as ``\\xNN`` escapes (flag ``invalid_utf8``);
ANSI colour and cursor sequences are removed (flag ``ansi``); other
control characters are kept, JSON-escaped (flag ``control_chars``).
Memory stays constant: input is read in blocks, and over-long lines and
joined records are cut at fixed bounds.

Usage:
    python scripts/utils/log_formatter.py raw.log > raw.jsonl
    torchrun train.py 2>&1 | \\
        python scripts/utils/log_formatter.py --utc-offset +01:00 --progress last
"""

from __future__ import annotations

import ast
import gc
import os
import re
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta

import orjson

from scripts.utils import timestamps
from scripts.utils.errors import InputError

BLOCK_BYTES = 1 << 18  # input is read in blocks of whole lines
MAX_PROCESSES = 8  # --workers beyond the CPUs or this gain nothing and cost memory
MAX_LINE_BYTES = 1 << 20  # a longer line is cut into pieces (flagged "split")
MAX_JOINED_LINES = 10_000  # continuation lines joined into one record at most
MAX_JOINED_CHARS = 4 << 20
MAX_DICT_CHARS = 1 << 16  # a printed Python dict longer than this stays plain text
MAX_PROGRESS_CHARS = 4096  # a longer line is no progress bar (and its regexes never see it)
PARALLEL_AFTER_BLOCKS = 4  # with --workers > 1, start the processes once the input is this large
PROGRESS_MODES = ("all", "last", "none")

# Formats whose records take the continuation lines that follow them.
CONTINUED_FORMATS = frozenset(
    {
        "python",
        "transformers",
        "lightning",
        "python_warning",
        "glog",
        "c10",
        "nccl",
        "env_logger",
        "datetime",
        "traceback",
        "tensorflow",
        "level_prefix",
    }
)
INDENTED_CONTINUATIONS = frozenset(
    {"python_warning"}
)  # a warning's source line is indented; nothing else joins
TRACEBACK_HEAD = "Traceback (most recent call last):"

_LEVEL_NAMES = {
    "TRACE": "trace",
    "DEBUG": "debug",
    "INFO": "info",
    "NOTICE": "info",
    "WARNING": "warning",
    "WARN": "warning",
    "ERROR": "error",
    "ERR": "error",
    "CRITICAL": "critical",
    "FATAL": "critical",
    "NOTSET": "notset",
}
_INITIAL_LEVELS = {
    "D": "debug",
    "V": "debug",
    "I": "info",
    "W": "warning",
    "E": "error",
    "F": "critical",
}
_SYSLOG_SEVERITIES = (
    "critical",
    "critical",
    "critical",
    "error",
    "warning",
    "info",
    "info",
    "debug",
)
_SYSLOG_FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "audit",
    "alert",
    "clock",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
)
_NCCL_LEVELS = {
    "INFO": "info",
    "WARN": "warning",
    "TRACE": "trace",
    "CALL": "trace",
    "ABORT": "critical",
}
_SLURM_LEVELS = {
    "error": "error",
    "warning": "warning",
    "fatal": "critical",
    "info": "info",
    "verbose": "debug",
}
_MONTHS = {
    name: index
    for index, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
_FIELD_ALIASES = {
    "ts": "ts",
    "time": "ts",
    "timestamp": "ts",
    "t": "ts",
    "@timestamp": "ts",
    "asctime": "ts",
    "level": "level",
    "lvl": "level",
    "severity": "level",
    "levelname": "level",
    "msg": "msg",
    "message": "msg",
    "source": "source",
    "logger": "source",
    "name": "source",
    "target": "source",
    "module": "source",
    "caller": "source",
    "component": "source",
}
_SCALE = {
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Z": 1e21,
    "Y": 1e24,
}

# Header patterns match the header only; the message is the rest of the line
# (a trailing `(.*)` would cost time on every line). `[ \t]` rather than `\s`
# between fields, as loggers write them.
_LVL = r"(TRACE|DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|CRITICAL|FATAL|NOTSET)"
# date, clock, fraction, zone
_ISO = re.compile(
    r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:[.,](\d{1,9}))?(Z|[+-]\d\d(?::?\d\d)?| UTC)?"
)
_AFTER_DASHED = re.compile(r" - (\S*) - " + _LVL + r"\b(?: - ?|$)")  # source, level
_AFTER_LEVEL = re.compile(r"\]?[ \t]*(?:[-|:][ \t]*)?\[?" + _LVL + r"\b\]?")  # level
_COLON_NAME = re.compile(r":([^:\s]*):")  # ts:LEVEL:name:msg
_FLASK_NAME = re.compile(r"[ \t]+in[ \t]+([\w.<>\-]+):[ \t]?")  # [ts] LEVEL in module: msg
_BRACKET_NAME = re.compile(r"[ \t]*\[([^\]\s]+)\][ \t]?")  # [ts] [LEVEL] [file:line:func] msg
_SEPARATOR_NAME = re.compile(r"[ \t]*(?:[-|:][ \t]*)?(?:(\S+) - [ \t]*|([\w.<>\-]+):(?:[ \t]+|$))?")
_AFTER_HYDRA = re.compile(r"\]\[([^\]]*)\]\[" + _LVL + r"\](?: -)? ?")  # source, level
_AFTER_RSYSLOG = re.compile(r" ([\w.:-]+) ([A-Za-z][\w./()-]*?)(?:\[(\d+)\])?: ?")  # host, tag, pid
_AFTER_DATETIME = re.compile(r"(?:[ \t]*[-|:>]+[ \t]+|[ \t]+|$)")
_AFTER_TENSORFLOW = re.compile(r": ([DIWEF]) ([^\s\]]+?):(\d+)\] ?")  # level, file, line
_US_DATE = re.compile(
    r"(\d\d)/(\d\d)/(\d{4}) (\d\d:\d\d:\d\d)(?:[.,](\d{1,9}))? - " + _LVL + r" - (.*?) - "
)
_ENV_LOGGER = re.compile(
    r"\[(?:(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)[ \t]+)?"
    + _LVL
    + r"[ \t]*([^\]\s]*)[ \t]*\][ \t]?"
)
_PY_DEFAULT = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL|WARN|TRACE):([^:\s]*):[ \t]?")
_LEVEL_PREFIX = re.compile(_LVL + r"(?::| -| \|)[ \t]+")  # WARNING: msg
_GLOG = re.compile(
    r"([DIWEF])(\d{8}|\d{4}) (\d\d:\d\d:\d+)(?:\.(\d{1,9}))? +(\d+) ([^\s\]]+?):(\d+)\] ?"
)
_C10 = re.compile(
    r"\[([FEWIV])(?:(\d{3,4}) (\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?)? ([^\s\]]+?):(\d+)\] ?"
)
_TRANSFORMERS = re.compile(
    r"\[" + _LVL + r"\|([^\]|]+?):(\d+)\] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:[.,](\d{1,9}))? >> ?"
)
_LIGHTNING = re.compile(r"\[rank: (\d+)\] ?")
_RANK_PREFIX = re.compile(r"\[([A-Za-z_][\w-]*?)?(\d+)\]: ?|\[\d+,(\d+)\]<(stdout|stderr)>: ?")
_SYSLOG_PRI = re.compile(r"<(\d{1,3})>")
_SYSLOG_3164 = re.compile(
    r"([A-Z][a-z]{2}) ([ \d]\d) (\d\d:\d\d:\d\d) ([\w.:-]+) ([^\s:\[]+)(?:\[(\d+)\])?: ?"
)
_SYSLOG_5424 = re.compile(r"1 (\S+) (\S+) (\S+) (\S+) (\S+) ")
_SD_ELEMENT = re.compile(r'\[([^\s\]=]+)((?: [^\s\]=]+="(?:[^"\\\]]|\\.)*")*)\]')
_SD_PARAM = re.compile(r' ([^\s\]=]+)="((?:[^"\\\]]|\\.)*)"')
_SD_UNESCAPE = re.compile(r'\\([\\"\]])')
_SLURM = re.compile(
    r"(slurmstepd|srun|sbatch|salloc|sattach|scancel|scontrol)(?:-([\w.-]+))?: "
    r"(?:(error|warning|fatal|info|verbose|debug\d?): )?"
)
_SLURM_CANCELLED = re.compile(
    r"\*\*\* (?:JOB|STEP) (\S+) ON (\S+) CANCELLED AT (\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)"
)
_NCCL = re.compile(
    r"(?:\[(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.(\d+))?\] )?([\w.-]+):(\d+):(\d+) \[(\d+)\] "
    r"(?:[\d.]+ )?(?:(\S+):(\d+) (?:\([^)]*\) )?)?NCCL (INFO|WARN|TRACE|CALL|ABORT)\b ?"
)
_PY_WARNING = re.compile(r"(.+?\.py):(\d+): (?:([A-Z]\w*Warning): )?")
# Progress bars are read in pieces, each matched where it must stand, never by one pattern that
# starts with a lazy ``(.*?)``: that form retries everything after it at every position, quadratic
# in a crafted line. tqdm: "{desc}{percent}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate},
# {postfix}]"
_TQDM_MARK = re.compile(r"\d%\|")
_TQDM_PERCENT = re.compile(r"\d{1,3}\Z")  # searched back from each mark
_TQDM_COUNTS = re.compile(r"[^|]*\| *([\d.]+[kMGTPEZY]?)/([\d.]+[kMGTPEZY]?) \[")
_TQDM_TIMES = re.compile(r"([^<]*)<([^,]*)(?:,( *[^,]*))?(?:, (.*))?", re.DOTALL)
# tqdm without a total: "{desc}{n}{unit} [{elapsed}, {rate}, {postfix}]"
_TQDM_UNSIZED_ELAPSED = re.compile(r" \[(\d[\d:d ]*),")
_TQDM_UNSIZED_COUNT = re.compile(
    r"(?<![\d.])([\d.]+[kMGTPEZY]?)([A-Za-z]*)\Z"
)  # searched up to each " [d"
_TQDM_UNSIZED_TAIL = re.compile(r"( *[^,]*)(?:, (.*))?", re.DOTALL)
MAX_BAR_TRIES = (
    4  # places a bar may start that are tried in one line: real lines hold one bar near the start
)
_RICH_BAR = re.compile(
    r"(?<![━╸╺])[━╸╺]+(?= |$)"
)  # a whole run of bar glyphs, then a blank or the end
RICH_COLUMNS_CHARS = (
    512  # what follows a rich bar that is read for its columns (count, percent, times, rate)
)
_RICH_COUNT = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)")
_RICH_PERCENT = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)%")
_RICH_TIMES = re.compile(
    r"(?<![\d:-])(?:([\d-]+:[\d-]{2}:[\d-]{2}) • "
    r"([\d-]+:[\d-]{2}:[\d-]{2})|([\d-]+:[\d-]{2}:[\d-]{2}))"
)
_RATE = re.compile(r"(?<![\d.])(?:([\d.]+) ?([A-Za-z]*)/s(?![A-Za-z])|([\d.]+) ?s/([A-Za-z]+))")
_LOGFMT_PAIR_TEXT = r'[^\s="]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
# Pairs apart by blanks: a value can then not shrink into the next key, so a long line costs linear
# time.
_LOGFMT_LINE = re.compile(
    r"[ \t]*" + _LOGFMT_PAIR_TEXT + r"(?:[ \t]+" + _LOGFMT_PAIR_TEXT + r")+[ \t]*"
)
_LOGFMT_PAIR = re.compile(r'([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_LOGFMT_UNESCAPE = re.compile(r"\\(.)")
_EPOCH_TEXT = re.compile(r"\d{9,19}(?:\.\d+)?")
_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ "
    r"-/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[PX^_][^\x1b]*(?:\x1b\\)?|[@-Z\\-_])"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # not \t \n \r


def parse_utc_offset(text: str) -> timedelta:
    """``+02:00`` / ``-0530`` / ``Z`` -> timedelta; InputError otherwise.

    The offsets in use on Earth run from -12:00 to +14:00; minutes are 00 to 59.
    """
    match = re.fullmatch(r"([+-])(\d\d):?(\d\d)|Z|UTC", text)
    if not match:
        raise InputError("--utc-offset must look like +02:00, -0530 or Z", value=text)
    if match.group(1) is None:
        return timedelta(0)
    hours, minutes = int(match.group(2)), int(match.group(3))
    delta = timedelta(hours=hours, minutes=minutes)
    delta = delta if match.group(1) == "+" else -delta
    if minutes > 59 or not timedelta(hours=-12) <= delta <= timedelta(hours=14):
        raise InputError(
            "--utc-offset must lie between -12:00 and +14:00 (minutes 00 to 59)", value=text
        )
    return delta


def parse_year_reference(text: str | None) -> date:
    """``--year``: ``YYYY`` (every year-less stamp in that year) or ``YYYY-MM-DD`` (each in the
    twelve months ending that day); None: the run's stamp (SOURCE_DATE_EPOCH or the clock)."""
    if text is None:
        return timestamps.now().date()
    match = re.fullmatch(r"(\d{4})(?:-(\d\d)-(\d\d))?", text)
    if match is None or int(match.group(1)) < 1900:
        raise InputError(
            "--year must be a year (2025) or the log's last day (2025-03-01), from 1900 on",
            value=text,
        )
    if match.group(2) is None:
        return date(int(match.group(1)), 12, 31)
    try:
        return date(*map(int, match.groups()))
    except ValueError as exc:
        raise InputError(f"--year is not a real day: {exc}", value=text)


@dataclass(frozen=True)
class Settings:
    """What a conversion depends on besides the input (picklable, for worker processes)."""

    utc_offset: timedelta = timedelta(0)
    year_reference: date | None = None  # None: the run's stamp
    progress: str = "all"
    label: str | None = None
    max_joined_lines: int = MAX_JOINED_LINES
    max_joined_chars: int = MAX_JOINED_CHARS


def _settings(utc_offset: timedelta, year_reference, progress: str, label=None) -> Settings:
    """Settings with the year reference fixed (every block of one input uses the same) and
    today's limits."""
    if progress not in PROGRESS_MODES:
        raise InputError(f"progress must be one of {', '.join(PROGRESS_MODES)}", value=progress)
    if year_reference is None:
        year_reference = parse_year_reference(None)
    return Settings(utc_offset, year_reference, progress, label, MAX_JOINED_LINES, MAX_JOINED_CHARS)


class _Clock:
    """Turns date and clock parts into canonical UTC text, fast.

    Zone offsets move hours and minutes only, so each minute (date, HH:MM and
    zone) is converted once and cached; seconds and the fraction (cut to
    microseconds) are carried over. A date that does not exist gives None.
    """

    def __init__(self, settings: Settings):
        sign = "+" if settings.utc_offset >= timedelta(0) else "-"
        minutes = abs(int(settings.utc_offset.total_seconds())) // 60
        self.default_zone = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        self.reference = settings.year_reference
        self.cache: dict = {}

    def utc(self, day: str, clock: str, fraction, zone):
        """``("2025-10-31", "12:00:00", "123" or None, "+01:00" / "Z" / " UTC" / None)`` ->
        ``...Z`` or None."""
        key = day + clock[:5] + (zone or "")
        prefix = self.cache.get(key)
        if prefix is None:
            prefix = self._minute_prefix(key, day, clock[:5], zone)
        seconds = clock[6:8]
        if not prefix or seconds > "60":
            return None
        return prefix + ":" + seconds + ("." + fraction[:6] if fraction else "") + "Z"

    def _minute_prefix(self, key: str, day: str, hour_minute: str, zone) -> str:
        if not zone:
            zone = self.default_zone
        elif zone == " UTC":
            zone = "Z"
        elif len(zone) == 3:  # +01
            zone += ":00"
        try:
            prefix = timestamps.format_iso(
                timestamps.parse_timestamp(f"{day}T{hour_minute}:00{zone}")
            )[:16]
        except InputError:
            prefix = ""
        if len(self.cache) > 4096:
            self.cache.clear()
        self.cache[key] = prefix
        return prefix

    def year_for(self, month: int, day: int) -> int:
        """The year of a month-day without one: within the twelve months ending on the reference."""
        reference = self.reference
        return (
            reference.year
            if (month, day) <= (reference.month, reference.day)
            else reference.year - 1
        )

    def month_day(self, month: int, day: int, clock: str, fraction):
        """A stamp without year or zone (glog, c10, RFC 3164), read in the default zone."""
        if not 1 <= month <= 12:
            return None
        return self.utc(
            f"{self.year_for(month, day):04d}-{month:02d}-{day:02d}", clock, fraction, None
        )


def _record(ts, level, source, msg, fmt: str, number: int, raw_ts=None) -> dict:
    record = {"ts": ts, "level": level, "source": source, "msg": msg, "format": fmt, "line": number}
    if raw_ts is not None and raw_ts != ts:
        record["ts_raw"] = raw_ts
    return record


def _plain_record(text: str, number: int) -> dict:
    return {
        "ts": None,
        "level": None,
        "source": None,
        "msg": text,
        "format": "plain",
        "line": number,
    }


def _unjoined_record(text: str, number: int) -> dict:
    """A line that starts no record and continues none: an uncaught exception's traceback, or
    plain text."""
    if text == TRACEBACK_HEAD:
        return {
            "ts": None,
            "level": "error",
            "source": None,
            "msg": text,
            "format": "traceback",
            "line": number,
        }
    return _plain_record(text, number)


# ---------------------------------------------------------------- headers, by the line's first
# character


def _dated(line: str, number: int, clock: _Clock):
    """Lines that start with a digit: Python asctime forms, rsyslog, HF's US date, any ISO
    date-time."""
    stamp = _ISO.match(line)
    if stamp is None:
        if line[2:3] == "/":
            return _us_dated(line, number, clock)
        return None
    end = stamp.end()
    raw_ts = line[:end]
    ts = clock.utc(*stamp.groups())
    record = _python_after_stamp(line, end, ts, raw_ts, number, _AFTER_DASHED)
    if record:
        return record
    after = _AFTER_TENSORFLOW.match(line, end)
    if after:  # TensorFlow's C++ logging before 2.16
        initial, path, line_number = after.groups()
        return _record(
            ts,
            _INITIAL_LEVELS[initial],
            f"{path}:{line_number}",
            line[after.end() :],
            "tensorflow",
            number,
            raw_ts,
        )
    if (
        stamp.group(3)
        and len(stamp.group(3)) == 6
        and stamp.group(4)
        and stamp.group(4)[0] in "+-Z"
        and line[10] == "T"
    ):
        after = _AFTER_RSYSLOG.match(line, end)
        if after:
            host, tag, pid = after.groups()
            record = _record(ts, None, tag, line[after.end() :], "syslog", number, raw_ts)
            record["host"] = host
            if pid:
                record["pid"] = int(pid)
            return record
    after = _AFTER_DATETIME.match(line, end)
    if after:
        return _record(ts, None, None, line[after.end() :], "datetime", number, raw_ts)
    return None


def _python_after_stamp(line: str, end: int, ts, raw_ts, number: int, named_first):
    """A Python logging record whose time stamp ends at ``end``, or None. ``named_first`` matches
    the forms that put the logger before the level (``- name - LEVEL -``; Hydra's
    ``][name][LEVEL]``)."""
    after = named_first.match(line, end)
    if after:
        source, level = after.groups()
        return _record(
            ts, _LEVEL_NAMES[level], source or None, line[after.end() :], "python", number, raw_ts
        )
    parsed = _level_and_source(line, end)
    if parsed:
        level, source, start = parsed
        return _record(ts, _LEVEL_NAMES[level], source, line[start:], "python", number, raw_ts)
    return None


def _level_and_source(line: str, end: int):
    """After a time stamp: ``(level, source or None, where the message starts)`` for the
    Python asctime forms (``LEVEL name: msg``, ``- LEVEL - name - msg``, ``| LEVEL | name - msg``,
    ``:LEVEL:name:msg``, ``[LEVEL] msg``, ``LEVEL in module: msg``, DeepSpeed's
    ``[LEVEL] [file.py:12:func] msg``), or None without a level."""
    match = _AFTER_LEVEL.match(line, end)
    if match is None:
        return None
    level, position = match.group(1), match.end()
    named = (
        _COLON_NAME.match(line, position)
        or _FLASK_NAME.match(line, position)
        or _BRACKET_NAME.match(line, position)
    )
    if named:
        return level, named.group(1) or None, named.end()
    named = _SEPARATOR_NAME.match(line, position)
    return level, named.group(1) or named.group(2), named.end()


def _us_dated(line: str, number: int, clock: _Clock):
    """Hugging Face examples' basicConfig: ``10/31/2025 12:00:00 - INFO - __main__ - msg`` (month
    first)."""
    match = _US_DATE.match(line)
    if match is None:
        return None
    month, day, year, time_of_day, fraction, level, source = match.groups()
    ts = clock.utc(f"{year}-{month}-{day}", time_of_day, fraction, None)
    raw_ts = line[: match.end(5) if fraction else match.end(4)]
    return _record(
        ts, _LEVEL_NAMES[level], source or None, line[match.end() :], "python", number, raw_ts
    )


def _bracketed(line: str, number: int, clock: _Clock):
    """Lines that start with '[': c10, transformers, env_logger, Hydra and Flask forms,
    Lightning, NCCL."""
    second = line[1:2]
    if second in "FEWIV" and (match := _C10.match(line)):
        initial, month_day, time_of_day, fraction, path, line_number = match.groups()
        ts = raw_ts = None
        if month_day:
            raw_ts = line[2 : match.end(4) if fraction else match.end(3)]
            ts = clock.month_day(int(month_day[:-2]), int(month_day[-2:]), time_of_day, fraction)
        return _record(
            ts,
            _INITIAL_LEVELS[initial],
            f"{path}:{line_number}",
            line[match.end() :],
            "c10",
            number,
            raw_ts,
        )
    if "|" in line[:12] and (match := _TRANSFORMERS.match(line)):
        level, path, line_number, stamp, fraction = match.groups()
        day, time_of_day = stamp.split(" ")
        ts = clock.utc(day, time_of_day, fraction, None)
        return _record(
            ts,
            _LEVEL_NAMES[level],
            f"{path}:{line_number}",
            line[match.end() :],
            "transformers",
            number,
            line[match.start(4) : match.end(5) if fraction else match.end(4)],
        )
    match = _ENV_LOGGER.match(line)
    if match:
        raw_ts, level, source = match.groups()
        ts = None
        if raw_ts:
            stamp = _ISO.fullmatch(raw_ts)
            ts = clock.utc(*stamp.groups()) if stamp else None
        fmt = "env_logger" if raw_ts or source else "level_prefix"  # a bare [INFO] names no crate
        return _record(
            ts, _LEVEL_NAMES[level], source or None, line[match.end() :], fmt, number, raw_ts
        )
    if "0" <= second <= "9":
        stamp = _ISO.match(line, 1)
        if stamp:
            raw_ts, end = line[1 : stamp.end()], stamp.end()
            ts = clock.utc(*stamp.groups())
            record = _python_after_stamp(line, end, ts, raw_ts, number, _AFTER_HYDRA)
            if record:
                return record
            if " NCCL " in line:
                return _nccl(line, number, clock)
            if line[end : end + 1] == "]":
                after = _AFTER_DATETIME.match(line, end + 1)
                if after:
                    return _record(ts, None, None, line[after.end() :], "datetime", number, raw_ts)
        return None
    match = _LIGHTNING.match(line)
    if match:
        record = _record(None, None, None, line[match.end() :], "lightning", number)
        record["rank"] = int(match.group(1))
        return record
    return None


def _lettered(line: str, number: int, clock: _Clock):
    """Lines that start with a letter: glog/absl, RFC 3164 syslog, Python's default form, Slurm."""
    first = line[:1]
    if first in "IWEFD" and line[1:5].isdigit():
        match = _GLOG.match(line)
        if match:
            return _glog(line, match, number, clock)
    if line[:3] in _MONTHS and line[3:4] == " ":
        return _syslog_3164(line, 0, number, clock, None)
    if first == "s":
        match = _SLURM.match(line)
        return _slurm(line, match, number, clock) if match else None
    match = _PY_DEFAULT.match(line)
    if match:
        level, source = match.groups()
        return _record(
            None, _LEVEL_NAMES[level], source or None, line[match.end() :], "python", number
        )
    match = _LEVEL_PREFIX.match(line)
    if match:
        return _record(
            None, _LEVEL_NAMES[match.group(1)], None, line[match.end() :], "level_prefix", number
        )
    return None


def _glog(line: str, match, number: int, clock: _Clock) -> dict:
    initial, month_day, time_of_day, fraction, thread, path, line_number = match.groups()
    raw_ts = line[1 : match.start(5)].rstrip()
    if month_day == "0000" and time_of_day.startswith("00:00:") and len(time_of_day) > 8:
        ts = _epoch_stamp(
            int(time_of_day[6:]), fraction
        )  # absl before its clock is set up: Unix seconds
    elif len(time_of_day) != 8:
        ts = None
    elif len(month_day) == 8:  # glog >= 0.6 writes the year
        ts = clock.utc(
            f"{month_day[:4]}-{month_day[4:6]}-{month_day[6:]}", time_of_day, fraction, None
        )
    else:
        ts = clock.month_day(int(month_day[:2]), int(month_day[2:]), time_of_day, fraction)
    record = _record(
        ts,
        _INITIAL_LEVELS[initial],
        f"{path}:{line_number}",
        line[match.end() :],
        "glog",
        number,
        raw_ts,
    )
    record["thread"] = int(thread)
    return record


def _epoch_stamp(seconds: int, fraction):
    """Unix seconds and a fraction's digits -> canonical UTC text, or None out of range."""
    try:
        moment = timestamps.from_epoch(seconds)
    except (OverflowError, OSError, ValueError):
        return None
    return timestamps.format_iso(moment)[:-1] + ("." + fraction[:6] if fraction else "") + "Z"


def _syslog(line: str, number: int, clock: _Clock):
    """``<PRI>``: RFC 5424 when a version follows, else RFC 3164."""
    pri = _SYSLOG_PRI.match(line)
    if pri is None or int(pri.group(1)) > 191:
        return None
    value = int(pri.group(1))
    if line.startswith("1 ", pri.end()):
        return _syslog_5424(line, pri.end(), number, clock, value)
    if line[pri.end() : pri.end() + 3] in _MONTHS:
        return _syslog_3164(line, pri.end(), number, clock, value)
    return None


def _syslog_fields(record: dict, pri) -> dict:
    if pri is not None:
        record["level"] = _SYSLOG_SEVERITIES[pri % 8]
        record["facility"] = _SYSLOG_FACILITIES[pri // 8]
    return record


def _syslog_3164(line: str, start: int, number: int, clock: _Clock, pri):
    match = _SYSLOG_3164.match(line, start)
    if match is None:
        return None
    month, day, time_of_day, host, tag, pid = match.groups()
    ts = clock.month_day(_MONTHS.get(month, 0), int(day), time_of_day, None)
    record = _record(
        ts, None, tag, line[match.end() :], "syslog", number, line[start : match.end(3)]
    )
    record["host"] = host
    if pid:
        record["pid"] = int(pid)
    return _syslog_fields(record, pri)


def _syslog_5424(line: str, start: int, number: int, clock: _Clock, pri: int):
    match = _SYSLOG_5424.match(line, start)
    if match is None:
        return None
    raw_ts, host, app, procid, msgid = (None if value == "-" else value for value in match.groups())
    ts = None
    if raw_ts is not None:
        stamp = _ISO.fullmatch(raw_ts)
        ts = clock.utc(*stamp.groups()) if stamp else None
    rest = line[match.end() :]
    structured = None
    if rest.startswith("-"):
        rest = rest[2:] if rest[1:2] == " " else rest[1:]
    elif rest.startswith("["):
        structured, position = {}, 0
        while (element := _SD_ELEMENT.match(rest, position)) is not None:
            structured[element.group(1)] = {
                key: _SD_UNESCAPE.sub(r"\1", value)
                for key, value in _SD_PARAM.findall(element.group(2))
            }
            position = element.end()
        rest = rest[position + 1 :] if rest[position : position + 1] == " " else rest[position:]
    if rest.startswith("\ufeff"):  # the BOM that marks a UTF-8 message
        rest = rest[1:]
    record = _record(ts, None, app, rest, "syslog_rfc5424", number, raw_ts)
    for key, value in (
        ("host", host),
        ("procid", procid),
        ("msgid", msgid),
        ("structured_data", structured),
    ):
        if value is not None:
            record[key] = value
    return _syslog_fields(record, pri)


def _slurm(line: str, match, number: int, clock: _Clock) -> dict:
    program, host, level = match.groups()
    msg = line[match.end() :]
    ts = raw_ts = None
    cancelled = _SLURM_CANCELLED.search(msg)
    if cancelled:  # Slurm writes the controller's local time
        ts, raw_ts = (
            clock.utc(cancelled.group(3), cancelled.group(4), None, None),
            f"{cancelled.group(3)}T{cancelled.group(4)}",
        )
    level = "debug" if level and level.startswith("debug") else _SLURM_LEVELS.get(level, "info")
    record = _record(ts, level, program, msg, "slurm", number, raw_ts)
    if host:
        record["host"] = host
    if cancelled:
        record["job"], record["node"] = cancelled.group(1), cancelled.group(2)
    return record


def _nccl(line: str, number: int, clock: _Clock):
    match = _NCCL.match(line)
    if match is None:
        return None
    day, time_of_day, fraction, host, pid, thread, device, path, line_number, level = match.groups()
    ts = clock.utc(day, time_of_day, fraction, None) if day else None
    raw_ts = line[1 : match.end(3) if fraction else match.end(2)] if day else None
    source = f"{path}:{line_number}" if path else "NCCL"
    record = _record(ts, _NCCL_LEVELS[level], source, line[match.end() :], "nccl", number, raw_ts)
    record.update(host=host, pid=int(pid), thread=int(thread), device=int(device))
    return record


_BY_FIRST = {
    "[": _bracketed,
    "<": _syslog,
    **{digit: _dated for digit in "0123456789"},
    **{letter: _lettered for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZs"},
}


def _other_record(line: str, number: int, clock: _Clock):
    """Formats found anywhere in the line: JSON, printed dicts, logfmt, warnings, NCCL, progress
    bars."""
    first = line[:1]
    if first == "{" or (first in " \t" and line.lstrip()[:1] == "{"):
        return _mapped(line, "json", number, clock) or _mapped(line, "python_dict", number, clock)
    if "=" in line and _LOGFMT_LINE.fullmatch(line):
        return _mapped(line, "logfmt", number, clock)
    if (
        ".py:" in line
        and (match := _PY_WARNING.match(line))
        and (match.group(3) or "lightning" in match.group(1))
    ):
        record = _record(
            None,
            "warning",
            f"{match.group(1)}:{match.group(2)}",
            line[match.end() :],
            "python_warning",
            number,
        )
        if match.group(3):
            record["category"] = match.group(3)
        return record
    if " NCCL " in line:
        return _nccl(line, number, clock)
    if len(line) <= MAX_PROGRESS_CHARS and (
        "%|" in line or "━" in line or ("/s" in line and " [" in line)
    ):
        fields = progress_fields(line)
        if fields is not None:
            record = _record(None, None, None, line.strip(), "progress", number)
            record.update(fields)
            return record
    return None


# ---------------------------------------------------------------- progress bars


def _number(text: str):
    """tqdm's ``n_fmt``: ``42``, ``1.50k`` -> a number (int when whole), or None."""
    scale = _SCALE.get(text[-1:]) if text[-1:].isalpha() else None
    try:
        value = float(text[:-1]) * scale if scale else float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value


def _rate(text: str):
    """``40.00it/s`` / ``1.23s/it`` / ``9.04MB/s`` / ``2.50kit/s`` -> (per second, unit), or
    (None, None)."""
    match = _RATE.search(text)
    if match is None:
        return None, None
    value, unit, inverse, inverse_unit = match.groups()
    try:
        if value is None:
            per_item = float(inverse)
            return (round(1 / per_item, 6), inverse_unit) if per_item else (None, inverse_unit)
        value = float(value)
    except ValueError:
        return None, None
    if unit[:1] in _SCALE and unit[1:] in (
        "it",
        "B",
        "iB",
        "b",
    ):  # tqdm's unit_scale prefix: kit/s, MB/s
        return value * _SCALE[unit[:1]], unit[1:]
    return value, unit


class _Bar(tuple):
    """A progress bar found in a line: its fields (as a regex match's groups) and where it ends."""

    def __new__(cls, groups, end: int):
        bar = super().__new__(cls, groups)
        bar.end = end
        return bar


def _bracket(text: str, start: int, pattern):
    """``pattern`` matched on the text from ``start`` up to the next ']' (None without one):
    (match, its end)."""
    close = text.find("]", start)
    if close < 0:
        return None, -1
    return pattern.fullmatch(text, start, close), close + 1


def _tqdm_heads(text: str):
    """``(start, percent, end)`` of the first MAX_BAR_TRIES "{percent}%|" in ``text``: where a
    bar may begin."""
    start = 0
    for tries, mark in enumerate(_TQDM_MARK.finditer(text)):
        if tries == MAX_BAR_TRIES:
            return
        percent = _TQDM_PERCENT.search(text, max(start, mark.start() - 2), mark.start() + 1)
        start = mark.end()
        yield percent.start(), percent.group(), mark.end()


def _tqdm(text: str):
    """A tqdm bar with a total: (desc, percent, n, total, elapsed, remaining, rate, postfix), or
    None."""
    for start, percent, end in _tqdm_heads(text):
        counts = _TQDM_COUNTS.match(text, end)
        if counts is None:
            continue
        times, end = _bracket(text, counts.end(), _TQDM_TIMES)
        if end < 0:
            return None
        if times is not None:
            elapsed, remaining, rate, postfix = times.groups()
            return _Bar(
                (
                    text[:start],
                    percent,
                    *counts.groups(),
                    elapsed,
                    remaining,
                    None if rate is None else rate.lstrip(" "),
                    postfix,
                ),
                end,
            )
    return None


def _tqdm_unsized(text: str):
    """A tqdm bar without a total: (desc, n, unit, elapsed, rate, postfix), or None."""
    start = 0
    for tries, elapsed in enumerate(_TQDM_UNSIZED_ELAPSED.finditer(text)):
        if tries == MAX_BAR_TRIES:
            return None
        count = _TQDM_UNSIZED_COUNT.search(text, start, elapsed.start())
        start = elapsed.end()
        if count is None:
            continue
        tail, end = _bracket(text, elapsed.end(), _TQDM_UNSIZED_TAIL)
        if end < 0:
            return None
        if tail is not None:
            return _Bar(
                (
                    text[: count.start()],
                    *count.groups(),
                    elapsed.group(1),
                    tail.group(1).lstrip(" "),
                    tail.group(2),
                ),
                end,
            )
    return None


def _rich(text: str):
    """A rich bar: (desc, what follows the bar or None), or None. The bar is a run of ━╸╺
    followed by a blank or the end of the line."""
    run = _RICH_BAR.search(text)
    return (
        None
        if run is None
        else (text[: run.start()].rstrip(" "), text[run.end() :].lstrip(" ") or None)
    )


def _bar_end(text: str) -> int:
    """Where a tqdm bar at the start of ``text`` ends (its closing ']'), or -1."""
    bar = _tqdm(text) or _tqdm_unsized(text)
    return bar.end if bar else -1


def progress_fields(text: str):
    """The fields of one tqdm or rich progress-bar state, or None when ``text`` is not one."""
    bar = _tqdm(text)
    if bar and not text[bar.end :].strip():
        desc, percent, done, total, elapsed, remaining, rate, postfix = bar
        fields = {"n": _number(done), "total": _number(total), "percent": int(percent)}
    else:
        bar = _tqdm_unsized(text)
        if bar and not text[bar.end :].strip() and bar[0].strip()[-1:] in ("", ":"):
            desc, done, unit, elapsed, rate, postfix = bar
            remaining = None
            fields = {"n": _number(done), "total": None}
        else:
            return _rich_fields(text)
    per_second, unit = _rate(rate or "")
    fields.update(rate=per_second, unit=unit, bar="tqdm")
    desc = desc.strip().rstrip(":").strip()
    for key, value in (
        ("desc", desc),
        ("elapsed", elapsed),
        ("remaining", remaining),
        ("postfix", postfix),
    ):
        if value and value.strip() and value.strip() != "?":
            fields[key] = value.strip()
    return fields


def _rich_fields(text: str):
    bar = _rich(text)
    if bar is None:
        return None
    desc, rest = bar[0].strip(), (bar[1] or "")[:RICH_COLUMNS_CHARS]
    count, percent = _RICH_COUNT.search(rest), _RICH_PERCENT.search(rest)
    if count is None and percent is None:
        return None
    fields = {
        "n": _number(count.group(1)) if count else None,
        "total": _number(count.group(2)) if count else None,
    }
    if percent:
        fields["percent"] = _number(percent.group(1))
    per_second, unit = _rate(rest)
    fields.update(rate=per_second, unit=unit, bar="rich")
    if desc:
        fields["desc"] = desc
    times = _RICH_TIMES.search(rest)
    if times and times.group(1):
        fields["elapsed"], fields["remaining"] = times.group(1), times.group(2)
    elif times:
        fields["remaining"] = times.group(3)
    return fields


def _bar_key(record: dict) -> tuple:
    """Records of one bar share this: a later state replaces an earlier one under
    ``progress="last"``."""
    return record.get("desc"), record["total"], record.get("rank")


# ---------------------------------------------------------------- lines


def _prepared(text: str, flags):
    """One line that needs care, as a list of items for ``_records``.

    ANSI sequences are removed (flag ``ansi``); remaining control characters
    are flagged. Carriage returns split the line into the states a terminal
    would have shown one after the other: each becomes an item of its own
    (the second and later marked as the same line), and log text written
    right after a progress bar is split from it.
    """
    if "\x1b" in text:
        stripped = _ANSI.sub("", text)
        if stripped != text:
            flags = dict(flags or (), ansi=True)
            text = stripped
    if not text.isprintable() and _CONTROL.search(text):
        flags = dict(flags or (), control_chars=True)
    if "\r" not in text:
        return [text if flags is None else (text, flags)]
    flags = flags or {}
    pieces = []
    for segment in text.split("\r"):
        while segment.strip():
            end = (
                _bar_end(segment)
                if len(segment) <= MAX_PROGRESS_CHARS and ("%|" in segment or " [" in segment)
                else -1
            )
            if end < 0 or not segment[end:].strip():
                pieces.append(segment)
                break
            pieces.append(segment[:end])
            segment = segment[end:]
    if not pieces:
        return [("", flags)]
    return [(pieces[0], flags)] + [(piece, flags, True) for piece in pieces[1:]]


def _decode_line(raw: bytes) -> list:
    """One line of bytes as items (see ``_prepared``); invalid UTF-8 is kept as \\xNN (flag
    ``invalid_utf8``)."""
    flags = None
    if raw[-1:] == b"\r":
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "backslashreplace")
        flags = {"invalid_utf8": True}
    if flags is None and text.isprintable():
        return [text]
    return _prepared(text, flags)


def _blocks(stream, block_bytes: int, max_line: int):
    """Yield ``(data, line_count, split)`` from a binary stream, in constant memory.

    ``data`` holds whole lines joined by newlines (without the last one). A
    line longer than ``max_line`` is cut into pieces of exactly ``max_line``
    bytes, each yielded alone with ``split`` set, so the cut does not depend
    on where blocks fall.
    """
    tail = b""
    while True:
        block = stream.read(block_bytes)
        if not block:
            break
        tail += block
        cut = tail.rfind(b"\n")
        if cut >= 0:
            first_newline = tail.find(b"\n")
            while first_newline > max_line:  # the pending line was already too long
                yield tail[:max_line], 1, True
                tail = tail[max_line:]
                first_newline -= max_line
                cut -= max_line
            yield tail[:cut], tail.count(b"\n", 0, cut) + 1, False
            tail = tail[cut + 1 :]
        while len(tail) > max_line:
            yield tail[:max_line], 1, True
            tail = tail[max_line:]
    if tail:
        yield tail, tail.count(b"\n") + 1, False


def _block_lines(data: bytes, split: bool) -> list:
    """The items of one block: ``str`` for clean lines, tuples for lines that needed care."""
    if not split:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and not _CONTROL.search(text):  # the fast path: clean text
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            if "\r" not in text[:-1]:
                lines = text.split("\n")
                if lines[-1][-1:] == "\r":
                    lines[-1] = lines[-1][:-1]
                return lines
    lines = []
    for raw in data.split(b"\n"):
        lines += _decode_line(raw)
    if split:  # one piece of a cut line
        first = lines[0]
        text, flags = (first, {}) if type(first) is str else first[:2]
        lines = [(text, dict(flags, split=True))] + [
            (item, {"split": True}, True)
            if type(item) is str
            else (item[0], dict(item[1], split=True), True)
            for item in lines[1:]
        ]
    return lines


# ---------------------------------------------------------------- records


def _records(lines, settings: Settings, counts: dict, first_line: int = 1, block=None):
    """Turn items into JSON-lines records; yield each record's bytes when it is complete.

    An item is a line (``str``), ``(line, flags)``, or ``(line, flags, True)``
    for a later piece of the same physical line. A record that can continue
    stays open while the lines after it are continuations, so it is yielded
    when the next record starts; under ``progress="last"`` a progress record
    is held the same way until another state of its bar replaces it or
    something else comes. ``counts`` receives records per format.

    With ``block`` (a dict) the lines are one block of a larger input: plain
    lines before the block's first record go to ``block["head"]`` (they may
    continue a record from the block before), and the record still open at
    the end goes to ``block["tail"]`` instead of being yielded; see ``_merge``.
    """
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    clock = _Clock(settings)
    parsers, continued = _BY_FIRST, CONTINUED_FORMATS
    max_lines, max_chars = settings.max_joined_lines, settings.max_joined_chars
    progress_mode = settings.progress
    label_field = {"file": settings.label} if settings.label is not None else None
    pending = None  # the open record
    pending_parts = None  # its continuation lines, once it has any
    pending_chars = 0
    pending_key = None  # set when the open record is a held progress state
    pending_rank = None
    pending_indented = False
    head_count = head_chars = 0  # lines in ``head`` since it began or since its last traceback head
    started = block is None
    number = first_line - 1
    for item in lines:
        if type(item) is str:
            line, flags = item, None
            number += 1
        else:
            line, flags = item[0], item[1]
            if len(item) == 2:
                number += 1
        first = line[:1]
        if (
            first == "["
            and (line.find("]:", 2, 40) > 0 or line.find("]<", 2, 16) > 0)
            and (prefix := _RANK_PREFIX.match(line))
        ):
            flags = _rank_flags(prefix, flags)
            line = line[prefix.end() :]
            first = line[:1]
        parse = parsers.get(first)
        record = parse(line, number, clock) if parse is not None else None
        if record is None:
            record = _other_record(line, number, clock)
            if record is None:  # a continuation line, or plain text
                if (
                    pending is not None
                    and pending_key is None
                    and pending_chars + len(line) < max_chars
                    and (pending_parts is None or len(pending_parts) < max_lines)
                    and (flags.get("rank") if flags else None) == pending_rank
                    and (not pending_indented or line[:1] in " \t")
                ):
                    if pending_parts is None:
                        pending_parts = [pending["msg"]]
                    pending_parts.append(line)
                    pending_chars += len(line) + 1
                    if flags:
                        pending.update(flags)
                    continue
                if not started:
                    if line == TRACEBACK_HEAD:  # it may open a record that takes the lines after it
                        head_count = head_chars = 0
                    if head_count < max_lines and head_chars <= max_chars:
                        block["head"].append((line, number, flags))
                        head_count += 1
                        head_chars += len(line) + 1
                        continue
                    # No record open before this line, nor one opened in ``head``, can take this
                    # many lines (see _merge's limits): this line starts a record of its own, here
                    # as in one sequential pass. Keeps ``head`` small, so plain text is converted in
                    # the worker processes too.
                record = _unjoined_record(line, number)
        if label_field:
            record.update(label_field)
        if flags:
            record.update(flags)
        fmt = record["format"]
        key = _bar_key(record) if fmt == "progress" and progress_mode != "all" else None
        if not started:
            started = True
            block["first_key"] = key
        if pending is not None:
            if key is not None and key == pending_key:
                counts["progress"] -= 1  # the earlier state of this bar is replaced
            else:
                yield _dump_open(pending, pending_parts)
            pending = pending_parts = pending_key = None
        if key is not None and progress_mode == "none":
            continue
        counts[fmt] = counts.get(fmt, 0) + 1
        if key is not None:
            pending, pending_key, pending_chars = record, key, 0
        elif fmt in continued:
            pending, pending_chars, pending_rank = record, len(record["msg"]), record.get("rank")
            pending_indented = fmt in INDENTED_CONTINUATIONS
        else:
            yield dumps(record, option=newline)
    if block is not None:
        block["started"] = started
        block["tail"] = (
            None if pending is None else [pending, pending_parts, pending_chars, pending_key]
        )
    elif pending is not None:
        yield _dump_open(pending, pending_parts)


def _rank_flags(prefix, flags) -> dict:
    """The fields of a launcher's line prefix: torchrun ``[rank0]:`` / ``[trainer1]:``, mpirun
    ``[1,0]<stderr>:``."""
    role, rank, mpi_rank, stream = prefix.groups()
    flags = dict(flags or ())
    if mpi_rank is not None:
        flags.update(rank=int(mpi_rank), stream=stream)
    else:
        flags["rank"] = int(rank)
        if role and role != "rank":
            flags["role"] = role
    return flags


def _dump_open(record: dict, parts) -> bytes:
    """Serialize an open record, joining its continuation lines into ``msg``."""
    if parts is not None:
        while len(parts) > 1 and not parts[-1].strip():
            parts.pop()  # trailing blank lines belong to no message
        record["msg"] = "\n".join(parts)
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _python_literal(text: str):
    """A printed dict of plain values (``str(dict)``), or None."""
    if len(text) > MAX_DICT_CHARS or not text.rstrip().endswith("}"):
        return None
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, dict) or not _plain_value(value):
        return None
    return value


def _plain_value(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain_value(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain_value(item) for item in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _mapped(text: str, fmt: str, number: int, clock: _Clock):
    """A JSON, printed-dict or logfmt line as a record with its known fields mapped, or None."""
    if fmt == "json":
        try:
            fields = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(fields, dict):
            return None
    elif fmt == "python_dict":
        fields = _python_literal(text)
        if fields is None:
            return None
    else:
        fields = dict(_LOGFMT_PAIR.findall(text))  # a repeated key: the last value, as before
        for key, value in fields.items():
            if value.startswith('"'):
                fields[key] = _LOGFMT_UNESCAPE.sub(r"\1", value[1:-1])
    record = {"ts": None, "level": None, "source": None, "msg": None, "format": fmt, "line": number}
    extra = {}
    for key, value in fields.items():
        target = _FIELD_ALIASES.get(key)
        if target is None or record[target] is not None:
            extra[key if key not in record else "field_" + key] = value
        else:
            record[target] = value
    if isinstance(record["level"], str):
        record["level"] = _LEVEL_NAMES.get(record["level"].upper(), record["level"].lower())
    raw_ts = record["ts"]
    if raw_ts is not None:
        record["ts"] = _field_stamp(raw_ts, clock)
        if record["ts"] != raw_ts:
            record["ts_raw"] = raw_ts
    record.update(extra)
    return record


def _field_stamp(value, clock: _Clock):
    """A time field of a JSON or logfmt record: ISO 8601 text, or Unix time in s, ms, us or ns
    (by size)."""
    if isinstance(value, str):
        stamp = _ISO.fullmatch(value)
        if stamp:
            return clock.utc(*stamp.groups())
        try:
            value = float(value) if _EPOCH_TEXT.fullmatch(value) else None
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    magnitude = abs(value)
    per_second = (
        1
        if magnitude < 1e11
        else 1_000
        if magnitude < 1e14
        else 1_000_000
        if magnitude < 1e17
        else 1_000_000_000
    )
    try:
        if isinstance(value, int):
            seconds, rest = divmod(value, per_second)
            moment = timestamps.from_epoch(seconds) + timedelta(
                microseconds=rest * 1_000_000 // per_second
            )
        else:
            moment = timestamps.from_epoch(value / per_second)
    except (OverflowError, OSError, ValueError):
        return None
    return timestamps.format_iso(moment, "microseconds")


# ---------------------------------------------------------------- blocks in parallel, merged in
# order


def _convert_block(data: bytes, split: bool, first_line: int, settings: Settings):
    """Convert one block on its own: in a worker process, or inline for small inputs."""
    block = {"head": [], "first_key": None}
    counts: dict = {}
    collect = gc.isenabled()
    gc.disable()  # a block makes many short-lived acyclic objects: nothing for the collector
    try:
        lines = _block_lines(data, split)
        body = bytearray()  # not b"".join(list): each orjson output holds ~4 KB until it is let go
        for record in _records(lines, settings, counts, first_line, block):
            body += record
        body = bytes(body)
    finally:
        if collect:
            gc.enable()
    return block["head"], body, block["tail"], block["started"], block["first_key"], counts


def _block_results(blocks, settings: Settings, workers: int):
    """Convert blocks in input order; in ``workers`` processes once the input is large."""
    pool = None
    in_flight: deque = deque()
    first_line = 1
    workers = max(1, min(workers, os.cpu_count() or 1, MAX_PROCESSES))
    try:
        for index, (data, line_count, split) in enumerate(blocks):
            if pool is None and index == PARALLEL_AFTER_BLOCKS:
                pool = ProcessPoolExecutor(max_workers=workers)
            args = (data, split, first_line, settings)
            if pool is None:
                yield _convert_block(*args)
            else:
                in_flight.append(pool.submit(_convert_block, *args))
                if len(in_flight) >= 2 * workers:
                    yield in_flight.popleft().result()
            first_line += line_count
        while in_flight:
            yield in_flight.popleft().result()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _merge(results, settings: Settings, counts: dict):
    """Join converted blocks in order, exactly as one sequential pass would."""
    max_lines, max_chars = settings.max_joined_lines, settings.max_joined_chars
    newline = orjson.OPT_APPEND_NEWLINE
    pending = None  # [record, continuation parts or None, chars, progress key or None]
    for head, body, tail, started, first_key, block_counts in results:
        out = bytearray()
        for text, number, flags in head:  # plain lines before the block's first record
            if (
                pending is not None
                and pending[3] is None
                and pending[2] + len(text) < max_chars
                and (pending[1] is None or len(pending[1]) < max_lines)
                and (flags.get("rank") if flags else None) == pending[0].get("rank")
                and (pending[0]["format"] not in INDENTED_CONTINUATIONS or text[:1] in " \t")
            ):
                if pending[1] is None:
                    pending[1] = [pending[0]["msg"]]
                pending[1].append(text)
                pending[2] += len(text) + 1
                if flags:
                    pending[0].update(flags)
                continue
            if pending is not None:
                out += _dump_open(pending[0], pending[1])
                pending = None
            record = _unjoined_record(text, number)
            if settings.label is not None:
                record["file"] = settings.label
            if flags:
                record.update(flags)
            counts[record["format"]] = counts.get(record["format"], 0) + 1
            if record["format"] in CONTINUED_FORMATS:
                pending = [record, None, len(text), None]
            else:
                out += orjson.dumps(record, option=newline)
        if started:
            if pending is not None:
                if first_key is not None and first_key == pending[3]:
                    counts["progress"] -= 1  # replaced by a later state of the same bar
                else:
                    out += _dump_open(pending[0], pending[1])
            out += body
            pending = tail
        for fmt, count in block_counts.items():
            counts[fmt] = counts.get(fmt, 0) + count
        yield bytes(out)
    if pending is not None:
        yield _dump_open(pending[0], pending[1])


def convert_stream(
    source,
    sink,
    utc_offset: timedelta = timedelta(0),
    file_label=None,
    workers: int = 1,
    on_progress=None,
    year_reference: date | None = None,
    progress: str = "all",
) -> dict:
    """Convert a binary input stream to JSON lines written to a binary sink.

    ``workers`` > 1 converts a large input in that many processes; the bytes
    written are the same for any count. ``on_progress(n)`` is called with the
    number of input bytes of each block read. ``year_reference`` and
    ``progress``: see the module docstring. Returns ``{"lines", "records", "formats"}``.
    """
    settings = _settings(utc_offset, year_reference, progress, file_label)
    counts: dict = {}
    total_lines = 0

    def blocks():
        nonlocal total_lines
        for block in _blocks(source, BLOCK_BYTES, MAX_LINE_BYTES):
            total_lines += block[1]
            if on_progress is not None:
                on_progress(len(block[0]) + (not block[2]))
            yield block

    if workers <= 1:

        def lines():
            for data, _, split in blocks():
                yield from _block_lines(data, split)

        chunks = _records(lines(), settings, counts)
    else:
        chunks = _merge(_block_results(blocks(), settings, workers), settings, counts)
    write = sink.write
    for data in chunks:
        write(data)
    formats = {fmt: count for fmt, count in sorted(counts.items()) if count}
    return {"lines": total_lines, "records": sum(formats.values()), "formats": formats}


def convert_lines(
    lines,
    utc_offset: timedelta = timedelta(0),
    year_reference: date | None = None,
    progress: str = "all",
):
    """Library form: convert an iterable of text lines, yield records as dicts (streaming)."""

    def items():
        for line in lines:
            line = line.rstrip("\n")
            if line.endswith("\r"):
                line = line[:-1]
            if line.isprintable():
                yield line
            else:
                yield from _prepared(line, None)

    settings = _settings(utc_offset, year_reference, progress)
    for data in _records(items(), settings, {}):
        yield orjson.loads(data)
