"""The local index beside a registry: the mirror of its entries by folder, kept up to date from
the journal, and the index's own recovery from damage."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from scripts.utils.records import local_index, registry
from scripts.utils.records.registry import (
    add_to_registry,
    entries_in_folders,
    fold_journal,
    read_registry,
    update_registry,
)
from tests.conftest import REPO
from tests.utils.records.test_registry import entry


@pytest.fixture
def big(tmp_path, monkeypatch):
    """A registry of 2,000 entries in 20 folders, counted as large (the journal takes appends)."""
    monkeypatch.setenv(registry.JOURNAL_BYTES_ENV, "1000")
    path = tmp_path / "data" / "hash_registry.json"
    update_registry(
        path,
        lambda files: files.update(
            {f"@scans/d{i // 100:02d}/f{i:05d}": entry("seed", i) for i in range(2_000)}
        ),
    )
    return path


def in_folders(path, folders):
    """What the mirror answers, checked against the registry read whole."""
    found, state = entries_in_folders(path, folders)
    whole = read_registry(path)
    assert found == {
        name: value for name, value in whole.items() if local_index.folder_of(name) in folders
    }
    assert state == registry.registry_state(path)
    return found


def mirror_rebuilds(path):
    """How often the mirror was rebuilt from the whole registry: the rows of a sentinel entry
    planted in it disappear only then."""
    db = sqlite3.connect(local_index.path_for(path))
    with db:
        db.execute("INSERT OR REPLACE INTO entries VALUES ('zz', 'zz/sentinel', x'7b7d')")
    db.close()


def sentinel_kept(path):
    db = sqlite3.connect(local_index.path_for(path))
    kept = db.execute("SELECT count(*) FROM entries WHERE folder = 'zz'").fetchone()[0]
    db.close()
    return kept == 1


def test_the_mirror_follows_journal_lines_without_a_rebuild(big):
    assert len(in_folders(big, {"@scans/d03"})) == 100
    mirror_rebuilds(big)
    add_to_registry(big, {"@scans/d03/new": entry("r1", 1)}, drop=["@scans/d03/f00300"])
    add_to_registry(big, {"@scans/d04/f00400": entry("r2", 2)})
    found = in_folders(big, {"@scans/d03", "@scans/d04"})
    assert "@scans/d03/new" in found and "@scans/d03/f00300" not in found
    assert found["@scans/d04/f00400"]["run"] == "r2"
    assert sentinel_kept(big)  # the two lines applied, nothing read whole


def test_a_fold_carries_the_mirror_over_and_a_foreign_rewrite_rebuilds_it(big):
    add_to_registry(big, {"@scans/d05/new": entry("r1", 1)})
    in_folders(big, {"@scans/d05"})
    mirror_rebuilds(big)
    assert fold_journal(big, force=True)
    assert "@scans/d05/new" in in_folders(big, {"@scans/d05"})
    assert sentinel_kept(big)  # the fold changed the file, not the entries
    update_registry(big, lambda files: files.pop("@scans/d05/new"))  # a rewrite with a change
    assert "@scans/d05/new" not in in_folders(big, {"@scans/d05"})
    assert not sentinel_kept(big)


def test_a_journal_cut_back_and_written_again_is_not_taken_for_growth(big):
    undo = add_to_registry(big, {"@scans/d06/a": entry("r1", 1)})
    in_folders(big, {"@scans/d06"})
    undo()  # the commit failed: its line is cut off
    add_to_registry(big, {"@scans/d06/b": entry("r2", 22)})  # a longer line in its place
    found = in_folders(big, {"@scans/d06"})
    assert "@scans/d06/a" not in found and "@scans/d06/b" in found


def test_a_damaged_index_is_replaced_and_a_missing_one_costs_only_time(big):
    in_folders(big, {"@scans/d07"})
    local_index.path_for(big).write_bytes(b"not a database at all" * 100)
    assert len(in_folders(big, {"@scans/d07"})) == 100
    local_index.discard(big)
    assert len(in_folders(big, {"@scans/d07"})) == 100


def test_no_index_where_none_can_be_written(tmp_path):
    missing = tmp_path / "no such folder" / "hash_registry.json"
    assert local_index.open_index(missing) is None
    assert entries_in_folders(missing, {""}) is None


def test_the_json_stat_caches_of_earlier_versions_are_removed_when_the_index_is_made(tmp_path):
    path = tmp_path / "hash_registry.json"
    legacy = [tmp_path / ".hash_registry.json.statcache.json"]
    legacy.append(tmp_path / ".hash_registry.json.@scans.statcache.json")
    other = tmp_path / ".other.json.statcache.json"
    for file in [*legacy, other]:
        file.write_bytes(b'{"files": {}}')
    with local_index.opened(path) as db:
        assert db is not None
    assert not any(file.exists() for file in legacy) and other.exists()


SAVER = """
import os, sys
sys.path.insert(0, {repo!r})
from scripts.utils.records.registry import StatCache, hash_file
registry, target = sys.argv[1], sys.argv[2]
hashed = hash_file(target)
round = 0
while True:
    cache = StatCache.load(registry)
    for index in range(5000):
        cache.remember(f"@scans/d{{round % 7}}/f{{index:05d}}", hashed)
    cache.save()
    print(round, flush=True)
    round += 1
"""


def test_a_stat_cache_save_killed_anywhere_leaves_a_usable_index(tmp_path):
    registry_path = tmp_path / "data" / "hash_registry.json"
    registry_path.parent.mkdir()
    target = tmp_path / "a.bin"
    target.write_bytes(b"some bytes")
    script = tmp_path / "saver.py"
    script.write_text(SAVER.format(repo=str(REPO)))
    saved = 0
    for kills, delay in enumerate((0.05, 0.31, 0.12, 0.47, 0.2), start=1):
        saver = subprocess.Popen(
            [sys.executable, str(script), str(registry_path), str(target)], stdout=subprocess.PIPE
        )
        time.sleep(0.4 + delay)  # imports, then saves
        saver.send_signal(signal.SIGKILL)
        out, _ = saver.communicate()
        rounds = out.split()
        saved += len(rounds)
        db = sqlite3.connect(local_index.path_for(registry_path))
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        unstamped = db.execute("SELECT count(*) FROM generations WHERE written_ns IS NULL")
        # each kill may leave its save's rows unstamped (never trusted): at most one per kill
        assert unstamped.fetchone()[0] <= kills
        db.close()
        if rounds:  # this saver's last finished round is in, and trusted (the killed one,
            # writing the next folder, may have left its rows unstamped: untrusted, by design)
            folder = int(rounds[-1]) % 7
            cache = registry.StatCache.load(registry_path)
            assert cache.lookup(f"@scans/d{folder}/f00000", os.stat(target)) is not None
    assert saved > 5
