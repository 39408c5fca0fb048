"""A live view of a run's steps on a terminal: one line per step, redrawn in place.

    view = StepView("phase7", ["metadata", "split", "preprocess"])
    view.set("metadata", "running")
    view.progress("metadata", n=120, total=480, desc="reading")   # a bar and an ETA
    view.set("metadata", "done", "experiments/results/metadata_extractor_....json")
    view.close(["open: /ws/experiments/results/dream_animation_.../replay.gif"])

States: waiting, running (with a bar and an ETA when the step reports its
progress), done, up to date (skipped because nothing changed), failed. It
writes only to a terminal; the JSON log is kept elsewhere (pipeline.py).
"""

from __future__ import annotations

import sys
import time

SYMBOLS = {"waiting": "·", "running": "▶", "done": "✓", "up to date": "=", "failed": "✗"}
ASCII = {"waiting": ".", "running": ">", "done": "+", "up to date": "=", "failed": "x"}
REDRAW_EVERY_S = 0.1
BAR = 24


class StepView:
    def __init__(self, title: str, steps: list, stream=None):
        self.stream = stream or sys.stderr
        self.title = title
        self.steps = {name: {"state": "waiting", "detail": "", "started": None, "progress": None} for name in steps}
        self.width = max((len(name) for name in steps), default=4)
        encoding = (getattr(self.stream, "encoding", None) or "ascii").lower()
        self.symbols = SYMBOLS if "utf" in encoding else ASCII
        self._drawn = 0
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

    def line(self, name: str, entry: dict) -> str:
        text = f"  {self.symbols[entry['state']]} {name:<{self.width}}  {entry['state']:<10}"
        if entry["state"] == "running":
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

    def render(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < REDRAW_EVERY_S:
            return
        self._last = now
        lines = [self.title] + [self.line(name, entry) for name, entry in self.steps.items()]
        up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self.stream.write(up + "\n".join(lines) + "\n")
        self.stream.flush()
        self._drawn = len(lines)

    def close(self, footer: list) -> None:
        self.render(force=True)
        if footer:
            self.stream.write("\n".join(footer) + "\n")
            self.stream.flush()
        self._drawn = 0


def _clock(seconds) -> str:
    seconds = int(round(seconds or 0))
    return f"{seconds // 60}:{seconds % 60:02d}"
