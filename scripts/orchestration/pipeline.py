"""The phase pipeline behind ``make phase5`` ... ``make phase9``.

    python scripts/orchestration/pipeline.py phase7
    python scripts/orchestration/pipeline.py phase7 --data /mnt/scans --workspace /tmp/ws
    python scripts/orchestration/pipeline.py phase7 --data /mnt/scans --data-name cohort_a --strict
    python scripts/orchestration/pipeline.py phase7 --data /mnt/scans --scheduler tcp://head-node:8786

Phases (the spec's phase table), each building on the steps before it; the
step table, with what each step runs, waits for, consumes and writes, is the
data file ``scripts/orchestration/steps.toml`` (``--steps`` prints it filled in):

* phase5, phase6 (Dreamer + Learner testing): sample data (unless ``--data``)
  -> metadata -> split and preprocess (the files metadata could read) ->
  hash registry -> run_experiment with ``trainer/config/phaseN.toml`` into
  ``experiments/results/phaseN/`` -> tensor_visualizer (phase7: also
  dream_animation and metric_plotter) -> html_report (one HTML page of the run).
* phase7 (Bridge & Sonic Encoding): the same chain for phase 7, then
  dream_animation and metric_plotter: FFT and loss/coherence plots, GIF and
  MP4 replay, the WAV and its spectrogram.
* phase8 (Full System Validation): a phase-8 run, moved by archive_results
  into ``experiments/results/archive/phase8/`` with a deterministic
  ``phase8.tar.gz``, the archive re-verified, and hash_integrity verifying
  the archive folder and the data against the registry.
* phase9 (Deployment Tooling): env_check's snapshot in ``env/`` and every
  phase config resolved by config_loader into ``env/config_phaseN.json``.

Your data. ``--data DIR`` may be anywhere (another disk, a read-only or
network mount) and is only read. Its files are named ``@<name>/<path>`` in
every record, ``<name>`` being the folder's name or ``--data-name``
(scripts/utils/records/data_roots.py). A file a step cannot use (not an image, no
pixel data, truncated, an unsupported codec) is skipped with its reason and
left out of the steps after it; the summary counts the skipped files of each
step and the step's report names them. ``--strict`` makes any skipped file
a failure (exit 2).

Skipping and repairing. A step is skipped when its fingerprint matches its
last successful run and that run's outputs are intact. The fingerprint
covers the command, the contents of the config and seeds files it names,
the code of its script and of every project module that script imports,
the data (file names and contents, through the stat cache: an unchanged
folder is not read again), and the fingerprints of the steps it depends
on. The outputs are checked against the registry: a stat when size and
mtime are unchanged, a hash otherwise. A changed input, or a missing or
altered output (any file a step produced, its report, the sample data),
redoes that step and the steps after it: the old runs are retracted first,
so the workspace ends exactly as one clean run would leave it.

On a cluster. ``--scheduler ADDRESS`` (``make phase7 SCHEDULER=...``, or
``$CRH_DASK_SCHEDULER``) runs the data fingerprint, metadata, preprocessing
and hashing on a Dask cluster (``local:N``: one LocalCluster of N processes
for the whole phase); every file it writes is the same as a local run's,
and changing the scheduler redoes no step (scripts/utils/compute/cluster.py).

Interrupted runs. Kill the pipeline at any moment (SIGKILL included) and run
it again: the step that was running is redone from scratch (a run it
completed is retracted), the leftovers of killed runs are removed by the
run records (scripts/utils/records/run_records.py), and the result equals one
uninterrupted run, file for file. Fingerprints and step states live in
``meta/chronicle/pipeline_state.json``; one pipeline at a time runs in a
workspace (``meta/chronicle/.pipeline.lock``): a second one waits for the
first to finish, then finds its work done.

At a terminal (``--log-format auto``, the default, when stderr is one) the
steps are shown live: waiting, running with a bar and an ETA fed by the
step's own progress records (``CRH_PROGRESS=json``), done, up to date,
failed; the JSON log goes to ``meta/chronicle/pipeline.jsonl`` and the end
lists the files to open. Otherwise stderr carries JSON lines, the last one a
summary of what was produced and where, and the summary is also the last
line on stdout. Bad input (a missing, empty or
unsuitable ``--data`` folder, an unknown phase, an unwritable workspace) is
exit 2 before any work starts; a step that fails passes its exit code and
its error on.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

import orjson
from filelock import FileLock, Timeout

from scripts.orchestration.external_runs import config_code_hashes
from scripts.utils import cli
from scripts.utils.compute import cluster
from scripts.utils.config.loading import load_config_file
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.json_logger import PROGRESS_ENV, JsonLogger
from scripts.utils.jsonio import atomic_write_bytes, canonical_json, read_json, remove_stale_temps
from scripts.utils.limits import printable_name
from scripts.utils.records.data_roots import bind_roots, collect_inputs
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.records.local_index import folder_of
from scripts.utils.records.registry import (
    MANIFEST,
    REGISTRY,
    StatCache,
    check_writable,
    damaged_files,
    fold_journal,
    hash_files,
)
from scripts.utils.records.run_records import portable_argv, records_lock, recover, retract_runs
from scripts.utils.records.run_reports import checked_report
from scripts.utils.records.tree_snapshots import (
    TreeSnapshots,
    give_roots_their_listings,
    roots_listings,
)
from scripts.utils.step_view import StepView
from scripts.utils.workspace import (
    PIPELINE_STATE,
    REPO_ROOT,
    SEED_LOG,
    checked_run_id,
    ensure_layout,
    inside,
    resolve_workspace,
    run_folder,
    run_report,
)

PHASES = ("phase5", "phase6", "phase7", "phase8", "phase9")
TERMINAL_LOG = "meta/chronicle/pipeline.jsonl"  # the JSON log when the terminal shows the live view
STATE = PIPELINE_STATE
PIPELINE_LOCK = "meta/chronicle/.pipeline.lock"
SEEDS = REPO_ROOT / "scripts/utils/seeds.toml"
SHOWN_SKIPPED = 5
# What a step consumes is handed over in its arguments, filled in when it runs: "{table}" is the
# metadata step's table, "{run:STEP}" the run folder of STEP (their recorded forms match
# RUN_FOLDER).
HANDOVER = re.compile(r"\{table\}|\{run:([a-z0-9_]+)\}")
RUN_FOLDER = r"experiments/results/[a-z][a-z0-9_]*_[0-9]{8}T[0-9]{6}Z(?:-[0-9]+)?"
STEP_TABLE = Path(__file__).with_name("steps.toml")
DATA_SNAPSHOT = "data_fingerprint"  # the kind of snapshot that vouches for the data's fingerprint


class StepFailed(CheckFailed):
    """A step's script failed: the pipeline exits with the step's own code (1, 2 or 3)."""

    def __init__(self, message: str, exit_code: int, **details):
        super().__init__(message, **details)
        self.exit_code = exit_code


@dataclass
class Step:
    name: str
    script: str  # the name its runs are recorded under
    argv: list  # the script's path and arguments, with what it consumes as HANDOVER placeholders
    after: list = field(default_factory=list)
    folders: list = field(default_factory=list)  # workspace folders it fills outside its run folder
    files: list = field(default_factory=list)  # workspace files it writes outside its run folder
    keep_folders_on_resume: bool = False  # archive: a resumed move must keep what it moved
    consumes: list = field(
        default_factory=list
    )  # workspace folders it moves away (archive: its source)
    resume_from: str | None = None  # what lets it be redone once its source is gone
    in_process: bool = False  # run here, not as a subprocess: it prints its result, and
    # the pipeline records what it writes (config resolution)


def steps_for(phase: str, data: str, external: bool, data_name: str | None, strict: bool) -> list:
    """The steps of a phase, in order, from the step table (steps.toml) filled in for this call."""
    planned = {
        "{data}": [data],
        "{data_name}": ["--data-name", data_name] if data_name else [],
        "{strict}": ["--strict"] if strict else [],
        "{skip_policy}": ["--strict"] if strict else ["--skip-errors"],
    }
    words = {
        "{phase}": phase,
        "{repo}": str(REPO_ROOT),
        "{config}": str(REPO_ROOT / f"trainer/config/{phase}.toml"),
        "{seeds}": str(SEEDS),
        "{logdir}": f"experiments/results/{phase}",
    }

    def fill(text: str) -> str:
        for word, value in words.items():
            text = text.replace(word, value)
        return text

    rows = [
        row
        for row in load_config_file(STEP_TABLE)["step"]
        if phase in row["phases"] and not (external and row.get("sample_only"))
    ]
    names = {fill(row["name"]) for row in rows}
    steps = []
    for row in rows:
        args = [fill(word) for arg in row.get("args", []) for word in planned.get(arg, [arg])]
        steps.append(
            Step(
                fill(row["name"]),
                row["script"].rpartition("/")[2],
                [str(REPO_ROOT / "scripts" / f"{row['script']}.py"), *args],
                [name for name in map(fill, row.get("after", [])) if name in names],
                folders=[fill(path) for path in row.get("folders", [])],
                files=[fill(path) for path in row.get("files", [])],
                keep_folders_on_resume=row.get("keep_on_resume", False),
                consumes=[fill(path) for path in row.get("moves", [])],
                resume_from=fill(row["resume_from"]) if "resume_from" in row else None,
                in_process=row.get("in_process", False),
            )
        )
    return steps


# --------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------

_MODULE_CACHE: dict = {}


def _module_file(dotted: str) -> Path | None:
    base = REPO_ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


# ``import scripts.x.y`` and ``from scripts.x import y, z`` (parenthesized lists may span lines). A
# regular expression instead of ast: parsing every module costs more than the rest of a second call.
# It also matches such lines in docstrings, which only makes a fingerprint cover a module more.
_IMPORT = re.compile(
    r"^[ \t]*(?:import[ \t]+(scripts(?:\.\w+)*)|from[ \t]+(scripts(?:\.\w+)*)[ \t]+import[ \t]+"
    r"(\([^)]*\)|[^\n#]*))",
    re.MULTILINE,
)


def project_imports(path: Path) -> list:
    """The project modules (``scripts.*``) that ``path`` imports anywhere in its code, as files."""
    if path in _MODULE_CACHE:
        return _MODULE_CACHE[path]
    found = set()
    for plain, module, names in _IMPORT.findall(path.read_text(encoding="utf-8")):
        candidates = (
            [plain]
            if plain
            else [module]
            + [
                f"{module}.{name.split()[0]}"
                for name in names.strip("()").replace("\\", " ").split(",")
                if name.split()
            ]
        )
        for name in candidates:
            file = _module_file(name)
            if file is not None:
                found.add(file)
    _MODULE_CACHE[path] = sorted(found)
    return _MODULE_CACHE[path]


def code_fingerprint(entry: Path, also=()) -> str:
    """SHA-256 of ``entry`` and every project module it imports, transitively (and of ``also``)."""
    seen, pending = set(), [Path(entry), *map(Path, also)]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        pending.extend(project_imports(path))
    digest = hashlib.sha256()
    for path in sorted(seen):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def folder_contents(inputs, files: list, cache: StatCache, executor=None) -> dict:
    """``{folder: SHA-256 of its files' names and contents}`` for ``files`` (listed, in name
    order), grouped by the listing's folders (data_roots.StatTally; a file given on its own is
    its own folder). Files are read only where the stat cache cannot vouch for them."""
    hashed = hash_files(files, cache, executor, on_error=lambda name, reason: None)
    digests: dict = {}
    for name, _, _ in files:
        entry = hashed.get(name)
        folder = inputs.tally.key_of(name) if inputs.tally is not None else folder_of(name)
        digest = digests.get(folder) or digests.setdefault(folder, hashlib.sha256())
        digest.update(f"{name}\0{entry['sha256'] if entry else 'unreadable'}\n".encode())
    return {folder: digest.hexdigest() for folder, digest in digests.items()}


def data_fingerprint(contents: dict, skipped) -> str:
    """The data's names and contents, from its folders' content digests, and what was skipped."""
    digest = hashlib.sha256()
    for folder in sorted(contents):
        digest.update(f"{folder}\0{contents[folder]}\n".encode())
    for item in skipped:
        digest.update(f"{item['file']}\0skipped\n".encode())
    return digest.hexdigest()


class DataSnapshot:
    """The data's fingerprint, or the last call's when the data's listing (names and stats) is the
    same: an unchanged folder of a million files costs a walk and a stat of each
    (tree_snapshots.py). When the listing differs, only the folders whose listing changed are
    read again (through the stat cache); the others keep the content digests the last call
    found. Made before the data roots are bound: a snapshot also vouches for their listing
    hashes."""

    def __init__(self, workspace: Path, inputs):
        self.inputs = inputs
        self.listing, newest_ns = inputs.stat_digest, inputs.newest_ns
        self.registry = workspace / REGISTRY
        self.snapshots = TreeSnapshots.load(self.registry)
        found = self.snapshots.lookup(DATA_SNAPSHOT, inputs.given, self.listing, newest_ns)
        self.known = None
        if (
            found is not None
            and isinstance(found[0], dict)
            and isinstance(found[0].get("fingerprint"), str)
            and give_roots_their_listings(found[0], inputs.roots)
        ):
            self.known = found[0]["fingerprint"]

    def fingerprint(self, cache: StatCache, executor=None) -> str:
        if self.known is not None:
            return self.known
        inputs = self.inputs
        contents = self._unchanged_contents()
        if contents is None:
            contents = folder_contents(inputs, inputs.files, cache, executor)
        else:
            key_of = inputs.tally.key_of
            files = [item for item in inputs.files if key_of(item[0]) not in contents]
            contents.update(folder_contents(inputs, files, cache, executor))
        fingerprint = data_fingerprint(contents, inputs.skipped)
        cache.save()
        outcome = {"fingerprint": fingerprint, "roots": roots_listings(inputs.roots)}
        self.snapshots.remember(
            DATA_SNAPSHOT,
            inputs.given,
            self.listing,
            outcome,
            tally=inputs.tally,
            contents=contents,
        )
        self.snapshots.save()
        return fingerprint

    def _unchanged_contents(self) -> dict | None:
        """The content digests of the folders whose listing is as at the last call, or None when
        there is no such call to compare with."""
        if self.inputs.tally is None:
            return None
        found = self.snapshots.changed_folders(
            DATA_SNAPSHOT, self.inputs.given, self.inputs.tally, self.registry, False
        )
        if found is None:
            return None
        changed = found[1]
        kept = self.snapshots.contents(DATA_SNAPSHOT, self.inputs.given)
        listed = set(self.inputs.tally.folders)
        if not set(kept) <= listed | changed:
            return None  # content digests of another shape: read everything
        return {folder: digest for folder, digest in kept.items() if folder not in changed}


def portable(arg: str, workspace: Path) -> str:
    """An argument as it goes into a fingerprint: paths relative to the repository or workspace,
    else a name."""
    path = Path(arg)
    if not path.is_absolute():
        return arg
    for root in (REPO_ROOT, workspace):
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return printable_name(path.name)  # a name that is not UTF-8 still fingerprints (escaped)


def external_code_of(config_path: Path) -> dict:
    """{file: sha256} of the code an external experiment config runs ({} for any other file)."""
    try:
        config = load_config_file(config_path)
    except InputError:
        return {}
    return {
        f"external:{name}": digest
        for name, digest in config_code_hashes(
            config if isinstance(config, dict) else {}, config_path.resolve().parent
        ).items()
    }


def step_fingerprint(step: Step, workspace: Path, data: str, upstream: list) -> str:
    files = {}
    for arg in step.argv[1:]:
        path = Path(arg)
        if path.is_absolute() and path.is_file() and inside(REPO_ROOT, path):
            files[portable(arg, workspace)] = hashlib.sha256(path.read_bytes()).hexdigest()
            if path.suffix.lower() in (
                ".toml",
                ".json",
                ".yaml",
                ".yml",
            ):  # an external command's own code too
                files.update(external_code_of(path))
    also = [Path(__file__)] if step.in_process else []
    files["seeds"] = hashlib.sha256(
        SEEDS.read_bytes()
    ).hexdigest()  # every step draws its seeds from it
    return hashlib.sha256(
        canonical_json(
            {
                "argv": [portable(a, workspace) for a in step.argv],
                "files": files,
                "code": code_fingerprint(Path(step.argv[0]), also),
                "data": data,
                "after": upstream,
            }
        )
    ).hexdigest()


# --------------------------------------------------------------------------
# Running a step
# --------------------------------------------------------------------------


def _die_with_the_pipeline() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: a step whose pipeline is killed is killed too, so it cannot write beside the next
    pipeline."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


STEP_PREEXEC = _die_with_the_pipeline if sys.platform == "linux" else None


def run_step(
    step: Step, argv: list, workspace: Path, env: dict | None = None, on_progress=None
) -> str | None:
    """Run one step's script (in ``env``: default this process's); return the id of the run it
    recorded (None if none), or raise. The step's progress records go to ``on_progress(record)``
    as they come."""
    if step.in_process:
        return _record_config(step, argv, workspace)
    command = [sys.executable, *argv, "--workspace", str(workspace)]
    child = subprocess.Popen(
        command,
        cwd=workspace,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=STEP_PREEXEC,
        env=env,
    )
    records = []
    with child:
        for line in child.stderr:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = {"event": "raw", "text": line.decode(errors="replace").rstrip("\n")}
            if isinstance(record, dict) and record.get("event") == "progress":
                if on_progress is not None:
                    on_progress(record)
                continue
            records.append(record)
    result = child
    if result.returncode != 0:
        error = next(
            (r for r in records if isinstance(r, dict) and r.get("level") == "error"),
            {"error": "no error record", "stderr_tail": [r.get("text") for r in records[-3:]]},
        )
        cause = {k: v for k, v in error.items() if k not in ("ts", "level", "script")}
        message = f"step {step.name!r} failed (exit {result.returncode}): {error.get('error')}"
        if result.returncode == 2:  # bad input stays bad input, naming the file
            raise InputError(message, file=cause.get("file"), step=step.name, cause=cause)
        raise StepFailed(
            message,
            result.returncode if result.returncode in (1, 3) else 1,
            step=step.name,
            exit_code=result.returncode,
            cause=cause,
        )
    recorded = next(
        (r for r in records if isinstance(r, dict) and r.get("event") == "run_recorded"), None
    )
    return (
        recorded["run_id"] if recorded else None
    )  # a pure check (archive_results --verify) records none


def _record_config(step: Step, argv: list, workspace: Path) -> str:
    from scripts.utils.records.run_records import RunRecorder

    result = subprocess.run(
        [sys.executable, *argv], cwd=workspace, capture_output=True, preexec_fn=STEP_PREEXEC
    )
    if result.returncode != 0:
        raise StepFailed(
            f"step {step.name!r} failed (exit {result.returncode})",
            result.returncode if result.returncode in (1, 2, 3) else 1,
            step=step.name,
            cause=result.stderr.decode(errors="replace").splitlines()[-1:],
        )
    resolved = orjson.loads(result.stdout)
    resolved["file"] = portable(resolved["file"], workspace)
    with RunRecorder(
        "config_loader", workspace=workspace, config={"file": resolved["file"]}
    ) as record:
        atomic_write_bytes(record.claim_output(workspace / step.files[0]), canonical_json(resolved))
    return record.run_id


def clear_places(step: Step, workspace: Path, keep_folders: bool) -> None:
    """Remove what a killed or outdated attempt of ``step`` left outside its run folder."""
    if not keep_folders:
        for folder in step.folders:
            shutil.rmtree(workspace / folder, ignore_errors=True)
    for name in step.files:
        remove_stale_temps(workspace / name)


# --------------------------------------------------------------------------
# The phase
# --------------------------------------------------------------------------


class Pipeline:
    """One call of a phase in one workspace (holding its pipeline lock)."""

    def __init__(self, workspace: Path, log, step_env: dict | None = None, view=None):
        self.workspace = workspace
        self.log = log
        self.step_env = (
            step_env  # the steps' environment (a Dask scheduler to use), else this process's
        )
        self.view = view  # a StepView on a terminal, else None
        self.state_path = workspace / STATE
        remove_stale_temps(self.state_path)
        self.state = (
            checked_state(read_json(self.state_path), self.state_path)
            if self.state_path.exists()
            else {}
        )
        self.cache = StatCache.load(workspace / REGISTRY)
        self.records = WorkspaceRecords(workspace)

    def save_state(self) -> None:
        atomic_write_bytes(self.state_path, canonical_json(self.state))

    def runs_of(self, script_name: str) -> set:
        return set(self.records.runs(script_name))

    def intact(self, step: Step, run_id: str) -> list:
        """What is wrong with a finished step's run: [] when its outputs are all there and
        unchanged."""
        manifest = self.records.manifest()
        report = run_report(run_id)
        entries = self.records.outputs(run_id)
        if run_id not in manifest or report not in entries:
            return [{"file": report, "problem": "the run is not recorded"}]
        if manifest[run_id].get("report_sha256") != entries[report].get("sha256"):
            return [{"file": report, "problem": "the report differs from the manifest"}]
        root = str(self.workspace)
        return damaged_files(entries, lambda name: os.path.join(root, name), self.cache)

    def redo(self, step: Step, fingerprint: str, argv: list, upstream_redone: bool) -> str | None:
        previous = self.state.get(step.name) or {}
        retract = set()
        if (
            previous.get("status") == "running"
        ):  # killed or failed last time: whatever it recorded since it started goes
            retract |= set(previous.get("retract", [])) | (
                self.runs_of(step.script) - set(previous.get("before", []))
            )
        elif previous.get("run"):
            retract.add(previous["run"])
        self.state[step.name] = {
            "status": "running",
            "fingerprint": fingerprint,
            "retract": sorted(retract),
            "before": sorted(self.runs_of(step.script) - retract),
        }
        self.save_state()
        if retract:
            retract_runs(self.workspace, retract, self.log)
        clear_places(step, self.workspace, step.keep_folders_on_resume and not upstream_redone)
        self.log.info("step", step=step.name)
        try:
            progress = (
                None
                if self.view is None
                else (
                    lambda record: self.view.progress(
                        step.name, record.get("n", 0), record.get("total"), record.get("desc")
                    )
                )
            )
            run_id = run_step(step, argv, self.workspace, self.step_env, progress)
        finally:
            self.records.refresh()  # the step changed both the manifest and the registry
        self.state[step.name] = {"status": "done", "fingerprint": fingerprint, "run": run_id}
        self.save_state()
        return run_id

    def reason_to_redo(self, step: Step, fingerprint: str, upstream_redone: bool, force: bool):
        """Why ``step`` must run again (None: it is up to date), and what is damaged."""
        previous = self.state.get(step.name) or {}
        run_id = previous.get("run") or _legacy_run(previous)
        if force:
            return "forced", []
        if not previous:
            return "new", []
        if previous.get("status", "done") != "done":
            return "interrupted", []
        if previous.get("fingerprint") != fingerprint:
            return "inputs changed", []
        if upstream_redone:
            return "a step before it was redone", []
        problems = (
            self.intact(step, run_id) if run_id else []
        )  # a pure check records no run: nothing to look at
        return ("outputs damaged", problems) if problems else (None, [])

    def plan(self, steps: list, data: str, force: bool) -> dict:
        """``{step name: (fingerprint, reason or None)}``; a step that cannot be redone alone pulls
        in its producer.

        archive_results moves its source away: once the source is gone, it can
        only be redone from its own MANIFEST.json, so without that the
        experiment that made the source runs again first.
        """
        forced = set()
        while True:
            fingerprints, planned = {}, {}
            for step in steps:
                fingerprint = step_fingerprint(
                    step, self.workspace, data, [fingerprints.get(n) for n in step.after]
                )
                fingerprints[step.name] = fingerprint
                upstream_redone = any(planned[n][1] is not None for n in step.after if n in planned)
                reason, problems = self.reason_to_redo(step, fingerprint, upstream_redone, force)
                if reason is None and step.name in forced:
                    reason = "its source is gone and a step after it must be redone"
                planned[step.name] = (fingerprint, reason, problems)
            stuck = [
                step
                for step in steps
                if planned[step.name][1] is not None
                and step.consumes
                and not upstream_of(step, planned)
                and not self.resumable(step, planned[step.name][2])
            ]
            producers = {name for step in stuck for name in step.after} - forced
            if not producers:
                break
            forced |= producers
        for name, (_, _, problems) in planned.items():
            if problems:
                self.log.warning(
                    "damaged_outputs",
                    step=name,
                    files=len(problems),
                    first=problems[:SHOWN_SKIPPED],
                )
        return {name: (fingerprint, reason) for name, (fingerprint, reason, _) in planned.items()}

    def resumable(self, step: Step, problems: list) -> bool:
        if any((self.workspace / folder).is_dir() for folder in step.consumes):
            return True
        marker = step.resume_from
        return (
            bool(marker)
            and (self.workspace / marker).is_file()
            and marker not in {p["file"] for p in problems}
        )

    def run(self, steps: list, data: str, force: bool) -> list:
        planned = self.plan(steps, data, force)
        redone, summary, runs = set(), [], {}
        for step in steps:
            fingerprint, reason = planned[step.name]
            previous = self.state.get(step.name) or {}
            if reason is None:
                run_id = previous.get("run") or _legacy_run(previous)
                runs[step.name] = run_id
                if self.view is not None:
                    self.view.set(step.name, "up to date")
                summary.append(
                    {
                        "step": step.name,
                        "status": "up to date",
                        "report": run_report(run_id) if run_id else None,
                    }
                )
                continue
            argv = [handed_over(arg, runs) for arg in step.argv]
            if reason != "new":
                self.log.info("redo", step=step.name, reason=reason)
            if self.view is not None:
                self.view.set(step.name, "running")
            try:
                run_id = self.redo(step, fingerprint, argv, bool(redone.intersection(step.after)))
            except BaseException:
                if self.view is not None:
                    self.view.set(step.name, "failed")
                raise
            if self.view is not None:
                self.view.set(step.name, "done", run_report(run_id) if run_id else "")
            runs[step.name] = run_id
            redone.add(step.name)
            summary.append(
                {
                    "step": step.name,
                    "status": "done",
                    "report": run_report(run_id) if run_id else None,
                }
            )
        self.cache.save()
        fold_journal(
            self.workspace / REGISTRY, force=True
        )  # data/hash_registry.json whole after every phase
        for item in summary:
            item["skipped"] = self.skipped_of(item["report"]) if item["report"] else []
        return summary

    def skipped_of(self, report: str) -> list:
        try:
            skipped = read_json(self.workspace / report).get("results", {}).get("skipped", [])
        except (InputError, AttributeError):
            return []
        return skipped if isinstance(skipped, list) else []


def upstream_of(step: Step, planned: dict) -> bool:
    """Whether a step that ``step`` depends on is planned to run again."""
    return any(planned[name][1] is not None for name in step.after if name in planned)


def rebuild_lost_bookkeeping(workspace: Path, steps: list, log) -> None:
    """Without its state file or the seed log, a workspace that holds the pipeline's runs is made to
    converge.

    The pipeline's runs are found in the manifest by their recorded command
    line (runs made by hand in the workspace are not the pipeline's and
    stay), retracted, and their steps forgotten: each is redone as in a clean
    run (same names, the seed lines in the same order, no duplicates). Call
    it before ``recover``, which would otherwise roll their seed lines
    forward out of order.
    """
    state_path = workspace / STATE
    lost = [
        name
        for name, path in (("state", state_path), ("seed log", workspace / SEED_LOG))
        if not path.exists()
    ]
    runs = WorkspaceRecords(workspace).manifest()
    if not lost or not runs:
        return
    state = checked_state(read_json(state_path), state_path) if state_path.exists() else {}
    reports = {}
    for run_id in runs:  # each report read once, whichever steps share its script
        try:
            reports[run_id] = read_json(workspace / run_report(run_id))
        except InputError:
            continue  # gone or torn: it names no step
    mine = {step.name: recorded_runs_of(workspace, step, runs, reports) for step in steps}
    retract = set().union(*mine.values())
    if not retract:
        return
    for name in [name for name, found in mine.items() if found]:
        state.pop(name, None)
    atomic_write_bytes(state_path, canonical_json(state))
    retract_runs(workspace, retract, log)
    log.warning(
        "bookkeeping_rebuilt",
        lost=lost,
        steps=sorted(n for n, found in mine.items() if found),
        runs=len(retract),
        note="the pipeline's earlier runs are redone, so the workspace equals a clean run",
    )


def recorded_runs_of(workspace: Path, step: Step, runs: dict, reports: dict) -> set:
    """The runs in the manifest whose recorded command line (or, for a config step, config file)
    is this step's; ``reports``: {run id: its report as read}."""
    expected = portable_argv(step.argv[1:], workspace)
    found = set()
    for run_id in (run_id for run_id, run in runs.items() if run.get("script") == step.script):
        report = reports.get(run_id)
        if not isinstance(report, dict):
            continue
        argv, config = report.get("argv"), report.get("config")
        if (
            step.in_process and argv is None
        ):  # recorded by the pipeline itself: the config file names it
            if isinstance(config, dict) and config.get("file") == portable(step.argv[1], workspace):
                found.add(run_id)
        elif (
            isinstance(argv, list)
            and len(argv) == len(expected)
            and all(
                got == want or (isinstance(got, str) and handed_over_form(want).fullmatch(got))
                for got, want in zip(argv, expected)
            )
        ):
            found.add(run_id)
    return found


