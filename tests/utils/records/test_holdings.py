"""The records' front door: runs by script, the newest, a run's outputs and report, read once."""

import os

import pytest

from scripts.utils.errors import InputError
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.records.registry import MANIFEST
from scripts.utils.records.run_records import RunRecorder


def record(workspace, script, epoch, outputs=("a.txt",), status="ok"):
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    with RunRecorder(script, workspace=workspace) as run:
        for name in outputs:
            run.output_path(name).write_text(f"{script} {epoch} {name}\n")
        run.status = status
        run.results["logdir"] = run.folder
    return run.run_id


def test_runs_latest_outputs_and_reports(workspace, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1761912000")
    first = record(workspace, "demo", 1761912000)
    second = record(workspace, "demo", 1761912060, outputs=("a.txt", "b.txt"))
    failed = record(workspace, "demo", 1761912120, status="failed")
    other = record(workspace, "other", 1761912000)
    records = WorkspaceRecords(workspace)
    assert records.runs("demo") == [first, second, failed]
    assert records.runs("demo", finished=True) == [first, second]
    assert records.latest("demo") == second and records.latest("missing") is None
    assert sorted(records.outputs(second)) == [
        f"experiments/results/{second}.json",  # its report is one of its files
        f"experiments/results/{second}/a.txt",
        f"experiments/results/{second}/b.txt",
    ]
    assert records.report(other)["script"] == "other"
    assert records.resolve(f"experiments/results/{second}")["run_id"] == second


def test_the_manifest_is_read_once_until_refreshed(workspace, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1761912000")
    run_id = record(workspace, "demo", 1761912000)
    records = WorkspaceRecords(workspace)
    assert records.runs() == [run_id]
    (workspace / MANIFEST).write_text("not json")  # a second read would fail
    assert records.runs() == [run_id] and records.latest("demo") == run_id
    records.refresh()
    with pytest.raises(InputError):
        records.runs()
