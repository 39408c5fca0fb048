"""Proof crates: certify a phase, a run of a scikit-learn script and a verify; check them offline;
catch every kind of tampering, each named."""

import base64
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import orjson
import pydicom
import pytest

from scripts.utils.records import crates, signing
from scripts.utils.records.crates import check_crate
from tests.conftest import json_lines, run_script, single_error, small_experiment
from tests.orchestration.test_pipeline import phase
from tests.visualization.test_html_report import chromium

TRAINING = Path(__file__).with_name("training")


def certify(workspace, *args):
    result = run_script("orchestration", "certify", *args, "--workspace", workspace, timeout=600)
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout)[0]


def check_proof(crate, *args):
    return run_script("orchestration", "check_proof", crate, *args, timeout=600)


def crate_bytes(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def phase_crate(tmp_path_factory):
    os.environ["SOURCE_DATE_EPOCH"] = "1761912000"  # module fixtures run before the autouse one
    workspace = tmp_path_factory.mktemp("proof") / "ws"
    workspace.mkdir()
    result = phase(workspace, "phase5")
    assert result.returncode == 0, result.stderr
    summary = certify(workspace, "phase5")
    return workspace, Path(summary["crate"])


@pytest.fixture
def crate_copy(phase_crate, tmp_path):
    copy = tmp_path / "crate"
    shutil.copytree(phase_crate[1], copy)
    return copy


def test_a_phase_crate_checks_out_offline_and_is_the_same_bytes_twice(phase_crate, tmp_path):
    workspace, crate = phase_crate
    result = check_proof(crate)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"VERIFIED" in result.stdout and b"provenance-run-crate 0.5: conforms" in result.stdout
    assert b"reads      every file read was declared" in result.stdout
    again = certify(workspace, "phase5", "--out", tmp_path / "again")
    assert crate_bytes(Path(again["crate"])) == crate_bytes(crate)


def test_every_output_is_listed_with_its_digest_and_the_action_that_made_it(phase_crate):
    workspace, crate = phase_crate
    graph = {e["@id"]: e for e in orjson.loads((crate / crates.METADATA).read_bytes())["@graph"]}
    registry = orjson.loads((workspace / "data/hash_registry.json").read_bytes())["files"]
    made_by = {}
    for entity_id, entity in graph.items():
        if entity.get("@type") == "CreateAction" and entity_id.startswith("#run-"):
            for result in entity["result"]:
                made_by[result["@id"]] = entity_id
    statement = signing.payload_of((crate / crates.ENVELOPE).read_bytes())
    not_enclosed = statement["predicate"]["not_enclosed"]
    assert not_enclosed and all(name.endswith(".dcm") for name in not_enclosed)
    for name, entry in registry.items():
        entity_id = name if name not in not_enclosed else f"#not-enclosed/{name}"
        assert graph[entity_id]["sha256"] == entry["sha256"], name
        assert graph[entity_id]["contentSize"] == str(entry["size"])
        assert made_by[entity_id] == f"#run-{entry['run']}", name
        assert (crate / name).is_file() == (name not in not_enclosed)
    signed = {s["name"] for s in statement["subject"]}
    assert signed == set(crates.enclosed_digests(crate))
    assert statement["predicateType"] == signing.PREDICATE_TYPE


def test_no_dicom_and_no_value_de_identification_removes_travels_in_a_crate(phase_crate):
    workspace, crate = phase_crate
    removed = set()
    for path in (workspace / "data").rglob("*.dcm"):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName"):
            value = str(header.get(keyword, "") or "")
            if len(value) >= 4:
                removed.add(value.encode())
    assert removed
    for name, data in crate_bytes(crate).items():
        assert data[128:132] != b"DICM", name
        for value in removed:
            assert value not in data, (name, value)


def tamper_changed_byte(crate):
    target = crate / "experiments/results/phase5/metrics.csv"
    data = bytearray(target.read_bytes())
    data[10] ^= 1
    target.write_bytes(bytes(data))
    return ["experiments/results/phase5/metrics.csv: SHA-256", "(changed)"]


def tamper_removed_file(crate):
    (crate / "experiments/results/phase5/metrics.csv").unlink()
    return ["experiments/results/phase5/metrics.csv: signed but missing from the crate (removed)"]


def tamper_added_file(crate):
    (crate / "experiments/results/phase5/extra.txt").write_text("not from the run\n")
    return ["experiments/results/phase5/extra.txt: in the crate but not signed (added)"]


def tamper_file_replaced_by_a_link(crate, tmp_path):
    """Same bytes, kept outside the crate and linked in: the crate no longer holds them."""
    target = crate / "experiments/results/phase5/metrics.csv"
    outside = tmp_path / "metrics.csv"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)
    return ["experiments/results/phase5/metrics.csv: a symbolic link (a crate holds files only)"]


