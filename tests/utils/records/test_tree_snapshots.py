import os
import time

import orjson

from scripts.utils.records.data_roots import collect_inputs
from scripts.utils.records.registry import journal_path, registry_state
from scripts.utils.records.tree_snapshots import (
    TreeSnapshots,
    registry_moved_on,
)

SCOPES = ["data/tree"]


def tree(tmp_path, files=5):
    root = tmp_path / "data/tree"
    root.mkdir(parents=True)
    for index in range(files):
        (root / f"f{index}.bin").write_bytes(bytes([index]) * 100)
    return root


def stat_digest(root):
    inputs = collect_inputs(root.parents[1], [root])
    return inputs.stat_digest, inputs.newest_ns


def older_than_now(root):
    """Every file a second in the past, so that a snapshot written now can vouch for them."""
    for path in root.iterdir():
        past = path.stat().st_mtime_ns - 10**9
        os.utime(path, ns=(past, past))


def test_the_digest_follows_names_and_stats_and_nothing_else(tmp_path):
    root = tree(tmp_path)
    first = stat_digest(root)
    assert stat_digest(root) == first  # listed again: the same
    target = root / "f1.bin"
    info = target.stat()
    time.sleep(0.05)  # past the file system's clock tick (coarse: a few ms)
    target.write_bytes(b"\x09" * 100)  # same size; the mtime put back: the ctime still moves
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert stat_digest(root)[0] != first[0]
    renamed = stat_digest(root)
    (root / "f2.bin").rename(root / "g2.bin")
    assert stat_digest(root)[0] != renamed[0]
    changed = stat_digest(root)
    (root / "link").symlink_to(root / "g2.bin")  # skipped, and still part of the listing
    assert stat_digest(root)[0] != changed[0]


def test_a_snapshot_is_trusted_only_for_files_older_than_itself(tmp_path):
    root = tree(tmp_path)
    registry = tmp_path / "data/hash_registry.json"
    older_than_now(root)
    digest, newest = stat_digest(root)
    snapshots = TreeSnapshots.load(registry)
    snapshots.remember("check", SCOPES, digest, {"files": 5})
    snapshots.save()
    assert TreeSnapshots.load(registry).lookup("check", SCOPES, digest, newest) == (
        {"files": 5},
        None,
    )
    assert TreeSnapshots.load(registry).lookup("check", ["data/other"], digest, newest) is None
    assert TreeSnapshots.load(registry).lookup("other", SCOPES, digest, newest) is None
    # a file changed in the clock tick the snapshot was written in: not vouched for
    path = TreeSnapshots.path_for(registry)
    os.utime(path, ns=(newest, newest))
    assert TreeSnapshots.load(registry).lookup("check", SCOPES, digest, newest) is None


def test_the_registry_may_grow_by_other_files_but_not_change_under_the_scope(tmp_path):
    registry = tmp_path / "data/hash_registry.json"
    registry.parent.mkdir(parents=True)
    registry.write_bytes(b'{"files": {}}\n')
    journal = journal_path(registry)

    def append(name):
        with open(journal, "ab") as handle:
            handle.write(orjson.dumps({"set": {name: {"sha256": "0" * 64}}}) + b"\n")

    append("experiments/results/a.json")
    token = registry_state(registry)
    assert registry_moved_on(registry, token, SCOPES) == token
    append("experiments/results/b.json")
    moved_on = registry_moved_on(registry, token, SCOPES)
    assert moved_on is not None and moved_on["journal"][1] > token["journal"][1]
    with open(journal, "ab") as handle:  # a torn line (a writer killed mid-line) is not read
        handle.write(b'{"set": {"data/tree/f0.bin"')
    assert registry_moved_on(registry, token, SCOPES) == moved_on
    append("data/tree/f0.bin")  # the torn line and this one: a change under the scope
    assert registry_moved_on(registry, token, SCOPES) is None
    journal.write_bytes(b"")  # the journal cut back
    assert registry_moved_on(registry, token, SCOPES) is None
    fresh = registry_state(registry)
    registry.write_bytes(b'{"files": {} }\n')  # the file rewritten (a fold)
    assert registry_moved_on(registry, fresh, SCOPES) is None


def test_the_newest_64_snapshots_are_kept(tmp_path):
    registry = tmp_path / "hash_registry.json"
    for index in range(70):
        snapshots = TreeSnapshots.load(registry)
        snapshots.remember("check", [f"scope{index}"], "d", index)
        snapshots.save()
    kept = orjson.loads(TreeSnapshots.path_for(registry).read_bytes())["snapshots"]
    assert len(kept) == 64
    assert TreeSnapshots.key("check", ["scope69"]) in kept
    assert TreeSnapshots.key("check", ["scope5"]) not in kept
