import os
import random
import shutil
import sqlite3
import subprocess

import orjson
import pytest

from scripts.data_tools import hash_integrity
from scripts.utils.jsonio import read_json
from scripts.utils.records import local_index
from scripts.utils.records.data_roots import collect_inputs
from scripts.utils.records.registry import add_to_registry, entries_in_folders, read_registry
from scripts.utils.records.tree_snapshots import TreeSnapshots
from tests.conftest import json_lines, run_script, single_error


def hash_tree(workspace, *extra, command="hash", path="data/sample"):
    return run_script(
        "data_tools",
        "hash_integrity",
        command,
        path,
        "--workspace",
        workspace,
        *extra,
        cwd=workspace,
    )


def test_hash_then_verify_matches(sample_workspace):
    assert hash_tree(sample_workspace).returncode == 0
    result = hash_tree(sample_workspace, command="verify")
    assert result.returncode == 0, result.stderr
    audit = [r for r in json_lines(result.stderr) if r["event"] == "audit"][0]
    assert (
        audit["matched"] == 21
        and audit["changed"] == audit["new"] == audit["missing"] == audit["moved"] == 0
    )


def test_verify_reports_changed_new_missing_moved(sample_workspace):
    hash_tree(sample_workspace)
    sample = sample_workspace / "data/sample"
    with open(sample / "png/phantom_gray8.png", "ab") as handle:
        handle.write(b"tampered")
    (sample / "png/phantom_rgb8.png").rename(sample / "png/renamed.png")
    (sample / "png/extra.txt").write_text("new file")
    (sample / "dicom/case01/study1/series1/slice001.dcm").unlink()
    result = hash_tree(sample_workspace, command="verify")
    assert result.returncode == 1
    error = single_error(result.stderr)
    assert (error["changed"], error["new"], error["missing"], error["moved"]) == (1, 1, 1, 1)
    report = read_json(sample_workspace / error["report"])["results"]
    assert report["moved"] == [
        {"from": "data/sample/png/phantom_rgb8.png", "to": "data/sample/png/renamed.png"}
    ]
    assert report["new"] == ["data/sample/png/extra.txt"]
    assert report["missing"] == ["data/sample/dicom/case01/study1/series1/slice001.dcm"]


def test_unchanged_entries_keep_their_producing_run(sample_workspace):
    before = read_json(sample_workspace / "data/hash_registry.json")["files"]
    hash_tree(sample_workspace)
    after = read_json(sample_workspace / "data/hash_registry.json")["files"]
    assert (
        after["data/sample/png/phantom_gray8.png"]["run"]
        == before["data/sample/png/phantom_gray8.png"]["run"]
    )


def stale_cache_entry(registry, name, written_ns):
    """A wrong SHA-256 for ``name`` in the stat cache, its stat still matching, and every save
    stamped ``written_ns``."""
    db = sqlite3.connect(local_index.path_for(registry))
    with db:
        assert db.execute("UPDATE stats SET sha256 = ? WHERE name = ?", ("0" * 64, name)).rowcount
        db.execute("UPDATE generations SET written_ns = ?", (written_ns,))
    db.close()
    TreeSnapshots.path_for(registry).unlink(missing_ok=True)  # no snapshot: the cache answers


def test_stat_cache_is_used_and_the_racy_rule_rehashes(sample_workspace):
    hash_tree(sample_workspace)
    registry = sample_workspace / "data/hash_registry.json"
    target = "data/sample/png/phantom_gray8.png"
    stat = os.stat(sample_workspace / target)

    stale_cache_entry(registry, target, stat.st_mtime_ns + 10**9)  # saved after the file's mtime
    trusted = hash_tree(sample_workspace, command="verify")
    assert (
        trusted.returncode == 1 and single_error(trusted.stderr)["changed"] == 1
    )  # the cache was believed
    assert (
        hash_tree(sample_workspace, "--full", command="verify").returncode == 0
    )  # --full reads the file

    stale_cache_entry(registry, target, stat.st_mtime_ns)  # saved in the file's own tick: racy
    assert hash_tree(sample_workspace, command="verify").returncode == 0  # so it was hashed again
    stale_cache_entry(registry, target, None)  # a save killed before its stamp: never trusted
    assert hash_tree(sample_workspace, command="verify").returncode == 0


