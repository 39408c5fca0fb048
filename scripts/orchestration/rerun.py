"""Re-run a recorded run from its record alone, and prove its outputs byte-identical.

    python scripts/orchestration/rerun.py experiments/results/run_experiment_20251031T120000Z.json
    python scripts/orchestration/rerun.py experiments/results/phase7 --force --keep /tmp/rerun

From the run report: the script and its arguments, the resolved config
(run_experiment: written to a file, ``--set`` already applied), the seeds
(the base seed and every stream it drew, pinned), the code commit and the
environment hash. The record is untrusted input (docs/untrusted-records.md):
its shape and its SHA-256 against the manifest are checked (a report from
elsewhere needs ``--force``), only this project's own commands are run, and
a recorded argument or registry name that leads out of the workspace is
refused. The run is checked next: a run recorded from a dirty
tree, a checkout at another commit or with uncommitted changes, or another
environment (``env_hash``, naming the fields) is refused with exit 2 unless
``--force``, and then the report lists what was forced. An external
command's run is refused the same way when a file of its code or its
Python's packages changed; its code is looked for in ``--code-dir`` (default:
the recorded code folder when it lay in the workspace, or the current
folder: the first holding every file), as the record names its files
relative to that folder.

The fresh workspace holds what the run could read: every file the earlier
runs registered (hard links where possible), their reports and manifest
entries, and the data-root bindings. The script runs there with
SOURCE_DATE_EPOCH set to the run's own stamp, so it gets the same run id.
Each recorded output is compared with the new one (named relative to the
workspace); a difference is explained as verify explains it
(utils/formats/artifact_diff.py). The result is recorded as a ``rerun`` run. Exit 0
when every output is identical, 1 otherwise.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
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

from scripts.orchestration.proof_rerun import NOT_RERUNNABLE
from scripts.orchestration.proofs import certify_rerun
from scripts.utils import cli
from scripts.utils.compute.environment import (
    differences,
    environment_fingerprint,
    environment_hash,
    git_state,
)
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.formats.artifact_diff import compare
from scripts.utils.jsonio import atomic_write_bytes, canonical_json, read_json
from scripts.utils.records import signing
from scripts.utils.records.data_roots import BINDINGS
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.records.registry import (
    MANIFEST,
    REGISTRY,
    empty_manifest,
    empty_registry,
)
from scripts.utils.records.run_records import EXECUTION_OPTIONS, RunRecorder
from scripts.utils.records.run_reports import command_path
from scripts.utils.workspace import (
    checked_name,
    ensure_layout,
    inside,
    path_inside,
    resolve_workspace,
    run_report,
)

OUTSIDE = "<outside workspace>"
TAKES_CONFIG_AND_SEEDS = (
    "run_experiment",
)  # scripts whose resolved config and seeds the record holds whole
SHOWN_DIFFERENCES = 20


def run_epoch(run_id: str) -> int:
    """The SOURCE_DATE_EPOCH that gives a run its own stamp back."""
    stamp = run_id.rpartition("_")[2].partition("-")[0]
    return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))


def refusals(report: dict, code_dir: Path | None = None) -> list:
    """What stands between this checkout and the recorded run (empty: it can be re-run as
    recorded); ``code_dir``: where an external run's code is now."""
    found = []
    recorded = report.get("git") or {}
    now = git_state()
    if recorded.get("dirty"):
        found.append(
            {
                "what": "the run was recorded from a tree with uncommitted changes: its code is "
                "unknown"
            }
        )
    if recorded.get("commit") and now["commit"] != recorded["commit"]:
        found.append(
            {
                "what": "another commit is checked out",
                "recorded": recorded["commit"],
                "now": now["commit"],
            }
        )
    if now["dirty"]:
        found.append({"what": "this checkout has uncommitted changes"})
    external = report.get("external")
    if (
        isinstance(external, dict) and code_dir is not None
    ):  # an external command's own code and Python
        found += external_changes(external, report, code_dir)
    if report.get("env_hash") and report["env_hash"] != environment_hash():
        fields = [
            item["field"]
            for item in differences(report.get("environment") or {}, environment_fingerprint())
        ]
        found.append(
            {
                "what": "another environment",
                "recorded": report["env_hash"],
                "now": environment_hash(),
                "fields": fields[:20],
            }
        )
    return found


