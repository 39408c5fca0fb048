"""Print the seeds of named streams, derived from a seeds file, as JSON.

    python scripts/utils/seed_manager.py --seeds scripts/utils/seeds.toml \\
        --stream dreamer --stream learner

How a stream's seed is derived from the base seed and its name, and what
``seeds.toml`` holds: ``scripts/utils/config/seeds.py`` (the library every
script seeds from).
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
