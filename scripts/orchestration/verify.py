"""Run a pipeline twice under varied environments, prove every file identical, and name each cause
of a difference.

    python scripts/orchestration/verify.py                       # make verify: phase5..phase9
    python scripts/orchestration/verify.py --phases phase5,phase7 --no-vary cpu
    python scripts/orchestration/verify.py --command "python train.py --out {workspace}" \\
        --exclude "logs/*"
    # your script, wrapped as an external run:
    python scripts/orchestration/verify.py --config experiment.toml

Two fresh workspaces each run the pipeline (our phases, or your
``--command``s, with ``{workspace}`` filled in and the workspace as working
directory, relative paths taken from where verify was started; or, with
``--config``, run_experiment on that experiment config, your script wrapped as
an external run) with SOURCE_DATE_EPOCH fixed. The second run is varied the way
reprotest varies a build, and beyond it; what each variation changes, from
what to what, is in variations.py and docs/verify.md's table (path, time, tz,
locale, umask, hashseed, threads, cpu, cpus, workers, resume). All are on by
default; ``--vary``/``--no-vary`` pick.

Every file the commands create or change in the workspace is an artifact,
whether or not it went through the run records; ``--include``/``--exclude``
(fnmatch patterns on the workspace-relative path, ``*`` crossing folders)
select. Lock files, temporary files and stat caches are left out. In our own
records the fields that describe the machine (a run report's ``environment``
and every ``env_hash``, an external command's recorded Python, ``env/environment.json``
itself, their copies in the manifest, the hashes of those files in the
registry and in reports, and the environment sections of html_report's
pages) are set aside: the spec table's
environment parity compares them, and under ``cpu`` they are expected to
differ. Files only one run wrote whose names differ only in digit runs (a
time stamp in a name) are paired and compared as one. A command that fails
or writes nothing is bad input (exit 2), never "0 artifacts differ".

Each differing artifact is compared by type (utils/formats/artifact_diff.py: JSON
key paths, CSV cells, tensors by name, image boxes, audio ranges, archive
members, text lines or byte ranges, up to ``--limit``). Then the causes
(causes.py): controls first (what differs with nothing varied is run-to-run
noise, never blamed on a variation, and not bisected), then bisection over
the variations, so one cause costs a handful of runs, not one per
variation; ``--max-probes`` caps the runs in all. Each cause lists what its
variations changed (both values) and what to fix.

The report (through the run records) holds the verdict, the spec's
pass/fail table (hash reproducibility, environment parity, dataset split
determinism, visualization energy drift), every difference, and the causes:
cause -> artifacts -> differences. Both versions of the differing files
(the first 50, up to 64 MB in all) are kept in the run folder
(``differences/first/``, ``differences/second/``) for html_report's
side-by-side view. On a terminal a one-screen summary is
printed; piped, the summary is one JSON object on stdout. Exit 0 when
identical, 1 otherwise.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

import orjson

from scripts.orchestration.causes import FILE_NAME, CauseSearch, name_pattern
from scripts.orchestration.external_runs import anchored
from scripts.orchestration.proofs import certify_verify, default_crate_folder, verify_claim
from scripts.orchestration.variations import (
    VARIATIONS,
    changed_settings,
    other_locale,
    run_environment,
)
from scripts.utils import cli, timestamps
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.formats.artifact_diff import LIMIT, compare
from scripts.utils.jsonio import atomic_write_bytes, canonical_json
from scripts.utils.records import signing
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import REPO_ROOT, RESULTS, resolve_workspace
from scripts.visualization.pages import build_page

DEFAULT_EPOCH = "1761912000"
BOOKKEEPING = (
    "*.lock",
    "*.tmp",
    "*.partial",
    "*.statcache.json",
    "*.snapshots.json",
    "*.index.sqlite",
    "*.index.sqlite-journal",
    "*.reads.json",
    "*/__pycache__/*",
)
RESUME_BETWEEN = (0.5, 0.8)  # the kill point, as a share of the first run's time
MAX_RUNS = 24  # all runs of one verification, the first two included
KEEP_FILES, KEEP_BYTES = 50, 64 << 20  # differing files whose two versions the report keeps
SHOWN_CAUSES = 3  # causes in the terminal summary (the report has them all)


# --------------------------------------------------------------------------
# Running the pipeline under a set of variations
# --------------------------------------------------------------------------


def command_argv(template: str, workspace: Path, here: Path) -> list:
    """A --command split as a POSIX shell would, with {workspace} filled in, and each word that
    names an existing file or folder relative to ``here`` (where verify was started:
    ``train.py``, ``data/``) made absolute, since the command runs in the workspace; bad quoting
    is bad input."""
    try:
        parts = shlex.split(template)
    except ValueError as exc:
        raise InputError(f"cannot split the command: {exc}", command=template)
    if not parts:
        raise InputError("empty command", command=template)
    return [
        part.replace("{workspace}", str(workspace))
        if "{workspace}" in part
        else part
        if index == 0 and "/" not in part and os.sep not in part  # a program found on PATH
        else anchored(part, here)
        for index, part in enumerate(parts)
    ]


def experiment_commands(config: str | None) -> list:
    """``--config``: the run_experiment command that runs this experiment config (yours, ``kind =
    "external"``, or ours) as a recorded run, its relative paths taken from the config's folder."""
    if not config:
        return []
    path = Path(config).resolve()
    if not path.is_file():
        raise InputError("the experiment config does not exist", file=config)
    return [
        " ".join(
            shlex.quote(str(part))
            for part in (
                sys.executable,
                REPO_ROOT / "scripts/orchestration/run_experiment.py",
                "--config",
                path,
                "--code-dir",
                path.parent,
            )
        )
        + " --logdir {workspace}/experiments/results/run --resume --workspace {workspace}"
    ]  # resume: after a kill


