import io
import os
import tarfile

import pytest

from scripts.orchestration import archive_results as ar
from scripts.utils.errors import InputError
from scripts.utils.jsonio import read_json
from scripts.utils.records.run_records import RunRecorder
from tests.conftest import run_script, single_error, tree


def make_run(workspace, name="runs/scratch", files=None):
    """A finished run folder, recorded like a real run so the registry knows its files."""
    files = files or {
        "metrics.csv": "cycle,loss\n0,1.0\n",
        "sub/best.cten": "tensor bytes",
        "log.jsonl": "{}\n",
    }
    source = workspace / name
    with RunRecorder("demo", workspace=workspace) as run:
        for relative, text in files.items():
            path = source / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            run.claim_output(path)
    return source, files, run.run_id


def archive(workspace, *args):
    return run_script(
        "orchestration", "archive_results", *args, "--workspace", workspace, cwd=workspace
    )


def test_move_copies_verifies_removes_and_moves_registry_entries(workspace):
    source, files, producer = make_run(workspace)
    result = archive(workspace, "runs/scratch")
    assert result.returncode == 0, result.stderr
    destination = workspace / "experiments/results/archive/scratch"
    assert not source.exists()
    for relative, text in files.items():
        assert (destination / relative).read_text() == text
    manifest = read_json(destination / "MANIFEST.json")
    assert sorted(manifest["files"]) == sorted(files) and manifest["source"] == "runs/scratch"
    registry = read_json(workspace / "data/hash_registry.json")["files"]
    assert not any(path.startswith("runs/scratch/") for path in registry)
    assert registry["experiments/results/archive/scratch/metrics.csv"]["run"] == producer


def test_interrupted_copy_is_finished_by_a_rerun(workspace, monkeypatch):
    source, files, _ = make_run(workspace)
    destination = workspace / "experiments/results/archive/scratch"
    calls = {"n": 0}
    real_copy = ar._copy_verified

    def failing_copy(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed during the second copy")
        real_copy(*args)

    monkeypatch.setattr(ar, "_copy_verified", failing_copy)
    with pytest.raises(KeyboardInterrupt):
        ar.move_run(workspace, source, destination)
    assert all((source / name).exists() for name in files)  # nothing removed yet
    assert not (destination / "MANIFEST.json").exists()
    monkeypatch.setattr(ar, "_copy_verified", real_copy)
    result = ar.move_run(workspace, source, destination)
    assert result["already_in_place"] == 1 and result["copied"] == 2
    assert not source.exists() and sorted(
        read_json(destination / "MANIFEST.json")["files"]
    ) == sorted(files)


def test_interrupted_removal_is_finished_by_a_rerun(workspace, monkeypatch):
    source, files, _ = make_run(workspace)
    destination = workspace / "experiments/results/archive/scratch"
    real_unlink = os.unlink
    removed = {"n": 0}

    def failing_unlink(path, *args, **kwargs):
        if str(path).startswith(str(source)):
            removed["n"] += 1
            if removed["n"] == 2:
                raise KeyboardInterrupt("killed while removing the source")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", failing_unlink)
    with pytest.raises(KeyboardInterrupt):
        ar.move_run(workspace, source, destination)
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert (destination / "MANIFEST.json").exists() and source.exists()
    result = ar.move_run(workspace, source, destination)
    assert result["copied"] == 0 and not source.exists()
    assert tree(destination) == sorted(["MANIFEST.json", *files])
    again = archive(
        workspace, "runs/scratch"
    )  # the source is gone: nothing left to do, nothing lost
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archives_are_byte_identical_and_verify(tmp_path, kind):
    outputs = []
    for name in ("one", "two"):
        workspace = tmp_path / name
        workspace.mkdir()
        make_run(workspace)
        result = archive(workspace, "runs/scratch", "--archive", kind)
        assert result.returncode == 0, result.stderr
        outputs.append((workspace / f"experiments/results/archive/scratch.{kind}").read_bytes())
        check = archive(workspace, "--verify", f"experiments/results/archive/scratch.{kind}")
        assert check.returncode == 0, check.stderr
    assert outputs[0] == outputs[1]


def test_verify_catches_a_changed_member_and_a_corrupt_archive(workspace):
    make_run(workspace)
    archive(workspace, "runs/scratch", "--archive", "tar.gz")
    path = workspace / "experiments/results/archive/scratch.tar.gz"
    with tarfile.open(path, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    tampered = workspace / "tampered.tar.gz"
    with tarfile.open(tampered, "w:gz") as tar:
        for member, data in members:
            data = b"0,9.9\n" if member.name.endswith("metrics.csv") else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    result = archive(workspace, "--verify", tampered)
    assert result.returncode == 1 and single_error(result.stderr)["first"] == "metrics.csv"
    (workspace / "cut.tar.gz").write_bytes(path.read_bytes()[:100])
    assert archive(workspace, "--verify", workspace / "cut.tar.gz").returncode == 2


def test_member_names_that_escape_are_refused(workspace):
    evil = workspace / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../../etc/passwd")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"root"))
    result = archive(workspace, "--verify", evil)
    assert result.returncode == 2 and "escapes" in single_error(result.stderr)["error"]
    for name in ("/abs/path", "a/../../b", "C:/windows"):
        with pytest.raises(InputError):
            ar.safe_member(name)


def test_paths_outside_the_workspace_are_refused(workspace, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("x")
    assert archive(workspace, outside).returncode == 2
    make_run(workspace)
    assert archive(workspace, "runs/scratch", "--dest", tmp_path / "elsewhere").returncode == 2
    link_run = workspace / "runs/linked"
    link_run.mkdir(parents=True)
    try:
        (link_run / "escape").symlink_to(outside / "x.txt")
    except OSError:  # Windows without the right to make links
        pytest.skip("cannot create symbolic links here")
    result = archive(workspace, "runs/linked")
    assert (
        result.returncode == 2 and "outside the workspace" in single_error(result.stderr)["error"]
    )
    assert (link_run / "escape").is_symlink()  # nothing was moved