def events(result, name):
    return [r for r in json_lines(result.stderr) if r["event"] == name]


def test_an_unchanged_tree_is_verified_from_its_listing_and_any_change_is_still_caught(
    sample_workspace, monkeypatch
):
    monkeypatch.setenv("CRH_REGISTRY_JOURNAL_BYTES", "0")  # runs append to the registry's journal
    assert hash_tree(sample_workspace).returncode == 0
    sample = sample_workspace / "data/sample"
    for path in sample.rglob("*"):  # older than the snapshot to come, past any clock tick
        past = path.stat().st_mtime_ns - 10**9
        os.utime(path, ns=(past, past))
    first = hash_tree(sample_workspace, command="verify")
    assert first.returncode == 0 and not events(first, "hashed")[0].get("unchanged_listing")
    second = hash_tree(sample_workspace, command="verify")
    assert second.returncode == 0, second.stderr
    assert events(second, "hashed")[0] == {
        **events(second, "hashed")[0],
        "read": 0,
        "unchanged_listing": True,
    }
    assert events(second, "audit")[0]["matched"] == 21
    report = read_json(sample_workspace / events(second, "run_recorded")[0]["report"])
    assert report["results"]["matched"] == 21 and report["results"]["summary"]["matched"] == 21
    assert hash_tree(sample_workspace, command="hash").returncode == 0  # hash takes it too

    # the same size and the mtime put back: the ctime still tells
    target = sample / "png/phantom_gray8.png"
    info = target.stat()
    target.write_bytes(b"\0" * info.st_size)
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    tampered = hash_tree(sample_workspace, command="verify")
    assert tampered.returncode == 1 and single_error(tampered.stderr)["changed"] == 1


def test_a_registry_changed_under_the_tree_is_checked_in_full(sample_workspace, monkeypatch):
    monkeypatch.setenv("CRH_REGISTRY_JOURNAL_BYTES", "0")
    hash_tree(sample_workspace)
    for path in (sample_workspace / "data/sample").rglob("*"):
        past = path.stat().st_mtime_ns - 10**9
        os.utime(path, ns=(past, past))
    assert hash_tree(sample_workspace, command="verify").returncode == 0
    registry = sample_workspace / "data/hash_registry.json"
    journal = registry.with_name(".hash_registry.json.journal.jsonl")
    name = "data/sample/png/phantom_gray8.png"
    entry = {"sha256": "0" * 64, "crc32": "00000000", "size": 1, "run": "x_20250101T000000Z"}
    with open(journal, "ab") as handle:
        handle.write(orjson.dumps({"set": {name: entry}}) + b"\n")
    result = hash_tree(sample_workspace, command="verify")
    assert result.returncode == 1 and single_error(result.stderr)["changed"] == 1


def test_worker_count_does_not_change_the_registry(sample_workspace, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sample_workspace, copy)
    hash_tree(sample_workspace, "--workers", "1")
    hash_tree(copy, "--workers", "4")
    files = lambda ws: {
        p: {k: e[k] for k in ("sha256", "crc32", "size")}
        for p, e in read_json(ws / "data/hash_registry.json")["files"].items()
        if p.startswith("data/")
    }
    assert files(sample_workspace) == files(copy)


def test_export_is_sha256sum_format(sample_workspace):
    result = hash_tree(sample_workspace, "--export", "-")
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 21 and all(len(line.split("  ", 1)[0]) == 64 for line in lines)
    if shutil.which("sha256sum"):
        check = subprocess.run(
            ["sha256sum", "-c", "-"], input=result.stdout, cwd=sample_workspace, capture_output=True
        )
        assert check.returncode == 0, check.stdout


def test_export_to_a_file_is_recorded(sample_workspace):
    assert hash_tree(sample_workspace, "--export", "checks.sha256").returncode == 0
    assert "checks.sha256" in read_json(sample_workspace / "data/hash_registry.json")["files"]