def resume_point(epoch: str, first_run_seconds: float) -> float:
    """Seconds into the run at which ``resume`` kills it: seeded, between 50 % and 80 % of the
    first run."""
    fraction = (
        int.from_bytes(hashlib.sha256(f"verify-resume-{epoch}".encode()).digest()[:8], "big")
        / 2**64
    )
    low, high = RESUME_BETWEEN
    return first_run_seconds * (low + (high - low) * fraction)


class Runs:
    """The runs of one verification: each in a fresh workspace, at the same path unless ``path``
    is varied."""

    FOLDERS = {False: "ws", True: "ws-at-another-much-longer-path/for-the-varied-run"}

    def __init__(self, commands: list, scratch: Path, epoch: str, log):
        self.commands, self.scratch, self.epoch, self.log = commands, scratch, epoch, log
        self.here = Path.cwd()  # where the commands' relative paths point
        self.first_run_seconds = None
        self.count = 0

    def workspace_path(self, varied: set) -> Path:
        return self.scratch / self.FOLDERS["path" in varied] / "ws"

    def run(self, name: str, varied: set) -> Path:
        """Run every command under ``varied``; returns the finished workspace (moved to
        runs/<name>)."""
        self.count += 1
        workspace = self.workspace_path(varied)
        workspace.mkdir(parents=True)
        env, umask, cpus = run_environment(varied, self.epoch)
        timer = timestamps.Stopwatch()
        if "resume" in varied:
            self._killed_once(workspace, env, umask, cpus, varied)
        env["CRH_CLOCK_REAL_START"] = repr(
            time.time()
        )  # the run's clock starts now, in every process
        for template in self.commands:
            result = self._start(template, workspace, env, umask, cpus)
            _, stderr = result.communicate()
            if result.returncode != 0:
                raise InputError(
                    "a pipeline command failed"
                    + (f" under {', '.join(sorted(varied))}" if varied else ""),
                    command=template,
                    exit_code=result.returncode,
                    variations=sorted(varied),
                    stderr_tail=stderr.decode(errors="replace").splitlines()[-5:],
                )
        seconds = timer.elapsed()
        if self.first_run_seconds is None:
            self.first_run_seconds = seconds
        stored = self.scratch / "runs" / name
        stored.mkdir(parents=True)
        shutil.move(str(workspace), str(stored / "ws"))
        shutil.rmtree(
            self.scratch / self.FOLDERS["path" in varied].split("/")[0], ignore_errors=True
        )
        self.log.info("run_done", run=name, variations=sorted(varied), seconds=round(seconds, 2))
        return stored / "ws"

    def _start(
        self, template: str, workspace: Path, env: dict, umask: int, cpus
    ) -> subprocess.Popen:
        posix = os.name == "posix"

        def in_the_child():
            os.umask(umask)
            if cpus is not None and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, cpus)

        try:
            return subprocess.Popen(
                command_argv(template, workspace, self.here),
                cwd=workspace,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=in_the_child if posix else None,
                start_new_session=posix,
            )
        except OSError as exc:
            raise InputError(f"cannot start the command: {exc.strerror or exc}", command=template)

    def _killed_once(self, workspace: Path, env: dict, umask: int, cpus, varied: set) -> None:
        """Start the run and kill it (with everything it started) at the seeded point."""
        deadline = time.monotonic() + resume_point(self.epoch, self.first_run_seconds or 1.0)
        env = {**env, "CRH_CLOCK_REAL_START": repr(time.time())}
        for template in self.commands:
            process = self._start(template, workspace, env, umask, cpus)
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if process.poll() is None:
                if os.name == "posix":
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
                process.wait()
                process.stderr.close()
                self.log.info("killed_for_resume", command=template, variations=sorted(varied))
                return
            process.stderr.close()
        # It ran to the end: a second run in this workspace would find that one's records (a run
        # twice, not a resumed one), so it starts from an empty workspace, resume untested.
        shutil.rmtree(workspace)
        workspace.mkdir(parents=True)
        self.log.warning(
            "resume_not_killed",
            note="the run ended before the kill point; run again from an empty workspace",
        )


