"""The log converter: raw log text to standardized JSON lines (the command is log_formatter.py).

It turns raw logs into standardized JSON lines with the fields
``ts`` (canonical UTC, or null), ``level``, ``source``, ``msg``, ``format``
and ``line`` (where the record starts), plus any extra fields. It
recognises, line by line:

* Python logging: the default ``LEVEL:name:message``; asctime formats such as
  ``2025-10-31 12:00:00,123 - name - LEVEL - message``,
  ``2025-10-31 12:00:00,123 LEVEL name: message`` and
  ``[2025-10-31 12:00:00,123] LEVEL in module: message``;
* Rust env_logger: ``[2025-10-31T12:00:00Z INFO  crate::module] message``;
* logfmt: ``ts=... level=info msg="hello world" key=value``;
* JSON objects (already structured: fields are mapped, the rest kept);
* anything else as a plain record.

A line that matches no header and follows a Python or env_logger record is
a continuation (multi-line messages, tracebacks) and joins that record.
Invalid UTF-8 is kept as ``\\xNN`` escapes and flagged ``invalid_utf8``;
control characters are kept (JSON-escaped) and flagged ``control_chars``.
Time stamps without a zone (Python's asctime) are read as UTC unless
``--utc-offset`` says otherwise. Memory stays constant: input is read in
blocks, and over-long lines and joined records are cut at fixed bounds.

Usage:
    python scripts/utils/log_formatter.py raw.log > raw.jsonl
    cargo run 2>&1 | python scripts/utils/log_formatter.py -o experiments/results/run.jsonl
"""

from __future__ import annotations

import gc
import os
import re
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta

import orjson

from scripts.utils import timestamps
from scripts.utils.errors import InputError


BLOCK_BYTES = 1 << 18          # input is read in blocks of whole lines
MAX_PROCESSES = 8              # --workers beyond the CPUs or this gain nothing and cost memory
MAX_LINE_BYTES = 1 << 20       # a longer line is cut into pieces (flagged "split")
MAX_JOINED_LINES = 10_000      # continuation lines joined into one record at most
MAX_JOINED_CHARS = 4 << 20
PARALLEL_AFTER_BLOCKS = 4      # with --workers > 1, start the processes once the input is this large

_LEVEL_NAMES = {
    "TRACE": "trace", "DEBUG": "debug", "INFO": "info", "NOTICE": "info",
    "WARNING": "warning", "WARN": "warning", "ERROR": "error", "ERR": "error",
    "CRITICAL": "critical", "FATAL": "critical", "NOTSET": "notset",
}
_FIELD_ALIASES = {
    "ts": "ts", "time": "ts", "timestamp": "ts", "t": "ts", "@timestamp": "ts", "asctime": "ts",
    "level": "level", "lvl": "level", "severity": "level", "levelname": "level",
    "msg": "msg", "message": "msg",
    "source": "source", "logger": "source", "name": "source", "target": "source",
    "module": "source", "caller": "source", "component": "source",
}

# Header patterns, tried by the line's first character (a digit, '[', or a
# level's initial), each with few capture groups: groups cost time on every
# line. `[ \t]` rather than `\s` between fields, as loggers write them.
_TS = r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)"
_LVL = r"(TRACE|DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|CRITICAL|FATAL|NOTSET)"
# [ts LEVEL target] msg                       -> ts, level, source, msg
_ENV_LOGGER = re.compile(r"\[(?:" + _TS + r"[ \t]+)?" + _LVL + r"[ \t]*([^\]\s]*)[ \t]*\][ \t]?(.*)", re.S)
# ts - name - LEVEL - msg                     -> ts, source, level, msg
_ASCTIME_DASHED = re.compile(_TS + r" - (.*?) - " + _LVL + r" - (.*)", re.S)
# ts LEVEL name: msg | ts:LEVEL:name:msg | [ts] LEVEL in module: msg  -> ts, level, source, msg
_ASCTIME = re.compile(
    r"\[?" + _TS + r"\]?[ \t:|]+\[?" + _LVL + r"\]?(?:[ \t]+in)?"
    r"(?:[ \t:|]+([\w.<>\-]+?)(?::| -|[ \t])|[ \t:|-]+)[ \t]*(.*)", re.S)
