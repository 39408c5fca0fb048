"""The checker's verdict in words (crates.claim_lines, crates.verdict_text)."""

from scripts.utils.records import crates

CAUSE = {
    "variations": ["threads"],
    "artifacts": [{"artifact": "out/model.pt", "differences": [{"where": "fc.weight"}]}],
    "changed": ["OMP_NUM_THREADS 1 -> 2"],
    "fix": "pin the thread count",
}


def verify_claim(**changes) -> dict:
    claim = {"identical": False, "artifacts": 3, "differing": 1, "varied": ["time", "threads"]}
    return {**claim, "causes": [CAUSE], "unexplained": [], **changes}


def test_a_verify_that_found_differences_says_so_with_each_cause_by_name():
    lines = crates.claim_lines(verify_claim())
    assert lines[0].startswith("claim      NOT identical: 1 of 3 artifacts differ")
    assert lines[1] == "cause      threads: out/model.pt (fix: pin the thread count)"
    assert not any("{" in line for line in lines)  # words, not a dump of the record


def test_an_identical_verify_names_its_variations():
    (line,) = crates.claim_lines(verify_claim(identical=True, differing=0, causes=[]))
    assert "identical: 3 artifacts" in line and "(time, threads)" in line


def test_many_causes_stay_on_one_screen():
    lines = crates.claim_lines(verify_claim(causes=[CAUSE] * 9, unexplained=["a", "b"]))
    assert len(lines) == 1 + 5 + 1 + 1
    assert (
        lines[-2].endswith("and 4 more (--json)") and "2 artifacts differ unexplained" in lines[-1]
    )


def test_a_rerun_and_a_record_are_told_in_words():
    rerun = {"run": "r1", "identical": False, "outputs": 4, "differing": 2, "forced": ["x"]}
    assert crates.claim_lines(rerun) == [
        "claim      re-run of r1 NOT identical: 2 of 4 outputs differ; forced: x"
    ]
    assert crates.claim_lines({"recorded": True}) == [
        "claim      recorded: these files came from these runs"
    ]


def test_a_verified_crate_that_claims_a_difference_is_not_read_as_a_match():
    verdict = {
        "crate": "c",
        "ok": True,
        "failures": [],
        "files": 2,
        "key": "k",
        "profile": {"issues": []},
        "statement": {"predicate": {"kind": "verify", "claim": verify_claim(), "runs": {}}},
    }
    text = crates.verdict_text(verdict)
    assert "VERIFIED" in text and "a claim that the runs differ" in text
    assert "reads      not traced" in text  # no run record: nothing was traced


def test_the_reads_line_tells_undeclared_reads_and_untraced_commands_apart():
    predicate = {"runs": {"r1": "x", "r2": "y"}, "read_but_not_declared": {"r1": ["a", "b"]}}
    assert crates.reads_text(predicate) == "r1: 2 read but not declared"
    predicate["reads_not_traced"] = ["r2"]
    assert crates.reads_text(predicate).endswith("not traced for r2 (its command runs no Python)")
    assert crates.reads_text({"runs": {"r1": "x"}}) == "every file read was declared"