# --------------------------------------------------------------------------
# What a run wrote, and what differs
# --------------------------------------------------------------------------


def selected(relative: str, include: list, exclude: list) -> bool:
    if any(
        fnmatch.fnmatchcase(relative, pattern)
        or fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], pattern)
        for pattern in (*BOOKKEEPING, *exclude)
    ):
        return False
    return not include or any(fnmatch.fnmatchcase(relative, pattern) for pattern in include)


HTML_ENVIRONMENT = re.compile(
    rb'<section id="(environment|command-environment)">.*?</section>', re.S
)


def comparable(relative: str, data: bytes) -> bytes:
    """The bytes compared: our records without the fields that describe the machine (see the
    docstring)."""
    if (
        relative.endswith("report.html") and b'<section id="environment">' in data
    ):  # html_report's page
        return HTML_ENVIRONMENT.sub(rb'<section id="\1"></section>', data)
    if not relative.endswith(".json") or not data.startswith(b"{"):
        return data
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if not isinstance(document, dict):
        return data
    if "run_id" in document and "env_hash" in document:  # a run report
        document = _without_env_hash({k: v for k, v in document.items() if k != "environment"})
        if isinstance(
            document.get("external"), dict
        ):  # an external command's Python describes the machine too
            document["external"] = {
                k: v for k, v in document["external"].items() if k != "environment"
            }
        document["outputs"] = {
            path: ({} if _is_record(path) else entry)
            for path, entry in document.get("outputs", {}).items()
        }
    elif document.get("format") == "crh-manifest":
        document["runs"] = {
            run: {k: v for k, v in entry.items() if k not in ("env_hash", "report_sha256")}
            for run, entry in document.get("runs", {}).items()
        }
    elif document.get("format") == "crh-hash-registry":
        document["files"] = {
            path: ({"run": entry.get("run")} if _is_record(path) else entry)
            for path, entry in document.get("files", {}).items()
        }
    elif relative == "env/environment.json":
        return b""  # the environment itself: compared by the spec table's environment parity
    else:
        return data
    return canonical_json(document)


def _without_env_hash(value):
    if isinstance(value, dict):
        return {k: _without_env_hash(v) for k, v in value.items() if k != "env_hash"}
    return [_without_env_hash(v) for v in value] if isinstance(value, list) else value


