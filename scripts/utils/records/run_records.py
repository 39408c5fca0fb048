"""Run records: reports, the registry and manifest entries of a run, the seed log; recovery.

Every script that produces something does it inside a ``RunRecorder``::

    with RunRecorder("metric_plotter", argv=args.argv, workspace=args.workspace, seeds=seeds,
                     config=config, log=log) as run:
        figure.savefig(run.output_path("loss.png"))   # bulky outputs
        run.results["points"] = 120                    # goes into the report

A run is a small transaction on the workspace, guarded by the records lock
(``meta/chronicle/.records.lock``):

* on entry: the registry and manifest are checked (invalid or unwritable:
  exit 2 before any output exists), the workspace is *recovered* from any
  run that was killed (see ``recover``), and the run claims its name
  ``<script>_<stamp>[-N]`` by creating ``experiments/results/<run_id>.partial/``
  and locking ``.run.lock`` inside it for as long as it lives;
* bulky outputs are written into the ``.partial`` folder;
* on success (the commit): the outputs are hashed, then, under the records
  lock, the report ``experiments/results/<run_id>.json`` is written, the
  ``.partial`` folder becomes ``experiments/results/<run_id>/``, every file
  is added to ``data/hash_registry.json`` in one rewrite, and the run is added
  to ``meta/chronicle/manifest.json``: the commit point. Its seeds are then
  appended to ``meta/chronicle/seeds.jsonl``;
* a failed commit (disk full, file too large, a registry gone bad) is rolled
  back (no report, no outputs, no entries) and is bad input (exit 2);
* on an exception in the script nothing is recorded and the ``.partial``
  folder is removed.

A run killed at any point leaves either nothing, or a ``.partial`` folder
whose lock nobody holds, or a report that the manifest does not list. The
next run in the workspace removes such leftovers and the registry entries
credited to them, and gives their name to the next run that asks, so a
killed run leaves no trace (``recover``). ``retract_runs`` undoes complete
runs (the pipeline redoes a step that way, so that the result equals a
clean run; the redone run takes the retracted one's name and seed line).

``run_id`` is ``<script>_<YYYYMMDDTHHMMSSZ>`` (SOURCE_DATE_EPOCH honoured),
with ``-2``, ``-3``... when the name is taken. Paths in every record are
workspace-relative POSIX, or data-root names (data_roots.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout

from scripts.utils import timestamps
from scripts.utils.compute.environment import environment_fingerprint, environment_hash
from scripts.utils.config.loading import config_sha256
from scripts.utils.config.seeds import SeedManager, append_seed_line, log_seed
from scripts.utils.errors import InputError, environment_failure
from scripts.utils.jsonio import (
    LOCK_TIMEOUT_S,
    atomic_write_bytes,
    canonical_json,
    holding,
    read_json,
    read_json_lines,
)
from scripts.utils.limits import printable_name
from scripts.utils.read_tracing import sitecustomize as tracer
from scripts.utils.read_tracing import traced_paths
from scripts.utils.records.registry import (
    MANIFEST,
    REGISTRY,
    StatCache,
    add_to_registry,
    bytes_entry,
    check_registry,
    check_writable,
    drop_from_registry,
    fold_journal,
    hash_file,
    read_manifest,
    read_registry,
    registry_entry,
    update_manifest,
)
from scripts.utils.workspace import (
    RESULTS,
    RUN_ID,
    SEED_LOG,
    checked_run_id,
    ensure_layout,
    relative_to_workspace,
    resolve_workspace,
    run_folder,
    run_report,
)

# Options that say only where and how a run executes, never what it computes: left out of the
# recorded command line, so that the same run from another workspace, log setting or cluster records
# the same bytes.
EXECUTION_OPTIONS = {
    "--workspace": True,
    "--log-file": True,
    "--scheduler": True,
    "--workers": True,
    "--quiet": False,
    "--log-format": True,
    "--code-dir": True,
}


def portable_argv(argv, workspace: Path) -> list:
    """The command line without execution options, paths inside the workspace made
    workspace-relative (no host paths in records). A relative path is taken as typed from the
    working folder when it names something there (``ws/experiments/results/x``, ``train.toml``):
    rerun runs in the workspace, not there."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        option, has_value, _ = arg.partition("=")
        if option in EXECUTION_OPTIONS:
            skip = EXECUTION_OPTIONS[option] and not has_value
            continue
        path = Path(arg)
        if (
            not path.is_absolute()
            and ("/" in arg or "\\" in arg or path.suffix)
            and not arg.startswith("-")
            and os.path.lexists(arg)
        ):
            path = Path.cwd() / path
        if path.is_absolute():
            try:
                arg = relative_to_workspace(workspace, path)
            except InputError:
                arg = "<outside workspace>/" + printable_name(
                    path.name
                )  # a name that is not UTF-8, escaped
        out.append(arg)
    return out