def run_outcome(report: dict) -> dict:
    """How a run ended: its status and, for an external command, its exit code."""
    outcome = {"status": report.get("status")}
    exit_code = (report.get("results") or {}).get("exit_code")
    if exit_code is not None:
        outcome["exit_code"] = exit_code
    return outcome


def external_changes(external: dict, report: dict, code_dir: Path) -> list:
    """What changed in an external command's recorded code files (looked for in ``code_dir``) and
    interpreter since its run."""
    from scripts.orchestration.external_runs import (
        changed_since,
        current_code,
        interpreter_environment,
    )

    command = ((report.get("plan") or {}).get("command") or [])[:1]
    environment = interpreter_environment(command, None, Path.cwd()) if command else None
    found = changed_since(
        external,
        {
            "code": {"files": current_code(external.get("code"), code_dir)},
            "environment": environment,
        },
    )
    for change in found:
        if "file" in change:
            change.update(
                looked_in=str(code_dir), note="give --code-dir where the project's code is now"
            )
    return found


def external_code_dir(report: dict, workspace: Path, given: str | None) -> Path | None:
    """Where an external run's code is looked for: ``--code-dir``, else the recorded code folder
    (when it lay in the workspace) or the current folder, the first that holds every recorded
    file (None for a run of ours)."""
    external = report.get("external")
    if not isinstance(external, dict) or report.get("script") != "run_experiment":
        return None
    if given:
        return Path(given).resolve()
    names = list(
        ((external.get("code") or {}).get("files") or {})
        if isinstance(external.get("code"), dict)
        else []
    )
    candidates = [Path.cwd().resolve()]
    if isinstance(external.get("code_dir"), str):
        candidates.insert(0, path_inside(workspace, external["code_dir"]))
    return next(
        (folder for folder in candidates if all((folder / name).is_file() for name in names)),
        candidates[-1],
    )


def rerun_argv(report: dict, inputs: Path) -> list:
    """The recorded arguments, with the config and seeds rebuilt from the record where they were
    files."""
    argv, rebuilt = list(report.get("argv") or []), []
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        option = arg.split("=", 1)[0]
        value = (
            arg.split("=", 1)[1]
            if "=" in arg
            else (argv[index + 1] if index + 1 < len(argv) else None)
        )
        takes_next = "=" not in arg
        if option == "--set":
            skip = takes_next  # already applied: the recorded config is the resolved one
            continue
        if option == "--config" and isinstance(report.get("config"), dict):
            rebuilt += ["--config", str(config_file(report["config"], inputs))]
            skip = takes_next
            continue
        if option == "--seeds" and report.get("seed"):
            rebuilt += ["--seeds", str(seeds_file(report["seed"], inputs))]
            skip = takes_next
            continue
        if OUTSIDE in arg or (
            value and OUTSIDE in value and takes_next and option.startswith("--")
        ):
            raise InputError(
                "the record names a file outside its workspace that it does not hold; "
                "re-run it by hand",
                argument=arg if OUTSIDE in arg else f"{arg} {value}",
            )
        check_recorded_argument(arg)
        rebuilt.append(arg)
    if (
        report.get("script") in TAKES_CONFIG_AND_SEEDS
    ):  # the defaults were used: give the recorded ones
        if "--config" not in rebuilt and isinstance(report.get("config"), dict):
            rebuilt += ["--config", str(config_file(report["config"], inputs))]
        if "--seeds" not in rebuilt and report.get("seed"):
            rebuilt += ["--seeds", str(seeds_file(report["seed"], inputs))]
    return rebuilt


def check_recorded_argument(arg: str) -> None:
    """Refuse what a recorded command line never holds: options that say where a run writes (they
    are left out when recording), absolute paths, and paths that climb out of the workspace."""
    option, _, value = arg.partition("=")
    if option in EXECUTION_OPTIONS:
        raise InputError(
            "the record's command line holds an option that records never keep (edited?)",
            argument=arg[:200],
        )
    for text in (arg, value):
        if (
            "\0" in text
            or text.startswith(("/", "\\"))
            or re.match(r"^[A-Za-z]:[\\/]", text)
            or ".." in re.split(r"[\\/]", text)
        ):
            raise InputError(
                "the record's command line names a path outside its workspace: refused",
                argument=arg[:200],
            )


def config_file(config: dict, inputs: Path) -> Path:
    """The recorded resolved config as a file (``--set`` already applied)."""
    path = inputs / "config.json"
    atomic_write_bytes(path, canonical_json(config))
    return path