# LEVEL:name:msg (logging.basicConfig's default) -> level, source, msg
_PY_DEFAULT = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL|WARN|TRACE):([^:\s]*):[ \t]?(.*)", re.S)
_LOGFMT_LINE = re.compile(r'[ \t]*(?:[^\s="]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)[ \t]*){2,}')
_LOGFMT_PAIR = re.compile(r'([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_LOGFMT_UNESCAPE = re.compile(r"\\(.)")
_TS_FULL = re.compile(_TS)
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
        raise InputError("--utc-offset must lie between -12:00 and +14:00 (minutes 00 to 59)", value=text)
    return delta


class _TimestampCanon:
    """Turns a time stamp matched by ``_TS`` into canonical UTC, fast.

    Zone offsets move hours and minutes only, so the minute prefix
    (``YYYY-MM-DD?HH:MM`` + zone) is converted once and cached; seconds and
    the fraction (cut to microseconds) are carried over. A date that does
    not exist (month 13) gives None.
    """

    def __init__(self, utc_offset: timedelta):
        sign = "+" if utc_offset >= timedelta(0) else "-"
        minutes = abs(int(utc_offset.total_seconds())) // 60
        self.default_zone = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
        self.cache: dict = {}

    def __call__(self, raw: str):
        rest = raw[19:]  # fraction and zone, both optional
        if not rest:
            key, fraction = raw[:16], ""
        elif rest[-1] == "Z":
            key, fraction = raw[:16] + "Z", rest[:-1]
        elif "+" in rest or "-" in rest:
            cut = max(rest.find("+"), rest.find("-"))
            key, fraction = raw[:16] + rest[cut:], rest[:cut]
        else:
            key, fraction = raw[:16], rest
        prefix = self.cache.get(key)
        if prefix is None:
            prefix = self._minute_prefix(key)
        seconds = raw[16:19]
        if not prefix or seconds > ":60":
            return None
        return prefix + seconds + ("." + fraction[1:7] if fraction else "") + "Z"

    def _minute_prefix(self, key: str) -> str:
        try:
            zone = key[16:] or self.default_zone
            prefix = timestamps.format_iso(timestamps.parse_timestamp(key[:16] + ":00" + zone))[:16]
        except InputError:
            prefix = ""
        if len(self.cache) > 4096:
            self.cache.clear()
        self.cache[key] = prefix
        return prefix


def _plain_record(text: str, number: int) -> dict:
    return {"ts": None, "level": None, "source": None, "msg": text, "format": "plain", "line": number}


def _decode_line(raw: bytes):
    """One line of bytes as ``str``, or ``(str, flags)`` when it needed care.

    Invalid UTF-8 is kept as \\xNN escapes (flag ``invalid_utf8``); control
    characters are kept, JSON-escaped on output (flag ``control_chars``).
    """
    flags = None
    if raw[-1:] == b"\r":
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "backslashreplace")
        flags = {"invalid_utf8": True}
    if not text.isprintable() and _CONTROL.search(text):  # isprintable: a fast first test
        flags = dict(flags or {}, control_chars=True)
    return text if flags is None else (text, flags)


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
            tail = tail[cut + 1:]
        while len(tail) > max_line:
            yield tail[:max_line], 1, True
            tail = tail[max_line:]
    if tail:
        yield tail, tail.count(b"\n") + 1, False


def _block_lines(data: bytes, split: bool) -> list:
    """The lines of one block: ``str`` for clean ones, ``(str, flags)`` otherwise."""
    if not split:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and not _CONTROL.search(text):  # the fast path: clean text
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            lines = text.split("\n")
            if lines[-1][-1:] == "\r":
                lines[-1] = lines[-1][:-1]
            return lines
    lines = [_decode_line(raw) for raw in data.split(b"\n")]
    if split:
        line = lines[0]
        text, flags = line if type(line) is tuple else (line, {})
        lines = [(text, dict(flags, split=True))]
    return lines