def _is_record(path: str) -> bool:
    """Files that describe the machine in part: run reports, the environment, html_report's
    pages."""
    return (
        (path.startswith(RESULTS + "/") and path.count("/") == 2 and path.endswith(".json"))
        or path == "env/environment.json"
        or (path.startswith(RESULTS + "/html_report_") and path.endswith("/report.html"))
    )


def snapshot(workspace: Path, include: list, exclude: list) -> dict:
    """{workspace-relative path: SHA-256 of its comparable bytes} for every file selected."""
    files = {}
    for path in sorted(workspace.rglob("*")):
        if path.is_dir():
            continue
        relative = path.relative_to(workspace).as_posix()
        if not selected(relative, include, exclude):
            continue
        if path.is_symlink():
            files[relative] = hashlib.sha256(b"link:" + os.readlink(path).encode()).hexdigest()
        elif relative.endswith((".json", "report.html")):
            files[relative] = hashlib.sha256(comparable(relative, path.read_bytes())).hexdigest()
        else:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            files[relative] = digest.hexdigest()
    return files


def renamed(first: dict, second: dict) -> dict:
    """{first's path: second's path} for files only one run wrote whose paths differ only in digit
    runs.

    A time stamp or counter in a file name: the two are compared as one file. Where several files
    share a digit-free pattern, they are paired in name order; the rest are present in one run only.
    """

    def by_pattern(paths):
        groups: dict = {}
        for path in sorted(paths):
            groups.setdefault(name_pattern(path), []).append(path)
        return groups

    only_first = by_pattern(p for p in first if p not in second)
    only_second = by_pattern(p for p in second if p not in first)
    return {
        a: b
        for pattern, paths in only_first.items()
        for a, b in zip(paths, only_second.get(pattern, []))
    }


def differing(first: dict, second: dict) -> list:
    """Paths whose content differs or that only one run wrote (a renamed pair by its first name);
    records last."""
    pairs = renamed(first, second)
    moved = set(pairs.values())
    paths = [
        p
        for p in sorted(set(first) | set(second))
        if first.get(p) != second.get(p) and p not in moved
    ]
    return sorted(
        paths,
        key=lambda p: (_is_record(p) or p.startswith("meta/") or p == "data/hash_registry.json", p),
    )


def differences(
    first: Path, second: Path, paths: list, limit: int, pairs: dict | None = None
) -> dict:
    """{artifact: comparison} for ``paths`` (what differs, by type; which run lacks it; a renamed
    file's names)."""
    found = {}
    for relative in paths:
        other = (pairs or {}).get(relative, relative)
        x, y = first / relative, second / other
        if not x.exists() or not y.exists():
            found[relative] = {
                "type": "presence",
                "count": 1,
                "truncated": False,
                "differences": [
                    {
                        "where": "file",
                        "first": "present" if x.exists() else "<absent>",
                        "second": "present" if y.exists() else "<absent>",
                    }
                ],
            }
            continue
        result = compare(
            relative, comparable(relative, x.read_bytes()), comparable(other, y.read_bytes()), limit
        )
        if other != relative:
            result = {
                **result,
                "count": result["count"] + 1,
                "differences": [
                    {"where": FILE_NAME, "first": relative, "second": other},
                    *result["differences"],
                ],
            }
        found[relative] = result
    return found


def compared(
    first: Path, first_snapshot: dict, other: Path, other_snapshot: dict, limit: int
) -> dict:
    """Everything that differs between two finished workspaces, renamed files paired."""
    pairs = renamed(first_snapshot, other_snapshot)
    return differences(first, other, differing(first_snapshot, other_snapshot), limit, pairs)


def keep_versions(first: Path, second: Path, paths: list, pairs: dict) -> dict:
    """Both versions of the smaller differing files, kept in the report's folder for side-by-side
    views."""
    kept, total = {}, 0
    for relative in paths[:KEEP_FILES]:
        for run, workspace in (("first", first), ("second", second)):
            path = workspace / (pairs.get(relative, relative) if run == "second" else relative)
            if (
                path.is_file()
                and not path.is_symlink()
                and total + path.stat().st_size <= KEEP_BYTES
            ):
                data = path.read_bytes()
                kept[(run, relative)] = data
                total += len(data)
    return kept