@pytest.mark.parametrize("path", ["no/such/folder", "/"])
def test_bad_paths_are_bad_input(sample_workspace, path):
    result = hash_tree(sample_workspace, path=path)
    assert result.returncode == 2 and single_error(result.stderr)["event"] == "bad_input"


def test_audit_pairs_moves_by_content():
    registry = {"a/x": {"sha256": "1", "size": 1}, "a/y": {"sha256": "2", "size": 1}}
    hashed = {"a/z": {"sha256": "1", "size": 1}, "a/y": {"sha256": "3", "size": 1}}
    result = hash_integrity.audit(registry, ["a"], hashed)
    assert (
        result["moved"] == [{"from": "a/x", "to": "a/z"}] and result["changed"][0]["path"] == "a/y"
    )


def scans_tree(root, folders=6, files=5):
    for folder in range(folders):
        for index in range(files):
            path = root / f"d{folder}" / f"f{index}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes([folder, index]) * 50)
    (root / "d0" / "deep").mkdir()
    (root / "d0" / "deep" / "x.bin").write_bytes(b"deep")


def make_old(root):
    """Every file a second in the past: a snapshot written now may vouch for it."""
    for path in root.rglob("*"):
        if path.is_file():
            past = path.stat().st_mtime_ns - 10**9
            os.utime(path, ns=(past, past))


def edit_at_random(root, rng):
    """One to three edits of the kinds a data folder sees."""
    for _ in range(rng.randint(1, 3)):
        files = sorted(p for p in root.rglob("*") if p.is_file())
        folders = sorted({p.parent for p in files})
        target = rng.choice(files)
        kind = rng.choice(["rewrite", "grow", "add", "remove", "move", "drop folder", "new folder"])
        if kind == "rewrite":  # the same size, the mtime put back: only the ctime tells
            info = target.stat()
            target.write_bytes(bytes(rng.randrange(256) for _ in range(info.st_size)))
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
        elif kind == "grow":
            with open(target, "ab") as handle:
                handle.write(b"+")
        elif kind == "add":
            (rng.choice(folders) / f"new{rng.randrange(10**6)}.bin").write_bytes(b"new")
        elif kind == "remove" and len(files) > 3:
            target.unlink()
        elif kind == "move":
            target.rename(rng.choice(folders) / f"moved{rng.randrange(10**6)}.bin")
        elif kind == "drop folder" and len(folders) > 2:
            shutil.rmtree(rng.choice(folders[1:]))
        elif kind == "new folder":
            fresh = root / f"n{rng.randrange(10**6)}"
            fresh.mkdir()
            (fresh / "a.bin").write_bytes(b"a fresh folder")


@pytest.mark.parametrize("seed", [1, 2])
def test_checking_only_the_changed_folders_gives_the_full_answer(
    sample_workspace, tmp_path, monkeypatch, seed
):
    """After a clean verify, verify and hash look only at the folders whose listing changed (or
    that the registry's journal touched): their answers and the registry they leave are those of
    the full check, whatever was edited."""
    monkeypatch.setenv("CRH_REGISTRY_JOURNAL_BYTES", "0")  # hash's changes: journal lines
    root = tmp_path / "scans"
    scans_tree(root)
    rng = random.Random(seed)
    scans = lambda command, *extra: hash_tree(sample_workspace, *extra, command=command, path=root)
    assert scans("hash").returncode == 0
    make_old(root)
    assert scans("verify").returncode == 0
    partial_checks = 0
    for _ in range(5):
        edit_at_random(root, rng)
        quick, full = scans("verify"), scans("verify", "--full")
        assert quick.returncode == full.returncode
        if quick.returncode == 1:
            assert report_results(sample_workspace, quick) == report_results(sample_workspace, full)
        partial_checks += bool(events(quick, "changed_folders"))
        hashed = scans("hash")
        assert hashed.returncode == 0
        partial_checks += bool(events(hashed, "changed_folders"))
        assert scans("verify", "--full").returncode == 0  # the registry is the tree's
        on_disk = {
            f"@scans/{p.relative_to(root).as_posix()}": p.stat().st_size
            for p in root.rglob("*")
            if p.is_file()
        }
        entries = registry_with_journal(sample_workspace)
        assert {n: e["size"] for n, e in entries.items() if n.startswith("@scans/")} == on_disk
        make_old(root)
        assert scans("verify").returncode == 0
    assert partial_checks >= 5  # the partial path was taken, not only the full one