def seeds_file(seed: dict, inputs: Path) -> Path:
    """A seeds file giving the recorded base seed and, pinned, every stream the run drew."""
    lines = [f"base_seed = {int(seed['base_seed'])}", "", "[streams]"]
    lines += [
        f"{orjson.dumps(name).decode()} = {int(value)}"
        for name, value in sorted((seed.get("streams") or {}).items())
    ]
    path = inputs / "seeds.toml"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def prepare_workspace(source: Path, fresh: Path, report: dict) -> int:
    """Copy (hard-link) into ``fresh`` what the runs before this one registered; returns the file
    count."""
    target, stamp = report["run_id"], report["run_id"].rpartition("_")[2]
    records = WorkspaceRecords(source)
    runs = {
        run_id: entry
        for run_id, entry in records.manifest().items()
        if run_id != target and run_id.rpartition("_")[2] <= stamp
    }
    ensure_layout(fresh)
    files = {path: entry for path, entry in records.registry().items() if entry.get("run") in runs}
    # folder -> whether it lies inside the source workspace (links resolved once per folder)
    vouched = {}
    for relative in files:
        checked_name(
            relative, source / REGISTRY, data_root=True
        )  # so ``fresh / relative`` stays in fresh
        if relative.startswith("@"):
            continue  # a data root outside the workspace: bound below, read in place
        origin, copy = source / relative, fresh / relative
        if origin.parent not in vouched:
            vouched[origin.parent] = inside(source, origin.parent)
        if not vouched[origin.parent]:
            raise InputError(
                "a recorded path leads outside the workspace (through a link)",
                file=source / REGISTRY,
                value=relative[:200],
            )
        try:
            if not stat.S_ISREG(os.lstat(origin).st_mode):
                continue  # a link or folder now: not what the run registered
        except OSError:
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(origin, copy)
        except OSError:
            shutil.copy2(origin, copy)
    atomic_write_bytes(fresh / REGISTRY, canonical_json({**empty_registry(), "files": files}))
    atomic_write_bytes(fresh / MANIFEST, canonical_json({**empty_manifest(), "runs": runs}))
    if (source / BINDINGS).is_file():
        shutil.copy2(source / BINDINGS, fresh / BINDINGS)
    return len(files)


def compare_outputs(workspace: Path, fresh: Path, recorded: dict, new: dict) -> list:
    found = []
    for path in sorted(set(recorded) | set(new)):
        before, after = (
            (recorded.get(path) or {}).get("sha256"),
            (new.get(path) or {}).get("sha256"),
        )
        if before == after:
            continue
        item = {"artifact": path, "recorded": before, "rerun": after}
        original, again = path_inside(workspace, path), path_inside(fresh, path)
        if before and after and original.is_file() and again.is_file():
            data = original.read_bytes()
            if (
                hashlib.sha256(data).hexdigest() == before
            ):  # the recorded file is still there, unchanged
                item.update(compare(path, data, again.read_bytes()))
        found.append(item)
    return found