# --------------------------------------------------------------------------
# Causes
# --------------------------------------------------------------------------


def find_causes(
    runs: Runs,
    first: Path,
    first_snapshot: dict,
    found: dict,
    varied: list,
    select: tuple,
    limit: int,
    max_runs: int = MAX_RUNS,
) -> dict:
    """Name the variations that make each difference of the varied run (see causes.py): controls,
    then bisection."""

    def probe(cause: frozenset, name: str) -> dict:
        workspace = runs.run(name, set(cause))
        try:
            return compared(first, first_snapshot, workspace, snapshot(workspace, *select), limit)
        finally:
            shutil.rmtree(workspace.parent, ignore_errors=True)
            runs.log.info("cause_probe", run=name, variations=sorted(cause))

    paths = (str(runs.workspace_path(set())), str(runs.workspace_path({"path"})))
    search = CauseSearch(
        probe, found, varied, runs.epoch, max_runs, runs.count, paths, now=time.time()
    )
    return search.explain()


# --------------------------------------------------------------------------
# The spec's pass/fail table, and the summary
# --------------------------------------------------------------------------


def spec_table(first: Path, second: Path, identical: bool, varied: list) -> dict:
    def newest_report(workspace, prefix):
        reports = sorted((workspace / RESULTS).glob(f"{prefix}_*.json"))
        return orjson.loads(reports[-1].read_bytes()) if reports else None

    table = {"hash_reproducibility": {"pass": identical}}
    env = [workspace / "env/environment.json" for workspace in (first, second)]
    if all(p.exists() for p in env):
        hashes = [orjson.loads(p.read_bytes())["env_hash"] for p in env]
        same = hashes[0] == hashes[1]
        table["environment_parity"] = {"pass": same or "cpu" in varied, "env_hash": hashes[0]} | (
            {}
            if same
            else {"second_env_hash": hashes[1], "note": "another CPU was simulated (cpu): expected"}
        )
    splits = [sorted((w / RESULTS).glob("dataset_splitter_*/split.json")) for w in (first, second)]
    if all(splits):
        table["dataset_split_determinism"] = {
            "pass": splits[0][-1].read_bytes() == splits[1][-1].read_bytes()
        }
    drift = [newest_report(w, "tensor_visualizer") for w in (first, second)]
    if all(drift):
        worst = max(report["results"]["max_abs_drift_db"] for report in drift)
        table["visualization_energy_drift"] = {"pass": worst <= 0.5, "max_abs_drift_db": worst}
    return table


def summary_text(summary: dict, width: int | None = None) -> str:
    """The one-screen summary; with ``width``, each line shortened to fit (the report holds
    everything)."""
    lines = _summary_lines(summary)
    if width:
        lines = [
            line
            if len(line) <= width
            else line[: len(line) - len(line.lstrip())]
            + textwrap.shorten(
                line.strip(), width - (len(line) - len(line.lstrip())), placeholder=" ..."
            )
            for line in lines
        ]
    return "\n".join(lines) + "\n"


def _summary_lines(summary: dict) -> list:
    lines = [
        ("IDENTICAL" if summary["identical"] else "DIFFERENT")
        + f": {summary['artifacts']} artifacts, {summary['differing']} differ; "
        f"{summary.get('runs', 2)} runs; "
        "varied: " + ", ".join(summary["varied"])
    ]
    for name, row in summary["spec_table"].items():
        lines.append(
            f"  {'pass' if row['pass'] else 'FAIL'}  {name}"
            + (f"  ({row['note']})" if "note" in row else "")
        )
    causes = summary.get("causes", [])
    for cause in causes[:SHOWN_CAUSES]:
        label = " + ".join(cause["variations"]) + (" (together)" if cause["interaction"] else "")
        lines.append(f"cause: {label}")
        if cause.get("changed"):
            lines.append(
                "  changed: "
                + "; ".join(cause["changed"][:4])
                + (" ..." if len(cause["changed"]) > 4 else "")
            )
        if cause.get("likely_sources"):
            lines.append(
                "  likely: "
                + "; ".join(source.split(" (")[0] for source in cause["likely_sources"])
            )
        if cause.get("fix"):
            lines.append(f"  fix: {cause['fix']}")
        shown = 5 if len(causes) == 1 else 2
        for artifact in cause["artifacts"][:shown]:
            places = ", ".join(_place(item) for item in artifact["differences"][:3])
            lines.append(f"  {artifact['artifact']}: {places}")
        if len(cause["artifacts"]) > shown:
            lines.append(f"  ... and {len(cause['artifacts']) - shown} more artifacts")
    if len(causes) > SHOWN_CAUSES:
        lines.append(
            f"... and {len(causes) - SHOWN_CAUSES} more causes: "
            + ", ".join(" + ".join(c["variations"]) for c in causes[SHOWN_CAUSES:])
            + " (see the report)"
        )
    for item in summary.get("unexplained", [])[:5]:
        lines.append(f"unexplained: {item['artifact']}: {item['where']}")
    lines.append(f"report: {summary['report']}")
    return lines


