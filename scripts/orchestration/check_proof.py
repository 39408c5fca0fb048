"""Check a proof crate offline, with no workspace: signature, every file, the profile, the claim.

    python scripts/orchestration/check_proof.py experiments/proofs/phase7
    python scripts/orchestration/check_proof.py proof/ --key lab-ed25519.pub.pem   # pin the signer
    python scripts/orchestration/check_proof.py proof/ --key 9c3ed115...  # or by its 64-hex key id
    make check-proof CRATE=experiments/proofs/phase7

Checks, each failure named (the file, or the rule): the DSSE envelope's
signature against ``--key`` (a public key, PEM) or else the key the crate
encloses, which ``--key KEY_ID`` pins to the fingerprint the authors published
(without it, the fingerprint is printed: compare it yourself); that the
signed subjects are exactly the crate's files, each with its signed SHA-256
(a changed byte, a file removed or added); that the
metadata's SHA-256s are the files'; and the Provenance Run Crate profile
(roc-validator, offline). Exit 0 with a one-screen verdict, 1 naming each
failure, 2 for a folder that is not there. ``--json`` prints the verdict as
JSON instead.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

from scripts.orchestration.proof_rerun import rerun_crate
from scripts.utils import cli
from scripts.utils.errors import CheckFailed, InputError
from scripts.utils.records.crates import check_crate, unpack_crate, verdict_text

KEY_ID = re.compile(r"[0-9a-fA-F]{64}")  # a key's fingerprint, as certify and the verdict print it


def check(args, log) -> int:
    with tempfile.TemporaryDirectory(prefix="crh-proof-") as scratch:
        folder = Path(args.crate)
        if folder.is_file():  # a crate sent as a ZIP file
            folder = unpack_crate(folder, Path(scratch))
        elif not folder.is_dir():
            raise InputError("no such crate folder or ZIP file", file=args.crate)
        return check_folder(folder, args, log)


def check_folder(folder: Path, args, log) -> int:
    key_pem, key_id = None, None
    if args.key and KEY_ID.fullmatch(args.key) and not Path(args.key).exists():
        key_id = args.key.lower()
    elif args.key:
        try:
            key_pem = Path(args.key).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read the public key: {exc.strerror}", file=args.key)
    code_dir = Path(args.code_dir).resolve()  # the re-runs run in a scratch folder
    if not code_dir.is_dir():
        raise InputError("no such code folder", file=args.code_dir)
    verdict = check_crate(folder, key_pem, profile=not args.no_profile, key_id=key_id)
    verdict["crate"] = args.crate  # as the reviewer named it (a ZIP file is unpacked elsewhere)
    if args.rerun and verdict["ok"]:
        with tempfile.TemporaryDirectory(prefix="crh-proof-rerun-") as scratch:
            steps = rerun_crate(folder, Path(scratch), code_dir, log)
        verdict["rerun"] = steps
        for step in steps:
            if "rerun" not in step and not step.get("identical"):
                verdict["failures"].append(rerun_failure(step))
        verdict["ok"] = not verdict["failures"]
    if args.json:
        cli.print_json({k: v for k, v in verdict.items() if k != "statement"})
    else:
        sys.stdout.write(verdict_text(verdict))
        sys.stdout.flush()
    if not verdict["ok"]:
        raise CheckFailed(
            f"{len(verdict['failures'])} checks failed",
            crate=args.crate,
            failures=verdict["failures"][:20],
        )
    log.info("proof_checked", crate=args.crate, key=verdict["key"], files=verdict["files"])
    return 0


def rerun_failure(step: dict) -> str:
    head = f"re-run of {step['step']} ({step['run']})"
    if "differing" not in step:
        return f"{head} failed: {' '.join(step.get('error', []))}"
    code = [reason for reason in step.get("forced") or [] if "command's code" in reason]
    hint = f" ({'; '.join(code)}: --code-dir names the folder it is in)" if code else ""
    return f"{head}: {step['differing']} outputs differ{hint}"


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "check_proof",
        doc=__doc__,
        description="Check a proof crate offline: signature, files, profile, claim.",
    )
    parser.add_argument("crate", metavar="CRATE", help="the crate's folder, or a ZIP file of it")
    parser.add_argument(
        "--key",
        metavar="PEM|ID",
        help="the signer's public key (a PEM file) or its key id (64 hex digits), to pin it",
    )
    parser.add_argument("--json", action="store_true", help="the verdict as JSON")
    parser.add_argument("--no-profile", action="store_true", help="skip the RO-Crate profile check")
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="then re-run every step from the crate in a fresh folder and check its outputs "
        "against the signed digests (needs this project's scripts and environment)",
    )
    parser.add_argument(
        "--code-dir",
        metavar="DIR",
        default=".",
        help="with --rerun: where an external command's code is (default: the current folder)",
    )
    cli.add_common_options(parser, workspace=False)
    return cli.run(parser, check, argv)


if __name__ == "__main__":
    sys.exit(main())