RECORDS_LOCK = "meta/chronicle/.records.lock"
RUN_LOCK = ".run.lock"
PARTIAL = ".partial"


# --------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------


def run_order(run_id: str) -> tuple:
    """Sort key of run ids of one script: by stamp, then suffix."""
    stamp, _, number = run_id.rpartition("_")[2].partition("-")
    return stamp, int(number or 1)


def producing_run(workspace: Path, name: str) -> str | None:
    """The run that produced workspace file or folder ``name``: the run whose folder or report it
    is, else the one run that registered it (or every file under it), else None."""
    parts = name.split("/")
    if parts[:2] == RESULTS.split("/") and len(parts) > 2:
        candidate = parts[2].removesuffix(".json")
        if RUN_ID.match(candidate):
            return candidate
    files = read_registry(Path(workspace) / REGISTRY)
    if name in files:
        return files[name].get("run")
    runs = {entry.get("run") for file, entry in files.items() if file.startswith(name + "/")}
    return runs.pop() if len(runs) == 1 else None


def check_records(workspace: Path) -> None:
    """The registry and manifest are valid and writable (else InputError: exit 2)."""
    registry, manifest = Path(workspace) / REGISTRY, Path(workspace) / MANIFEST
    for path in (registry, manifest):
        check_writable(path)
    check_registry(registry)
    read_manifest(manifest)


# --------------------------------------------------------------------------
# Recovery and retraction
# --------------------------------------------------------------------------


READ_FOLDERS = ("data/", "experiments/", "env/")  # the workspace's files that can be inputs
RECORD_FILES = {REGISTRY}  # read by the recorder itself (as is meta/: manifest, seed log)
READS_SUFFIX = ".reads.json"


def reads_record(run_id: str) -> str:
    """Where a run's traced reads are kept: hidden, beside its report (bookkeeping)."""
    return f"{RESULTS}/.{run_id}{READS_SUFFIX}"


def records_lock(workspace: Path) -> FileLock:
    """The lock that makes reserving a name, committing, recovering and retracting one at a time."""
    path = Path(workspace) / RECORDS_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=LOCK_TIMEOUT_S)


def _partial_alive(partial: Path) -> bool:
    lock_path = partial / RUN_LOCK
    if not lock_path.exists():
        return False
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False


def _is_report_of(path: Path, run_id: str) -> bool:
    try:
        report = read_json(path)
    except InputError:
        return True  # a report torn by a crash has no other owner either
    return isinstance(report, dict) and report.get("run_id") == run_id and "script" in report


