"""The registry's journal: appends for large registries, folding, torn lines, undo, kills."""

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from scripts.utils.errors import InputError
from scripts.utils.jsonio import canonical_json, read_json
from scripts.utils.records import registry
from scripts.utils.records.registry import (
    add_to_registry,
    drop_from_registry,
    fold_journal,
    journal_path,
    read_registry,
    update_registry,
)
from tests.conftest import REPO


def entry(run, n=0):
    return {"sha256": f"{n:064x}", "crc32": f"{n:08x}", "size": n, "run": run}


@pytest.fixture
def big(tmp_path, monkeypatch):
    """A registry of 2,000 entries, counted as large (the journal takes appends)."""
    monkeypatch.setenv(registry.JOURNAL_BYTES_ENV, "1000")
    path = tmp_path / "data" / "hash_registry.json"
    update_registry(
        path, lambda files: files.update({f"bulk/{i:05d}": entry("seed", i) for i in range(2_000)})
    )
    return path


def test_small_registries_are_rewritten_as_before(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.JOURNAL_BYTES_ENV, raising=False)
    path = tmp_path / "hash_registry.json"
    add_to_registry(path, {"a": entry("r1")})
    add_to_registry(path, {"b": entry("r2")})
    assert not journal_path(path).exists()
    assert read_json(path)["files"] == {"a": entry("r1"), "b": entry("r2")}


def test_a_large_registry_takes_one_journal_line_and_reads_whole(big):
    before = big.read_bytes()
    add_to_registry(big, {"new/a": entry("r1", 1), "new/b": entry("r1", 2)})
    assert big.read_bytes() == before  # the big file is not rewritten
    lines = journal_path(big).read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [
        {"set": {"new/a": entry("r1", 1), "new/b": entry("r1", 2)}}
    ]
    files = read_registry(big)
    assert len(files) == 2_002 and files["new/b"] == entry("r1", 2)


def test_folding_gives_the_bytes_of_a_plain_rewrite(big, tmp_path):
    for run in range(5):
        add_to_registry(
            big, {f"run{run}/x": entry(f"r{run}", run), "bulk/00007": entry(f"r{run}", run)}
        )
    expected = read_registry(big)
    assert fold_journal(big, force=True) and not journal_path(big).exists()
    assert big.read_bytes() == canonical_json(
        {"files": expected, "format": "crh-hash-registry", "version": 1}
    )
    assert expected["bulk/00007"] == entry("r4", 4)  # later lines win


def test_the_journal_is_folded_when_it_reaches_an_eighth_of_the_file(big):
    size = big.stat().st_size
    appended = 0
    while journal_path(big).exists() or appended == 0:
        add_to_registry(big, {f"grow/{appended:05d}": entry("g", appended)})
        appended += 1
        fold_journal(big)  # what every commit does after its line
        assert appended < 1_000
    assert big.stat().st_size > size and len(read_registry(big)) == 2_000 + appended
    assert len(read_json(big)["files"]) == 2_000 + appended


def test_a_torn_last_line_is_ignored_and_cut_by_the_next_writer(big):
    add_to_registry(big, {"kept": entry("r1")})
    with open(journal_path(big), "ab") as handle:
        handle.write(b'{"set":{"torn":{"sha256":"00')  # a writer killed mid-line
    assert "torn" not in read_registry(big) and "kept" in read_registry(big)
    add_to_registry(big, {"after": entry("r2")})
    lines = journal_path(big).read_bytes().splitlines()
    assert len(lines) == 2 and all(orjson.loads(line) for line in lines)
    assert set(read_registry(big)) >= {"kept", "after"} and "torn" not in read_registry(big)


def test_a_corrupt_complete_line_is_bad_input(big):
    add_to_registry(big, {"kept": entry("r1")})
    with open(journal_path(big), "ab") as handle:
        handle.write(b"not json\n")
    with pytest.raises(InputError, match="journal line 2 is not JSON"):
        read_registry(big)


def test_undo_takes_back_exactly_one_addition(big):
    add_to_registry(big, {"first": entry("r1")})
    undo = add_to_registry(big, {"second": entry("r2")})
    undo()
    files = read_registry(big)
    assert "first" in files and "second" not in files


def test_undo_of_a_rewrite_restores_file_and_journal(big):
    add_to_registry(big, {"first": entry("r1")})
    before = (big.read_bytes(), journal_path(big).read_bytes())
    undo = add_to_registry(
        big, {"second": entry("r2")}, change=lambda files: files.pop("bulk/00000")
    )
    assert not journal_path(big).exists() and "bulk/00000" not in read_registry(big)
    undo()
    assert (big.read_bytes(), journal_path(big).read_bytes()) == before


