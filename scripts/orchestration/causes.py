"""Which variation makes each difference: noise learned from controls, then bisection over the
variations.

    from scripts.orchestration.causes import CauseSearch
    search = CauseSearch(probe, found, varied, epoch, max_runs=24, runs_used=2)
    explained = search.explain()   # {"causes": [...], "unexplained": [...]}

``probe(varied, name)`` runs the commands once more with the variations in
``varied`` (a frozenset) and returns what differs from the first run, as
verify's ``differences`` gives it: ``{artifact: comparison}``.

1. Noise first. A control run (nothing varied) shows what moves by itself;
   if anything does, a second control shows more of it. A difference that
   carries the varied run's clock (the first run's year or Unix time where
   the run with ``time`` shows the shifted one; or today's date in both, from
   a clock outside Python) is ``time``. A file with any other difference in
   a control is run-to-run noise throughout and is not bisected.
2. Every other difference is bisected: the variations are split in two
   halves and each half run alone; what a half reproduces is looked for
   inside it, and what needs both halves is an interaction, found by holding
   one half on while the other is bisected. One cause among n variations
   costs about 1.5 * log2(n) runs.
3. A difference blamed on a variation must recur in every run that had that
   variation; one that came and went is noise the controls missed.

A difference is matched across runs by its place (a key path, a CSV cell, a
line, a tensor, an archive member, a file name); for types whose places move
(image boxes, byte ranges) the artifact is the place.
"""

from __future__ import annotations

import datetime
import re

import orjson

from scripts.orchestration.variations import (
    CLOCK_SHIFT,
    FIXES,
    NOISE_FIX,
    NOISE_SOURCES,
    changed_settings,
)

# Types whose places (key paths, cells, lines, members, tensors) stay put between runs; regions and
# ranges may move.
STABLE_PLACES = {"json", "jsonl", "csv", "text", "archive", "presence", "mp4", "array", "model"}
FILE_NAME = "file name"
NOISE = "none: run-to-run noise"
LONG_NUMBER = re.compile(r"\d{10,}")
DIGIT_RUN = re.compile(r"\d+")


class OutOfRuns(Exception):
    """The run budget (--max-probes) is spent."""


def name_pattern(path: str) -> str:
    """A path with its digit runs blanked: what stays of a name with a time stamp or counter in
    it."""
    return DIGIT_RUN.sub("#", path)


def place_keys(found: dict) -> dict:
    """{(artifact, place or None): [differences]} -- None where the type's places move between runs.

    A file present in one run only is keyed by its name's pattern: its name may change from run to
    run.
    """
    keys: dict = {}
    for artifact, result in found.items():
        stable = result["type"] in STABLE_PLACES
        for item in result["differences"]:
            if result["type"] == "presence":
                key = (
                    name_pattern(artifact),
                    f"{item['where']}: {item['first']} / {item['second']}",
                )
                keys.setdefault(key, []).append({**item, "artifact": artifact})
                continue
            place = item["where"] if stable or item["where"] == FILE_NAME else None
            keys.setdefault((artifact, place), []).append(item)
    return keys


def carries_the_clock(item: dict, epoch: str, now: float | None = None) -> str | None:
    """How a difference shows a wall clock: "shifted" (the first run's clock in the first value,
    the shifted one in the second), "real" (today's date or Unix time in both: a clock outside
    Python, which verify cannot shift), or None."""
    start, shifted = int(epoch), int(epoch) + CLOCK_SHIFT
    first, second = (_text(item.get(run)) for run in ("first", "second"))
    if _shows(first, start) and _shows(second, shifted):
        return "shifted"
    days = (
        () if now is None else (now - 86400, now, now + 86400)
    )  # local dates run a day either side of UTC
    if any(_shows(first, day, whole_day=True) for day in days) and any(
        _shows(second, day, whole_day=True) for day in days
    ):
        return "real"
    return None


