"""The command-line frame every script shares.

* ``ScriptParser``: argparse with defaults shown, an example in ``--help``,
  and usage errors reported as one JSON record (exit 2), never plain text.
* ``add_common_options``: --workspace, --log-file, --quiet (docs/design.md).
* ``run``: parse, build the JSON logger, call the script's handler, and map
  exceptions to exit codes: InputError -> 2, CheckFailed -> 1, an unexpected
  exception -> 3 (a bug here, reported as JSON with its traceback).

A script looks like::

    def main(argv=None):
        parser = cli.ScriptParser("my_script", doc=__doc__, description=..., example=...)
        cli.add_common_options(parser)
        parser.add_argument(...)
        return cli.run(parser, handler, argv)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

import orjson

from scripts.utils import timestamps
from scripts.utils.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    CheckFailed,
    InputError,
    environment_failure,
)
from scripts.utils.json_logger import JsonLogger
from scripts.utils.jsonio import canonical_json, encode_nonfinite


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each default that says something (not a
    None or a False flag, nor one the help already states)."""

    def _get_help_string(self, action):
        help = action.help or ""
        if (
            action.default is None
            or action.default is False
            or "(default" in help
            or "default:" in help
        ):
            return help
        return super()._get_help_string(action)


def usage_examples(doc: str | None) -> list:
    """The command lines of a module docstring's indented usage block (a ``\\`` joins continued
    lines)."""
    examples, continued = [], False
    for line in (doc or "").splitlines():
        text = line.strip()
        if continued or (line.startswith("    ") and COMMAND.match(text)):
            if continued:
                examples[-1] += "\n      " + text
            else:
                examples.append(text)
            continued = text.endswith("\\")
    return examples


COMMAND = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:python3? |make |crh-|\S+ \| python3? |cargo run)")


class ScriptParser(argparse.ArgumentParser):
    """argparse for one script: defaults and usage examples in ``--help``; usage errors as JSON when
    piped.

    ``doc`` (the module docstring) supplies the examples; ``example`` adds one more.
    """

    def __init__(
        self,
        script: str | None = None,
        *,
        example: str | None = None,
        doc: str | None = None,
        **kwargs,
    ):
        self.script = script
        kwargs.setdefault("formatter_class", _HelpFormatter)
        if script is not None:
            kwargs.setdefault("prog", f"{script}.py")
        examples = usage_examples(doc)
        if example and " ".join(example.split()) not in {
            " ".join(e.replace("\\", " ").split()) for e in examples
        }:
            examples.append(example)
        if examples:
            kwargs["epilog"] = (
                "examples:\n  " if len(examples) > 1 else "example:\n  "
            ) + "\n  ".join(examples)
        super().__init__(**kwargs)

    def error(self, message):
        """Exit 2. At a terminal, the usage and a sentence; otherwise one JSON record a program
        can read."""
        if sys.stderr.isatty():
            self.print_usage(sys.stderr)
            sys.stderr.write(
                f"{self.prog}: error: {message}\nRun '{self.prog} --help' for the options and "
                f"examples.\n"
            )
            sys.exit(EXIT_BAD_INPUT)
        record = {
            "ts": timestamps.format_iso(timestamps.wall_clock(), "milliseconds"),
            "level": "error",
            "script": self.script or self.prog.split(".py")[0],
            "event": "usage_error",
            "error": message,
            "usage": self.format_usage().strip(),
        }
        sys.stderr.write(orjson.dumps(record).decode() + "\n")
        sys.stderr.flush()
        sys.exit(EXIT_BAD_INPUT)


def add_common_options(parser: argparse.ArgumentParser, workspace: bool = True) -> None:
    if workspace:
        parser.add_argument(
            "--workspace",
            metavar="DIR",
            default=None,
            help="workspace folder (default: $CRH_WORKSPACE, else the repository root)",
        )
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        default=None,
        help="write JSON log lines here instead of stderr",
    )
    parser.add_argument("--quiet", action="store_true", help="log only warnings and errors")


def bounded(kind, low, high):
    """argparse type: an ``int`` or finite ``float`` from ``low`` to ``high`` inclusive (else a
    usage error)."""

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(
                f"not {'an integer' if kind is int else 'a number'}: {text!r}"
            )
        if not (low <= value <= high):  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


MAX_WORKERS = 256


WORKERS_ENV = "CRH_WORKERS"  # the default of every --workers (verify varies it)