def test_other_changes_fold_first_so_nothing_dropped_comes_back(big):
    add_to_registry(big, {"doomed/a": entry("dead"), "kept/a": entry("alive")})
    update_registry(
        big, lambda files: [files.pop(name) for name in list(files) if files[name]["run"] == "dead"]
    )
    assert not journal_path(big).exists()
    files = read_registry(big)
    assert "doomed/a" not in files and "kept/a" in files


def test_dropping_from_a_large_registry_writes_one_journal_line(big, tmp_path, monkeypatch):
    add_to_registry(big, {"doomed/a": entry("dead", 1), "kept/a": entry("alive", 2)})
    add_to_registry(big, {"doomed/b": entry("dead", 3)})
    before = big.read_bytes()
    dropped = drop_from_registry(big, lambda name, e: e["run"] == "dead")
    assert dropped == {"doomed/a": entry("dead", 1), "doomed/b": entry("dead", 3)}
    assert big.read_bytes() == before  # the big file is not rewritten
    last = orjson.loads(journal_path(big).read_bytes().splitlines()[-1])
    assert last == {"set": {}, "drop": ["doomed/a", "doomed/b"]}
    assert drop_from_registry(big, lambda name, e: e["run"] == "dead") == {}  # nothing: no line
    assert len(journal_path(big).read_bytes().splitlines()) == 3
    fold_journal(big, force=True)
    # the same drop on a small registry (rewritten): the same file
    monkeypatch.delenv(registry.JOURNAL_BYTES_ENV)
    small = tmp_path / "small" / "hash_registry.json"
    update_registry(
        small, lambda files: files.update({f"bulk/{i:05d}": entry("seed", i) for i in range(2_000)})
    )
    add_to_registry(small, {"doomed/a": entry("dead", 1), "kept/a": entry("alive", 2)})
    add_to_registry(small, {"doomed/b": entry("dead", 3)})
    assert drop_from_registry(small, lambda name, e: e["run"] == "dead") == dropped
    assert not journal_path(small).exists()
    assert small.read_bytes() == big.read_bytes()


WRITER = """
import sys
sys.path.insert(0, {repo!r})
from scripts.utils.records.registry import add_to_registry, fold_journal
path, start = sys.argv[1], int(sys.argv[2])
for n in range(start, start + 100000):
    entry = {{"sha256": "0" * 64, "crc32": "0" * 8, "size": n, "run": "w"}}
    add_to_registry(path, {{f"k/{{n:06d}}": entry}})
    fold_journal(path)
    print(n, flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_at_random_moments_loses_no_acknowledged_entry(big, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO)))
    acknowledged, start = [], 0
    for delay in (0.05, 0.2, 0.11, 0.37, 0.02, 0.5, 0.23):
        writer = subprocess.Popen(
            [sys.executable, str(script), str(big), str(start)],
            stdout=subprocess.PIPE,
            env={**os.environ},
        )
        time.sleep(0.3 + delay)  # imports, then a while of appending and folding
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate()
        done = [int(line) for line in out.split()]
        acknowledged += done
        start = (done[-1] + 1) if done else start
        files = read_registry(big)  # never torn
        assert all(f"k/{n:06d}" in files for n in acknowledged)
        assert registry.checked_registry(read_json(big), big)
    assert len(acknowledged) > 20


def test_a_large_registry_gets_the_cheap_check_and_a_torn_one_the_full_error(big):
    registry.check_registry(big)  # head and tail only: passes
    data = big.read_bytes()
    big.write_bytes(data[: len(data) // 2])  # torn in the middle of an entry
    with pytest.raises(InputError) as caught:
        registry.check_registry(big)
    assert caught.value.details["file"].endswith("hash_registry.json")
    assert big.read_bytes() == data[: len(data) // 2]  # left as it is


def test_stat_caches_merge_what_two_writers_saved(tmp_path):
    registry_path = tmp_path / "data/hash_registry.json"
    registry_path.parent.mkdir()
    files = {}
    for name in ("a.bin", "b.bin", "c.bin"):
        files[name] = tmp_path / name
        files[name].write_bytes(name.encode())
    first = registry.StatCache.load(registry_path)
    first.remember("data/a.bin", registry.hash_file(files["a.bin"]))
    first.remember("@scans/b.bin", registry.hash_file(files["b.bin"]))
    first.save()

    reader = registry.StatCache.load(registry_path)
    assert reader.lookup("data/a.bin", os.stat(files["a.bin"]))["size"] == 5
    assert reader.lookup("@scans/b.bin", os.stat(files["b.bin"]))["size"] == 5
    other = registry.StatCache.load(registry_path)  # another process saves one more meanwhile
    other.remember("data/c.bin", registry.hash_file(files["c.bin"]))
    other.save()
    reader.remember("data/b.bin", registry.hash_file(files["b.bin"]))
    reader.save()
    last = registry.StatCache.load(registry_path)
    for name in ("data/a.bin", "data/b.bin", "data/c.bin", "@scans/b.bin"):
        assert last.lookup(name, os.stat(files[name.rpartition("/")[2]])) is not None, name
