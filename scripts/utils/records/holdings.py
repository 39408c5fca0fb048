"""What a workspace holds: its runs, their reports and outputs, read once (the records' front door).

    from scripts.utils.records.holdings import WorkspaceRecords
    records = WorkspaceRecords(workspace)
    records.latest("image_preprocessor")            # the newest finished run of a script, or None
    records.runs("run_experiment")                  # its run ids, oldest first
    records.outputs(run_id)                         # {workspace file: registry entry} it produced
    records.report(run_id)                          # its report, checked (run_reports.read_report)
    records.resolve("experiments/results/phase7")   # the report a folder, report file or None names

The manifest and registry are each read once, on first use; ``refresh()``
forgets them after this process has recorded more runs. Writing stays with
the recorder (run_records.py) and the registry module; reading the manifest
or registry anywhere else goes through here.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from scripts.utils.errors import InputError
from scripts.utils.records.registry import MANIFEST, REGISTRY, read_manifest, read_registry
from scripts.utils.records.run_records import run_order
from scripts.utils.records.run_reports import read_report
from scripts.utils.workspace import RESULTS, RUN_ID, relative_to_workspace, run_report

PHASE_SCRIPTS = ("run_experiment",)


class WorkspaceRecords:
    def __init__(self, workspace: Path):
        self.workspace = Path(workspace)
        self._manifest = self._registry = self._by_run = None

    def refresh(self) -> None:
        """Forget what was read: the next question reads the manifest and registry again."""
        self._manifest = self._registry = self._by_run = None

    def manifest(self) -> dict:
        """{run id: manifest entry} of every recorded run."""
        if self._manifest is None:
            self._manifest = read_manifest(self.workspace / MANIFEST)
        return self._manifest

    def registry(self) -> dict:
        """{name: registry entry} of every registered file (``@root/...`` names are data, not
        outputs)."""
        if self._registry is None:
            self._registry = read_registry(self.workspace / REGISTRY)
        return self._registry

    def runs(self, script: str | None = None, finished: bool = False) -> list:
        """The run ids of ``script`` (every script: None), oldest first; ``finished``: status ok
        only."""
        return sorted(
            (
                run_id
                for run_id, run in self.manifest().items()
                if (script is None or run.get("script") == script)
                and (not finished or run.get("status", "ok") == "ok")
            ),
            key=lambda run_id: (run_id.rpartition("_")[0], run_order(run_id)),
        )

    def latest(self, script: str) -> str | None:
        """The newest finished run of ``script`` (by stamp, then suffix), or None."""
        found = self.runs(script, finished=True)
        return max(found, key=run_order) if found else None

    def outputs(self, run_id: str) -> dict:
        """The registry entries of the workspace files ``run_id`` produced."""
        if self._by_run is None:
            self._by_run = {}
            for name, entry in self.registry().items():
                if not name.startswith("@"):  # files under a data root are inputs
                    self._by_run.setdefault(entry.get("run"), {})[name] = entry
        return self._by_run.get(run_id, {})

    def report(self, run_id: str, force: bool = False) -> dict:
        """The checked report of a recorded run (its SHA-256 matched to the manifest unless
        ``force``)."""
        return read_report(
            self.workspace, self.workspace / run_report(run_id), force, self.manifest()
        )

    def resolve(self, target: str | None, force: bool = False) -> dict:
        """The report a target names: a report file, a run folder, a log folder, or (None) the
        newest phase run. A path is taken from the current folder when it exists there, else from
        the workspace."""
        workspace = self.workspace
        if target is None:
            newest = [run for run in (self.latest(script) for script in PHASE_SCRIPTS) if run]
            if not newest:
                raise InputError(
                    "no phase run in this workspace yet: run make phase7 first",
                    workspace=str(workspace),
                )
            return self.report(max(newest, key=run_order), force)
        path = Path(target)
        if not path.is_absolute():
            path = Path.cwd() / path if (Path.cwd() / path).exists() else workspace / path
        if path.is_file():
            if path.suffix != ".json":
                raise InputError(
                    "give a run report (.json), a run folder or a log folder", file=target
                )
            return read_report(workspace, path, force, self.manifest())
        if not path.is_dir():
            raise InputError("no such run report or folder", file=target)
        relative = relative_to_workspace(workspace, path)
        own = workspace / RESULTS / f"{Path(relative).name}.json"
        if own.is_file() and Path(relative).parent.as_posix() == RESULTS:
            return read_report(workspace, own, force, self.manifest())
        logged = [run_id for run_id, folder in self.log_folders().items() if folder == relative]
        if not logged:
            raise InputError(
                "no run report names this folder as its run folder or log folder", file=target
            )
        return self.report(max(logged, key=run_order), force)

    def log_folders(self) -> dict:
        """{run id: its log folder} of the recorded runs (reports that do not parse are passed
        over)."""
        found = {}
        for run_id in self.manifest():
            path = self.workspace / run_report(run_id) if RUN_ID.match(run_id) else None
            try:
                results = orjson.loads(path.read_bytes()).get("results") if path else None
            except (OSError, orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(results, dict) and isinstance(results.get("logdir"), str):
                found[run_id] = results["logdir"]
        return found
