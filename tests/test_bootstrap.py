"""The spec's commands with any Python (utils/bootstrap.py), and the project as a package
(pyproject.toml)."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from tests.conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

SCRIPT = str(REPO / "scripts/orchestration/run_experiment.py")


def bare_python(*args, env=None, cwd=None):
    """This interpreter without its site-packages: like a system python3 that lacks the
    dependencies."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "CRH_BOOTSTRAPPED")
    }
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-S", *args], capture_output=True, env=environ, cwd=cwd, timeout=120
    )


def test_a_python_without_the_dependencies_reruns_the_script_under_the_venv(tmp_path):
    result = bare_python(SCRIPT, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"usage: run_experiment.py" in result.stdout and b"examples:" in result.stdout
    dry = bare_python(SCRIPT, "--dry-run", "--set", "experiment.cylces=3", cwd=tmp_path)
    assert (
        dry.returncode == 2 and b"did you mean 'cycles'" in dry.stderr
    )  # same arguments, same exit code


def test_without_a_venv_it_says_to_run_make_setup(tmp_path):
    result = bare_python(SCRIPT, "--help", env={"CRH_VENV": str(tmp_path / "none")}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    record = orjson.loads(lines[0])
    assert (
        record["event"] == "bad_input"
        and "make setup" in record["error"]
        and "orjson" in record["missing"]
    )


def project_scripts() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]


def test_every_script_is_a_console_command_of_the_package():
    commands = project_scripts()
    with_main = {
        ".".join(path.relative_to(REPO).with_suffix("").parts)
        for path in (REPO / "scripts").rglob("*.py")
        if any(
            isinstance(node, ast.FunctionDef) and node.name == "main"
            for node in ast.parse(path.read_text(encoding="utf-8")).body
        )
    }
    with_main.discard("scripts.utils.venv_setup")  # runs before the venv (and the package) exists
    with_main.discard(
        "scripts.orchestration.make_targets"
    )  # the Makefile's hand-over, not a command of its own
    assert {target.split(":")[0] for target in commands.values()} == with_main
    for name, target in commands.items():
        module = target.split(":")[0]
        assert name == "crh-" + module.rsplit(".", 1)[1].replace("_", "-")


def test_the_installed_commands_run_from_any_folder(tmp_path):
    command = shutil.which("crh-time-utils", path=str(Path(sys.executable).parent))
    assert command, (
        "the venv lacks the project's commands: run make setup (it runs pip install -e .)"
    )
    result = subprocess.run(
        [command, "now"],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1761912000"},
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["iso"] == "2025-10-31T12:00:00Z"
