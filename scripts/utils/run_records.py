"""Run records: the workspace, reports, the hash registry, the manifest, the seed log.

Every script that produces something does it inside a ``RunRecorder``::

    with RunRecorder("metric_plotter", workspace=args.workspace, seeds=seeds,
                     config=config, log=log) as run:
        figure.savefig(run.output_path("loss.png"))   # bulky outputs
        run.results["points"] = 120                    # goes into the report

On success the recorder, in this order:

1. moves the run's bulky outputs from ``experiments/results/<run_id>.partial/``
   to ``experiments/results/<run_id>/`` (a killed run leaves only a
   ``.partial`` folder that nothing refers to);
2. hashes every output (SHA-256, CRC32, size);
3. writes the report ``experiments/results/<run_id>.json`` atomically;
4. adds every file it wrote, the report included, to ``data/hash_registry.json``
   in one locked, atomic rewrite (10,000 outputs cost one rewrite);
5. adds the run to ``meta/chronicle/manifest.json`` (locked, atomic);
6. appends the seeds to ``meta/chronicle/seeds.jsonl``.

On an exception nothing is recorded and the ``.partial`` folder is removed.
``run_id`` is ``<script>_<YYYYMMDDTHHMMSSZ>`` (SOURCE_DATE_EPOCH honoured),
with ``-2``, ``-3``... when the name is taken. Paths in every record are
workspace-relative POSIX.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

try:  # ISA-L's CRC32 (SIMD) is several times faster than zlib's; same values
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - a platform without isal wheels
    from zlib import crc32

from scripts.utils import time_utils
from scripts.utils.errors import InputError
from scripts.utils.jsonio import atomic_write_bytes, canonical_json, locked_update, read_json

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKSPACE_ENV = "CRH_WORKSPACE"
LAYOUT = ("data", "meta/chronicle", "experiments/results", "env")
REGISTRY = "data/hash_registry.json"
MANIFEST = "meta/chronicle/manifest.json"
RESULTS = "experiments/results"
HASH_CHUNK = 1 << 20

# --------------------------------------------------------------------------
# Workspace
# --------------------------------------------------------------------------


def resolve_workspace(workspace=None) -> Path:
    """``--workspace``, else $CRH_WORKSPACE, else the repository root."""
    chosen = workspace or os.environ.get(WORKSPACE_ENV) or REPO_ROOT
    return Path(chosen).expanduser().resolve()


def ensure_layout(workspace: Path) -> None:
    """Create the workspace folders; an unwritable workspace is bad input."""
    for folder in LAYOUT:
        target = workspace / folder
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create workspace folder: {exc.strerror}", file=target)
        if not os.access(target, os.W_OK):
            raise InputError("workspace folder is not writable", file=target)


def relative_to_workspace(workspace: Path, path) -> str:
    """Workspace-relative POSIX form of ``path``; outside the workspace is an error."""
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(workspace).as_posix()
    except ValueError:
        raise InputError("path lies outside the workspace", file=path, workspace=str(workspace))


def input_files(workspace: Path, inputs) -> list:
    """``(absolute path, name)`` for every file under ``inputs``, sorted by name.

    The name is workspace-relative when the file lies in the workspace, else
    relative to the folder given (prefixed with its name). Symbolic links are
    not followed. A missing input, or none with a file, is bad input.
    """
    found = {}
    for given in inputs:
        root = Path(given).resolve()
        if not root.exists():
            raise InputError("input not found", file=given)
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        for path in files:
            try:
                name = relative_to_workspace(workspace, path)
            except InputError:
                name = (root.name + "/" + path.relative_to(root).as_posix()) if root.is_dir() else path.name
            found[name] = path
    if not found:
        raise InputError("no files found", file=inputs[0])
    return [(found[name], name) for name in sorted(found)]


# --------------------------------------------------------------------------
# Hashes and environment
# --------------------------------------------------------------------------


def hash_file(path: Path) -> dict:
    """SHA-256, CRC32 (8 hex digits) and size of one file, in one read."""
    sha = hashlib.sha256()
    crc = 0
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            sha.update(chunk)
            crc = crc32(chunk, crc)
            size += len(chunk)
    return {"sha256": sha.hexdigest(), "crc32": f"{crc:08x}", "size": size}


_ENV_CACHE: dict = {}


def environment_fingerprint() -> dict:
    """The fields of this environment that can change output bytes (see utils/environment.py).

    Captured once per process; no host name, time, thread counts or paths.
    """
    if not _ENV_CACHE:
        from scripts.utils import environment

        _ENV_CACHE.update(environment.hashed_part(environment.snapshot(with_compiler=False, with_lock=False)))
    return dict(_ENV_CACHE)


def environment_hash(fingerprint=None) -> str:
    """SHA-256 of the fingerprint's canonical JSON: the same value env_check writes as env_hash."""
    return hashlib.sha256(canonical_json(fingerprint or environment_fingerprint())).hexdigest()


