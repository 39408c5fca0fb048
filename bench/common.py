"""Timing and reporting helpers shared by the benchmarks."""

from __future__ import annotations

import time


def best_of_alternating(functions: dict, repeat: int, before=None) -> dict:
    """Run each function in turn, ``repeat`` rounds; keep each one's best wall time. ``before``,
    if given, runs untimed before each call."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            if before is not None:
                before()
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def figure(name, what, ours, unit, anchor_what, anchor, target, extra=None, higher_is_better=True):
    """One figure; ``target`` None marks a figure shown for context, with no target of its own."""
    ratio = ours / anchor if higher_is_better else anchor / ours
    result = {
        "name": name,
        "what": what,
        "value": round(ours, 3),
        "unit": unit,
        "anchor": {"what": anchor_what, "value": round(anchor, 3), "unit": unit},
        "ratio": round(ratio, 3),
        "target": None if target is None else {"ratio_at_least": target},
        "met": None if target is None else ratio >= target,
    }
    result.update(extra or {})
    return result


def scaling(name: str, unit: str, rates: dict, sizes: list) -> dict:
    """How a tool scales: throughput per worker count beside the ideal (linear from one worker),
    and the time for 1/100, 1/10 and all of the input, beside linear growth from the largest."""
    one = rates[min(rates)]
    largest = sizes[-1]
    return {
        "name": name,
        "unit": unit,
        "workers": [
            {
                "workers": w,
                "rate": round(r, 3),
                "ideal": round(one * w, 3),
                "efficiency": round(r / (one * w), 3),
            }
            for w, r in sorted(rates.items())
        ],
        "sizes": [
            {
                "files": item["files"],
                "seconds": round(item["seconds"], 4),
                "linear_seconds": round(largest["seconds"] * item["files"] / largest["files"], 4),
            }
            for item in sizes
        ],
    }


def plot_scaling(curves: list, path) -> None:
    """One PNG: per tool, throughput against workers (with the ideal line) and time against input
    size."""
    from scripts.utils.formats.plotting import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(2, len(curves), figsize=(4.2 * len(curves), 7), squeeze=False)
    for column, curve in enumerate(curves):
        top, bottom = axes[0][column], axes[1][column]
        workers = [item["workers"] for item in curve["workers"]]
        top.plot(workers, [item["rate"] for item in curve["workers"]], "o-", label="measured")
        top.plot(
            workers, [item["ideal"] for item in curve["workers"]], "k--", label="ideal (linear)"
        )
        top.set(title=curve["name"], xlabel="workers", ylabel=curve["unit"], xticks=workers)
        top.set_ylim(bottom=0)
        top.legend()
        files = [item["files"] for item in curve["sizes"]]
        bottom.loglog(files, [item["seconds"] for item in curve["sizes"]], "o-", label="measured")
        bottom.loglog(
            files,
            [item["linear_seconds"] for item in curve["sizes"]],
            "k--",
            label="linear from largest",
        )
        bottom.set(xlabel="files (1x, 10x, 100x)", ylabel="seconds")
        bottom.set_xticks(files, [str(count) for count in files])
        bottom.minorticks_off()
        bottom.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