def _records(lines, utc_offset: timedelta, label, counts: dict, first_line: int = 1,
             limits=(MAX_JOINED_LINES, MAX_JOINED_CHARS), block=None):
    """Turn lines into JSON-lines records; yield each record's bytes when it is complete.

    A Python or env_logger record stays open while the lines after it are
    continuations, so it is yielded when the next record starts. ``counts``
    receives records per format.

    With ``block`` (a dict) the lines are one block of a larger input: plain
    lines before the block's first record go to ``block["head"]`` (they may
    continue a record from the block before), and the record still open at
    the end goes to ``block["tail"]`` instead of being yielded; see ``_merge``.
    """
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    canon, levels = _TimestampCanon(utc_offset), _LEVEL_NAMES
    env_match, dashed_match = _ENV_LOGGER.match, _ASCTIME_DASHED.match
    asctime_match, default_match = _ASCTIME.match, _PY_DEFAULT.match
    max_lines, max_chars = limits
    label_field = {"file": label} if label is not None else None
    pending = None        # the open record
    pending_parts = None  # its continuation lines, once it has any
    pending_chars = 0
    head_chars = 0
    started = block is None
    number = first_line - 1
    for item in lines:
        number += 1
        if type(item) is tuple:
            line, flags = item
        else:
            line, flags = item, None
        first = line[:1]
        match = None
        if first == "[":
            match = env_match(line)
            if match:
                raw_ts, level, source, msg = match.groups()
                fmt = "env_logger"
            else:
                match = asctime_match(line)
                if match:
                    raw_ts, level, source, msg = match.groups()
                    fmt = "python"
        elif "0" <= first <= "9":
            match = dashed_match(line)
            if match:
                raw_ts, source, level, msg = match.groups()
            else:
                match = asctime_match(line)
                if match:
                    raw_ts, level, source, msg = match.groups()
            fmt = "python"
        elif first in "DIWECT":
            match = default_match(line)
            if match:
                level, source, msg = match.groups()
                raw_ts, fmt = None, "python"

        if match is None:  # JSON, logfmt, a continuation line, or plain text
            record = None
            if first == "{" or (first in " \t" and line.lstrip()[:1] == "{"):
                record = _mapped(line, "json", number, canon)
            elif "=" in line and _LOGFMT_LINE.fullmatch(line):
                record = _mapped(line, "logfmt", number, canon)
            if record is None:
                if pending is not None and pending_chars + len(line) < max_chars \
                        and (pending_parts is None or len(pending_parts) < max_lines):
                    if pending_parts is None:
                        pending_parts = [pending["msg"]]
                    pending_parts.append(line)
                    pending_chars += len(line) + 1
                    if flags:
                        pending.update(flags)
                    continue
                if not started:
                    head = block["head"]
                    if len(head) < max_lines and head_chars <= max_chars:
                        head.append((line, number, flags))
                        head_chars += len(line) + 1
                        continue
                    # No record open before this block can take this many lines (see _merge's limits): this
                    # line is a plain record of its own, here as in one sequential pass. Keeps ``head`` small.
                record = _plain_record(line, number)
        else:
            ts = canon(raw_ts) if raw_ts else None
            record = {"ts": ts, "level": levels[level], "source": source or None, "msg": msg,
                      "format": fmt, "line": number}
            if ts is None and raw_ts:
                record["ts_raw"] = raw_ts
        started = True
        if label_field:
            record.update(label_field)
        if flags:
            record.update(flags)
        fmt = record["format"]
        counts[fmt] = counts.get(fmt, 0) + 1
        if pending is not None:
            yield _dump_open(pending, pending_parts)
            pending = pending_parts = None
        if match is None:
            yield dumps(record, option=newline)
        else:
            pending, pending_chars = record, len(msg)
    if block is not None:
        block["started"] = started
        block["tail"] = None if pending is None else [pending, pending_parts, pending_chars]
    elif pending is not None:
        yield _dump_open(pending, pending_parts)