def rerun_command(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    try:
        report, unverified = WorkspaceRecords(workspace).resolve(args.target), []
    except InputError as exc:
        if not args.force or "recorded_sha256" not in exc.details:
            raise
        report = WorkspaceRecords(workspace).resolve(args.target, force=True)
        unverified = [
            {
                "what": "the report is not the one the manifest holds",
                "recorded": exc.details["recorded_sha256"],
                "now": exc.details["actual_sha256"],
            }
        ]
    if report.get("script") in (*NOT_RERUNNABLE, None):
        raise InputError(
            "this run records no work to re-run",
            run=report.get("run_id"),
            script=report.get("script"),
        )
    if "argv" not in report:
        raise InputError(
            "the record holds no command line (runs recorded before argv was recorded by every "
            "script cannot be re-run)",
            run=report["run_id"],
        )
    code_dir = external_code_dir(report, workspace, args.code_dir)
    blocking = unverified + refusals(report, code_dir)
    if blocking and not args.force:
        raise InputError(
            "the run cannot be re-run as recorded (--force re-runs it anyway and says so)",
            run=report["run_id"],
            refused=blocking,
        )
    scratch = (
        Path(args.keep).absolute() if args.keep else Path(tempfile.mkdtemp(prefix="crh-rerun-"))
    )
    try:
        fresh, inputs = scratch / "ws", scratch / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        copied = prepare_workspace(workspace, fresh, report)
        command = [
            sys.executable,
            str(command_path(report["script"])),
            *rerun_argv(report, inputs),
            *(["--code-dir", str(code_dir)] if code_dir else []),
            "--workspace",
            str(fresh),
        ]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(run_epoch(report["run_id"]))}
        env.pop("CRH_WORKSPACE", None)
        log.info(
            "rerunning", run=report["run_id"], inputs=copied, forced=[b["what"] for b in blocking]
        )
        result = subprocess.run(command, cwd=fresh, env=env, capture_output=True)
        again = fresh / run_report(report["run_id"])
        if result.returncode not in (0, 1) or not again.is_file():
            raise CheckFailed(
                "the re-run did not finish as recorded",
                exit_code=result.returncode,
                stderr_tail=result.stderr.decode(errors="replace").splitlines()[-5:],
            )
        new_report = read_json(again)
        new_outputs = new_report.get("outputs") or {}
        found = compare_outputs(workspace, fresh, report.get("outputs") or {}, new_outputs)
        outcome = {"original": run_outcome(report), "rerun": run_outcome(new_report)}
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    same_outcome = outcome["original"] == outcome["rerun"]
    identical = not found and same_outcome
    with RunRecorder(
        "rerun", workspace=workspace, log=log, config={"run": report["run_id"]}
    ) as record:
        record.results.update(
            run=report["run_id"],
            identical=identical,
            outputs=len(report.get("outputs") or {}),
            differing=found[:SHOWN_DIFFERENCES],
            differing_count=len(found),
            forced=blocking,
            **outcome,
        )
        if not identical:
            record.status = "check_failed"
    printed = {
        "run": report["run_id"],
        "identical": identical,
        "outputs": len(report.get("outputs") or {}),
        "differing": len(found),
        **outcome,
        "forced": [b["what"] for b in blocking],
        "report": record.report,
    }
    if args.certify:
        claim = {k: printed[k] for k in ("run", "identical", "outputs", "differing", "forced")}
        claim.update(original=outcome["original"], rerun=outcome["rerun"])
        printed["crate"] = certify_rerun(
            workspace,
            report,
            Path(args.certify_out) if args.certify_out else None,
            signing.workspace_signer(workspace, Path(args.key) if args.key else None),
            claim,
            record.report,
            log,
        )["crate"]
    cli.print_json(printed)
    if not same_outcome:
        raise CheckFailed(
            "the re-run did not end as the recorded run did",
            original=outcome["original"],
            rerun=outcome["rerun"],
            report=record.report,
        )
    if not identical:
        raise CheckFailed(
            f"{len(found)} outputs differ from the recorded run",
            first=found[0]["artifact"],
            report=record.report,
        )
    if outcome["original"]["status"] == "failed":
        log.warning(
            "failed_the_same_way",
            run=report["run_id"],
            exit_code=outcome["original"].get("exit_code"),
            note="the recorded run failed, and the re-run failed the same way with the same "
            "outputs",
        )
    log.info("identical", run=report["run_id"], outputs=len(report.get("outputs") or {}))
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "rerun",
        doc=__doc__,
        description="Re-run a recorded run from its record in a fresh workspace and prove its "
        "outputs identical.",
    )
    parser.add_argument(
        "target", metavar="RUN", help="a run report (.json), a run folder or a log folder"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-run even from another commit, a dirty tree or another environment, or a report "
        "the manifest does not hold (from elsewhere); what was forced is recorded",
    )
    parser.add_argument(
        "--code-dir",
        metavar="DIR",
        help="where an external run's code is now (its record names files relative to it; default: "
        "the recorded folder when it lay in the workspace, else the current folder)",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep the fresh workspace under DIR/ws")
    parser.add_argument(
        "--certify",
        action="store_true",
        help="also write a signed crate of the run and the rerun's verdict (docs/proofs.md)",
    )
    parser.add_argument(
        "--certify-out",
        metavar="DIR",
        help="the crate's folder (default: experiments/proofs/<rerun run id>)",
    )
    parser.add_argument(
        "--key", metavar="PEM", help="Ed25519 private key (default: the workspace's own)"
    )
    cli.add_common_options(parser)
    return cli.run(parser, rerun_command, argv)


if __name__ == "__main__":
    sys.exit(main())