def recover(workspace: Path, log=None) -> dict:
    """Remove what killed runs left behind; call it holding ``records_lock``.

    * a ``.partial`` folder whose ``.run.lock`` nobody holds: its run died;
    * a report (and its folder) of a run the manifest does not list: its run
      died during the commit;
    * registry entries credited to those runs;
    * a run the manifest lists but the seed log lacks (killed between the
      two): its seed line is appended from its report.

    Returns what was done (also logged as warnings).
    """
    workspace = Path(workspace)
    results = workspace / RESULTS
    runs = read_manifest(workspace / MANIFEST)
    dead, removed = set(), []
    if results.is_dir():
        for entry in sorted(os.scandir(results), key=lambda e: e.name):
            name = entry.name
            if name.endswith(PARTIAL) and entry.is_dir(follow_symlinks=False):
                if not _partial_alive(Path(entry.path)):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    dead.add(name[: -len(PARTIAL)])
                    removed.append(f"{RESULTS}/{name}")
            elif name.startswith(".") and name.endswith(".tmp") and ".json." in name:
                Path(entry.path).unlink(
                    missing_ok=True
                )  # a report's temp file: reports are written under the lock
                removed.append(f"{RESULTS}/{name}")
            elif (
                name.endswith(".json")
                and RUN_ID.match(name[:-5])
                and name[:-5] not in runs
                and entry.is_file(follow_symlinks=False)
                and _is_report_of(Path(entry.path), name[:-5])
            ):
                run_id = name[:-5]
                Path(entry.path).unlink(missing_ok=True)
                shutil.rmtree(results / run_id, ignore_errors=True)
                dead.add(run_id)
                removed.append(run_report(run_id))
    dropped = []
    if dead and (workspace / REGISTRY).exists():
        dropped = list(
            drop_from_registry(workspace / REGISTRY, lambda name, entry: entry.get("run") in dead)
        )
    appended = _roll_seed_log_forward(workspace, runs)
    if log is not None and (removed or dropped or appended):
        log.warning(
            "recovered",
            note="a run in this workspace was killed earlier; its leftovers are gone",
            removed=removed[:20],
            removed_count=len(removed),
            registry_entries_dropped=len(dropped),
            seed_lines_added=appended,
        )
    return {"removed": removed, "registry_entries_dropped": dropped, "seed_lines_added": appended}


def _roll_seed_log_forward(workspace: Path, runs: dict) -> list:
    path = workspace / SEED_LOG
    if not runs:
        return []
    logged = {record.get("run_id") for record in read_json_lines(path) if isinstance(record, dict)}
    missing = sorted(
        (run_id for run_id in runs if run_id not in logged), key=lambda r: (r.rpartition("_")[2], r)
    )
    appended = []
    for run_id in missing:
        try:
            report = read_json(workspace / run_report(checked_run_id(run_id, workspace / MANIFEST)))
            append_seed_line(workspace, run_id, report["script"], report["seed"])
            appended.append(run_id)
        except (InputError, KeyError, TypeError):
            continue  # a report gone or foreign: nothing to roll forward from
    return appended


def retract_runs(workspace: Path, run_ids, log=None) -> list:
    """Undo complete runs as if they had never happened; return the other workspace files they had
    written.

    Their reports and run folders are deleted, and their registry entries
    and manifest entries removed. Their seed lines stay: the seed log is
    append-only, and a run that takes a retracted run's name reuses its line
    (seed_manager.append_seed_line). Files they wrote elsewhere in
    the workspace (claimed outputs) stay where they are: their names are
    returned for the caller to deal with. Files under data roots are never
    touched.
    """
    workspace = Path(workspace)
    targets = {
        checked_run_id(run_id) for run_id in run_ids
    }  # a run id from a record must not name a path
    if not targets:
        return []
    elsewhere = []
    with holding(records_lock(workspace), workspace / RECORDS_LOCK):
        if (workspace / REGISTRY).exists():
            dropped = drop_from_registry(
                workspace / REGISTRY, lambda name, entry: entry.get("run") in targets
            )
            elsewhere = [
                name
                for name, entry in dropped.items()
                if name != run_report(entry["run"])
                and not name.startswith(run_folder(entry["run"]) + "/")
                and not name.startswith("@")
            ]
        if (workspace / MANIFEST).exists():
            update_manifest(workspace / MANIFEST, lambda runs: [runs.pop(r, None) for r in targets])
        for run_id in sorted(targets):
            (workspace / run_report(run_id)).unlink(missing_ok=True)
            shutil.rmtree(workspace / run_folder(run_id), ignore_errors=True)
    if log is not None:
        log.info("retracted", runs=sorted(targets), files_elsewhere=len(elsewhere))
    return elsewhere