def _place(item: dict) -> str:
    if item["where"] == FILE_NAME:
        return f"name {item['first']} -> {item['second']}" + (
            f" ({item['note']})" if "note" in item else ""
        )
    if "differing_values" in item:  # a tensor
        largest = item.get("max_abs_difference")
        return f"{item['where']} ({item['differing_values']} of {item['values']} values" + (
            f", max |d| {largest:.3g})" if isinstance(largest, (int, float)) else ")"
        )
    return item["where"]


def verify_twice(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    varied = [v for v in (args.vary or VARIATIONS) if v not in args.no_vary]
    if os.name != "posix" and "umask" in varied:
        varied.remove("umask")
    if "locale" in varied and other_locale() is None:
        log.warning("locale_not_varied", note="this machine has no second locale")
        varied.remove("locale")
    if args.config and args.command:
        raise InputError("give --config or --command, not both")
    commands = (
        args.command
        or experiment_commands(args.config)
        or [
            f"{shlex.quote(sys.executable)} "
            f"{shlex.quote(str(REPO_ROOT / 'scripts/orchestration/pipeline.py'))} "
            f"{phase} --workspace {{workspace}}"
            for phase in args.phases.split(",")
            if phase.strip()
        ]
    )
    if not commands:
        raise InputError(
            "nothing to run: give --phases (e.g. phase5,phase7) or --command", value=args.phases
        )
    for command in commands:
        command_argv(
            command, Path("."), Path.cwd()
        )  # a command that cannot be split is bad input before any run
    epoch = str(timestamps.source_date_epoch() or DEFAULT_EPOCH)
    select = (args.include, args.exclude)
    scratch = (
        Path(args.keep).absolute() if args.keep else Path(tempfile.mkdtemp(prefix="crh-verify-"))
    )
    try:
        runs = Runs(commands, scratch, epoch, log)
        timer = timestamps.Stopwatch()
        first = runs.run("first", set())
        written = snapshot(first, *select)
        if not written:
            raise InputError(
                "the commands wrote no file in the workspace: verify compares what a command "
                "writes there ({workspace}, also its working directory)"
                + (" that --include/--exclude select" if args.include or args.exclude else ""),
                commands=commands,
            )
        second = runs.run("second", set(varied))
        second_snapshot = snapshot(second, *select)
        found = compared(first, written, second, second_snapshot, args.limit)
        paths = list(found)
        kept = keep_versions(first, second, paths, renamed(written, second_snapshot))
        causes = {}
        if paths and not args.no_bisect and varied:
            causes = find_causes(
                runs, first, written, found, varied, select, args.limit, args.max_probes
            )
        settings = {
            variation: changed_settings(
                variation,
                epoch,
                (str(runs.workspace_path(set())), str(runs.workspace_path({"path"}))),
            )
            for variation in varied
        }
        table = spec_table(first, second, not paths, varied)
        log.info(
            "timing",
            first_run_seconds=round(runs.first_run_seconds, 2),
            runs=runs.count,
            total_seconds=round(timer.elapsed(), 2),
        )
        paths = list(found)
        identical = not paths
        summary = {
            "identical": identical,
            "artifacts": len(written),
            "differing": len(paths),
            "varied": varied,
            "runs": runs.count,
            "spec_table": table,
            **{k: causes[k] for k in ("causes", "unexplained") if k in causes},
        }
        with RunRecorder(
            "verify",
            workspace=workspace,
            log=log,
            config={
                "commands": [c.replace(str(REPO_ROOT), "<repo>") for c in commands],
                "varied": varied,
                "source_date_epoch": epoch,
                "include": args.include,
                "exclude": args.exclude,
            },
        ) as record:
            record.results.update(
                **summary,
                differences=[{"artifact": path, **result} for path, result in found.items()],
                settings=settings,
            )
            for (run, relative), data in kept.items():
                atomic_write_bytes(record.output_path(f"differences/{run}/{relative}"), data)
            if not identical:
                record.status = "check_failed"
        summary["report"] = record.report
        if args.certify:
            records = WorkspaceRecords(workspace)
            report = records.report(record.run_id)
            out = (
                Path(args.certify_out)
                if args.certify_out
                else default_crate_folder(workspace, record.run_id)
            )
            crate = certify_verify(
                first,
                out,
                signing.workspace_signer(workspace, Path(args.key) if args.key else None),
                verify_claim(summary, settings, written),
                workspace / record.report,
                record.report,
                build_page(workspace, report),
                [c.replace(str(REPO_ROOT), "<repo>") for c in commands],
                log,
            )
            summary["crate"] = crate["crate"]
        if sys.stdout.isatty():
            sys.stdout.write(summary_text(summary, shutil.get_terminal_size().columns))
            sys.stdout.flush()
        else:
            cli.print_json(summary)
        if not identical:
            first_cause = (causes.get("causes") or [{}])[0]
            raise CheckFailed(
                f"{len(paths)} artifacts differ between the runs",
                first=paths[0],
                causes=[" + ".join(c["variations"]) for c in causes.get("causes", [])],
                first_cause=first_cause.get("variations"),
                report=record.report,
            )
        log.info(
            "identical",
            artifacts=len(written),
            varied=varied,
            spec_table=table,
            report=record.report,
        )
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "verify",
        doc=__doc__,
        description="Run the pipeline twice (the second run varied), compare every file it writes, "
        "explain\neach difference and name its causes.",
    )
    parser.add_argument(
        "--phases", default="phase5,phase6,phase7,phase8,phase9", help="phases to run"
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="verify this experiment config as run_experiment runs it (your script as "
        'kind = "external", or ours) instead of the phases',
    )
    parser.add_argument(
        "--command",
        action="append",
        default=[],
        metavar="CMD",
        help="run CMD instead of the phases ({workspace} is filled in; repeatable, run in order)",
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="compare only files matching GLOB (workspace-relative; repeatable)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out files matching GLOB (repeatable)",
    )
    parser.add_argument(
        "--vary",
        action="append",
        default=[],
        choices=VARIATIONS,
        help="vary only these (repeatable; default: all)",
    )
    parser.add_argument(
        "--no-vary", action="append", default=[], choices=VARIATIONS, help="do not vary this"
    )
    parser.add_argument(
        "--no-bisect", action="store_true", help="do not look for the causes of a difference"
    )
    parser.add_argument(
        "--limit",
        type=cli.bounded(int, 1, 10_000),
        default=LIMIT,
        help="differences listed per artifact",
    )
    parser.add_argument(
        "--max-probes",
        type=cli.bounded(int, 3, 1000),
        default=MAX_RUNS,
        help="runs at most, all told (the first two included), when looking for causes",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep the workspaces under DIR/runs/")
    parser.add_argument(
        "--certify",
        action="store_true",
        help="also write a signed crate of the first run and the verdict (docs/proofs.md)",
    )
    parser.add_argument(
        "--certify-out",
        metavar="DIR",
        help="the crate's folder (default: experiments/proofs/<verify run id>)",
    )
    parser.add_argument(
        "--key", metavar="PEM", help="Ed25519 private key (default: the workspace's own)"
    )
    cli.add_common_options(parser)
    return cli.run(parser, verify_twice, argv)


if __name__ == "__main__":
    sys.exit(main())
