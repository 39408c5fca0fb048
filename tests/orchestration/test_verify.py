import sys
from pathlib import Path

import pytest

from scripts.orchestration import verify as vf
from scripts.orchestration.variations import other_locale
from scripts.utils.json_logger import JsonLogger
from scripts.utils.jsonio import read_json
from scripts.utils.records import crates, signing
from tests.conftest import REPO, json_lines, run_script, single_error

LEAKY_STEP = REPO / "tests/orchestration/leaky_step.py"  # writes through our run records
PIPELINE = REPO / "tests/orchestration/leaky_pipeline.py"  # a researcher's own script: plain files
# leak -> (artifact, place) it must be found at
PLACES = {
    "hashseed": ("out/model.json", "$.classes"),
    "tz": ("out/model.json", "$.trained_local"),
    "path": ("out/paths.txt", "line 1"),
    "umask": ("out/bundle.tar", "data.txt: mode"),
    "locale": ("out/locale.txt", "line 1"),
    "threads": ("out/sums.csv", "row 2, column total"),
    "cpu": ("out/matmul.npy", "array"),
    "workers": ("out/order.jsonl", "line "),
    "resume": ("out/state.json", "$.starts"),
}


def verify(workspace, *args):
    return run_script(
        "orchestration", "verify", *args, "--workspace", workspace, cwd=workspace, timeout=600
    )


def pipeline(*leaks) -> str:
    return f"{sys.executable} {PIPELINE} {{workspace}}/out {' '.join(leaks)}"


def test_every_leak_in_a_foreign_pipeline_is_caught_placed_and_bisected_to_exactly_its_cause(
    workspace,
):
    leaks = [leak for leak in PLACES if leak != "locale" or other_locale()]
    result = verify(workspace, "--command", pipeline(*leaks))
    assert result.returncode == 1, result.stderr
    summary = json_lines(result.stdout)[0]
    assert summary["identical"] is False and summary["unexplained"] == []
    found = {}
    for cause in summary["causes"]:
        assert not cause["interaction"], cause
        for artifact in cause["artifacts"]:
            for item in artifact["differences"]:
                found.setdefault((artifact["artifact"], item["where"]), set()).update(
                    cause["variations"]
                )
    for leak in leaks:
        artifact, place = PLACES[leak]
        causes = [c for (a, where), c in found.items() if a == artifact and where.startswith(place)]
        assert causes and all(c == {leak} for c in causes), (leak, causes)
    model = {frozenset(c) for (a, _), c in found.items() if a == "out/model.json"}
    assert model == {
        frozenset({"hashseed"}),
        frozenset({"tz"}),
    }  # two leaks in one file: two causes
    assert {a for a, _ in found} == {PLACES[leak][0] for leak in leaks}  # nothing else blamed
    error = single_error(result.stderr)
    report = read_json(workspace / error["report"])
    assert report["status"] == "check_failed" and set(error["causes"]) == set(leaks)
    hashseed = next(c for c in report["results"]["causes"] if c["variations"] == ["hashseed"])
    assert hashseed["artifacts"][0]["differences"][0]["first"] in (
        "bird",
        "cat",
        "dog",
        "fish",
        "owl",
    )


def test_a_difference_that_needs_two_variations_together_is_an_interaction(workspace):
    result = verify(
        workspace,
        "--command",
        pipeline("tz*threads"),
        "--vary",
        "tz",
        "--vary",
        "threads",
        "--vary",
        "hashseed",
    )
    assert result.returncode == 1, result.stderr
    [cause] = json_lines(result.stdout)[0]["causes"]
    assert cause["variations"] == ["tz", "threads"] and cause["interaction"]
    assert [a["artifact"] for a in cause["artifacts"]] == ["out/both.txt"]


def test_a_steady_foreign_pipeline_is_identical_and_every_file_it_writes_counts(workspace):
    result = verify(workspace, "--command", pipeline(), "--exclude", "out/data.txt")
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[0]
    assert (
        summary["identical"]
        and summary["artifacts"] == 7
        and set(summary["varied"]) >= {"cpu", "workers", "resume"}
    )
    assert all(row["pass"] for row in summary["spec_table"].values())


@pytest.mark.parametrize(
    "command, words",
    [
        ('{python} -c "pass"', "wrote no file"),
        ('{python} -c "raise SystemExit(3)"', "command failed"),
        ("/no/such/program {workspace}", "cannot start"),
    ],
)
def test_a_command_that_writes_nothing_or_fails_is_bad_input(workspace, command, words):
    result = verify(
        workspace,
        "--command",
        command.format(python=sys.executable, workspace="{workspace}"),
        "--no-bisect",
    )
    assert result.returncode == 2
    assert words in single_error(result.stderr)["error"]


