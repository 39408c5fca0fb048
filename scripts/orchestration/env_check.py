"""Snapshot the environment into env/, or check this environment against a saved one.

    python scripts/orchestration/env_check.py            # write env/environment.json
    python scripts/orchestration/env_check.py --check    # compare with it and the lock

The snapshot (see ``scripts/utils/compute/environment.py``) holds OS and kernel,
Python build and compiler, ``cc --version``, CPU model and SIMD features,
BLAS and thread pools, CUDA and GPU through CuPy when present, the versions
that change output bytes, and the installed packages against
``requirements.lock``, plus ``env_hash``: a SHA-256 over the fields that can
change results (no host name, no time, no thread counts). The same machine
gives the same hash run after run.

``--check`` compares with the saved snapshot (``env/environment.json`` or
the file named) and with the lock, and exits 1 with the differences when the
hash or the packages differ. Fields outside the hash (kernel, compiler) are
listed but do not fail the check. Thread counts go to the log, not the
snapshot: the snapshot stays the same when only they change.

Usage:
    python scripts/orchestration/env_check.py
    python scripts/orchestration/env_check.py --check env/environment.json
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

from scripts.utils import cli
from scripts.utils.compute import environment
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.jsonio import atomic_write_bytes, canonical_json, read_json
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import resolve_workspace

SNAPSHOT = "env/environment.json"


def check_environment(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    lock = Path(args.lock)
    if not lock.is_file():
        raise InputError("lock file not found", file=args.lock)
    current = environment.snapshot(lock)
    current["env_hash"] = environment.env_hash(current)

    if args.check is None:
        with RunRecorder("env_check", argv=args.argv, workspace=workspace, log=log) as record:
            target = record.claim_output(workspace / SNAPSHOT)
            atomic_write_bytes(target, canonical_json(current))
            record.results.update(
                env_hash=current["env_hash"], lock_matches=current["lock"]["matches"]
            )
        log.info(
            "snapshot",
            file=SNAPSHOT,
            env_hash=current["env_hash"],
            lock_matches=current["lock"]["matches"],
            threads=environment.thread_counts(),
        )
        if not current["lock"]["matches"]:
            log.warning(
                "lock_mismatch",
                **{k: current["lock"][k] for k in ("missing", "extra", "mismatched")},
            )
        return 0

    path = (
        Path(args.check)
        if Path(args.check).is_absolute() or Path(args.check).exists()
        else workspace / args.check
    )
    saved = read_json(path)
    if not isinstance(saved, dict) or "env_hash" not in saved:
        raise InputError("not an environment snapshot (no env_hash)", file=args.check)
    hashed = set(environment.HASHED_FIELDS)
    found = environment.differences(
        {k: v for k, v in saved.items() if k != "env_hash"},
        {k: v for k, v in current.items() if k != "env_hash"},
    )
    for difference in found:
        difference["affects_results"] = difference["field"].split(".")[0] in hashed
    failing = [d for d in found if d["affects_results"]] + (
        []
        if current["lock"]["matches"]
        else [
            {
                "field": "lock",
                "saved": "requirements.lock",
                "current": {k: current["lock"][k] for k in ("missing", "extra", "mismatched")},
                "affects_results": True,
            }
        ]
    )
    cli.print_json(
        {
            "saved": str(args.check),
            "env_hash": {"saved": saved["env_hash"], "current": current["env_hash"]},
            "parity": not failing,
            "differences": found,
        }
    )
    if failing:
        raise CheckFailed(
            "the environment differs from the snapshot or the lock",
            differences=len(failing),
            first=failing[0]["field"],
            saved_hash=saved["env_hash"],
            current_hash=current["env_hash"],
        )
    log.info("parity", env_hash=current["env_hash"], other_differences=len(found))
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "env_check",
        doc=__doc__,
        description="Write an environment snapshot with a stable env_hash to env/, or --check "
        "against one.",
        example="python scripts/orchestration/env_check.py --check",
    )
    parser.add_argument(
        "--check",
        nargs="?",
        const=SNAPSHOT,
        metavar="SNAPSHOT",
        default=None,
        help=f"compare with SNAPSHOT (default: <workspace>/{SNAPSHOT}) and the lock; exit 1 on a "
        f"difference",
    )
    parser.add_argument(
        "--lock",
        metavar="FILE",
        default=str(environment.LOCK_FILE),
        help="the lock to compare with",
    )
    cli.add_common_options(parser)
    return cli.run(parser, check_environment, argv)


if __name__ == "__main__":
    sys.exit(main())
