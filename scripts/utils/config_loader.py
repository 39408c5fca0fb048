"""Print a config (TOML, JSON or YAML) resolved, with its hash; check it against a shape; export
the shapes' JSON Schemas.

    python scripts/utils/config_loader.py trainer/config/phase7.toml --set learner.lr=0.01
    python scripts/utils/config_loader.py my.yaml --schema experiment
    python scripts/utils/config_loader.py --export-schemas docs/schemas

How each format is read (duplicate keys, YAML 1.2, limits), what ``--set``
does and how the hash is made: ``scripts/utils/config/loading.py``.
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
from scripts.utils.config.loading import FORMATS, load_config
from scripts.utils.config.schema import SCHEMAS, export_schemas, validate
from scripts.utils.errors import InputError


def resolve_and_print(args, log) -> int:
    """Print the resolved config and its hash; with --schema, check it first; or export the
    schemas."""
    if args.export_schemas:
        written = export_schemas(args.export_schemas)
        cli.print_json({"schemas": [path.as_posix() for path in written]})
        return 0
    if args.file is None:
        raise InputError("give a config FILE (or --export-schemas DIR)")
    config, digest = load_config(args.file, args.overrides, log)
    if args.schema:
        validate(config, args.schema, source=args.file)
    cli.print_json(
        {
            "file": args.file,
            "format": FORMATS[Path(args.file).suffix.lower()],
            "config": config,
            "sha256": digest,
        }
    )
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "config_loader",
        doc=__doc__,
        description="Load a .toml/.json/.yaml config, apply --set overrides, and print the\n"
        "resolved config with its sha256 as JSON.",
    )
    parser.add_argument(
        "file", metavar="FILE", nargs="?", help="config file (.toml, .json, .yaml, .yml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a key, e.g. learner.lr=0.01 (repeatable)",
    )
    parser.add_argument(
        "--schema",
        choices=sorted(SCHEMAS),
        default=None,
        help="check the resolved config against this shape (every problem reported at once)",
    )
    parser.add_argument(
        "--export-schemas",
        metavar="DIR",
        default=None,
        help="write the JSON Schemas of the config shapes into DIR (for editors), and stop",
    )
    cli.add_common_options(parser, workspace=False)
    return cli.run(parser, resolve_and_print, argv, workspace=False)


if __name__ == "__main__":
    sys.exit(main())
