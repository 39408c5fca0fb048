"""Every log pattern runs in linear time on crafted lines: time per byte against plain text (issue
28).

A pattern that backtracks makes some line cost the square of its length.
Lines up to 4,096 characters go through every pattern, the progress-bar
ones included, so each crafted file here is made of 4,000-character lines
built from the pieces the patterns look for (digits, ``%|``, ``[``, ``━``,
``/s``, ``=``, dates, ...), each piece repeated and behind or before what
opens a pattern's door. Its conversion time per byte must stay within 5x of
plain text of the same size (80-character lines of prose), measured side by
side in this process's CPU time (the best of several rounds of each).
A line with carriage returns is split into the states a terminal showed, a
record each: it is held against the same text with line feeds instead.
"""

from __future__ import annotations

import io
import itertools
import time

import numpy as np
import pytest

from scripts.utils.formats.log_convert import convert_stream

PIECES = [
    " ",
    "1",
    "%|",
    "|",
    "━",
    " [",
    ", ",
    "/s",
    ":",
    "1:",
    ".",
    "it/s",
    "]",
    "x",
    "[",
    "<",
    "00:0",
    "s/",
    "-",
    "•",
    "=",
    '"',
    "a.py:",
    "[rank0]:",
    "2025-11-26 12:00:00",
    " - ",
    "INFO",
    "\x1b[",
    "{'",
    "\\",
    "1 [",
]
DOORS = ["", "━", "%|", "/s [", "1%|", " [1:00, ", "12%|█| 1/2 [", "k=", "I1126 ", "<14>1 "]
LINE = 4000
FILE_BYTES = 120_000
BOUND = 5.0


def per_byte(data: bytes, rounds: int = 5) -> float:
    """CPU seconds per byte (this process's own time: another process on the machine does not
    count)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        convert_stream(io.BytesIO(data), io.BytesIO())
        best = min(best, time.process_time() - start)
    return best / len(data)


def repeated(line: str, size: int = FILE_BYTES) -> bytes:
    return ((line + "\n") * max(1, size // (len(line) + 1))).encode("utf-8")


PLAIN = repeated(("the quick brown fox jumps over the lazy dog " * 3)[:80])


def crafted_lines(count: int, seed: int) -> list:
    """Every single piece behind and before every door, and ``count`` seeded pairs and triples of
    pieces."""
    units = list(PIECES)
    generator = np.random.Generator(np.random.PCG64(seed))
    pairs = list(itertools.product(PIECES, repeat=2))
    units += ["".join(pairs[i]) for i in generator.choice(len(pairs), count, replace=False)]
    units += [
        "".join(PIECES[i] for i in generator.integers(0, len(PIECES), 3)) for _ in range(count)
    ]
    lines = []
    for unit in units:
        body = (unit * (LINE // len(unit) + 1))[:LINE]
        for door in DOORS:
            lines += [door + body[len(door) :], body[: LINE - len(door)] + door]
    return lines


@pytest.mark.timeout(600)
def test_crafted_lines_cost_at_most_five_times_plain_text_per_byte():
    lines = crafted_lines(count=25, seed=28)
    worst = []
    for index in range(0, len(lines), 40):  # a file of 40 different crafted lines, three times over
        data = repeated("\n".join(lines[index : index + 40]), FILE_BYTES)
        plain = per_byte(PLAIN)
        ratio = per_byte(data) / plain
        if ratio > BOUND:  # measured again once: a pause of the machine is not a pattern's cost
            ratio = per_byte(data, rounds=9) / per_byte(PLAIN, rounds=9)
        worst.append((ratio, lines[index][:60]))
    worst.sort(reverse=True)
    assert worst[0][0] <= BOUND, worst[:3]


@pytest.mark.parametrize(
    "unit", ["\r%|", "1%|\r", "\r━ 1/", "x\r", "\r1 [1:00, ", "━\r=", "\r\x1b[1;"]
)
def test_carriage_returns_cost_what_the_same_lines_cost(unit):
    line = (unit * (LINE // len(unit) + 1))[:LINE]
    data = repeated(line, FILE_BYTES // 2)
    same_lines = data.replace(b"\r", b"\n")
    ratio = per_byte(data) / per_byte(same_lines)
    assert ratio <= BOUND, ratio