# --------------------------------------------------------------------------
# The recorder
# --------------------------------------------------------------------------


class RunRecorder:
    """Context manager that records one run (see the module docstring)."""

    def __init__(
        self, script: str, workspace=None, seeds=None, config=None, log=None, extra=None, argv=None
    ):
        self.script = script
        self.workspace = resolve_workspace(workspace)
        self.seeds = seeds if seeds is not None else SeedManager.from_file()
        self.config = config
        self.log = log
        self.extra = dict(extra or {})  # top-level report fields (backend, ...)
        if argv is not None:  # the command line, as rerun.py replays it
            self.extra["argv"] = portable_argv(argv, self.workspace)
        self.results: dict = {}  # the script's own results, in the report
        self.status = "ok"  # or "interrupted", "failed": recorded all the same
        self.data_roots: dict = {}  # {name: {files, listing_sha256}} of data roots read
        self.consumed: dict = {}  # {workspace name: run id} of other runs' outputs read
        self.run_id = None
        self._claimed: list = []
        self._created: list = []  # claimed outputs that did not exist when claimed
        self._registry_changes: list = []
        self._registry_set: dict = {}  # entries the commit sets, and names it drops
        self._registry_drop: set = set()
        self._staging = None
        self._run_lock = None
        self.reads_folder = None  # where the read tracer writes while the run is open
        self.command_traced = None  # an external command's: were any of its reads traced?

    def consume(self, path, run_id: str | None = None) -> None:
        """Note that this run read ``path``, a workspace file or folder another run produced: the
        report's ``consumed`` names it and that run (``run_id``, else the run whose folder or
        registered files hold it; None when no one run does). A path outside the workspace is
        not another run's output and is not noted."""
        try:
            name = relative_to_workspace(self.workspace, Path(path).resolve())
        except InputError:
            return
        self.consumed[name] = run_id or producing_run(self.workspace, name)

    # -- naming ------------------------------------------------------------

    def _reserve(self) -> None:
        """Claim ``<script>_<stamp>[-N]``: the first name with no report, folder or live .partial.

        Runs under the records lock, right after ``recover`` removed the
        leftovers of dead runs, so a killed run's name is free again.
        """
        results = self.workspace / RESULTS
        stem = f"{self.script}_{timestamps.run_stamp()}"
        for number in range(1, 100_000):
            name = stem if number == 1 else f"{stem}-{number}"
            staging = results / f"{name}{PARTIAL}"
            if staging.exists() or (results / name).exists() or (results / f"{name}.json").exists():
                continue
            staging.mkdir()
            lock = FileLock(str(staging / RUN_LOCK))
            lock.acquire(timeout=0)
            self.run_id, self._staging, self._run_lock = name, staging, lock
            return
        raise InputError("no free report name (100,000 runs in the same second?)", file=results)

    @property
    def folder(self) -> str:
        """The workspace-relative folder of this run's outputs (``experiments/results/<run
        id>``)."""
        return run_folder(self.run_id)

    @property
    def report(self) -> str:
        """The workspace-relative path of this run's report (``experiments/results/<run
        id>.json``)."""
        return run_report(self.run_id)

    @property
    def output_dir(self) -> Path:
        """Where bulky outputs go while the run is in progress."""
        return self._staging

    @property
    def final_dir(self) -> Path:
        return self.workspace / RESULTS / self.run_id

    def output_path(self, name: str) -> Path:
        """A path for a bulky output, ``experiments/results/<run_id>/<name>`` once committed."""
        if Path(name).is_absolute() or ".." in Path(name).parts or Path(name).name == RUN_LOCK:
            raise ValueError(f"output names are relative and stay inside the run folder: {name!r}")
        target = self._staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def claim_output(self, path) -> Path:
        """Record a file written elsewhere in the workspace (e.g. ``-o FILE``).

        Claim it before writing it: if the commit fails, the files this run
        created are removed again (a file that was already there when it was
        claimed, like a log folder's checkpoints, is left for ``--resume``).
        """
        relative_to_workspace(self.workspace, path)
        target = Path(path).resolve()
        self._claimed.append(target)
        if not target.exists():
            self._created.append(target)
        return target

    def change_registry(self, change) -> None:
        """Apply ``change(files)`` to the registry in the commit's rewrite (so a failed run
        changes nothing)."""
        self._registry_changes.append(change)

    def set_registry_entries(self, entries: dict, drop=()) -> None:
        """Set ``entries`` and drop the names in ``drop`` with the commit: for a large registry one
        journal line, whatever its size (registry.add_to_registry)."""
        self._registry_set.update(entries)
        self._registry_drop.update(drop)

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self):
        ensure_layout(self.workspace)
        check_records(self.workspace)
        self.seeds.seed_globals()  # safety net for third-party code that uses global RNGs
        with holding(records_lock(self.workspace), self.workspace / RECORDS_LOCK):
            recover(self.workspace, self.log)
            self._reserve()
        self.reads_folder = Path(tempfile.mkdtemp(prefix="crh-reads-"))
        tracer.start(self.reads_folder)
        self._timer = timestamps.Stopwatch()
        if self.log:
            self.log.info("run_started", run_id=self.run_id, workspace=str(self.workspace))
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._abandon()
            return False
        try:
            self._commit()
        except OSError as error:
            failure = environment_failure(error)
            if failure is not None:
                raise failure from error
            raise
        return False

    def _release_run_lock(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
            (self._staging / RUN_LOCK).unlink(missing_ok=True)
            self._run_lock = None

    def _abandon(self) -> None:
        self._release_run_lock()
        shutil.rmtree(self._staging, ignore_errors=True)
        self._stop_tracing()

    def _stop_tracing(self) -> set:
        """Stop tracing this run's reads; the absolute paths it read (empty if not traced)."""
        if self.reads_folder is None:
            return set()
        tracer.stop(self.reads_folder)
        paths = traced_paths(self.reads_folder)
        shutil.rmtree(self.reads_folder, ignore_errors=True)
        self.reads_folder = None
        return paths

    def _save_reads(self, paths: set) -> None:
        """The workspace files the run opened for reading, beside its report as bookkeeping
        (``.<run id>.reads.json``): which ones depends on caches and workers, so they are
        not an artifact. Left out: the records (registry, meta/), hidden and staged files
        (the run's own ``.partial`` folder), folders. Files outside the workspace are only
        counted: no absolute path."""
        names, outside = set(), 0
        for path in paths:
            try:
                relative = Path(path).relative_to(self.workspace).as_posix()
            except ValueError:
                outside += 1
                continue
            parts = relative.split("/")
            if (
                relative.startswith(READ_FOLDERS)
                and relative not in RECORD_FILES
                and not relative.startswith("meta/")
                and not any(part.startswith(".") or part.endswith(".partial") for part in parts)
                and Path(path).is_file()
            ):
                names.add(relative)
        try:
            atomic_write_bytes(
                self.workspace / reads_record(self.run_id),
                canonical_json(
                    {"read": sorted(names), "outside_workspace": outside}
                    | (
                        {}
                        if self.command_traced is None
                        else {"command_traced": self.command_traced}
                    )
                ),
            )
        except OSError as error:  # bookkeeping: the run stands without it
            if self.log:
                self.log.warning("reads_not_saved", run_id=self.run_id, error=str(error))

    def _report(self, hashed: dict) -> dict:
        fingerprint = environment_fingerprint()
        config_hash = None
        if self.config is not None:
            config_hash = config_sha256(self.config)
        report = {
            **self.extra,
            "run_id": self.run_id,
            "script": self.script,
            "status": self.status,
            "seed": self.seeds.summary(),
            "config": self.config,
            "config_sha256": config_hash,
            "env_hash": environment_hash(fingerprint),
            "environment": fingerprint,
            "outputs": {
                path: {"sha256": h["sha256"], "size": h["size"]}
                for path, h in sorted(hashed.items())
            },
            "results": self.results,
        }
        if self.data_roots:
            report["data_roots"] = dict(sorted(self.data_roots.items()))
        if self.consumed:
            report["consumed"] = dict(sorted(self.consumed.items()))
        return report

    def _commit(self) -> None:
        results = self.workspace / RESULTS
        report_path = results / f"{self.run_id}.json"
        folder = run_folder(self.run_id)
        try:
            staged = sorted(
                p for p in self._staging.rglob("*") if p.is_file() and p.name != RUN_LOCK
            )
            hashed = {
                f"{folder}/{p.relative_to(self._staging).as_posix()}": hash_file(p) for p in staged
            }
            for path in self._claimed:
                if not path.is_file():
                    raise RuntimeError(f"declared output was never written: {path}")
                hashed[relative_to_workspace(self.workspace, path)] = hash_file(path)
            report = self._report(hashed)
            report_bytes = canonical_json(report)
        except BaseException:
            self._abandon()
            raise
        report_rel = run_report(self.run_id)
        entries = dict(self._registry_set)
        entries.update({path: registry_entry(h, self.run_id) for path, h in hashed.items()})
        entries[report_rel] = {**bytes_entry(report_bytes), "run": self.run_id}

        def change(files):
            for apply in self._registry_changes:
                apply(files)

        registry_path, manifest_path = self.workspace / REGISTRY, self.workspace / MANIFEST
        with holding(records_lock(self.workspace), self.workspace / RECORDS_LOCK):
            undo_registry = None
            try:
                atomic_write_bytes(report_path, report_bytes)
                self._release_run_lock()
                if staged:
                    os.replace(self._staging, self.final_dir)
                else:
                    self._staging.rmdir()
                undo_registry = add_to_registry(
                    registry_path,
                    entries,
                    change if self._registry_changes else None,
                    self._registry_drop - set(entries),
                )
                update_manifest(
                    manifest_path,
                    lambda runs: runs.__setitem__(
                        self.run_id,
                        {
                            "script": self.script,
                            "report": report_rel,
                            "report_sha256": entries[report_rel]["sha256"],
                            "seed": self.seeds.base_seed,
                            "config_sha256": report["config_sha256"],
                            "env_hash": report["env_hash"],
                            "outputs": len(hashed),
                            "status": self.status,
                        },
                    ),
                )
            except BaseException:
                self._roll_back(report_path, undo_registry)
                raise
            # still under the lock: recovery must not see the run without its seed line
            self._log_seed()
            # and recovery deletes the temp files of reports (.*.json.*.tmp) it finds
            self._save_reads(self._stop_tracing())
        fold_journal(registry_path)  # when due: the registry's content does not change
        cache = StatCache.load(registry_path)
        for path, h in hashed.items():
            cache.remember(path, h)
        cache.save()
        if self.log:
            self.log.info(
                "run_recorded",
                run_id=self.run_id,
                report=report_rel,
                outputs=len(hashed),
                seconds=round(self._timer.elapsed(), 3),
            )

    def _log_seed(self) -> None:
        try:
            repaired = log_seed(self.workspace, self.run_id, self.script, self.seeds)
            if repaired and self.log:
                self.log.warning("seed_log_repaired", file=SEED_LOG, note=repaired)
        except (
            OSError
        ) as exc:  # committed all the same: the next run appends the line from the report
            if self.log:
                self.log.warning("seed_log_not_written", file=SEED_LOG, error=exc.strerror)

    def _roll_back(self, report_path: Path, undo_registry) -> None:
        """Undo a commit that failed halfway: no report, no outputs, no entries.

        Files are deleted first (that frees space on a full disk), then the
        registry is restored. If even that fails, an empty ``.partial``
        folder is left as the evidence the next run's ``recover`` needs.
        """
        report_path.unlink(missing_ok=True)
        shutil.rmtree(self.final_dir, ignore_errors=True)
        shutil.rmtree(self._staging, ignore_errors=True)
        for path in self._created:
            path.unlink(missing_ok=True)
        if undo_registry is None:
            return
        try:
            undo_registry()
        except OSError:
            try:
                self._staging.mkdir()
            except OSError:
                pass
