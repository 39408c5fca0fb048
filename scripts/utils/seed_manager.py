"""Deterministic seeds: one base seed, named streams, explicit Generators.

``seeds.toml`` holds ``base_seed`` (0 <= seed < 2**63) and an optional
``[streams]`` table of explicit per-stream seeds. Any other stream's seed is
derived from the base seed and the stream's key with NumPy's SeedSequence:

    key     = the stream name, or (name, sub-key, ...) such as (name, sample_id, epoch)
    key_int = int.from_bytes(sha256(orjson.dumps([name, sub-key, ...])), "little")
    seed    = SeedSequence(base_seed, spawn_key=(key_int,)).generate_state(1, uint64)[0] >> 1

The key is hashed with SHA-256, never Python's salted ``hash()``, so a seed
is the same on every platform and under every PYTHONHASHSEED. Code receives
``numpy.random.Generator`` objects (PCG64) and never touches global state;
``seed_globals()`` seeds Python's ``random``, NumPy's legacy global state
and CuPy (only if already imported) as a safety net for third-party code.

Usage:
    python scripts/utils/seed_manager.py --seeds scripts/utils/seeds.toml \\
        --stream dreamer --stream learner
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
from scripts.utils.config.seeds import DEFAULT_SEEDS_FILE, SeedManager
from scripts.utils.limits import check_plain


def show_seeds(args, log) -> int:
    check_plain(args.stream, "--stream", "--stream")
    seeds = SeedManager.from_file(args.seeds)
    result = {
        "base_seed": seeds.base_seed,
        "seeds_file_sha256": seeds.file_sha256,
        "streams": {name: seeds.seed(name) for name in args.stream},
    }
    cli.print_json(result)
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "seed_manager",
        doc=__doc__,
        description="Print the seeds of named streams, derived from a seeds file, as JSON.",
        example="python scripts/utils/seed_manager.py --seeds scripts/utils/seeds.toml "
        "--stream dreamer --stream learner",
    )
    parser.add_argument(
        "--seeds",
        metavar="FILE",
        default=None,
        help=f"seeds file (default: "
        f"{DEFAULT_SEEDS_FILE.relative_to(DEFAULT_SEEDS_FILE.parents[2]).as_posix()})",
    )
    parser.add_argument(
        "--stream", metavar="NAME", action="append", default=[], help="a stream name (repeatable)"
    )
    cli.add_common_options(parser, workspace=False)
    return cli.run(parser, show_seeds, argv, workspace=False)


if __name__ == "__main__":
    sys.exit(main())
