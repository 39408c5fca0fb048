import os
import shutil
import subprocess

import orjson
import pytest

from scripts.data_tools import hash_integrity
from scripts.utils.jsonio import read_json
from scripts.utils.records.registry import StatCache
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


def test_stat_cache_is_used_and_the_racy_rule_rehashes(sample_workspace):
    hash_tree(sample_workspace)
    registry = sample_workspace / "data/hash_registry.json"
    cache_path = StatCache.path_for(registry)
    target = "data/sample/png/phantom_gray8.png"
    stat = os.stat(sample_workspace / target)
    cache = read_json(cache_path)
    cache["files"][target]["sha256"] = "0" * 64  # a stale cache entry whose stat still matches
    cache_path.write_bytes(orjson.dumps(cache))

    os.utime(
        cache_path, ns=(stat.st_mtime_ns + 10**9, stat.st_mtime_ns + 10**9)
    )  # file clearly older
    trusted = hash_tree(sample_workspace, command="verify")
    assert (
        trusted.returncode == 1 and single_error(trusted.stderr)["changed"] == 1
    )  # the cache was believed
    assert (
        hash_tree(sample_workspace, "--full", command="verify").returncode == 0
    )  # --full reads the file

    cache_path.write_bytes(orjson.dumps(cache))
    os.utime(cache_path, ns=(stat.st_mtime_ns, stat.st_mtime_ns))  # same tick as the file: racy
    assert hash_tree(sample_workspace, command="verify").returncode == 0  # so it was hashed again


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