def tamper_edited_metadata(crate):
    path = crate / crates.METADATA
    data = path.read_bytes()
    assert b"CompletedActionStatus" in data
    path.write_bytes(data.replace(b"CompletedActionStatus", b"FailedActionStatus", 1))
    return ["ro-crate-metadata.json: SHA-256", "(changed)"]


def tamper_signed_by_another_key(crate, tmp_path):
    other = signing.workspace_signer(tmp_path / "intruder")
    statement = signing.payload_of((crate / crates.ENVELOPE).read_bytes())
    (crate / crates.ENVELOPE).write_bytes(signing.sign(other, statement))
    return [f"not by the given key {signing_key_id(crate)}"]


def tamper_swapped_public_key(crate, tmp_path):
    other = signing.workspace_signer(tmp_path / "intruder")
    (crate / crates.PUBLIC_KEY).write_bytes(signing.public_key_pem(other))
    return ["proof.dsse.json: the envelope is signed by key", other.public_key.keyid]


def signing_key_id(crate):
    return signing.public_key((crate / crates.PUBLIC_KEY).read_bytes()).keyid


@pytest.mark.parametrize(
    "tamper",
    [
        tamper_changed_byte,
        tamper_removed_file,
        tamper_added_file,
        tamper_edited_metadata,
        pytest.param(
            tamper_file_replaced_by_a_link,
            marks=pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges"),
        ),
        tamper_signed_by_another_key,
        tamper_swapped_public_key,
    ],
)
def test_each_kind_of_tampering_is_caught_and_named(crate_copy, tmp_path, tamper):
    assert check_crate(crate_copy, profile=False)["ok"]
    takes_a_folder = "key" in tamper.__name__ or "link" in tamper.__name__
    arguments = (crate_copy, tmp_path) if takes_a_folder else (crate_copy,)
    expected = tamper(*arguments)
    verdict = check_crate(crate_copy, profile=False)
    assert not verdict["ok"]
    text = "\n".join(verdict["failures"])
    for fragment in expected:
        assert fragment in text, text


def test_a_forgery_re_signed_with_its_own_key_is_caught_by_the_pinned_key(crate_copy, tmp_path):
    """Change a file, sign a new statement over the new digests with another key and enclose that
    key: everything is consistent inside the crate, so only the signer's published key tells."""
    published = (crate_copy / crates.PUBLIC_KEY).read_bytes()
    tamper_changed_byte(crate_copy)
    statement = signing.payload_of((crate_copy / crates.ENVELOPE).read_bytes())
    forged = crates.enclosed_digests(crate_copy)
    statement["subject"] = [{"name": n, "digest": {"sha256": d}} for n, d in forged.items()]
    intruder = signing.workspace_signer(tmp_path / "intruder")
    (crate_copy / crates.ENVELOPE).write_bytes(signing.sign(intruder, statement))
    (crate_copy / crates.PUBLIC_KEY).write_bytes(signing.public_key_pem(intruder))
    verdict = check_crate(crate_copy, profile=False)
    assert verdict["key"] == intruder.public_key.keyid  # the fingerprint to compare is printed
    pinned = check_crate(crate_copy, published, profile=False)
    assert not pinned["ok"]
    text = "\n".join(pinned["failures"])
    assert "the enclosed public key" in text and "is not the given key" in text, text
    assert "the envelope is signed by key" in text, text
    # the published fingerprint pins the signer as well as the published key does
    author = signing.public_key(published, "published").keyid
    by_id = check_proof(crate_copy, "--key", author, "--no-profile")
    assert by_id.returncode == 1, by_id.stdout
    assert f"is not the given key {author}" in by_id.stdout.decode()
    as_intruder = check_proof(crate_copy, "--key", intruder.public_key.keyid, "--no-profile")
    assert b"is not the given key" not in as_intruder.stdout  # that key did sign it


