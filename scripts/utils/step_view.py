"""A live view of a run's steps on a terminal: one line per step, redrawn in place.

    view = StepView("phase7", ["metadata", "split", "preprocess"])
    view.set("metadata", "running")
    view.progress("metadata", n=120, total=480, desc="reading")   # a bar and an ETA
    view.set("metadata", "done", "experiments/results/metadata_extractor_....json")
    view.close(["open: /ws/experiments/results/dream_animation_.../replay.gif"])

States: waiting, running (with a bar and an ETA when the step reports its
progress), done, up to date (skipped because nothing changed), failed. It
writes only to a terminal; the JSON log is kept elsewhere (pipeline.py).

Every line is cut to the terminal's width (asked at each redraw, so a resize
is followed), because a line the terminal wraps takes two rows and moving
back up by one row per line would leave its first row behind at each redraw.
After a resize the screen is cleared and the view drawn again at its top:
the terminal may have re-wrapped the old lines, and their rows are unknown.
Where the terminal cannot redraw (not a terminal, or ``TERM=dumb``), the
view degrades to plain lines: the title once, then one line each time a step
changes state, never a bar.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

SYMBOLS = {"waiting": "·", "running": "▶", "done": "✓", "up to date": "=", "failed": "✗"}
ASCII = {"waiting": ".", "running": ">", "done": "+", "up to date": "=", "failed": "x"}
REDRAW_EVERY_S = 0.1
BAR = 24
NARROWEST = 20


def terminal_columns(stream) -> int:
    """The width of the terminal ``stream`` writes to (else $COLUMNS, else 80)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return columns or shutil.get_terminal_size().columns  # 0: a terminal that never said its size


def can_redraw(stream) -> bool:
    """Whether ``stream`` is a terminal that takes cursor movements (not ``TERM=dumb``; on POSIX,
    a TERM is set)."""
    if not getattr(stream, "isatty", lambda: False)():
        return False
    term = os.environ.get("TERM")
    return term != "dumb" and (bool(term) or os.name == "nt")


class StepView:
    def __init__(
        self, title: str, steps: list, stream=None, columns=None, redraw: bool | None = None
    ):
        self.stream = stream or sys.stderr
        self.title = title
        self.steps = {
            name: {"state": "waiting", "detail": "", "started": None, "progress": None}
            for name in steps
        }
        self.width = max((len(name) for name in steps), default=4)
        encoding = (getattr(self.stream, "encoding", None) or "ascii").lower()
        self.symbols = SYMBOLS if "utf" in encoding else ASCII
        self.ellipsis = "…" if "utf" in encoding else "..."
        self.columns = columns or (lambda: terminal_columns(self.stream))
        self.redraw = can_redraw(self.stream) if redraw is None else redraw
        self._drawn = 0  # rows of the last drawing (each line fits one row)
        self._drawn_columns = None
        self._printed = {}  # plain lines: what was last said of each step
        self._title_said = False
        self._last = 0.0
        self.render(force=True)

    def set(self, step: str, state: str, detail: str = "") -> None:
        entry = self.steps[step]
        entry.update(state=state, detail=detail)
        if state == "running":
            entry["started"], entry["progress"] = time.monotonic(), None
        self.render(force=True)

    def progress(self, step: str, n: int, total, desc=None) -> None:
        entry = self.steps.get(step)
        if entry is not None:
            entry["progress"] = (n, total, desc)
            self.render()

    def line(self, name: str, entry: dict, bars: bool = True) -> str:
        text = f"  {self.symbols[entry['state']]} {name:<{self.width}}  {entry['state']:<10}"
        if entry["state"] == "running" and bars:
            elapsed = time.monotonic() - entry["started"]
            n, total, desc = entry["progress"] or (0, None, None)
            if total:
                done = min(1.0, n / total)
                eta = elapsed * (1 - done) / done if done > 0 else None
                text += f"  [{'#' * round(BAR * done):<{BAR}}] {done:4.0%}"
                text += f"  eta {_clock(eta)}" if eta is not None else ""
            text += f"  {_clock(elapsed)}" + (f"  {desc}" if desc else "")
        elif entry["detail"]:
            text += f"  {entry['detail']}"
        return text

    def fit(self, text: str, columns: int) -> str:
        """``text`` cut to one row short of the width (a full row leaves some terminals waiting
        to wrap)."""
        room = max(columns, NARROWEST) - 1
        return text if len(text) <= room else text[: room - len(self.ellipsis)] + self.ellipsis

    def render(self, force: bool = False) -> None:
        if not self.redraw:
            self._say_changes()
            return
        now = time.monotonic()
        if not force and now - self._last < REDRAW_EVERY_S:
            return
        self._last = now
        columns = self.columns()
        lines = [
            self.fit(text, columns)
            for text in [self.title]
            + [self.line(name, entry) for name, entry in self.steps.items()]
        ]
        if self._drawn and columns != self._drawn_columns:
            up = "\x1b[H\x1b[2J"  # resized: start again at the top of a cleared screen
        else:
            up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self.stream.write(up + "\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn, self._drawn_columns = len(lines), columns

    def _say_changes(self) -> None:
        """Plain lines: the title once, then each step's line when its state or detail changed."""
        said = [] if self._title_said else [self.title]
        self._title_said = True
        for name, entry in self.steps.items():
            key = (entry["state"], entry["detail"])
            if entry["state"] != "waiting" and self._printed.get(name) != key:
                said.append(self.line(name, entry, bars=False))
                self._printed[name] = key
        if said:
            self.stream.write("\n".join(said) + "\n")
            self.stream.flush()

    def close(self, footer: list) -> None:
        self.render(force=True)
        if footer:
            self.stream.write("\n".join(footer) + "\n")
            self.stream.flush()
        self._drawn = 0


def _clock(seconds) -> str:
    seconds = int(round(seconds or 0))
    return f"{seconds // 60}:{seconds % 60:02d}"