def _dump_open(record: dict, parts) -> bytes:
    """Serialize an open record, joining its continuation lines into ``msg``."""
    if parts is not None:
        while len(parts) > 1 and not parts[-1].strip():
            parts.pop()  # trailing blank lines belong to no message
        record["msg"] = "\n".join(parts)
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _mapped(text: str, fmt: str, number: int, canon):
    """A JSON or logfmt line as a record with its known fields mapped, or None."""
    if fmt == "json":
        try:
            fields = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(fields, dict):
            return None
    else:
        fields = {}
        for key, value in _LOGFMT_PAIR.findall(text):
            fields[key] = _LOGFMT_UNESCAPE.sub(r"\1", value[1:-1]) if value.startswith('"') else value
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
        record["ts"] = canon(raw_ts) if isinstance(raw_ts, str) and _TS_FULL.fullmatch(raw_ts) else None
        if record["ts"] is None:
            record["ts_raw"] = raw_ts
    record.update(extra)
    return record


def _convert_block(data: bytes, split: bool, first_line: int, utc_offset: timedelta, label, limits):
    """Convert one block on its own: in a worker process, or inline for small inputs."""
    block = {"head": []}
    counts: dict = {}
    collect = gc.isenabled()
    gc.disable()  # a block makes many short-lived acyclic objects: nothing for the collector
    try:
        lines = _block_lines(data, split)
        body = bytearray()  # not b"".join(list): each orjson output holds ~4 KB until it is let go
        for record in _records(lines, utc_offset, label, counts, first_line, limits, block):
            body += record
        body = bytes(body)
    finally:
        if collect:
            gc.enable()
    return block["head"], body, block["tail"], block["started"], counts


def _block_results(blocks, utc_offset: timedelta, label, limits, workers: int):
    """Convert blocks in input order; in ``workers`` processes once the input is large."""
    pool = None
    in_flight: deque = deque()
    first_line = 1
    workers = max(1, min(workers, os.cpu_count() or 1, MAX_PROCESSES))
    try:
        for index, (data, line_count, split) in enumerate(blocks):
            if pool is None and index == PARALLEL_AFTER_BLOCKS:
                pool = ProcessPoolExecutor(max_workers=workers)
            args = (data, split, first_line, utc_offset, label, limits)
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


def _merge(results, label, limits, counts: dict):
    """Join converted blocks in order, exactly as one sequential pass would."""
    max_lines, max_chars = limits
    newline = orjson.OPT_APPEND_NEWLINE
    pending = None  # [record, continuation parts or None, chars]
    for head, body, tail, started, block_counts in results:
        out = bytearray()
        for text, number, flags in head:  # plain lines before the block's first record
            if pending is not None and pending[2] + len(text) < max_chars \
                    and (pending[1] is None or len(pending[1]) < max_lines):
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
            record = _plain_record(text, number)
            if label is not None:
                record["file"] = label
            if flags:
                record.update(flags)
            counts["plain"] = counts.get("plain", 0) + 1
            out += orjson.dumps(record, option=newline)
        if started:
            if pending is not None:
                out += _dump_open(pending[0], pending[1])
            out += body
            pending = tail
        for fmt, count in block_counts.items():
            counts[fmt] = counts.get(fmt, 0) + count
        yield bytes(out)
    if pending is not None:
        yield _dump_open(pending[0], pending[1])


def convert_stream(source, sink, utc_offset: timedelta = timedelta(0), file_label=None, workers: int = 1,
                   on_progress=None) -> dict:
    """Convert a binary input stream to JSON lines written to a binary sink.

    ``workers`` > 1 converts a large input in that many processes; the bytes
    written are the same for any count. ``on_progress(n)`` is called with the
    number of input bytes of each block read. Returns ``{"lines", "records", "formats"}``.
    """
    limits = (MAX_JOINED_LINES, MAX_JOINED_CHARS)
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

        chunks = _records(lines(), utc_offset, file_label, counts, 1, limits)
    else:
        chunks = _merge(_block_results(blocks(), utc_offset, file_label, limits, workers), file_label, limits, counts)
    write = sink.write
    for data in chunks:
        write(data)
    formats = dict(sorted(counts.items()))
    return {"lines": total_lines, "records": sum(formats.values()), "formats": formats}


def convert_lines(lines, utc_offset: timedelta = timedelta(0)):
    """Library form: convert an iterable of text lines, yield records as dicts (streaming)."""
    def checked():
        for line in lines:
            line = line.rstrip("\r\n")
            yield line if line.isprintable() or not _CONTROL.search(line) else (line, {"control_chars": True})

    for data in _records(checked(), utc_offset, None, {}):
        yield orjson.loads(data)
