import io
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest

from scripts.utils import json_logger
from scripts.utils.formats import log_convert
from scripts.utils.formats.log_convert import convert_lines, convert_stream
from scripts.utils.json_logger import JsonLogger
from scripts.utils.jsonio import read_json
from tests.conftest import REPO, json_lines, run_script, single_error, tree


def convert(data, **options) -> list:
    if isinstance(data, str):
        data = data.encode("utf-8")
    sink = io.BytesIO()
    convert_stream(io.BytesIO(data), sink, **options)
    return json_lines(sink.getvalue())


def core(record):
    return {key: record[key] for key in ("ts", "level", "source", "msg", "format")}


# ---------------------------------------------------------------- converter


@pytest.mark.parametrize(
    "line, expected",
    [
        ("WARNING:root:disk almost full", (None, "warning", "root", "disk almost full", "python")),
        (
            "2025-10-31 12:00:00,123 - trainer.loop - INFO - epoch 1 done",
            ("2025-10-31T12:00:00.123Z", "info", "trainer.loop", "epoch 1 done", "python"),
        ),
        (
            "2025-10-31 12:00:01,456 ERROR trainer.io: cannot open",
            ("2025-10-31T12:00:01.456Z", "error", "trainer.io", "cannot open", "python"),
        ),
        (
            "2025-10-31 12:00:07,000:DEBUG:mod.sub:colon style",
            ("2025-10-31T12:00:07.000Z", "debug", "mod.sub", "colon style", "python"),
        ),
        (
            "[2025-10-31 12:00:06,000] INFO in app: flask style",
            ("2025-10-31T12:00:06.000Z", "info", "app", "flask style", "python"),
        ),
        (
            "[2025-10-31T12:00:02Z INFO  core::bridge] encoding frame 3",
            ("2025-10-31T12:00:02Z", "info", "core::bridge", "encoding frame 3", "env_logger"),
        ),
        (
            "[2025-10-31T12:00:03.250Z WARN  core::dream] coherence low",
            ("2025-10-31T12:00:03.250Z", "warning", "core::dream", "coherence low", "env_logger"),
        ),
        (
            "[TRACE my_crate] no time stamp",
            (None, "trace", "my_crate", "no time stamp", "env_logger"),
        ),
        (
            'ts=2025-10-31T12:00:04Z level=info msg="hello world" step=3',
            ("2025-10-31T12:00:04Z", "info", None, "hello world", "logfmt"),
        ),
        (
            '{"time": "2025-10-31T13:00:05+01:00", "level": "DEBUG", "message": "json line", '
            '"logger": "x"}',
            ("2025-10-31T12:00:05Z", "debug", "x", "json line", "json"),
        ),
        ("just a plain line", (None, None, None, "just a plain line", "plain")),
    ],
)
def test_each_format(line, expected):
    (record,) = convert(line + "\n")
    assert core(record) == dict(zip(("ts", "level", "source", "msg", "format"), expected))
    assert record["line"] == 1


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1764158403.5", "2025-11-26T12:00:03.500000Z"),  # seconds
        ("1764158403500", "2025-11-26T12:00:03.500000Z"),  # milliseconds (pino)
        ("1764158403500001", "2025-11-26T12:00:03.500001Z"),  # microseconds
        ("1764158403500001999", "2025-11-26T12:00:03.500001Z"),  # nanoseconds, cut
        ('"1764158403"', "2025-11-26T12:00:03.000000Z"),  # as text
        ("1e300", None),
        ('"soon"', None),
        ("true", None),
    ],
)
def test_json_time_fields_may_be_unix_time(value, expected):
    (record,) = convert(f'{{"ts": {value}, "msg": "m"}}\n')
    assert record["ts"] == expected and record["ts_raw"] == orjson.loads(value)


def test_extra_fields_are_kept():
    (logfmt,) = convert('level=warn msg="say \\"hi\\"" step=3 path=/a/b\n')
    assert logfmt["msg"] == 'say "hi"' and logfmt["step"] == "3" and logfmt["path"] == "/a/b"
    (record,) = convert('{"message": "m", "extra": {"k": [1, 2]}, "format": "mine"}\n')
    assert (
        record["extra"] == {"k": [1, 2]}
        and record["field_format"] == "mine"
        and record["format"] == "json"
    )


def test_continuation_lines_join_the_record_above():
    records = convert(
        "[2025-10-31T12:00:02Z INFO  core::bridge] first line\n"
        "second line\n"
        "\n"
        "third line\n"
        "2025-10-31 12:00:01,456 ERROR trainer.io: read failed\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "ValueError: boom\n"
        "\n"
        "ts=2025-10-31T12:00:04Z level=info msg=next\n"
        "plain after logfmt\n"
    )
    assert [r["format"] for r in records] == ["env_logger", "python", "logfmt", "plain"]
    assert records[0]["msg"] == "first line\nsecond line\n\nthird line"
    assert records[1]["msg"].endswith("ValueError: boom")  # the trailing blank line is dropped
    assert [r["line"] for r in records] == [1, 5, 10, 11]