# --------------------------------------------------------------------------
# Registry and manifest
# --------------------------------------------------------------------------


def _empty_registry() -> dict:
    return {"format": "crh-hash-registry", "version": 1, "files": {}}


def _empty_manifest() -> dict:
    return {"format": "crh-manifest", "version": 1, "runs": {}}


def _checked(document, kind: str, table: str, path: Path) -> dict:
    if not isinstance(document, dict) or not isinstance(document.get(table), dict):
        raise InputError(f"not a {kind} (expected an object with a '{table}' table)", file=path)
    return document


def register_files(workspace: Path, entries: dict) -> dict:
    """Add ``{relative path: {sha256, crc32, size, run}}`` to the registry in one write."""
    path = workspace / REGISTRY

    def change(registry):
        _checked(registry, "hash registry", "files", path)["files"].update(entries)
        return registry

    return locked_update(path, change, _empty_registry)


def add_to_manifest(workspace: Path, run_id: str, entry: dict) -> dict:
    path = workspace / MANIFEST

    def change(manifest):
        _checked(manifest, "run manifest", "runs", path)["runs"][run_id] = entry
        return manifest

    return locked_update(path, change, _empty_manifest)


def latest_run(workspace: Path, script: str) -> str | None:
    """The newest recorded run of ``script`` in the workspace's manifest (by stamp, then suffix)."""
    path = workspace / MANIFEST
    if not path.exists():
        return None
    runs = _checked(read_json(path), "run manifest", "runs", path)["runs"]

    def order(run_id):
        stamp, _, number = run_id.rpartition("_")[2].partition("-")
        return stamp, int(number or 1)

    candidates = [run_id for run_id, run in runs.items() if run.get("script") == script and
                  run.get("status", "ok") == "ok"]
    return max(candidates, key=order) if candidates else None


# --------------------------------------------------------------------------
# The recorder
# --------------------------------------------------------------------------


