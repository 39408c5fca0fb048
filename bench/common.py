"""Timing and reporting helpers shared by the benchmarks."""

from __future__ import annotations

import time


def best_of_alternating(functions: dict, repeat: int) -> dict:
    """Run each function in turn, ``repeat`` rounds; keep each one's best wall time."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def figure(name, what, ours, unit, anchor_what, anchor, target, extra=None, higher_is_better=True):
    """One figure; ``target`` None marks a figure shown for context, with no target of its own."""
    ratio = ours / anchor if higher_is_better else anchor / ours
    result = {"name": name, "what": what, "value": round(ours, 3), "unit": unit,
              "anchor": {"what": anchor_what, "value": round(anchor, 3), "unit": unit},
              "ratio": round(ratio, 3), "target": None if target is None else {"ratio_at_least": target},
              "met": None if target is None else ratio >= target}
    result.update(extra or {})
    return result
