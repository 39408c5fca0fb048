"""make phase7 at a terminal: a live view of the steps; the JSON log kept in a file; JSON on
stdout when piped."""

import io
import os
import struct
import subprocess
import sys

import orjson
import pyte
import pytest

from scripts.utils.json_logger import progress
from scripts.utils.step_view import StepView
from tests.conftest import REPO, json_lines, script_path


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal (POSIX)")
def test_at_a_terminal_the_steps_are_shown_live_and_the_json_log_goes_to_a_file(workspace):
    controller, terminal = os.openpty()
    child = subprocess.Popen(
        [
            sys.executable,
            str(script_path("orchestration", "pipeline")),
            "phase9",
            "--workspace",
            str(workspace),
        ],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
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
    final = text[text.rfind("phase9:") :]
    assert final.count("done") == 6 and '{"ts"' not in text
    log = json_lines((workspace / "meta/chronicle/pipeline.jsonl").read_bytes())
    assert any(record["event"] == "summary" for record in log)


def run_in_terminal(
    workspace, columns: int, rows: int = 200, env=None, phase: str = "phase9"
) -> bytes:
    """``pipeline.py PHASE`` on a pseudo-terminal ``columns`` wide: every byte it wrote there."""
    import fcntl
    import termios

    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    child = subprocess.Popen(
        [
            sys.executable,
            str(script_path("orchestration", "pipeline")),
            phase,
            "--workspace",
            str(workspace),
        ],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm-256color", **(env or {})},
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert child.wait(timeout=120) == 0, output.decode(errors="replace")[-2000:]
    return output


@pytest.mark.skipif(
    not hasattr(os, "openpty") or sys.platform == "win32", reason="needs a pseudo-terminal (POSIX)"
)
@pytest.mark.parametrize("phase, columns", [("phase7", 80), ("phase9", 200)])
def test_the_live_view_fits_the_terminal_and_leaves_each_line_once(workspace, phase, columns):
    """What a terminal shows at the end (pyte emulates it, escape sequences and wrapping
    included): the JSON log line, the title, one line per step, then the summary; no line left
    behind by a redraw, none wider than the terminal."""
    rows = 300  # tall: nothing scrolls away, so every row ever left behind is still on the screen
    screen = pyte.Screen(columns, rows)
    pyte.ByteStream(screen).feed(run_in_terminal(workspace, columns, rows, phase=phase))
    shown = [line.rstrip() for line in screen.display if line.strip()]
    steps = (
        ["env_check"] + [f"config_phase{n}" for n in range(5, 10)]
        if phase == "phase9"
        else [
            "sample",
            "metadata",
            "split",
            "preprocess",
            "hash",
            "experiment_phase7",
            "render_phase7",
            "animate_phase7",
            "plot_phase7",
            "report_phase7",
        ]
    )
    assert shown[0].startswith("JSON log:")  # printed once before the view (a long path may wrap)
    assert sum(line.startswith(f"{phase}:") for line in shown) == 1  # the title, once
    title = next(index for index, line in enumerate(shown) if line.startswith(f"{phase}:"))
    view = shown[title : title + 1 + len(steps)]
    assert [line.split()[1] for line in view[1:]] == steps and all(
        line.split()[2] == "done" for line in view[1:]
    )
    for step in steps:
        assert sum(f" {step} " in line for line in shown) == 1, step
    assert all(len(line) < columns for line in view)  # cut to fit, never wrapped onto a second row
    summary = shown[title + 1 + len(steps) :]  # then only the summary: the files to open
    assert (
        all(not line.startswith("{") for line in summary) and len(summary) <= 30
    )  # paths may wrap


def test_a_terminal_that_cannot_redraw_gets_plain_lines(workspace):
    """TERM=dumb: no cursor movement; the title once and one line per step's change of state."""
    text = run_in_terminal(workspace, 80, env={"TERM": "dumb"}).decode()
    assert "\x1b[" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert sum(line.startswith("phase9:") for line in lines) == 1
    assert sum("env_check" in line and "running" in line for line in lines) == 1
    assert sum("env_check" in line and "done" in line for line in lines) == 1


def test_after_a_resize_the_view_is_drawn_again_at_the_new_width():
    screen = pyte.Screen(100, 30)
    stream = io.StringIO()
    width = {"columns": 100}
    view = StepView(
        "phase5: " + "a long title " * 20,
        ["metadata", "split"],
        stream,
        columns=lambda: width["columns"],
        redraw=True,
    )
    view.set("metadata", "running")
    width["columns"] = 50
    screen.resize(30, 50)
    view.set("metadata", "done", "experiments/results/metadata_extractor_20251031T120000Z.json")
    view.close([])
    pyte.Stream(screen).feed(stream.getvalue().replace("\n", "\r\n"))
    shown = [line.rstrip() for line in screen.display if line.strip()]
    assert (
        len(shown) == 3 and shown[0].startswith("phase5: a long title") and shown[0].endswith("...")
    )
    assert "done" in shown[1] and all(len(line) < 50 for line in shown)


def test_piped_the_log_stays_json_and_stdout_ends_with_the_summary(workspace):
    result = subprocess.run(
        [
            sys.executable,
            str(script_path("orchestration", "pipeline")),
            "phase9",
            "--workspace",
            str(workspace),
        ],
        capture_output=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert all(line.startswith(b"{") for line in result.stderr.splitlines())
    last = orjson.loads(result.stdout.splitlines()[-1])
    assert last["event"] == "summary" and len(last["steps"]) == 6


def test_the_view_draws_a_bar_and_an_eta_from_a_steps_progress():
    stream = io.StringIO()
    view = StepView("phase5", ["metadata", "split"], stream, redraw=True)
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