def test_the_profile_check_names_a_broken_rule_wherever_the_crate_lies(crate_copy, tmp_path):
    # the validator itself misreads a path with a space: it must still check there
    spaced = tmp_path / "sent by the authors" / "proof crate"
    spaced.parent.mkdir()
    shutil.copytree(crate_copy, spaced)
    assert check_crate(spaced)["ok"], check_crate(spaced)["failures"]
    path = spaced / crates.METADATA
    document = orjson.loads(path.read_bytes())
    for entity in document["@graph"]:
        entity.pop("programmingLanguage", None)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    verdict = check_crate(spaced)
    profile_failures = [f for f in verdict["failures"] if "profile provenance-run-crate" in f]
    assert any(
        "programmingLanguage" in f and "workflow-ro-crate-1.0_2.2" in f for f in profile_failures
    ), verdict["failures"]


def zipped(folder: Path, archive: Path, top: str = "") -> Path:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, top + path.relative_to(folder).as_posix())
    return archive


def test_a_crate_sent_as_a_zip_file_is_checked_and_a_hostile_one_refused(crate_copy, tmp_path):
    for top in ("", "proof/"):  # zipped from inside the folder, or with it
        archive = zipped(crate_copy, tmp_path / f"crate{len(top)}.zip", top)
        result = check_proof(archive, "--no-profile")
        assert result.returncode == 0 and b"VERIFIED" in result.stdout, result.stdout
        assert f"crate      {archive}".encode() in result.stdout
    tamper_changed_byte(crate_copy)
    changed = check_proof(zipped(crate_copy, tmp_path / "changed.zip"), "--no-profile")
    assert changed.returncode == 1 and b"(changed)" in changed.stdout
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(hostile, "w") as out:
        out.writestr("../outside.txt", b"escapes the folder")
    refused = check_proof(hostile)
    assert refused.returncode == 2, refused.stderr
    assert single_error(refused.stderr)["member"] == "../outside.txt"
    assert not (tmp_path / "outside.txt").exists()
    (tmp_path / "not.zip").write_bytes(b"plain text")
    assert check_proof(tmp_path / "not.zip").returncode == 2


def test_check_proof_exits_1_naming_each_failure_and_2_for_no_crate(crate_copy, tmp_path):
    tamper_removed_file(crate_copy)
    tamper_added_file(crate_copy)
    result = check_proof(crate_copy, "--no-profile")
    assert result.returncode == 1
    assert b"FAILED     3 checks" in result.stdout, result.stdout  # removed: signed and listed
    assert b"(removed)" in result.stdout and b"(added)" in result.stdout
    error = single_error(result.stderr)
    assert len(error["failures"]) == 3
    missing = check_proof(tmp_path / "nothing-here")
    assert missing.returncode == 2 and single_error(missing.stderr)["file"].endswith("nothing-here")


def test_the_preview_is_our_page_and_opens_in_chromium(phase_crate, tmp_path):
    _, crate = phase_crate
    page = (crate / crates.PREVIEW).read_text(encoding="utf-8")
    assert "<html" in page and "run_experiment" in page
    browser = chromium()
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
            "--dump-dom",
            (crate / crates.PREVIEW).as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert dom.returncode == 0 and b"run_experiment" in dom.stdout
    assert b"CONSOLE" not in dom.stderr, dom.stderr.decode(errors="replace")[-2000:]