def test_joined_records_are_bounded(monkeypatch):
    monkeypatch.setattr(log_convert, "MAX_JOINED_LINES", 5)
    records = convert("INFO:a:head\n" + "".join(f"more {i}\n" for i in range(8)))
    assert records[0]["msg"].count("\n") == 4
    assert [r["format"] for r in records[1:]] == ["plain"] * 4


def test_bad_bytes_are_kept_escaped_and_flagged():
    records = convert(b"bad \xff\xfe utf8\nnul \x00 here\ntab\tis fine\n")
    assert records[0]["msg"] == "bad \\xff\\xfe utf8" and records[0]["invalid_utf8"] is True
    assert records[1]["msg"] == "nul \x00 here" and records[1]["control_chars"] is True
    assert "control_chars" not in records[2]


def test_random_binary_never_crashes():
    junk = (
        np.random.Generator(np.random.PCG64(7)).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    )
    sink = io.BytesIO()
    stats = convert_stream(io.BytesIO(junk), sink)
    records = json_lines(sink.getvalue())  # every line parses
    assert stats["lines"] == junk.count(b"\n") + (not junk.endswith(b"\n"))
    assert len(records) == stats["records"]
    assert any(r.get("invalid_utf8") for r in records)


def test_crlf_and_missing_final_newline():
    assert [r["msg"] for r in convert(b"one\r\ntwo")] == ["one", "two"]


def test_long_lines_are_cut_in_pieces(monkeypatch):
    monkeypatch.setattr(log_convert, "MAX_LINE_BYTES", 64)
    records = convert("x" * 150 + "\nshort\n")
    assert [len(r["msg"]) for r in records] == [64, 64, 22, 5]
    assert [r.get("split", False) for r in records] == [True, True, False, False]


def test_zone_less_stamps_use_the_given_offset_and_bad_dates_stay_raw():
    (record,) = convert(
        "2025-10-31 23:50:00,5 INFO a: late\n", utc_offset=timedelta(hours=-5, minutes=-30)
    )
    assert record["ts"] == "2025-11-01T05:20:00.5Z"
    (bad,) = convert("2025-13-40 12:00:00,000 INFO a: no such day\n")
    assert bad["ts"] is None and bad["ts_raw"] == "2025-13-40 12:00:00,000"


def _corpus(kind: str) -> bytes:
    sys.path.insert(0, str(REPO))
    from bench.sample_logs import sample_lines

    if kind == "mixed":
        return ("\n".join(sample_lines(3000)) + "\n").encode()
    if kind == "continuations":  # records whose continuation lines span many blocks
        parts = ["plain before any record", "another"]
        for index in range(40):
            parts.append(f"[2025-10-31T12:00:{index % 60:02d}Z INFO  core::x] record {index}")
            parts += [f"  continuation {index}.{k}" for k in range(index % 13)]
            parts += ["", "ts=2025-10-31T12:00:00Z level=info msg=break"] if index % 7 == 0 else []
        return "\n".join(parts).encode()
    junk = (
        np.random.Generator(np.random.PCG64(3)).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    )
    return b"INFO:a:start\n" + junk + b"\nINFO:a:end\n" + b"z" * 700 + b"\n"


@pytest.mark.parametrize("kind", ["mixed", "continuations", "junk"])
def test_output_is_the_same_for_any_worker_count(monkeypatch, kind):
    data = _corpus(kind)
    monkeypatch.setattr(log_convert, "BLOCK_BYTES", 256)  # many blocks
    monkeypatch.setattr(log_convert, "MAX_LINE_BYTES", 300)  # and cut lines
    monkeypatch.setattr(log_convert, "MAX_JOINED_LINES", 7)  # and capped joins
    monkeypatch.setattr(log_convert, "PARALLEL_AFTER_BLOCKS", 0)
    outputs, stats = [], []
    for workers in (1, 2, 3):
        sink = io.BytesIO()
        stats.append(convert_stream(io.BytesIO(data), sink, file_label="x.log", workers=workers))
        outputs.append(sink.getvalue())
    assert outputs[0] == outputs[1] == outputs[2]
    assert stats[0] == stats[1] == stats[2]
    assert stats[0]["records"] == len(json_lines(outputs[0]))


def test_convert_lines_streams_dicts():
    records = list(convert_lines(iter(["INFO:a:one\n", "cont\n", "plain?"])))
    assert [r["msg"] for r in records] == ["one\ncont\nplain?"]