def handed_over(arg: str, runs: dict) -> str:
    """``arg`` with its HANDOVER placeholders filled from the run ids of the steps before."""

    def fill(match) -> str:
        step = match.group(1) or "metadata"
        if runs.get(step) is None:
            raise InputError(f"the {step} step has not run", argument=arg)
        folder = run_folder(runs[step])
        return folder if match.group(1) else f"{folder}/metadata.jsonl"

    return HANDOVER.sub(fill, arg)


def handed_over_form(want: str) -> re.Pattern:
    """The recorded forms of an argument with HANDOVER placeholders (a plain argument: itself)."""
    pattern, last = "", 0
    for match in HANDOVER.finditer(want):
        pattern += re.escape(want[last : match.start()])
        pattern += RUN_FOLDER + ("" if match.group(1) else r"/metadata\.jsonl")
        last = match.end()
    return re.compile(pattern + re.escape(want[last:]))


def _legacy_run(previous: dict) -> str | None:
    """State written before step states had a status: the run id is the report's stem."""
    report = previous.get("report")
    return checked_run_id(Path(report).stem, STATE) if isinstance(report, str) else None


def checked_state(document, path: Path) -> dict:
    """The pipeline's state file, every field checked: a run id must be a run id, never a path."""
    if not isinstance(document, dict):
        raise InputError("not a pipeline state (expected an object of steps)", file=path)
    for name, state in document.items():
        if (
            not isinstance(state, dict)
            or state.get("status", "done") not in ("running", "done")
            or not isinstance(state.get("fingerprint", ""), str)
        ):
            raise InputError(
                "not a pipeline state: a step's state must hold a status of running or done and a "
                "fingerprint",
                file=path,
                key=name,
            )
        runs = [state.get("run")] if state.get("run") is not None else []
        for key in ("retract", "before"):
            if not isinstance(state.get(key, []), list):
                raise InputError(
                    f"not a pipeline state: {key} must be a list of run ids", file=path, key=name
                )
            runs += state.get(key, [])
        for run_id in runs:
            checked_run_id(run_id, path)
        _legacy_run(state)
    return document