def external_run(workspace, tmp_path, command: list, logdir: str) -> Path:
    """Record ``command`` as an external run (run_experiment); its report."""
    config = tmp_path / "experiment.toml"
    listed = ", ".join(f'"{arg}"' for arg in [sys.executable, *command, "--out", "{logdir}"])
    config.write_text(f'[experiment]\nkind = "external"\n[external]\ncommand = [{listed}]\n')
    result = run_script(
        "orchestration", "run_experiment", "--config", config,
        "--logdir", workspace / "experiments/results" / logdir,
        "--workspace", workspace, cwd=workspace,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return next((workspace / "experiments/results").glob("run_experiment_*.json"))


def test_a_run_of_a_scikit_learn_script_is_certified_with_its_code(workspace, tmp_path):
    shutil.copy(TRAINING / "sgd_digits.py", tmp_path)  # beside the config, named relatively
    report = external_run(workspace, tmp_path, ["sgd_digits.py"], "digits")
    summary = certify(workspace, report, "--out", tmp_path / "crate")
    crate = Path(summary["crate"])
    assert check_proof(crate).returncode == 0
    # the reviewer's folder: the crate, and the code the crate names by its hashes
    reviewer = tmp_path / "reviewer"
    shutil.copytree(crate, reviewer / "crate")
    shutil.copy(TRAINING / "sgd_digits.py", (reviewer / "code").mkdir() or reviewer / "code")
    rerun = run_script(
        "orchestration", "check_proof", "crate", "--rerun", "--code-dir", "code", "--json",
        cwd=reviewer, timeout=600,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert [step["identical"] for step in json_lines(rerun.stdout)[0]["rerun"]] == [True]
    without_code = check_proof(reviewer / "crate", "--rerun")  # run from elsewhere: no code
    assert without_code.returncode == 1
    assert "--code-dir" in single_error(without_code.stderr)["failures"][0]
    names = set(crates.enclosed_digests(crate))
    assert "experiments/results/digits/model.pkl" in names
    enclosed_report = next(crate.glob("experiments/results/run_experiment_*.json"))
    external = orjson.loads(enclosed_report.read_bytes())["external"]
    assert external  # the script's code hashes and its Python travel in the signed report
    workflow = orjson.loads((crate / crates.WORKFLOW).read_bytes())
    assert workflow["steps"][0]["external"][1].endswith("sgd_digits.py")
    code = external_code_in(crate)  # the script's code, by name and SHA-256, in the metadata
    predicate = signing.payload_of((crate / crates.ENVELOPE).read_bytes())["predicate"]
    assert "reads_not_traced" not in predicate  # a Python command is traced
    assert code == external["code"]["files"] and any(n.endswith("sgd_digits.py") for n in code)


@pytest.mark.skipif(shutil.which("cp") is None, reason="needs a cp program")
def test_a_command_that_runs_no_python_is_said_to_be_untraced(workspace, tmp_path):
    (tmp_path / "labels.txt").write_text("a,b\n")
    config = tmp_path / "experiment.toml"
    config.write_text(
        '[experiment]\nkind = "external"\n'
        f'[external]\ncommand = ["{shutil.which("cp")}", "labels.txt", "copied.txt"]\n'
    )
    result = run_script(
        "orchestration", "run_experiment", "--config", config, "--workspace", workspace,
        cwd=workspace,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = next((workspace / "experiments/results").glob("run_experiment_*.json"))
    crate = Path(certify(workspace, report, "--out", tmp_path / "crate")["crate"])
    predicate = signing.payload_of((crate / crates.ENVELOPE).read_bytes())["predicate"]
    assert predicate["reads_not_traced"] == [report.stem]  # not "every file read was declared"
    checked = check_proof(crate, "--no-profile")
    assert checked.returncode == 0 and b"(its command runs no Python)" in checked.stdout


def test_verify_certify_signs_the_verdict_over_every_compared_artifact(workspace, tmp_path):
    result = run_script(
        "orchestration",
        "verify",
        "--command",
        f"{sys.executable} {TRAINING / 'sgd_digits.py'} --out results",
        "--vary",
        "time",
        "--vary",
        "hashseed",
        "--certify",
        "--certify-out",
        tmp_path / "proof",
        "--workspace",
        workspace,
        cwd=workspace,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[0]
    crate = Path(summary["crate"])
    checked = check_proof(crate, "--json")
    assert checked.returncode == 0, checked.stdout
    statement = signing.payload_of((crate / crates.ENVELOPE).read_bytes())
    claim = statement["predicate"]["claim"]
    assert claim["identical"] and claim["varied"] == ["time", "hashseed"]
    assert set(claim["compared_sha256"]) == {
        "results/metrics.json",
        "results/confusion.csv",
        "results/model.pkl",
    }
    signed = {s["name"] for s in statement["subject"]}
    assert set(claim["compared_sha256"]) <= signed and summary["report"] in signed
    graph = orjson.loads((crate / crates.METADATA).read_bytes())["@graph"]
    comparison = next(e for e in graph if e["@id"] == "#comparison")
    assert comparison["@type"] == "AssessAction"
    assert re.search(r'"value": "true"', (crate / crates.METADATA).read_text())
    envelope = orjson.loads((crate / crates.ENVELOPE).read_bytes())
    assert orjson.loads(base64.b64decode(envelope["payload"])) == statement


READS_A_FILE = """
import argparse, json
from pathlib import Path
parser = argparse.ArgumentParser()
parser.add_argument("labels")
parser.add_argument("--out", default="results")
args = parser.parse_args()
labels = Path(args.labels).read_text().split(",")
Path(args.out, "metrics.json").write_text(json.dumps({"classes": len(labels)}))
"""


def test_a_file_read_but_not_declared_is_named_in_the_crate_and_its_page(workspace, tmp_path):
    labels = workspace / "data" / "labels.txt"  # put there by hand: no run declared it
    labels.parent.mkdir(parents=True)
    labels.write_text("cat,dog,bird\n")
    script = tmp_path / "train.py"
    script.write_text(READS_A_FILE)
    report = external_run(workspace, tmp_path, [script, labels], "labels")
    summary = certify(workspace, report, "--out", tmp_path / "crate")
    assert summary["read_but_not_declared"] == 1
    crate = Path(summary["crate"])
    checked = check_proof(crate)
    assert checked.returncode == 0
    assert f"reads      {report.stem}: 1 read but not declared".encode() in checked.stdout
    predicate = signing.payload_of((crate / crates.ENVELOPE).read_bytes())["predicate"]
    assert predicate["read_but_not_declared"] == {report.stem: ["data/labels.txt"]}
    assert (crate / "data/labels.txt").read_text() == "cat,dog,bird\n"  # enclosed, signed
    graph = {e["@id"]: e for e in orjson.loads((crate / crates.METADATA).read_bytes())["@graph"]}
    action = graph[f"#run-{report.stem}"]
    assert {"@id": "data/labels.txt"} in action["object"]
    assert "data/labels.txt" in graph[f"#undeclared-{report.stem}"]["description"]
    page = (crate / crates.PREVIEW).read_text(encoding="utf-8")
    section = page.split('<section id="undeclared-reads">')[1].split("</section>")[0]
    assert "data/labels.txt" in section


def test_a_rerun_certifies_that_the_record_alone_gave_the_same_outputs(workspace, tmp_path):
    report = small_experiment(workspace, "experiments/results/exp")
    path = workspace / "experiments/results" / f"{report['run_id']}.json"
    result = run_script(
        "orchestration",
        "rerun",
        path,
        "--force",
        "--certify",
        "--certify-out",
        tmp_path / "proof",
        "--workspace",
        workspace,
        cwd=workspace,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[0]
    crate = Path(summary["crate"])
    assert check_proof(crate).returncode == 0
    predicate = signing.payload_of((crate / crates.ENVELOPE).read_bytes())["predicate"]
    assert predicate["kind"] == "rerun" and predicate["claim"]["identical"]
    assert predicate["claim"]["outputs"] == len(report["outputs"]) > 0
    signed = set(crates.enclosed_digests(crate))
    assert set(report["outputs"]) <= signed and summary["report"] in signed


def test_the_pipeline_certifies_a_phase_on_a_named_data_root_without_its_path(
    phase_crate, tmp_path
):
    scans = tmp_path / "scans at a private path"
    shutil.copytree(phase_crate[0] / "data/sample/dicom", scans)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    # phase8: its archive step moves the experiment's run, then reads it to pack and check it
    result = phase(workspace, "phase8", "--data", scans, "--data-name", "cohort", "--certify")
    assert result.returncode == 0, result.stderr
    summary = [r for r in json_lines(result.stdout) if r.get("event") == "summary"][0]
    crate = Path(summary["crate"])
    assert crate == workspace / "experiments/proofs/phase8"
    assert check_proof(crate).returncode == 0
    predicate = signing.payload_of((crate / crates.ENVELOPE).read_bytes())["predicate"]
    assert predicate["read_but_not_declared"] == {}  # every step declares what it reads
    assert set(predicate["data_roots"]) == {"cohort"}
    assert predicate["data_roots"]["cohort"]["files"] > 0
    for name, data in crate_bytes(crate).items():
        assert str(tmp_path).encode() not in data, name  # no absolute path travels
        assert data[128:132] != b"DICM", name


def test_rerun_catches_an_author_who_signed_outputs_the_code_does_not_make(phase_crate, crate_copy):
    """Every check of the crate passes (the author's own key signed it, every digest agrees) but
    the split it holds is not the one the splitter makes: only re-running shows it. Every other
    step, re-run from the crate alone, gives its signed outputs."""
    workspace, _ = phase_crate
    split = next(crate_copy.glob("experiments/results/dataset_splitter_*/split.json"))
    report_path = split.parent.with_suffix(".json")
    name = split.relative_to(crate_copy).as_posix()
    forged = split.read_bytes().replace(b'"train"', b'"test"', 1)
    assert forged != split.read_bytes()
    split.write_bytes(forged)
    new_digest = crates.enclosed_digests(crate_copy)[name]
    report = orjson.loads(report_path.read_bytes())
    old_digest = report["outputs"][name]["sha256"]
    report["outputs"][name]["sha256"] = new_digest
    report_path.write_bytes(orjson.dumps(report, option=orjson.OPT_SORT_KEYS))
    metadata = crate_copy / crates.METADATA
    text = metadata.read_text().replace(old_digest, new_digest)
    report_name = report_path.relative_to(crate_copy).as_posix()
    graph = orjson.loads(text)
    for entity in graph["@graph"]:
        if entity.get("@id") == report_name:
            entity["sha256"] = crates.enclosed_digests(crate_copy)[report_name]
    metadata.write_bytes(orjson.dumps(graph, option=orjson.OPT_INDENT_2))
    statement = signing.payload_of((crate_copy / crates.ENVELOPE).read_bytes())
    statement["subject"] = [
        {"name": n, "digest": {"sha256": d}} for n, d in crates.enclosed_digests(crate_copy).items()
    ]
    author = signing.workspace_signer(workspace)
    (crate_copy / crates.ENVELOPE).write_bytes(signing.sign(author, statement))
    assert check_crate(crate_copy, profile=False)["ok"]  # consistent, and signed by the author
    result = check_proof(crate_copy, "--rerun", "--no-profile")
    assert result.returncode == 1
    lines = [line for line in result.stdout.decode().splitlines() if line.startswith("re-run")]
    assert len(lines) == 8, lines  # every step re-run from the crate alone, in order
    assert any(line.startswith("re-run     split: DIFFERENT (1)") for line in lines), lines
    assert sum(": identical" in line for line in lines) == 6, lines  # all but split and the page
    assert any(line.startswith("re-run     report_phase5: skipped") for line in lines)
    assert single_error(result.stderr)["failures"] == [
        f"re-run of split ({split.parent.name}): 1 outputs differ"
    ]


def external_code_in(crate: Path) -> dict:
    graph = orjson.loads((crate / crates.METADATA).read_bytes())["@graph"]
    return {e["name"]: e["sha256"] for e in graph if e.get("@type") == "SoftwareSourceCode"}


def test_a_malformed_crate_is_a_named_failure_never_a_traceback(crate_copy):
    (crate_copy / crates.METADATA).write_text('{"@context": 5, "@graph": [1, 2]}')
    (crate_copy / crates.ENVELOPE).write_text("not an envelope")
    result = check_proof(crate_copy)
    assert result.returncode == 1, result.stderr
    failures = single_error(result.stderr)["failures"]
    assert any("not a DSSE envelope" in f for f in failures), failures
    assert any("profile provenance-run-crate" in f for f in failures), failures
