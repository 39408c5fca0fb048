import orjson
import pytest

from scripts.utils import cli
from scripts.utils.errors import CheckFailed, InputError
from tests.conftest import json_lines, run_script, single_error

UTILS = ["time_utils", "seed_manager", "config_loader", "log_formatter", "clean_workspace"]


def make_parser():
    parser = cli.ScriptParser("demo", description="A demo.", example="python demo.py --n 3")
    parser.add_argument("--n", type=int, default=1, help="how many")
    return parser


@pytest.mark.parametrize(
    "raised, code, event",
    [
        (InputError("bad file", file="x.toml", line=3), 2, "bad_input"),
        (CheckFailed("hashes differ", artifact="a.png"), 1, "check_failed"),
        (ZeroDivisionError("oops"), 3, "internal_error"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_exceptions_map_to_exit_codes_and_one_json_record(capsys, raised, code, event):
    def handler(args, log):
        raise raised

    assert cli.run(make_parser(), handler, [], workspace=False) == code
    error = single_error(capsys.readouterr().err.encode())
    assert error["event"] == event and error["script"] == "demo"
    if isinstance(raised, InputError):
        assert error["file"] == "x.toml" and error["line"] == 3 and "column" not in error
    if event == "internal_error":
        assert any("ZeroDivisionError" in line for line in error["traceback"])


def test_usage_errors_are_json(capsys):
    with pytest.raises(SystemExit) as caught:
        make_parser().parse_args(["--n", "many"])
    assert caught.value.code == 2
    record = orjson.loads(capsys.readouterr().err)
    assert record["event"] == "usage_error" and "invalid int value" in record["error"]


def test_help_shows_example_and_defaults(capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "example:\n  python demo.py --n 3" in text and "(default: 1)" in text


def test_unwritable_log_file_is_bad_input(capsys, tmp_path):
    code = cli.run(
        make_parser(),
        lambda args, log: 0,
        ["--log-file", str(tmp_path / "no" / "such" / "dir.log")],
        workspace=False,
    )
    assert code == 2 and single_error(capsys.readouterr().err.encode())["event"] == "bad_input"


@pytest.mark.parametrize("name", UTILS)
def test_every_util_has_help_from_any_directory(name, tmp_path):
    result = run_script("utils", name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"example" in result.stdout and b"usage:" in result.stdout


@pytest.mark.parametrize("name", UTILS)
def test_every_util_reports_unknown_options_as_json(name, tmp_path):
    result = run_script("utils", name, "--no-such-option", cwd=tmp_path)
    assert result.returncode == 2
    assert single_error(result.stderr)["event"] == "usage_error"


def test_clean_workspace_keeps_folders(workspace, tmp_path):
    (workspace / "data").mkdir()
    home = tmp_path / "home"  # a folder that is not a workspace: its data/ must survive
    (home / "data").mkdir(parents=True)
    (home / "data" / "precious.dcm").write_text("mine")
    refused = run_script("utils", "clean_workspace", "--workspace", home, cwd=tmp_path)
    assert refused.returncode == 2 and "not a workspace" in single_error(refused.stderr)["error"]
    assert (home / "data" / "precious.dcm").exists()
    (workspace / "meta" / "chronicle").mkdir(parents=True)
    (workspace / "data" / ".gitkeep").write_text("")
    (workspace / "data" / "hash_registry.json").write_text("{}")
    (workspace / "experiments" / "results" / "run_x").mkdir(parents=True)
    (workspace / "trainer.toml").write_text("keep me")
    result = run_script("utils", "clean_workspace", "--workspace", workspace, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stderr)[-1]["removed"] == 2
    assert sorted(p.name for p in (workspace / "data").iterdir()) == [".gitkeep"]
    assert (workspace / "experiments" / "results").is_dir() and (
        workspace / "trainer.toml"
    ).exists()


@pytest.mark.parametrize(
    "category, name",
    [
        ("data_tools", "hash_integrity"),
        ("data_tools", "metadata_extractor"),
        ("data_tools", "image_preprocessor"),
        ("utils", "log_formatter"),
    ],
)
def test_worker_counts_below_one_are_usage_errors(category, name, tmp_path):
    args = ["verify", "."] if name == "hash_integrity" else []
    result = run_script(category, name, *args, "--workers", "0", cwd=tmp_path)
    assert result.returncode == 2
    error = single_error(result.stderr)
    assert error["event"] == "usage_error" and "from 1 to 256" in error["error"]


def test_python_warnings_and_library_logging_become_json_records(capsys):
    import logging
    import warnings

    from scripts.utils import cli

    def handler(args, log):
        warnings.warn("a library complains", RuntimeWarning)
        logging.getLogger("pydicom").warning("Invalid value for VR %s", "UI")
        return 0

    before = (warnings.showwarning, logging.getLogger().handlers[:])
    assert cli.run(cli.ScriptParser("probe"), handler, []) == 0
    records = json_lines(capsys.readouterr().err.encode())
    kinds = {r["event"]: r for r in records}
    assert kinds["python_warning"]["category"] == "RuntimeWarning"
    assert kinds["library_log"] == {
        **kinds["library_log"],
        "logger": "pydicom",
        "message": "Invalid value for VR UI",
    }
    assert (
        warnings.showwarning,
        logging.getLogger().handlers[:],
    ) == before  # put back for the caller


def test_help_shows_the_docstring_examples():
    doc = """Demo.

    python scripts/demo.py --n 3
    SOURCE_DATE_EPOCH=0 python scripts/demo.py \\
        --n 4

Not an example: python is mentioned in prose.
"""
    assert cli.usage_examples(doc) == [
        "python scripts/demo.py --n 3",
        "SOURCE_DATE_EPOCH=0 python scripts/demo.py \\\n      --n 4",
    ]


@pytest.mark.skipif(
    not hasattr(__import__("os"), "openpty"), reason="needs a pseudo-terminal (POSIX)"
)
def test_at_a_terminal_a_usage_error_is_a_sentence_and_piped_it_is_json(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    script = str(REPO / "scripts/utils/time_utils.py")
    controller, terminal = os.openpty()
    try:
        result = subprocess.run(
            [sys.executable, script, "tomorrow"],
            stderr=terminal,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
        text = os.read(controller, 65536).decode()
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 2
    assert "time_utils.py: error: argument command: invalid choice: 'tomorrow'" in text
    assert "--help" in text and "{" not in text.splitlines()[-1]
    piped = run_script("utils", "time_utils", "tomorrow")
    assert piped.returncode == 2 and single_error(piped.stderr)["event"] == "usage_error"
