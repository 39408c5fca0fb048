"""Certify runs: a signed Workflow Run RO-Crate a reviewer checks offline (check_proof.py).

    python scripts/orchestration/certify.py phase7              # the steps of the last make phase7
    python scripts/orchestration/certify.py experiments/results/run_experiment_20251031T120000Z.json
    python scripts/orchestration/certify.py all --out /tmp/proof --key ~/lab-ed25519.pem
    make certify PHASE=phase7                                   # the same, from make

What to certify: ``phaseN`` (the runs of that phase's steps, as the
pipeline's state holds them), ``all`` (every step the state holds), or one
run (its report, run folder or log folder). The crate is written to
``--out`` (default ``experiments/proofs/<what>/``, a new folder), signed
with ``--key`` (an Ed25519 private key, PEM) or the workspace's own key
(``.keys/ed25519.pem``, made on first use). ``verify --certify`` and
``rerun --certify`` write crates that also carry their reproduction claim.
The crate's layout: docs/proofs.md. Prints the crate's summary as JSON.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

from scripts.orchestration.proofs import (
    certify_runs,
    default_crate_folder,
    phase_runs,
    workspace_steps,
)
from scripts.utils import cli
from scripts.utils.errors import InputError
from scripts.utils.records import signing
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.workspace import resolve_workspace


def certify(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    if re.fullmatch(r"phase[0-9]+", args.what):
        steps, kind, label = phase_runs(workspace, args.what), "phase", args.what
    elif args.what == "all":
        steps, kind, label = workspace_steps(workspace), "pipeline", "all"
        if not steps:
            raise InputError("no finished run in this workspace to certify", file=str(workspace))
    else:
        report = WorkspaceRecords(workspace).resolve(args.what)
        steps, kind, label = [(report["script"], report["run_id"])], "run", report["run_id"]
    out = Path(args.out) if args.out else default_crate_folder(workspace, label)
    signer = signing.workspace_signer(workspace, Path(args.key) if args.key else None)
    summary = certify_runs(workspace, steps, out, kind, signer, license_url=args.license, log=log)
    cli.print_json(summary)
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "certify",
        doc=__doc__,
        description="Write a signed Workflow Run RO-Crate of a phase, every step, or one run.",
    )
    parser.add_argument(
        "what",
        nargs="?",
        default="phase7",
        metavar="WHAT",
        help="phase5 ... phase9, all, or a run (report, run folder or log folder); default: phase7",
    )
    parser.add_argument("--out", metavar="DIR", help="the crate's folder (new or empty)")
    parser.add_argument(
        "--key", metavar="PEM", help="Ed25519 private key (default: the workspace's own)"
    )
    parser.add_argument(
        "--license",
        metavar="URL",
        help="the license of the runs' outputs (default: a note that none was stated)",
    )
    cli.add_common_options(parser)
    return cli.run(parser, certify, argv)


if __name__ == "__main__":
    sys.exit(main())