def test_a_pipeline_with_run_records_is_explained_through_its_files_too(workspace):
    result = verify(
        workspace,
        "--command",
        f"{sys.executable} {LEAKY_STEP} tz --workspace {{workspace}}",
        "--vary",
        "tz",
        "--vary",
        "hashseed",
    )
    assert result.returncode == 1, result.stderr
    summary = json_lines(result.stdout)[0]
    [cause] = summary["causes"]
    assert cause["variations"] == ["tz"]
    artifacts = {a["artifact"].rsplit("/", 1)[-1] for a in cause["artifacts"]}
    assert "value.txt" in artifacts and "stable.json" not in artifacts


def test_the_real_pipeline_is_identical_under_every_variation(workspace):
    result = verify(workspace, "--phases", "phase5,phase9", "--no-bisect", "--certify")
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[0]
    # every step declares what it reads (the archive step reads a run it moved; an experiment
    # reads back what it wrote)
    envelope = (Path(summary["crate"]) / crates.ENVELOPE).read_bytes()
    assert signing.payload_of(envelope)["predicate"]["read_but_not_declared"] == {}
    assert set(summary["varied"]) >= {
        "cpu",
        "workers",
        "resume",
        "tz",
        "hashseed",
        "threads",
        "path",
    }
    table = summary["spec_table"]
    assert all(row["pass"] for row in table.values())
    assert set(table) == {
        "hash_reproducibility",
        "environment_parity",
        "dataset_split_determinism",
        "visualization_energy_drift",
    }
    assert table["environment_parity"][
        "env_hash"
    ]  # under cpu the hashes may differ: set aside, and said so
    assert any(r["event"] == "killed_for_resume" for r in json_lines(result.stderr))


def test_resume_kills_at_a_seeded_point_within_the_first_runs_time():
    points = {vf.resume_point(str(epoch), 10.0) for epoch in range(50)}
    assert min(points) >= 5.0 and max(points) <= 8.0 and len(points) > 40
    assert vf.resume_point("1761912000", 10.0) == vf.resume_point("1761912000", 10.0)


def test_a_resume_run_that_ends_before_the_kill_runs_again_from_an_empty_workspace(tmp_path):
    script = tmp_path / "append.py"
    script.write_text("open('runs.txt', 'a').write('one run\\n')\n")
    log = JsonLogger("verify", log_file=tmp_path / "log.jsonl")
    runs = vf.Runs([f"{sys.executable} {script}"], tmp_path / "scratch", "1761912000", log)
    runs.first_run_seconds = 30.0  # the kill point lies far beyond this quick command's end
    workspace = runs.run("resumed", {"resume"})
    log.close()
    assert (workspace / "runs.txt").read_text() == "one run\n"  # not two runs in one workspace
    events = [row["event"] for row in json_lines((tmp_path / "log.jsonl").read_bytes())]
    assert "resume_not_killed" in events


def test_the_terminal_summary_fits_one_screen():
    summary = {
        "identical": False,
        "artifacts": 9,
        "differing": 2,
        "varied": ["tz", "hashseed"],
        "runs": 7,
        "spec_table": {
            "hash_reproducibility": {"pass": False},
            "environment_parity": {
                "pass": True,
                "note": "another CPU was simulated (cpu): expected",
            },
        },
        "causes": [
            {
                "variations": ["hashseed"],
                "interaction": False,
                "changed": ["PYTHONHASHSEED 0 -> 12345"],
                "fix": "sort sets",
                "artifacts": [
                    {"artifact": "out/model.json", "differences": [{"where": "$.classes[0]"}]}
                ],
            },
            {
                "variations": ["tz", "threads"],
                "interaction": True,
                "artifacts": [
                    {"artifact": f"out/{n}.csv", "differences": [{"where": "row 2, column a"}]}
                    for n in range(9)
                ],
            },
        ],
        "unexplained": [],
        "report": "experiments/results/verify_x.json",
    }
    text = vf.summary_text(summary)
    assert text.startswith("DIFFERENT: 9 artifacts, 2 differ; 7 runs; varied: tz, hashseed")
    assert "  FAIL  hash_reproducibility" in text
    assert (
        "cause: hashseed\n  changed: PYTHONHASHSEED 0 -> 12345\n  fix: sort sets\n  "
        "out/model.json: $.classes[0]" in text
    )
    assert "cause: tz + threads (together)" in text and "... and 7 more artifacts" in text
    assert len(text.splitlines()) <= 24
    many = {
        **summary,
        "causes": [
            {**summary["causes"][1], "variations": [v]}
            for v in ("path", "time", "tz", "locale", "umask", "hashseed", "threads", "cpu", "cpus")
        ],
    }
    lines = vf.summary_text(many).splitlines()
    assert len(lines) <= 24 and lines[-2].startswith("... and 6 more causes: locale, umask")
    narrow = vf.summary_text(many, width=80).splitlines()
    assert narrow[0] == "DIFFERENT: 9 artifacts, 2 differ; 7 runs; varied: tz, hashseed"
    assert len(narrow) == len(lines) and max(map(len, narrow)) <= 80 and narrow[-2].endswith(" ...")
