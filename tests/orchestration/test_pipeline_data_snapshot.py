"""The pipeline's data fingerprint after a change reads only the changed folders, and is the
fingerprint a full read gives."""

import random

import pytest

from scripts.orchestration import pipeline
from scripts.orchestration.pipeline import DataSnapshot
from scripts.utils.records import local_index
from scripts.utils.records.data_roots import collect_inputs
from scripts.utils.records.registry import REGISTRY, StatCache
from scripts.utils.records.tree_snapshots import TreeSnapshots
from tests.data_tools.test_hash_integrity import edit_at_random, make_old, scans_tree


def fingerprint(workspace, root):
    """The fingerprint as the pipeline takes it, and how many files were read for it."""
    inputs = collect_inputs(workspace, [root], "scans", bind=False)
    cache = StatCache.load(workspace / REGISTRY)
    result = DataSnapshot(workspace, inputs).fingerprint(cache)
    return result, inputs


def full_fingerprint(workspace, root):
    """The same with no snapshot and no stat cache to lean on."""
    TreeSnapshots.path_for(workspace / REGISTRY).unlink(missing_ok=True)
    local_index.discard(workspace / REGISTRY)
    return fingerprint(workspace, root)[0]


@pytest.mark.parametrize("seed", [3, 4])
def test_the_fingerprint_after_edits_is_the_full_one(tmp_path, seed, monkeypatch):
    workspace = tmp_path / "ws"
    (workspace / "data").mkdir(parents=True)
    root = tmp_path / "scans"
    scans_tree(root)
    make_old(root)
    first, _ = fingerprint(workspace, root)
    assert fingerprint(workspace, root)[0] == first  # the snapshot: the same listing
    rng = random.Random(seed)
    looked_at, whole = [], pipeline.folder_contents

    def watched(inputs, files, *rest):
        looked_at.append(len(files))
        return whole(inputs, files, *rest)

    partial = 0
    for _ in range(6):
        edit_at_random(root, rng)
        looked_at.clear()
        monkeypatch.setattr(pipeline, "folder_contents", watched)
        quick, inputs = fingerprint(workspace, root)
        monkeypatch.setattr(pipeline, "folder_contents", whole)
        partial += looked_at[0] < len(inputs.files)
        assert quick == full_fingerprint(workspace, root)  # also leaves a fresh snapshot
        make_old(root)
        fingerprint(workspace, root)  # the snapshot the next round compares with
    assert partial >= 3  # reads that were not the whole tree did happen