class RunRecorder:
    """Context manager that records one run (see the module docstring)."""

    def __init__(self, script: str, workspace=None, seeds=None, config=None, log=None, extra=None):
        from scripts.utils.seed_manager import SeedManager

        self.script = script
        self.workspace = resolve_workspace(workspace)
        self.seeds = seeds if seeds is not None else SeedManager.from_file()
        self.config = config
        self.log = log
        self.extra = dict(extra or {})   # top-level report fields (backend, ...)
        self.results: dict = {}          # the script's own results, in the report
        self.status = "ok"               # or "interrupted", "failed": recorded all the same
        self.run_id = None
        self._claimed: list = []
        self._staging = None

    # -- naming ------------------------------------------------------------

    def _reserve(self) -> None:
        """Claim ``<script>_<stamp>[-N]``: the first name with no report, folder or .partial.

        ``mkdir`` of the .partial folder is the atomic claim; the commit
        creates the final folder or report before removing .partial, so at
        every moment one of the three names exists.
        """
        results = self.workspace / RESULTS
        stem = f"{self.script}_{time_utils.run_stamp()}"
        for number in range(1, 100_000):
            name = stem if number == 1 else f"{stem}-{number}"
            staging = results / f"{name}.partial"
            try:
                staging.mkdir()
            except FileExistsError:
                continue
            if (results / name).exists() or (results / f"{name}.json").exists():
                staging.rmdir()
                continue
            self.run_id, self._staging = name, staging
            return
        raise InputError("no free report name (100,000 runs in the same second?)", file=results)

    @property
    def output_dir(self) -> Path:
        """Where bulky outputs go while the run is in progress."""
        return self._staging

    @property
    def final_dir(self) -> Path:
        return self.workspace / RESULTS / self.run_id

    def output_path(self, name: str) -> Path:
        """A path for a bulky output, ``experiments/results/<run_id>/<name>`` once committed."""
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"output names are relative and stay inside the run folder: {name!r}")
        target = self._staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def claim_output(self, path) -> Path:
        """Record a file written elsewhere in the workspace (e.g. ``-o FILE``)."""
        relative_to_workspace(self.workspace, path)
        target = Path(path).resolve()
        self._claimed.append(target)
        return target

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self):
        ensure_layout(self.workspace)
        self.seeds.seed_globals()  # safety net for third-party code that uses global RNGs
        self._reserve()
        self._timer = time_utils.Stopwatch()
        if self.log:
            self.log.info("run_started", run_id=self.run_id, workspace=str(self.workspace))
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            return False
        self._commit()
        return False

    def _commit(self) -> None:
        results = self.workspace / RESULTS
        report_path = results / f"{self.run_id}.json"
        outputs = []
        staged = sorted(p for p in self._staging.rglob("*") if p.is_file())
        if staged:
            os.replace(self._staging, self.final_dir)
            outputs += [self.final_dir / p.relative_to(self._staging) for p in staged]
        outputs += self._claimed
        for path in outputs:
            if not path.is_file():
                raise RuntimeError(f"declared output was never written: {path}")

        hashed = {relative_to_workspace(self.workspace, p): hash_file(p) for p in outputs}
        fingerprint = environment_fingerprint()
        env_hash = environment_hash(fingerprint)
        config_hash = None
        if self.config is not None:
            from scripts.utils.config_loader import config_sha256

            config_hash = config_sha256(self.config)
        report = {
            **self.extra,
            "run_id": self.run_id,
            "script": self.script,
            "status": self.status,
            "seed": self.seeds.summary(),
            "config": self.config,
            "config_sha256": config_hash,
            "env_hash": env_hash,
            "environment": fingerprint,
            "outputs": {path: {"sha256": h["sha256"], "size": h["size"]} for path, h in sorted(hashed.items())},
            "results": self.results,
        }
        report_bytes = canonical_json(report)
        atomic_write_bytes(report_path, report_bytes)
        if not staged:
            self._staging.rmdir()  # only now: the report holds the name

        report_rel = relative_to_workspace(self.workspace, report_path)
        entries = {path: {**h, "run": self.run_id} for path, h in hashed.items()}
        entries[report_rel] = {
            "sha256": hashlib.sha256(report_bytes).hexdigest(),
            "crc32": f"{crc32(report_bytes):08x}",
            "size": len(report_bytes),
            "run": self.run_id,
        }
        register_files(self.workspace, entries)
        add_to_manifest(self.workspace, self.run_id, {
            "script": self.script,
            "report": report_rel,
            "report_sha256": entries[report_rel]["sha256"],
            "seed": self.seeds.base_seed,
            "config_sha256": config_hash,
            "env_hash": env_hash,
            "outputs": len(hashed),
            "status": self.status,
        })
        from scripts.utils.seed_manager import log_seed

        log_seed(self.workspace, self.run_id, self.script, self.seeds)
        if self.log:
            self.log.info("run_recorded", run_id=self.run_id, report=report_rel, outputs=len(hashed),
                          seconds=round(self._timer.elapsed(), 3))
