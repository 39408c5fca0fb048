"""What ``make``'s variables become: options of the project's commands, passed as data, never
through a shell.

    make phase7 DATA="/mnt/scans (2025)" WORKSPACE=/tmp/ws
    # the Makefile runs: python scripts/orchestration/make_targets.py phase7
    # which runs:        pipeline.py phase7 --workspace /tmp/ws --data "/mnt/scans (2025)"

A folder name may hold anything a file system allows: quotes, backticks,
``$(...)``, newlines. The Makefile therefore never writes DATA, DATA_NAME,
STRICT, SCHEDULER, RUN, PHASE, CRATE, KEY, CERTIFY, RERUN or WORKSPACE into a
recipe. It hands each over in the environment as ``CRH_MAKE_<NAME>``,
unexpanded (``$(value NAME)``, so
make does not run a ``$(shell ...)`` in it either, and ``unexport`` keeps
make from exporting it expanded), and this command turns them into the
command's options as a list of arguments. An empty variable is not given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

from scripts.utils.errors import EXIT_BAD_INPUT

PREFIX = "CRH_MAKE_"
PHASES = ("phase5", "phase6", "phase7", "phase8", "phase9")
TRUE = ("1", "yes", "true")


def target_argv(target: str, environ=None) -> tuple[str, list]:
    """``(command, argv)`` for a make target, from the ``CRH_MAKE_*`` variables in ``environ``."""
    environ = os.environ if environ is None else environ

    def given(name: str) -> str:
        return environ.get(PREFIX + name, "")

    argv = ["--workspace", given("WORKSPACE") or "."]
    certify = given("CERTIFY").strip().lower() in TRUE
    key = ["--key", given("KEY")] if given("KEY") else []
    if target == "verify":
        return "verify", argv + (["--certify", *key] if certify else [])
    if target == "report":
        return "html_report", ([given("RUN")] if given("RUN") else []) + argv
    if target == "steps":
        return "pipeline", [given("PHASE") or "phase7", "--steps"]
    if target == "certify":
        what = given("RUN") or given("PHASE") or "phase7"
        return "certify", [what, *argv, *key]
    if target == "check-proof":
        crate = given("CRATE") or os.path.join(
            given("WORKSPACE") or ".", "experiments/proofs/phase7"
        )
        rerun = given("RERUN").strip().lower() in TRUE
        return "check_proof", [crate, *key] + (["--rerun"] if rerun else [])
    argv = [target, *argv]
    for name, option in (
        ("DATA", "--data"),
        ("DATA_NAME", "--data-name"),
        ("SCHEDULER", "--scheduler"),
    ):
        if given(name):
            argv += [option, given(name)]
    if given("STRICT").strip().lower() in TRUE:
        argv.append("--strict")
    if certify:
        argv += ["--certify", *key]
    return "pipeline", argv


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        sys.stdout.write(__doc__)
        return 0 if args and args[0] in ("-h", "--help") else EXIT_BAD_INPUT
    command, command_argv = target_argv(args[0])
    if command == "pipeline":
        from scripts.orchestration.pipeline import main as run
    elif command == "verify":
        from scripts.orchestration.verify import main as run
    elif command == "certify":
        from scripts.orchestration.certify import main as run
    elif command == "check_proof":
        from scripts.orchestration.check_proof import main as run
    else:
        from scripts.visualization.html_report import main as run
    return run(command_argv)


if __name__ == "__main__":
    sys.exit(main())