def test_constant_memory_on_a_large_stream():
    """120 MB through stdin, with one 40 MB line: peak memory stays small.

    The child reports VmHWM (its own peak resident memory): ru_maxrss would
    also count the forking parent's memory, which Linux carries across exec.
    """
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc/self/status (Linux) to read the child's own peak memory")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);from scripts.utils.formats.log_convert import "
        "convert_stream;stats = convert_stream(sys.stdin.buffer, open('/dev/null', 'wb'));peak = "
        "[l.split()[1] for l in open('/proc/self/status') if "
        "l.startswith('VmHWM')][0];sys.stderr.write(peak + ' ' + str(stats['lines']))"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(REPO)], stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    sys.path.insert(0, str(REPO))
    from bench.sample_logs import sample_lines

    chunk = ("\n".join(sample_lines(20_000)) + "\n").encode()
    sent = 0
    while sent < 80 << 20:
        child.stdin.write(chunk)
        sent += len(chunk)
    child.stdin.write(b"y" * (40 << 20) + b"\n")
    child.stdin.close()
    peak_kib, lines = map(int, child.stderr.read().split())
    assert child.wait() == 0
    assert lines > 500_000
    assert peak_kib < 64 * 1024, f"peak resident memory {peak_kib} KiB"


# ---------------------------------------------------------------- CLI


def test_cli_stdin_to_stdout():
    result = run_script("utils", "log_formatter", input_bytes=b"INFO:root:hello\n")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout)[0]["msg"] == "hello"
    assert json_lines(result.stderr)[-1]["event"] == "done"


def test_cli_several_files_are_labelled(tmp_path):
    (tmp_path / "a.log").write_text("INFO:a:one\n")
    (tmp_path / "b.log").write_text("INFO:b:two\n")
    result = run_script("utils", "log_formatter", "a.log", "b.log", cwd=tmp_path)
    assert [r["file"] for r in json_lines(result.stdout)] == ["a.log", "b.log"]


def test_cli_output_file_is_recorded(workspace, tmp_path):
    (tmp_path / "raw.log").write_text("INFO:root:hello\n")
    target = workspace / "logs" / "raw.jsonl"
    result = run_script(
        "utils", "log_formatter", tmp_path / "raw.log", "-o", target, "--workspace", workspace
    )
    assert result.returncode == 0, result.stderr
    assert json_lines(target.read_bytes())[0]["msg"] == "hello"
    registry = read_json(workspace / "data/hash_registry.json")["files"]
    assert "logs/raw.jsonl" in registry
    report = read_json(workspace / "experiments/results/log_formatter_20251031T120000Z.json")
    assert report["results"] == {"lines": 1, "records": 1}


@pytest.mark.parametrize("case", ["missing input", "outside workspace", "bad offset"])
def test_cli_bad_input_writes_nothing(workspace, tmp_path, case):
    raw = tmp_path / "raw.log"
    raw.write_text("INFO:root:hello\n")
    args = {
        "missing input": [tmp_path / "nope.log", "-o", workspace / "x.jsonl"],
        "outside workspace": [raw, "-o", tmp_path / "outside.jsonl"],
        "bad offset": [raw, "--utc-offset", "CET"],
    }[case]
    before = tree(tmp_path)
    result = run_script("utils", "log_formatter", *args, "--workspace", workspace)
    assert result.returncode == 2
    single_error(result.stderr)
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- logger


def test_logger_writes_one_json_object_per_line(capsys):
    log = JsonLogger("demo")
    log.info("started", count=3, ratio=float("nan"), ts="mine")
    log.debug("hidden")
    record = orjson.loads(capsys.readouterr().err)
    assert list(record)[:4] == ["ts", "level", "script", "event"]
    assert record["level"] == "info" and record["script"] == "demo" and record["event"] == "started"
    assert record["count"] == 3 and record["ratio"] == "NaN" and record["field_ts"] == "mine"
    assert record["ts"].endswith("Z")


def test_quiet_keeps_warnings_and_errors(capsys):
    log = JsonLogger("demo", quiet=True)
    log.info("chatty")
    log.warning("careful")
    log.error("broken")
    assert [r["event"] for r in json_lines(capsys.readouterr().err.encode())] == [
        "careful",
        "broken",
    ]


def test_log_file_gets_everything_and_stderr_gets_errors(tmp_path, capsys):
    log = JsonLogger("demo", log_file=tmp_path / "run.log")
    log.info("step", n=1)
    log.error("failed")
    log.close()
    assert [r["event"] for r in json_lines((tmp_path / "run.log").read_bytes())] == [
        "step",
        "failed",
    ]
    assert [r["event"] for r in json_lines(capsys.readouterr().err.encode())] == ["failed"]


def test_progress_is_silent_off_a_terminal(capsys):
    log = JsonLogger("demo")
    with json_logger.progress(total=3, desc="work") as bar:
        for _ in range(3):
            bar.update(1)
            log.info("tick")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all(orjson.loads(line)["event"] == "tick" for line in lines)