def add_workers_option(parser: argparse.ArgumentParser, help: str = "parallel workers") -> None:
    # argparse runs a string default through `type` too: a bad $CRH_WORKERS is a usage error naming
    # --workers
    parser.add_argument(
        "--workers",
        type=bounded(int, 1, MAX_WORKERS),
        default=os.environ.get(WORKERS_ENV) or (os.cpu_count() or 1),
        help=help + f"; ${WORKERS_ENV} sets the default",
    )


def add_scheduler_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="run the work on a Dask cluster: tcp://host:8786, tls://host:8786, or local:N for N "
        "local worker processes (default: $CRH_DASK_SCHEDULER, else this machine only); the "
        "outputs are the same bytes",
    )


def add_data_name_option(parser: argparse.ArgumentParser) -> None:
    """``--data-name``: the name a folder outside the workspace has in the records (data_roots)."""
    parser.add_argument(
        "--data-name",
        metavar="NAME",
        default=None,
        help="name of the data root for a folder outside the workspace (default: its name)",
    )


def add_seeds_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seeds",
        metavar="FILE",
        default=None,
        help="seeds file (default: scripts/utils/seeds.toml)",
    )


def print_json(value) -> None:
    """Write a script's primary result to stdout (indented on a terminal)."""
    if sys.stdout.isatty():
        text = orjson.dumps(
            encode_nonfinite(value),
            option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE | orjson.OPT_INDENT_2,
        )
    else:
        text = canonical_json(value)
    sys.stdout.buffer.write(text)
    sys.stdout.flush()


def run(parser: ScriptParser, handler, argv=None, workspace: bool = True) -> int:
    """Parse ``argv`` and call ``handler(args, log)`` (``args.argv``: the arguments); return the
    exit code."""
    if not any(action.dest == "quiet" for action in parser._actions):
        add_common_options(parser, workspace=workspace)
    args = parser.parse_args(argv)
    args.argv = list(
        sys.argv[1:] if argv is None else argv
    )  # the command line, for handlers that record it
    script = parser.script or parser.prog
    if os.environ.get(timestamps.SOURCE_DATE_EPOCH) == "":
        # Empty means unset (timestamps); some libraries (NumPy's f2py) crash on it otherwise.
        del os.environ[timestamps.SOURCE_DATE_EPOCH]
    try:
        log = JsonLogger(script, log_file=args.log_file, quiet=args.quiet)
    except OSError as exc:
        log = JsonLogger(script)
        log.error(
            "bad_input", error=f"cannot open the log file: {exc.strerror}", file=args.log_file
        )
        return EXIT_BAD_INPUT
    restore_python_output = log.capture_python_output()
    try:
        return handler(args, log) or 0
    except (InputError, CheckFailed) as exc:
        log.error("bad_input" if isinstance(exc, InputError) else "check_failed", **exc.record())
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted", error="interrupted by the user")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout stopped early (`... | head`). Point stdout at the null device so the
        # interpreter's final flush prints no plain-text complaint; the output is incomplete, so
        # this is not a success.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        log.error(
            "bad_input",
            error="stdout was closed by its reader before the output ended (a pipe into head?)",
        )
        return EXIT_BAD_INPUT
    except OSError as exc:
        failure = environment_failure(exc)
        if failure is None:
            return _internal_error(log, exc)
        log.error("bad_input", **failure.record())
        return failure.exit_code
    except MemoryError:
        log.error(
            "bad_input",
            error="ran out of memory: the input is too large for this machine (see the caps in "
            "docs/bad-input.md)",
        )
        return EXIT_BAD_INPUT
    except RecursionError:
        log.error("bad_input", error="the input is nested too deeply")
        return EXIT_BAD_INPUT
    except ValueError as exc:
        if "null byte" not in str(
            exc
        ):  # a path holding NUL (from a config, a table): the input's fault
            return _internal_error(log, exc)
        log.error("bad_input", error=f"a path holds a NUL character: {exc}")
        return EXIT_BAD_INPUT
    except TypeError as exc:
        if "surrogates not allowed" not in str(exc):
            return _internal_error(log, exc)
        # Text that is not valid UTF-8 can only come from the input (a command-line byte, a file
        # name): it cannot be recorded in UTF-8 JSON. The run transaction has rolled back whatever
        # it began.
        log.error(
            "bad_input",
            error="an argument or input holds text that is not valid UTF-8 and cannot be recorded",
        )
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug: still one JSON record, never a bare traceback
        return _internal_error(log, exc)
    finally:
        restore_python_output()
        log.close()


def _internal_error(log, exc: BaseException) -> int:
    log.error(
        "internal_error",
        error=f"{type(exc).__name__}: {exc}",
        traceback=traceback.format_exc().splitlines(),
    )
    return EXIT_INTERNAL
