"""Re-running a proof crate from the crate alone (``check_proof.py --rerun``).

    from scripts.orchestration.proof_rerun import rerun_crate
    steps = rerun_crate(Path("experiments/proofs/phase7"), Path(scratch))   # one dict per step

The crate must have passed ``crates.check_crate`` first: this trusts its
files only as far as the signature vouches for them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from scripts.utils.errors import InputError
from scripts.utils.records import crates, signing
from scripts.utils.records.registry import (
    MANIFEST,
    REGISTRY,
    hash_file,
    registry_entry,
    update_manifest,
    update_registry,
)
from scripts.utils.workspace import RUN_ID, checked_name, ensure_layout, run_report

CRATE_OWN_FILES = {crates.METADATA, crates.PREVIEW, crates.WORKFLOW, *crates.UNSIGNED}
NOT_RERUNNABLE = ("rerun", "verify", "html_report", "compare_runs")  # rerun.py refuses them


def rerun_crate(crate: Path, scratch: Path, code_dir: Path | None = None, log=None) -> list:
    """Re-run every recorded step of a checked crate, in order, from the crate alone.

    A workspace is built in ``scratch`` from the crate's files, with a
    registry and manifest made from its run reports; each step is re-run
    there by rerun.py (``--force``: the reviewer's checkout and machine are
    not the author's, and rerun says what differs) and its outputs compared
    with the ones its signed report holds. Outputs the crate does not
    enclose (DICOM) are taken from the re-run once their SHA-256 is the
    signed one, so the steps after can read them. Returns, per step, how it
    went.
    """
    source = Path(scratch) / "crate-workspace"
    ensure_layout(source)
    statement = signing.payload_of((Path(crate) / crates.ENVELOPE).read_bytes()) or {}
    for subject in statement.get("subject") or []:
        name = subject["name"]
        if name in CRATE_OWN_FILES or not checked_crate_name(name):
            continue
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(crate) / name, target)
    workflow = orjson.loads((Path(crate) / crates.WORKFLOW).read_bytes())
    steps = [(s["step"], s["run"]) for s in workflow["steps"] if RUN_ID.match(s["run"])]
    reports = {}
    for _, run_id in steps:
        path = source / run_report(run_id)
        if path.is_file():
            reports[run_id] = orjson.loads(path.read_bytes())
    register_present(source, reports)
    results = []
    for number, (step, run_id) in enumerate(steps, start=1):
        if run_id not in reports:
            results.append({"step": step, "run": run_id, "rerun": "not in the crate"})
            continue
        if reports[run_id]["script"] in NOT_RERUNNABLE:
            results.append(
                {
                    "step": step,
                    "run": run_id,
                    "rerun": f"skipped: a {reports[run_id]['script']} run",
                }
            )
            continue
        kept = Path(scratch) / f"step-{number}"
        command = [
            sys.executable,
            str(Path(__file__).with_name("rerun.py")),
            str(source / run_report(run_id)),
            "--force",
            "--keep",
            str(kept),
            "--workspace",
            str(source),
            *(["--code-dir", str(code_dir)] if code_dir else []),
        ]
        if log is not None:
            log.info("rerunning_step", step=step, run=run_id)
        done = subprocess.run(command, capture_output=True, cwd=source)
        outcome = {"step": step, "run": run_id, "exit_code": done.returncode}
        try:
            printed = orjson.loads(done.stdout.splitlines()[-1])
            outcome.update(
                identical=printed["identical"],
                differing=printed["differing"],
                forced=printed["forced"],
            )
        except (IndexError, orjson.JSONDecodeError, KeyError, TypeError):
            outcome["identical"] = False
            outcome["error"] = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        results.append(outcome)
        if outcome["identical"]:
            take_regenerated(source, kept / "ws", reports[run_id])
            register_present(source, {run_id: reports[run_id]})
    return results


def checked_crate_name(name: str) -> bool:
    """A signed name that stays inside the folder it is copied to."""
    try:
        checked_name(name, crates.ENVELOPE)
    except InputError:
        return False
    return True


def register_present(workspace: Path, reports: dict) -> None:
    """Record the runs of ``reports`` in ``workspace``: a manifest entry each, and a registry
    entry for each of its outputs (and its report) present with its recorded SHA-256."""
    entries = {}
    for run_id, report in reports.items():
        for name, recorded in [
            *((report.get("outputs") or {}).items()),
            (run_report(run_id), None),
        ]:
            path = workspace / name
            if not path.is_file():
                continue
            hashed = hash_file(path)
            if recorded is not None and hashed["sha256"] != recorded.get("sha256"):
                continue
            entries[name] = registry_entry(hashed, run_id)
    update_registry(workspace / REGISTRY, lambda files: files.update(entries))

    def add(runs):
        for run_id, report in reports.items():
            runs[run_id] = {
                "script": report["script"],
                "report": run_report(run_id),
                "report_sha256": hash_file(workspace / run_report(run_id))["sha256"],
                "seed": (report.get("seed") or {}).get("base_seed"),
                "config_sha256": report.get("config_sha256"),
                "env_hash": report.get("env_hash"),
                "outputs": len(report.get("outputs") or {}),
                "status": report.get("status", "ok"),
            }

    update_manifest(workspace / MANIFEST, add)


def take_regenerated(workspace: Path, fresh: Path, report: dict) -> None:
    """Copy into ``workspace`` the outputs a re-run regenerated that the crate did not enclose,
    each only if its SHA-256 is the one the signed report holds."""
    for name, recorded in sorted((report.get("outputs") or {}).items()):
        target, again = workspace / name, fresh / name
        if target.exists() or not again.is_file():
            continue
        if hash_file(again)["sha256"] == recorded.get("sha256"):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(again, target)