def _shows(text: str, instant: float, whole_day: bool = False) -> bool:
    """Whether ``text`` holds ``instant`` as a date (2025-10-31, 20251031) or as Unix time (s,
    ms, us or ns)."""
    moment = datetime.datetime.fromtimestamp(instant, datetime.timezone.utc)
    if whole_day:
        dates = {moment.strftime("%Y-%m-%d"), moment.strftime("%Y%m%d")}
        if any(date in text for date in dates):
            return True
        prefix = str(int(instant))[:5]  # within about a day
    else:
        if str(moment.year) in text:
            return True
        prefix = str(int(instant))[:4]  # within about 11 days: a run's own stamps
    return any(number.startswith(prefix) for number in LONG_NUMBER.findall(text))


def _text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


def _holds(found: dict, key: tuple) -> bool:
    """Whether a run's differences (place_keys) hold ``key``: its place, or its file where places
    move."""
    return key in found or (key[1] is None and any(artifact == key[0] for artifact, _ in found))


def _merged(*found: dict) -> dict:
    merged: dict = {}
    for causes in found:
        for key, sets in causes.items():
            merged.setdefault(key, set()).update(sets)
    return merged


class CauseSearch:
    """The runs of one search for causes, each cached by the variations it had."""

    def __init__(
        self,
        probe,
        found: dict,
        varied: list,
        epoch: str,
        max_runs: int,
        runs_used: int,
        paths: tuple = ("<first>", "<second>"),
        now: float | None = None,
    ):
        self.probe, self.found, self.varied, self.epoch = probe, found, list(varied), epoch
        self.max_runs, self.runs = max_runs, runs_used
        self.paths, self.now = paths, now
        self.seen = {
            frozenset(varied): place_keys(found)
        }  # variations -> {key: differences} of that run
        self.control: dict = {}
        self.confirmed: dict = {}

    # ----------------------------------------------------------------------

    def explain(self) -> dict:
        self._learn_noise()
        keys = place_keys(self.found)
        clocked = {
            key
            for key in keys
            if "time" in self.varied
            and all(carries_the_clock(item, self.epoch, self.now) for item in keys[key])
        }
        # a file with any difference in a control that is not the clock is noise throughout (not
        # bisected)
        noisy = {artifact for artifact, place in self.control if (artifact, place) not in clocked}
        noise = {key for key in keys if key[0] in noisy} - clocked
        targets = set(keys) - noise - clocked
        causes: dict = {}
        try:
            causes = self._bisect(targets, self.varied, frozenset())
        except OutOfRuns:
            pass
        self._confirm_interactions({cause for found in causes.values() for cause in found})
        flickering = set()
        for key, found in causes.items():
            causes[key] = {cause for cause in found if self._recurs(key, cause)}
            if not causes[key]:
                flickering.add(key)
        for key in clocked:
            causes[key] = {frozenset({"time"})}
        for key in noise | flickering:
            causes[key] = {frozenset()}
        unexplained = sorted(targets - set(causes), key=str)
        return {
            "causes": self._listed(causes, keys),
            "unexplained": [{"artifact": a, "where": w or "(the file)"} for a, w in unexplained],
        }

    def _run(self, varied: frozenset, name: str) -> dict:
        if self.runs >= self.max_runs:
            raise OutOfRuns()
        self.runs += 1
        return place_keys(self.probe(varied, name))

    def _learn_noise(self) -> None:
        """What differs with nothing varied: one control, and a second one if the first shows any
        noise."""
        self.control = self._run(frozenset(), "control")
        if self.control and self.runs < self.max_runs:
            self.control = {**self._run(frozenset(), "control-2"), **self.control}

    def _reproduced(self, varied: frozenset, keys: set) -> set:
        if varied not in self.seen:
            self.seen[varied] = self._run(
                varied, "with-" + "-".join(v for v in self.varied if v in varied)
            )
        return {key for key in keys if _holds(self.seen[varied], key)}

    def _bisect(self, keys: set, candidates: list, context: frozenset) -> dict:
        """{key: {variation sets that make it}}: each key is made by candidates + context, none by
        context alone.

        A key that either half makes on its own is looked for in both: two variations may each make
        it.
        """
        if not keys:
            return {}
        if len(candidates) == 1:
            return {key: {context | {candidates[0]}} for key in keys}
        half = (len(candidates) + 1) // 2
        first, second = candidates[:half], candidates[half:]
        by_first = self._reproduced(context | set(first), keys)
        rest = keys - by_first
        by_second = self._reproduced(context | set(second), keys) if rest else set()
        causes = _merged(
            self._bisect(by_first, first, context), self._bisect(by_second, second, context)
        )
        together = rest - by_second
        # an interaction: the part of the first half needed with all of the second, then vice versa
        if together:
            with_second = self._bisect(together, first, context | set(second))
            parts = {
                cause - context - set(second) for found in with_second.values() for cause in found
            }
            for part in sorted(
                parts, key=lambda part: [self.varied.index(v) for v in self._order(part)]
            ):
                needing = {
                    key
                    for key, found in with_second.items()
                    if any(cause - context - set(second) == part for cause in found)
                }
                causes = _merged(causes, self._bisect(needing, second, context | part))
        return causes

    def _confirm_interactions(self, causes: set) -> None:
        """Run each interaction once more: what needs two variations together is rare, a flicker
        is not."""
        for cause in sorted((c for c in causes if len(c) > 1), key=self._order):
            if self.runs < self.max_runs:
                self.confirmed[cause] = self._run(
                    cause, "again-with-" + "-".join(self._order(cause))
                )

    def _recurs(self, key: tuple, cause: frozenset) -> bool:
        again = self.confirmed.get(cause)
        if again is not None and not _holds(again, key):
            return False
        return all(_holds(self.seen[varied], key) for varied in self.seen if cause <= varied)

    # ----------------------------------------------------------------------

    def _listed(self, causes: dict, keys: dict) -> list:
        grouped: dict = {}
        order = {
            (artifact, item["where"]): index
            for artifact, result in self.found.items()
            for index, item in enumerate(result["differences"])
        }
        for key, cause in sorted(
            ((key, cause) for key, found in causes.items() for cause in found),
            key=lambda pair: (str(pair[0]), self._order(pair[1])),
        ):
            shown = self.seen.get(cause, {}).get(key) if cause else self.control.get(key)
            items = [dict(item) for item in (shown or keys[key])]
            for item in items:
                clock = carries_the_clock(item, self.epoch, self.now) if "time" in cause else None
                if item["where"] == FILE_NAME:
                    item["note"] = (
                        "the name contains a time stamp"
                        if "time" in cause
                        else "the name contains a number that changes from run to run"
                    )
                if clock == "real":
                    item["clock"] = (
                        "today's date or time, from a clock outside Python (a shell's date, a C "
                        "library): verify cannot shift it, so it changes between any two runs"
                    )
            artifact = items[0].pop(
                "artifact", key[0]
            )  # a file present in one run: its own name, not the pattern
            for item in items[1:]:
                item.pop("artifact", None)
            grouped.setdefault(cause, {}).setdefault(artifact, []).extend(items)
        listed = []
        position = {variation: index for index, variation in enumerate(self.varied)}
        for cause, artifacts in sorted(
            grouped.items(), key=lambda pair: (len(pair[0]), sorted(position[v] for v in pair[0]))
        ):
            entry = {"variations": self._order(cause) or [NOISE], "interaction": len(cause) > 1}
            if cause:
                entry["changed"] = [
                    line
                    for v in self._order(cause)
                    for line in changed_settings(v, self.epoch, self.paths)
                ]
                entry["fix"] = "; ".join(FIXES[v] for v in self._order(cause))
            else:
                entry["likely_sources"], entry["fix"] = NOISE_SOURCES, NOISE_FIX
            entry["artifacts"] = [
                {
                    "artifact": artifact,
                    "differences": sorted(
                        items, key=lambda item: order.get((artifact, item["where"]), len(order))
                    ),
                }
                for artifact, items in sorted(artifacts.items())
            ]
            listed.append(entry)
        return listed

    def _order(self, cause: frozenset) -> list:
        return [v for v in self.varied if v in cause]
