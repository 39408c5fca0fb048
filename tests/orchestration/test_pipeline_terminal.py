"""make phase7 at a terminal: a live view of the steps; the JSON log kept in a file; JSON on stdout when piped."""

import io
import os
import subprocess
import sys

import orjson
import pytest

from scripts.utils.json_logger import progress
from scripts.utils.step_view import StepView
from tests.conftest import REPO, json_lines, script_path


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal (POSIX)")
def test_at_a_terminal_the_steps_are_shown_live_and_the_json_log_goes_to_a_file(workspace):
    controller, terminal = os.openpty()
    child = subprocess.Popen([sys.executable, str(script_path("orchestration", "pipeline")), "phase9",
                              "--workspace", str(workspace)], stdin=subprocess.DEVNULL, stdout=terminal,
                             stderr=terminal)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert child.wait(timeout=120) == 0
    text = output.decode()
    assert "JSON log:" in text and "env_check" in text and "config_phase7" in text
    assert "\x1b[" in text  # redrawn in place
    final = text[text.rfind("phase9:"):]
    assert final.count("done") == 6 and '{"ts"' not in text
    log = json_lines((workspace / "meta/chronicle/pipeline.jsonl").read_bytes())
    assert any(record["event"] == "summary" for record in log)


def test_piped_the_log_stays_json_and_stdout_ends_with_the_summary(workspace):
    result = subprocess.run([sys.executable, str(script_path("orchestration", "pipeline")), "phase9",
                             "--workspace", str(workspace)], capture_output=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(line.startswith(b"{") for line in result.stderr.splitlines())
    last = orjson.loads(result.stdout.splitlines()[-1])
    assert last["event"] == "summary" and len(last["steps"]) == 6


def test_the_view_draws_a_bar_and_an_eta_from_a_steps_progress():
    stream = io.StringIO()
    view = StepView("phase5", ["metadata", "split"], stream)
    view.set("metadata", "running")
    view.progress("metadata", 50, 200, "reading")
    view.render(force=True)
    line = view.line("metadata", view.steps["metadata"])
    assert "[######" in line and "25%" in line and "eta" in line and "reading" in line
    view.set("metadata", "done", "experiments/results/m.json")
    view.set("split", "up to date")
    assert "\x1b[" in stream.getvalue() and "up to date" in stream.getvalue()


def test_steps_report_progress_as_json_records_for_the_view(monkeypatch, capsys):
    monkeypatch.setenv("CRH_PROGRESS", "json")
    for _ in progress(range(3), desc="hashing"):
        pass
    records = json_lines(capsys.readouterr().err.encode())
    assert records[-1] == {"event": "progress", "desc": "hashing", "n": 3, "total": 3, "unit": "it"}
