import orjson
import pytest

from scripts.utils.compute import environment
from scripts.utils.jsonio import read_json
from tests.conftest import REPO, json_lines, run_script, single_error


def snapshot_of(workspace, env=None):
    result = run_script("orchestration", "env_check", "--workspace", workspace, env=env)
    assert result.returncode == 0, result.stderr
    return read_json(workspace / "env/environment.json")


def check(workspace, *args, env=None):
    return run_script(
        "orchestration", "env_check", "--check", *args, "--workspace", workspace, env=env
    )


def test_snapshot_has_every_section_and_a_stable_hash(workspace):
    first = snapshot_of(workspace)
    for section in (
        "os",
        "kernel",
        "python",
        "compiler",
        "cpu",
        "cpu_features",
        "blas",
        "cuda",
        "byte_relevant",
        "packages",
        "lock",
    ):
        assert section in first
    assert first["lock"]["matches"] is True and first["packages"]["numpy"]
    assert first["cuda"]["present"] in (True, False)
    assert any(first["cpu_features"].values())
    assert snapshot_of(workspace)["env_hash"] == first["env_hash"]
    assert "env/environment.json" in read_json(workspace / "data/hash_registry.json")["files"]


def test_thread_counts_do_not_change_the_hash(workspace, tmp_path):
    first = snapshot_of(workspace)
    other = tmp_path / "other"
    other.mkdir()
    second = snapshot_of(
        other, env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    )
    assert (
        second == first
    )  # the whole snapshot, not only the hash: make verify varies thread counts


def test_check_passes_against_itself(workspace):
    snapshot_of(workspace)
    result = check(workspace)
    assert result.returncode == 0, result.stderr
    printed = json_lines(result.stdout)[0]
    assert (
        printed["parity"] is True and printed["env_hash"]["saved"] == printed["env_hash"]["current"]
    )


def test_a_changed_result_field_fails_the_check(workspace):
    saved = snapshot_of(workspace)
    saved["packages"]["numpy"] = "0.0.1"
    saved["kernel"]["release"] = "elsewhere"
    saved["env_hash"] = "0" * 64
    (workspace / "env/environment.json").write_bytes(orjson.dumps(saved))
    result = check(workspace)
    assert result.returncode == 1
    error = single_error(result.stderr)
    assert (
        error["first"] == "packages.numpy" and error["differences"] == 1
    )  # the kernel is listed, not failing
    fields = {d["field"]: d["affects_results"] for d in json_lines(result.stdout)[0]["differences"]}
    assert fields == {"packages.numpy": True, "kernel.release": False}


def test_a_lock_mismatch_fails_the_check(workspace, tmp_path):
    snapshot_of(workspace)
    lock = tmp_path / "requirements.lock"
    text = (REPO / "requirements.lock").read_text()
    lock.write_text(
        text.replace("orjson==", "orjson==0.0.0.post", 1).replace(
            "\nuv==", "\nnot-installed-pkg==1.0\nuv==", 1
        )
    )
    result = check(workspace, "--lock", lock)
    assert result.returncode == 1
    assert single_error(result.stderr)["first"] == "lock"


def test_lock_comparison_honours_markers():
    locked = environment.locked_packages()
    installed = environment.installed_packages()
    assert locked["numpy"] == installed["numpy"]  # exactly one numpy line holds for this Python
    assert "colorama" not in locked or installed.get("colorama")  # win32-only pin skipped elsewhere
    result = environment.compare_with_lock(
        {"a": "1", "b": "2", "pip": "9"}, {"a": "1", "b": "3", "c": "1"}
    )
    assert result == {
        "missing": ["c"],
        "extra": [],
        "mismatched": {"b": {"locked": "3", "installed": "2"}},
        "matches": False,
    }


@pytest.mark.parametrize("content", [b"{}", b"[1, 2]", b"not json"])
def test_a_bad_snapshot_is_bad_input(workspace, content):
    (workspace / "env").mkdir(parents=True)
    (workspace / "env/environment.json").write_bytes(content)
    result = check(workspace)
    assert result.returncode == 2 and single_error(result.stderr)["event"] == "bad_input"


def test_run_records_use_the_same_hash(workspace):
    from scripts.utils.records.run_records import RunRecorder

    with RunRecorder("demo", workspace=workspace) as run:
        pass
    report = read_json(workspace / f"experiments/results/{run.run_id}.json")
    assert report["env_hash"] == snapshot_of(workspace)["env_hash"]