def report_results(workspace, result):
    report = read_json(workspace / single_error(result.stderr)["report"])["results"]
    return {key: report[key] for key in ("matched", "changed", "new", "missing", "moved")}


def registry_with_journal(workspace):
    return read_registry(workspace / "data/hash_registry.json")


def test_a_journal_line_written_while_the_entries_are_read_widens_the_check(
    sample_workspace, tmp_path, monkeypatch
):
    """Another process appends to the registry between the folder comparison and the reading of
    the entries: the folders its line names are checked too."""
    monkeypatch.setenv("CRH_REGISTRY_JOURNAL_BYTES", "0")
    root = tmp_path / "scans"
    scans_tree(root)
    assert hash_tree(sample_workspace, command="hash", path=root).returncode == 0
    make_old(root)
    assert hash_tree(sample_workspace, command="verify", path=root).returncode == 0
    (root / "d1" / "f0.bin").write_bytes(b"changed")
    registry = sample_workspace / "data/hash_registry.json"
    inputs = collect_inputs(sample_workspace, [root], bind=False)
    reads = []

    def read_while_another_writes(path, folders):
        if not reads:
            add_to_registry(path, {}, drop=["@scans/d4/f0.bin"])
        reads.append(sorted(folders))
        return entries_in_folders(path, folders)

    monkeypatch.setattr(hash_integrity, "entries_in_folders", read_while_another_writes)
    files, expected, _ = hash_integrity.changed_part(inputs, TreeSnapshots.load(registry), registry)
    assert reads == [["@scans/d1"], ["@scans/d1", "@scans/d4"]]
    assert {local_index.folder_of(name) for name, *_ in files} == {"@scans/d1", "@scans/d4"}
    assert "@scans/d4/f0.bin" not in expected and "@scans/d4/f1.bin" in expected


def test_the_first_hash_in_a_fresh_workspace_leaves_its_stat_cache(tmp_path):
    root = tmp_path / "scans"
    scans_tree(root)
    make_old(root)
    workspace = tmp_path / "fresh"  # no data/ folder yet when the files are hashed
    call = lambda command: run_script(
        "data_tools", "hash_integrity", command, root, "--workspace", workspace
    )
    assert call("hash").returncode == 0
    verified = call("verify")
    assert verified.returncode == 0 and events(verified, "hashed")[0]["read"] == 0


def test_fold_leaves_every_entry_in_the_registry_file(sample_workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("CRH_REGISTRY_JOURNAL_BYTES", "0")  # hash appends to the journal
    root = tmp_path / "scans"
    scans_tree(root)
    assert hash_tree(sample_workspace, path=root).returncode == 0
    (root / "d1" / "f0.bin").write_bytes(b"changed")
    assert hash_tree(sample_workspace, path=root).returncode == 0  # one small journal line
    registry = sample_workspace / "data/hash_registry.json"
    journal = registry.with_name(".hash_registry.json.journal.jsonl")
    assert journal.exists()
    assert read_json(registry)["files"]["@scans/d1/f0.bin"]["size"] != len(b"changed")
    whole = read_registry(registry)
    folded = run_script("data_tools", "hash_integrity", "fold", "--workspace", sample_workspace)
    assert folded.returncode == 0, folded.stderr
    assert not journal.exists() and read_json(registry)["files"] == whole
    for wrong in (["fold", "data"], ["hash"]):
        result = run_script("data_tools", "hash_integrity", *wrong, "--workspace", sample_workspace)
        assert result.returncode == 2 and single_error(result.stderr)["event"] == "bad_input"