def check_data(data_arg: str, workspace: Path, data_name: str | None, log):
    """The --data folder, validated and listed (bad input: exit 2 before any work)."""
    path = Path(data_arg).expanduser()
    if not path.is_dir():
        raise InputError("DATA must be a folder", file=data_arg)
    resolved = path.resolve()
    if resolved == workspace:
        raise InputError(
            "DATA is the workspace itself: give the folder that holds your images", file=data_arg
        )
    for records in (REGISTRY, "meta/chronicle", "experiments/results", "env"):
        if inside(resolved, workspace / records):
            raise InputError(
                "DATA holds the workspace's own records: give the folder that holds your images",
                file=data_arg,
                records=records,
            )
    try:
        inputs = collect_inputs(workspace, [resolved], data_name, log, bind=False)
    except InputError as exc:
        if exc.message.startswith("no files found"):
            raise InputError(
                "DATA folder is empty (no regular files)" + exc.message[len("no files found") :],
                file=data_arg,
            )
        raise
    return inputs


def run_phase(
    phase: str,
    workspace: Path,
    data_arg: str | None,
    log,
    force: bool = False,
    data_name: str | None = None,
    strict: bool = False,
    scheduler: str | None = None,
    live: bool = False,
) -> list:
    """Run ``phase``; with ``scheduler`` (utils/compute/cluster.py) the data steps and the data
    fingerprint run on that Dask cluster (``local:N`` is started once for the whole phase)."""
    if phase not in PHASES:
        raise InputError(f"unknown phase {phase!r}: choose one of {', '.join(PHASES)}", value=phase)
    if data_name is not None and data_arg is None:
        raise InputError("--data-name names the --data folder; give --data too", value=data_name)
    external = data_arg is not None and phase != "phase9"
    inputs = check_data(data_arg, workspace, data_name, log) if external else None
    gc.freeze()  # the data's listing lives to the end: collections need not walk its objects
    ensure_layout(workspace)
    for records in (
        REGISTRY,
        MANIFEST,
    ):  # their contents are checked when first read, before any step runs
        check_writable(workspace / records)
    data_snapshot = DataSnapshot(workspace, inputs) if inputs is not None else None
    if inputs is not None:
        bind_roots(workspace, inputs.roots, log)
    lock = FileLock(str(workspace / PIPELINE_LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:  # e.g. make was killed but the pipeline it started is still finishing: let it
        log.warning(
            "waiting",
            note="another pipeline is running in this workspace; waiting for it to finish",
            lock=str(workspace / PIPELINE_LOCK),
        )
        lock.acquire()
    data = str(Path(data_arg).expanduser().resolve()) if inputs is not None else "data/sample"
    try:
        rebuild_lost_bookkeeping(
            workspace,
            list(
                {
                    step.name: step
                    for other in PHASES
                    for step in steps_for(other, data, inputs is not None, data_name, strict)
                }.values()
            ),
            log,
        )
        with records_lock(workspace):
            recover(workspace, log)
        address = cluster.scheduler_address(scheduler)
        with cluster.cluster_executor(address if phase != "phase9" else None, log) as executor:
            # The steps get the scheduler through the environment, not their argv: where the work
            # runs is not part of a step's fingerprint (the bytes are the same), so changing it
            # redoes nothing.
            step_env = (
                None
                if executor is None
                else dict(os.environ, **{cluster.SCHEDULER_ENV: executor.address})
            )
            if live:  # the steps report their progress as JSON records, shown as bars
                step_env = dict(step_env or os.environ, **{PROGRESS_ENV: "json"})
            pipeline = Pipeline(workspace, log, step_env)
            if data_snapshot is not None:
                fingerprint = data_snapshot.fingerprint(pipeline.cache, executor)
            else:
                fingerprint = "sample"
            steps = steps_for(phase, data, inputs is not None, data_name, strict)
            if live:
                pipeline.view = StepView(
                    f"{phase}: {PRODUCES[phase]}", [step.name for step in steps]
                )
            return pipeline.run(steps, fingerprint, force)
    finally:
        lock.release()


PRODUCES = {
    "phase5": "loss/coherence CSVs (experiments/results/phase5/metrics.csv), renders "
    "(tensor_visualizer_*), an HTML page (html_report_*/report.html)",
    "phase6": "loss/coherence CSVs (experiments/results/phase6/metrics.csv), renders "
    "(tensor_visualizer_*), an HTML page (html_report_*/report.html)",
    "phase7": "experiments/results/phase7/ (metrics, dreams, bridge); FFT and curve plots "
    "(metric_plotter_*); replay.gif, replay.mp4, sonification.wav, spectrogram.png "
    "(dream_animation_*); renders; an HTML page (html_report_*/report.html)",
    "phase8": "experiments/results/archive/phase8/ and phase8.tar.gz, verified",
    "phase9": "env/environment.json and env/config_phase5..9.json",
}


def skipped_lines(summary: list) -> list:
    lines = []
    for item in summary:
        for skipped in item["skipped"][:SHOWN_SKIPPED]:
            lines.append(
                f"  {item['step']}: skipped {skipped.get('file')}: {skipped.get('reason')}"
            )
        if len(item["skipped"]) > SHOWN_SKIPPED:
            lines.append(
                f"  {item['step']}: ... {len(item['skipped']) - SHOWN_SKIPPED} more in "
                f"{item['report']}"
            )
    return lines


def print_table(phase: str, summary: list) -> None:
    width = max(len(item["step"]) for item in summary)
    lines = [f"{phase}: {PRODUCES[phase]}", ""]
    for item in summary:
        skipped = f"{len(item['skipped'])} skipped" if item["skipped"] else ""
        lines.append(
            f"  {item['step']:<{width}}  {item['status']:<10}  {skipped:<12}  "
            f"{item['report'] or ''}"
        )
    sys.stderr.write("\n".join(lines + skipped_lines(summary)) + "\n")


def terminal_mode(args) -> bool:
    """The live view: asked for, or (auto) stderr is a terminal and no --log-file was given."""
    if args.log_format != "auto":
        return args.log_format == "terminal"
    return sys.stderr.isatty() and not args.log_file


def artifacts_to_open(workspace: Path, summary: list) -> list:
    """Paths a person opens after a phase: animations, plots, renders; and how to get the HTML
    page."""
    lines = []
    for item in summary:
        report = item["report"] and checked_report(
            read_json(workspace / item["report"]), item["report"]
        )
        found = [
            path
            for path in sorted((report or {}).get("outputs") or {})
            if Path(path).suffix in (".gif", ".mp4", ".wav", ".svg")
            or path.endswith(("panel.png", "spectrogram.png"))
        ]
        if len(found) > 4:  # many renders: their folder
            lines.append(f"  {workspace / run_folder(report['run_id'])}/  ({len(found)} renders)")
        else:
            lines += [f"  {workspace / path}" for path in found]
        html = ((report or {}).get("results") or {}).get("html")
        if report and report.get("script") == "html_report" and isinstance(html, str):
            lines.append(f"  {workspace / html}")
    return ["open:"] + lines if lines else []


def step_table(phase: str, data: str | None, data_name: str | None, strict: bool) -> list:
    """The steps of a phase as data: name, script, the steps it waits for, its command (what it
    consumes as HANDOVER placeholders, paths relative to the repository) and what it writes
    beyond its run folder."""
    steps = steps_for(phase, data or "data/sample", data is not None, data_name, strict)
    return [
        {
            "step": step.name,
            "script": step.script,
            "after": step.after,
            "command": ["python", *(portable(arg, REPO_ROOT) for arg in step.argv)],
            "writes": step.folders + step.files,
        }
        for step in steps
    ]


def run_pipeline(args, log) -> int:
    if args.steps:
        if args.phase not in PHASES:
            raise InputError(f"unknown phase: choose one of {', '.join(PHASES)}", value=args.phase)
        cli.print_json(
            {
                "phase": args.phase,
                "steps": step_table(args.phase, args.data, args.data_name, args.strict),
            }
        )
        return 0
    workspace = resolve_workspace(args.workspace)
    if not terminal_mode(args):
        return finish_phase(args, workspace, log, live=False)
    ensure_layout(
        workspace
    )  # the JSON log is kept in full, in a file; the terminal shows the steps
    file_log = JsonLogger("pipeline", log_file=workspace / TERMINAL_LOG)
    sys.stderr.write(f"JSON log: {workspace / TERMINAL_LOG}\n")
    try:
        return finish_phase(args, workspace, file_log, live=True)
    finally:
        file_log.close()


def finish_phase(args, workspace: Path, log, live: bool) -> int:
    summary = run_phase(
        args.phase,
        workspace,
        args.data or None,
        log,
        args.force,
        args.data_name or None,
        args.strict,
        args.scheduler,
        live,
    )
    skipped = {item["step"]: len(item["skipped"]) for item in summary if item["skipped"]}
    for item in summary:
        if item["skipped"]:
            log.warning(
                "skipped_files",
                step=item["step"],
                count=len(item["skipped"]),
                first=item["skipped"][:SHOWN_SKIPPED],
                report=item["report"],
            )
    steps = [
        {
            "step": item["step"],
            "status": item["status"],
            "report": item["report"],
            "skipped": len(item["skipped"]),
        }
        for item in summary
    ]
    record = {
        "phase": args.phase,
        "workspace": str(workspace),
        "produced": PRODUCES[args.phase],
        "steps": steps,
        "reports": len(summary),
        "skipped": skipped,
    }
    if args.certify:
        # imported here: the page and the crypto libraries cost a plain phase 0.15 s to load
        from scripts.orchestration.proofs import certify_runs, default_crate_folder, phase_runs
        from scripts.utils.records import signing

        signer = signing.workspace_signer(workspace, Path(args.key) if args.key else None)
        crate = certify_runs(
            workspace,
            phase_runs(workspace, args.phase),
            default_crate_folder(workspace, args.phase),
            "phase",
            signer,
            log=log,
        )
        record["crate"] = crate["crate"]
    log.info("summary", **record)
    if live:
        sys.stderr.write(
            "\n".join(skipped_lines(summary) + artifacts_to_open(workspace, summary)) + "\n"
        )
    elif sys.stderr.isatty():
        print_table(args.phase, summary)
    if not sys.stdout.isatty():
        cli.print_json({"event": "summary", **record})
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "pipeline",
        doc=__doc__,
        description="Run a phase of the pipeline (phase5 ... phase9) on the sample data or --data.",
        example="python scripts/orchestration/pipeline.py phase7 --data /mnt/scans",
    )
    parser.add_argument("phase", help=", ".join(PHASES))
    parser.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="your DICOM/PNG folder, anywhere; only read (default: the sample data)",
    )
    parser.add_argument(
        "--data-name",
        metavar="NAME",
        default=None,
        help="the name of --data in the records (default: the folder's name)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="any skipped file is a failure (exit 2)"
    )
    parser.add_argument("--force", action="store_true", help="redo every step")
    parser.add_argument(
        "--steps",
        action="store_true",
        help="print the phase's steps (what each runs and consumes) and stop",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "terminal", "json"),
        default="auto",
        help="terminal: a live view of the steps, the JSON log kept in "
        "meta/chronicle/pipeline.jsonl; "
        "json: JSON lines on stderr; auto: terminal when stderr is one and no --log-file",
    )
    parser.add_argument(
        "--certify",
        action="store_true",
        help="then write a signed crate of the phase's runs to experiments/proofs/PHASE "
        "(docs/proofs.md)",
    )
    parser.add_argument(
        "--key",
        metavar="PEM",
        help="with --certify: the Ed25519 private key (default: the workspace's own)",
    )
    cli.add_scheduler_option(parser)
    cli.add_common_options(parser)
    return cli.run(parser, run_pipeline, argv)


if __name__ == "__main__":
    sys.exit(main())
