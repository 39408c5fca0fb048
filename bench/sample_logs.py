"""Deterministic synthetic raw logs for benchmarks and tests (no RNG: cycles).

A realistic mix: Python logging (asctime and default formats, tracebacks),
Rust env_logger with multi-line messages, logfmt, JSON lines and plain text.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "utils" / "formats" / "log_corpus"

LEVELS = ("INFO", "DEBUG", "WARNING", "ERROR")
RUST_LEVELS = ("INFO ", "DEBUG", "WARN ", "TRACE")


def sample_lines(count: int):
    """Yield ``count`` lines of mixed-format log text (without newlines)."""
    produced = 0
    i = 0
    while produced < count:
        second = i % 60
        minute = (i // 60) % 60
        hour = (i // 3600) % 24
        millis = (i * 37) % 1000
        kind = i % 10
        if kind < 4:
            lines = [
                f"2025-10-31 {hour:02d}:{minute:02d}:{second:02d},{millis:03d} - trainer.loop - "
                f"{LEVELS[i % 4]} - epoch {i // 100} step {i} loss={1.0 / (1 + i % 97):.5f} "
                f"lr=0.001"
            ]
        elif kind < 7:
            lines = [
                f"[2025-10-31T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z "
                f"{RUST_LEVELS[i % 4]} core::bridge::encoder] frame {i} coherence "
                f"{0.5 + (i % 50) / 100:.3f} energy {i % 1000}"
            ]
            if i % 50 == 4:
                lines.append("  continuation of the previous message with details")
        elif kind == 7:
            lines = [
                f'ts=2025-10-31T{hour:02d}:{minute:02d}:{second:02d}Z level=info msg="checkpoint '
                f'saved" '
                f"step={i} path=experiments/results/ckpt_{i}.npz"
            ]
        elif kind == 8:
            lines = [
                f"WARNING:dream.pool:pool at capacity ({i % 64} of 64), evicting the least "
                f"coherent dream"
            ]
        else:
            lines = [f"plain progress line {i}: {'#' * (i % 40)}"]
            if i % 100 == 9:
                lines = [
                    f"2025-10-31 {hour:02d}:{minute:02d}:{second:02d},{millis:03d} ERROR "
                    f"trainer.io: read failed",
                    "Traceback (most recent call last):",
                    '  File "trainer/io.py", line 42, in load',
                    "OSError: [Errno 5] Input/output error",
                ]
        for line in lines:
            if produced == count:
                return
            yield line
            produced += 1
        i += 1


def write_sample_log(path, count: int) -> int:
    """Write ``count`` lines to ``path``; return the byte size."""
    data = ("\n".join(sample_lines(count)) + "\n").encode("utf-8")
    with open(path, "wb") as handle:
        handle.write(data)
    return len(data)


def write_corpus_log(path, count: int) -> int:
    """Write ``count`` lines cycling through the converter's test corpus (every format); return
    the byte size."""
    corpus = b"".join(item.read_bytes() for item in sorted(CORPUS.iterdir())).split(b"\n")[:-1]
    lines = (corpus * (count // len(corpus) + 1))[:count]
    data = b"\n".join(lines) + b"\n"
    with open(path, "wb") as handle:
        handle.write(data)
    return len(data)
