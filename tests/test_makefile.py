"""The Makefile's own contract: help lists every target; recipes stay portable."""

import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO

MAKEFILE = (REPO / "Makefile").read_text()
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def phony_targets():
    block = re.search(r"^\.PHONY:(.*?)(?<!\\)\n", MAKEFILE, re.M | re.S).group(1)
    return block.replace("\\\n", " ").split()


def test_help_is_the_default_and_lists_every_target():
    result = subprocess.run(["make", "-s"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = result.stdout
    for target in phony_targets():
        if target.startswith("phase"):
            target = "phase5..9"
        assert re.search(rf"^\s*{re.escape(target)}\s", listed, re.M), (
            f"make help does not list {target}"
        )


def test_python_targets_depend_on_the_venv():
    for target in ("test", "bench", "lock", "setup-gpu", "clean"):
        assert re.search(rf"^{re.escape(target)}:.*\$\(VENV_STAMP\)", MAKEFILE, re.M), target


def test_recipes_call_python_not_unix_tools():
    recipes = [line.strip() for line in MAKEFILE.splitlines() if line.startswith("\t")]
    for line in recipes:
        assert not re.match(r"@?(rm|cp|mv|mkdir|touch|cat|sed|grep|find|ln)\b", line), line


def test_an_unknown_phase_is_a_json_error():
    result = subprocess.run(
        ["make", "-s", "phase4"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and '"unknown phase' in result.stderr


def test_data_and_workspace_reach_the_pipeline(tmp_path):
    result = subprocess.run(
        ["make", "-s", "phase5", f"DATA={tmp_path / 'missing'}", f"WORKSPACE={tmp_path / 'ws'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "DATA must be a folder" in result.stderr
    assert not (tmp_path / "ws").exists()
