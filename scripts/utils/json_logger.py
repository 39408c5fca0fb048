"""The JSON logger every script logs through, and a progress bar that logs go around.

``JsonLogger`` writes one orjson object per line with ``ts``, ``level``,
``script``, ``event`` and fields, on stderr or in ``--log-file``; ``quiet``
keeps warnings and errors only. ``progress()`` draws a tqdm bar on stderr
when stderr is a terminal; log lines written meanwhile go around the bar.

    log = JsonLogger("my_script")
    log.info("hashed", files=12)
    with progress(total=12, desc="hashing") as bar:
        bar.update(1)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from scripts.utils import timestamps
from scripts.utils.jsonio import json_line
from scripts.utils.limits import INT_MAX, INT_MIN, MAX_DEPTH, printable_name

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_RESERVED = ("ts", "level", "script", "event")
_active_bars = 0  # tqdm bars open on stderr; log lines must go around them


class JsonLogger:
    """One JSON object per line: ts, level, script, event, then fields.

    With ``log_file`` the records go to that file (appended); errors are
    also written to stderr, so a failing run is never silent.
    """

    def __init__(self, script: str, log_file=None, quiet: bool = False):
        self.script = script
        self.threshold = LEVELS["warning"] if quiet else LEVELS["info"]
        self._file = _open_log_file(log_file) if log_file else None

    def log(self, level: str, event: str, **fields) -> None:
        if LEVELS[level] < self.threshold:
            return
        record = {
            "ts": timestamps.format_iso(timestamps.wall_clock(), "milliseconds"),
            "level": level,
            "script": self.script,
            "event": event,
        }
        for key, value in fields.items():
            record["field_" + key if key in _RESERVED else key] = value

        try:
            line = json_line(record)
        except (
            TypeError,
            ValueError,
            RecursionError,
        ):  # a lone surrogate, a huge integer, deep nesting
            line = json_line(_loggable(record))
        if self._file is not None:
            self._file.write(line)
            self._file.flush()
            if level != "error":
                return
        _write_stderr(line.decode("utf-8"))

    def debug(self, event: str, **fields) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields) -> None:
        self.log("error", event, **fields)

    def capture_python_output(self):
        """Route Python ``warnings`` and stdlib ``logging`` (pydicom, matplotlib, PIL...) into this
        JSON log.

        Nothing reaches stderr as plain text: a warning becomes a
        ``python_warning`` record (warning level), a library log record of
        level WARNING or above a ``library_log`` record at its level.
        Returns a function that puts back what was there (for callers in
        the same process, such as tests).
        """
        import logging
        import warnings

        def show(message, category, filename, lineno, file=None, line=None):
            self.warning(
                "python_warning",
                category=category.__name__,
                message=str(message),
                source=f"{Path(filename).name}:{lineno}",
            )

        logger = self

        class Forward(logging.Handler):
            def emit(self, record):
                level = "error" if record.levelno >= logging.ERROR else "warning"
                try:
                    message = record.getMessage()
                except Exception:  # a library's bad format string must not break the run
                    message = str(record.msg)
                logger.log(level, "library_log", logger=record.name, message=message)

        root = logging.getLogger()
        saved = (warnings.showwarning, root.handlers[:])
        warnings.showwarning = show
        root.handlers[:] = [Forward(logging.WARNING)]

        def restore():
            warnings.showwarning, root.handlers[:] = saved[0], saved[1]

        return restore

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _open_log_file(path):
    """Open a log file for appending; a FIFO without a reader fails at once (ENXIO) instead of
    blocking forever."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(
        path,
        os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0) | nonblocking,
        0o666,
    )
    if nonblocking:
        os.set_blocking(fd, True)
    return os.fdopen(fd, "ab")


def _loggable(value, depth: int = 0):
    """``value`` with what JSON cannot hold made printable: surrogates escaped, huge integers as
    text."""
    if depth > MAX_DEPTH:
        return "..."
    if isinstance(value, str):
        return printable_name(value)
    if isinstance(value, dict):
        return {printable_name(str(key)): _loggable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_loggable(item, depth + 1) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        return str(value)
    return value


def _write_stderr(text: str) -> None:
    if _active_bars:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr, end="")
    else:
        sys.stderr.write(text)
        sys.stderr.flush()


PROGRESS_ENV = (
    "CRH_PROGRESS"  # "json": progress as JSON records on stderr, for a parent that shows it
)
PROGRESS_EVERY_S = 0.5


class ProgressRecords:
    """What ``progress`` hands out under CRH_PROGRESS=json: ``update(n)`` writes a ``progress``
    record at most every half second (and at the end), which the pipeline's terminal view turns
    into a bar and an ETA."""

    def __init__(self, total, desc, unit):
        self.total, self.desc, self.unit, self.n, self._last = total, desc, unit, 0, 0.0

    def update(self, count=1) -> None:
        self.n += count
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            self.emit()

    def emit(self) -> None:
        _write_stderr(
            json_line(
                {
                    "event": "progress",
                    "desc": self.desc,
                    "n": self.n,
                    "total": self.total,
                    "unit": self.unit,
                }
            ).decode()
        )


class progress:
    """A tqdm bar on stderr, drawn only when stderr is a terminal (or progress records:
    CRH_PROGRESS=json).

    ``with progress(total=n, desc="hashing") as bar: ... bar.update(1)``
    """

    def __init__(self, iterable=None, total=None, desc=None, unit="it"):
        from tqdm import tqdm

        self.iterable = iterable
        self.records = (
            ProgressRecords(total if total is not None else _length(iterable), desc, unit)
            if os.environ.get(PROGRESS_ENV) == "json" and not sys.stderr.isatty()
            else None
        )
        self.bar = self.records or tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit == "B",
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
            leave=False,
        )

    def __enter__(self):
        global _active_bars
        _active_bars += 1
        return self.bar

    def __exit__(self, *exc):
        global _active_bars
        _active_bars -= 1
        if self.records is not None:
            self.records.emit()
        else:
            self.bar.close()
        return False

    def __iter__(self):
        with self as bar:
            if self.records is None:
                yield from bar
                return
            for item in self.iterable:
                yield item
                bar.update(1)


def _length(iterable):
    try:
        return len(iterable)
    except TypeError:
        return None
