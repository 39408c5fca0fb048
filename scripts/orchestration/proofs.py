"""Proof crates: a signed Workflow Run RO-Crate of a run, a phase or a verify (issue 33).

    from scripts.orchestration import proofs
    proofs.certify_runs(workspace, proofs.phase_runs(workspace, "phase7"), out, kind="phase")
    python scripts/orchestration/check_proof.py out          # a reviewer, offline, no workspace

A crate is a folder:

* ``ro-crate-metadata.json``: the Provenance Run Crate (ro-crate-py writes it):
  every file with its SHA-256 and size and the action that produced it, each
  run as a ``CreateAction`` of its script (a step of the workflow), the
  pipeline's ``OrganizeAction``, data roots by name and listing hash, seeds,
  the environment; for a verify, each varied run and comparison.
* the files themselves under their workspace names (run reports, outputs,
  the inputs they read from other runs). DICOM files are never enclosed:
  they are listed by name, size and SHA-256 only, so no value that
  de-identification removes can travel in a crate.
* ``workflow.json``: the steps as they ran (script, arguments, run id).
* ``ro-crate-preview.html``: the run's HTML page (visualization/pages.py).
* ``proof.dsse.json``: an in-toto statement (v1) in a DSSE envelope, signed
  with Ed25519: its subjects are every file above with its SHA-256, its
  predicate the claim (``signing.PREDICATE_TYPE``, docs/proofs.md).
* ``proof-key.pub.pem``: the public key that verifies it.

The same runs give the same bytes: nothing here reads a clock, and every
list is sorted.
"""

from __future__ import annotations

import graphlib
import mimetypes
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import orjson

from scripts.utils.errors import InputError
from scripts.utils.jsonio import atomic_write_bytes, canonical_json, read_json
from scripts.utils.records import crates, signing
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.records.registry import (
    hash_file,
)
from scripts.utils.records.run_records import reads_record, run_order
from scripts.utils.workspace import (
    PIPELINE_STATE,
)
from scripts.visualization.pages import build_page

STATE = PIPELINE_STATE
PROOFS = "experiments/proofs"
LICENSE_NOT_STATED = "#license-not-stated"
ENGINE = "#crh"
WORKFLOW_LANGUAGE = "#crh-workflow"


# --------------------------------------------------------------------------
# Which runs
# --------------------------------------------------------------------------


def phase_runs(workspace: Path, phase: str) -> list:
    """The runs of ``phase``'s steps as the pipeline's state holds them, in step order: the data
    steps, then the steps named for this phase."""
    path = Path(workspace) / STATE
    if not path.exists():
        raise InputError(
            f"no pipeline has run in this workspace: run make {phase} first", file=path
        )
    state = read_json(path)
    if not isinstance(state, dict):
        raise InputError("not a pipeline state", file=path)
    chosen = []
    for step, entry in state.items():
        suffix = step.rpartition("_phase")[2] if "_phase" in step else None
        if suffix is not None and f"phase{suffix}" != phase:
            continue
        if isinstance(entry, dict) and entry.get("status") == "done" and entry.get("run"):
            chosen.append((step, entry["run"]))
    if not any(step.endswith(f"_{phase}") for step, _ in chosen):
        raise InputError(
            f"the pipeline's state holds no finished step of {phase}: run make {phase} first",
            file=path,
        )
    return in_dependency_order(workspace, chosen)


def in_dependency_order(workspace: Path, steps: list) -> list:
    """``steps`` ([(step, run id)]) with every run after the runs whose outputs it consumed
    (two steps may share a stamp, so the stamps alone cannot order them); ties by stamp, then
    step name."""
    records = WorkspaceRecords(workspace)
    runs = {run_id: step for step, run_id in steps}
    sorter = graphlib.TopologicalSorter()
    for run_id in runs:
        consumed = records.report(run_id).get("consumed") or {}
        sorter.add(run_id, *(producer for producer in consumed.values() if producer in runs))
    sorter.prepare()
    ordered = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda run_id: (run_order(run_id), runs[run_id]))
        ordered += [(runs[run_id], run_id) for run_id in ready]
        sorter.done(*ready)
    return ordered


def workspace_steps(workspace: Path) -> list:
    """Every step the pipeline's state holds (all phases), else every recorded run (one step each,
    named by its script), in run order."""
    path = Path(workspace) / STATE
    if path.exists():
        state = read_json(path)
        if isinstance(state, dict):
            chosen = [
                (step, entry["run"])
                for step, entry in state.items()
                if isinstance(entry, dict) and entry.get("status") == "done" and entry.get("run")
            ]
            if chosen:
                return in_dependency_order(workspace, chosen)
    records = WorkspaceRecords(workspace)
    runs = sorted(records.runs(finished=True), key=run_order)
    return [(records.manifest()[run_id]["script"], run_id) for run_id in runs]


# --------------------------------------------------------------------------
# What goes in
# --------------------------------------------------------------------------


def is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file (its preamble's magic) or one named .dcm."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


@dataclass
class CrateContents:
    """What a crate holds, gathered from the records before anything is written."""

    steps: list  # [(step name, run id)], in the order the runs need
    reports: dict  # {run id: its report}
    files: dict  # {name: {sha256, size, run (producing run or None), enclosed}}
    per_run: dict  # {run id: (outputs, inputs)}
    data_roots: dict  # {root name: {files, listing_sha256}}
    undeclared: dict  # {run id: [files it read but did not declare]}
    untraced: list  # [run ids whose external command's reads could not be traced]


def crate_files(workspace: Path, records: WorkspaceRecords, steps: list) -> CrateContents:
    """What the runs of ``steps`` put in a crate.

    Each file: {sha256, size, enclosed, run (the producing run, or None)}. A
    run's report and outputs come from the registry; its inputs are what its
    report says it consumed (files, or every registered file under a
    folder), and every registered file it was traced opening for reading
    (read_tracing) that it did not declare: those are also returned, by run.
    Every enclosed file is hashed again here: a workspace file that no
    longer matches its record is refused.
    """
    registry = records.registry()
    files, per_run, undeclared, untraced = {}, {}, {}, []
    for _, run_id in steps:
        report = records.report(run_id)
        outputs = sorted(records.outputs(run_id))
        inputs = set()
        for consumed in sorted(report.get("consumed") or {}):
            under = [
                n for n in registry if n == consumed or n.startswith(consumed.rstrip("/") + "/")
            ]
            inputs.update(n for n in under if not n.startswith("@"))
        read, command_untraced = traced_reads(workspace, run_id)
        if command_untraced:
            untraced.append(run_id)
        # what a run wrote and read back is no input: also under the names its report gave them
        # (an archive step may have moved them since)
        written = set(outputs) | set(report.get("outputs") or {})
        undeclared[run_id] = sorted(read - inputs - written)
        inputs |= {n for n in undeclared[run_id] if n in registry or (workspace / n).is_file()}
        per_run[run_id] = (outputs, sorted(inputs - set(outputs)))
        for name in outputs + sorted(inputs):
            entry = registry.get(name) or unregistered_entry(workspace / name)
            files[name] = {
                "sha256": entry["sha256"],
                "size": entry["size"],
                "run": entry.get("run"),
            }
    roots = {}
    for name, entry in registry.items():
        if name.startswith("@") and entry.get("run") in per_run:
            root = name[1:].partition("/")[0]
            roots.setdefault(root, {})[name] = entry["sha256"]
    data_roots = {
        root: {"files": len(entries), "listing_sha256": crates.listing_digest(entries)}
        for root, entries in sorted(roots.items())
    }
    for name, entry in files.items():
        path = workspace / name
        if not path.is_file():
            raise InputError("a recorded file is gone from the workspace", file=name)
        entry["enclosed"] = not is_dicom(path)
        if entry["enclosed"] and hash_file(path)["sha256"] != entry["sha256"]:
            raise InputError(
                "a workspace file no longer has the SHA-256 its record holds: it cannot be "
                "certified (rerun the step, or restore the file)",
                file=name,
            )
    reports = {run_id: records.report(run_id) for _, run_id in steps}
    return CrateContents(list(steps), reports, files, per_run, data_roots, undeclared, untraced)


def unregistered_entry(path: Path) -> dict:
    """A file a run read that no run recorded (placed by hand): hashed now."""
    hashed = hash_file(path)
    return {"sha256": hashed["sha256"], "size": hashed["size"], "run": None}


def traced_reads(workspace: Path, run_id: str) -> tuple[set, bool]:
    """The workspace files a run opened for reading (run_records: ``.<run id>.reads.json``),
    empty when it was not traced (recorded before tracing, or killed before saving them); and
    whether it ran an external command none of whose reads could be traced (not Python)."""
    path = Path(workspace) / reads_record(run_id)
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return set(), False
    if not isinstance(document, dict):
        return set(), False
    names = document.get("read")
    read = {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()
    return read, document.get("command_traced") is False


# --------------------------------------------------------------------------
# The crate
# --------------------------------------------------------------------------


def certify_runs(
    workspace: Path,
    steps: list,
    out: Path,
    kind: str,
    signer,
    claim: dict | None = None,
    extra_files: dict | None = None,
    preview_html: str | None = None,
    license_url: str | None = None,
    extra_entities: dict | None = None,
    commands: list | None = None,
    published: str | None = None,
    log=None,
) -> dict:
    """Write the signed crate of ``steps`` ([(step name, run id)], in order) to ``out`` (a new
    folder; written beside it, then renamed); return the crate's summary.

    ``signer``: signing.workspace_signer(...). ``claim``: the reproduction
    claim to sign (verify's or rerun's); without it the statement claims
    the recorded provenance only. ``extra_files``: {crate name: path} to
    enclose as well (the verify report). ``preview_html``: the page to show
    (default: the page of the experiment's run, else of the last step's).
    ``commands``: for commands that recorded no run (``verify --command``),
    the steps are the commands, and the extra files their outputs.
    ``published``: the run id whose stamp
    dates the crate (default: the newest run's).
    """
    workspace = Path(workspace)
    records = WorkspaceRecords(workspace)
    contents = crate_files(workspace, records, steps)
    files = contents.files
    manifest = records.manifest()
    runs_signed = {run_id: manifest[run_id]["report_sha256"] for run_id in contents.reports}
    if not steps:
        contents.steps, contents.reports, contents.per_run = command_steps(
            commands or [], extra_files or {}
        )
    out = Path(out)
    replaced = out.is_dir() and (out / crates.METADATA).exists()  # an earlier crate: replaced
    if out.exists() and not replaced and (not out.is_dir() or any(out.iterdir())):
        raise InputError(
            "the crate's folder exists, is not empty and holds no crate: give a new one", file=out
        )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in sorted(files):
        if files[name]["enclosed"]:
            target = partial / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(workspace / name, target)
    for name, source in sorted((extra_files or {}).items()):
        if name in files or is_dicom(Path(source)):
            continue
        target = partial / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files[name] = {
            "sha256": hash_file(target)["sha256"],
            "size": target.stat().st_size,
            "run": None,
            "enclosed": True,
        }
    workflow = workflow_description(contents.steps, contents.reports)
    atomic_write_bytes(partial / crates.WORKFLOW, canonical_json(workflow))
    page = (
        preview_html
        if preview_html is not None
        else build_page(workspace, main_report(contents.reports), contents.undeclared)
    )
    atomic_write_bytes(partial / crates.PREVIEW, page.encode("utf-8"))
    published = published or max(runs_signed, key=run_order)
    graph = crate_graph(contents, kind, claim, license_url, extra_entities, published)
    crates.write_metadata(partial, graph)
    subjects = crates.enclosed_digests(partial)
    predicate = {
        "kind": kind,
        "claim": claim or {"recorded": True},
        "runs": dict(sorted(runs_signed.items())),
        "data_roots": contents.data_roots,
        "read_but_not_declared": {
            run: names for run, names in sorted(contents.undeclared.items()) if names
        },
        **({"reads_not_traced": sorted(contents.untraced)} if contents.untraced else {}),
        "not_enclosed": {
            name: {"sha256": f["sha256"], "size": f["size"]}
            for name, f in sorted(files.items())
            if not f["enclosed"]
        },
    }
    statement = signing.statement(subjects, signing.PREDICATE_TYPE, predicate)
    atomic_write_bytes(partial / crates.ENVELOPE, signing.sign(signer, statement))
    atomic_write_bytes(partial / crates.PUBLIC_KEY, signing.public_key_pem(signer))
    if replaced:
        earlier = out.with_name(out.name + ".replaced")
        shutil.rmtree(earlier, ignore_errors=True)
        out.rename(earlier)
        partial.rename(out)
        shutil.rmtree(earlier, ignore_errors=True)
    else:
        if out.exists():
            out.rmdir()
        partial.rename(out)
    summary = {
        "crate": str(out),
        "kind": kind,
        "runs": len(runs_signed),
        "files": len(subjects),
        "not_enclosed": len(predicate["not_enclosed"]),
        "data_roots": sorted(contents.data_roots),
        "read_but_not_declared": sum(map(len, contents.undeclared.values())),
        "key": signer.public_key.keyid,
    }
    if log is not None:
        log.info("certified", **summary)
    return summary


def main_report(reports: dict) -> dict:
    """The run a crate's page shows: the experiment's (the phase's main job), else the last."""
    ordered = list(reports.values())
    return next((r for r in ordered if r["script"] == "run_experiment"), ordered[-1])


def command_steps(commands: list, outputs: dict) -> tuple:
    """``(steps, reports, per_run)`` for commands that recorded no run: one step each, the last
    one credited with every output (what they wrote together)."""
    steps, reports, per_run = [], {}, {}
    for number, command in enumerate(commands, start=1):
        run_id = f"command_{number}"
        steps.append((f"command-{number}", run_id))
        reports[run_id] = {"run_id": run_id, "script": "command", "argv": shlex.split(command)}
        per_run[run_id] = ([], [])
    if steps:
        per_run[steps[-1][1]] = (sorted(outputs), [])
    return steps, reports, per_run


def workflow_description(steps: list, reports: dict) -> dict:
    """What ran, in order: each step's script, its arguments as recorded, and its run."""
    return {
        "format": "crh-workflow",
        "version": 1,
        "steps": [
            {
                "step": step,
                "script": reports[run_id]["script"],
                "argv": reports[run_id].get("argv", []),
                "run": run_id,
                "external": (reports[run_id].get("external") or {}).get("command"),
            }
            for step, run_id in steps
        ],
    }


def _file_entity(name: str, entry: dict) -> dict:
    properties = {
        "@type": "File",
        "name": name,
        "sha256": entry["sha256"],
        "contentSize": str(entry["size"]),
    }
    media = mimetypes.guess_type(name)[0]
    if media:
        properties["encodingFormat"] = media
    if not entry["enclosed"]:
        properties["description"] = (
            "not enclosed (DICOM: it may hold values de-identification removes); listed by name, "
            "size and SHA-256"
        )
    return properties


def external_code_entities(run_id: str, report: dict) -> dict:
    """An external command's code as the run recorded it: its command, each file with its SHA-256
    (named from the code folder; not enclosed), the git state of their repositories, and the
    Python that ran it (its packages are in the enclosed report)."""
    external = report.get("external")
    if not isinstance(external, dict):
        return {}
    code = external.get("code") or {}
    files = code.get("files") or {}
    parts = {
        f"#code-{run_id}/{name}": {
            "@type": "SoftwareSourceCode",
            "name": name,
            "sha256": digest,
            "description": "the external command's code (not enclosed: its SHA-256 as recorded)",
        }
        for name, digest in sorted(files.items())
    }
    environment = external.get("environment") or {}
    python = environment.get("python") if isinstance(environment, dict) else None
    return {
        **parts,
        f"#code-{run_id}": {
            "@type": "SoftwareApplication",
            "name": "external command: " + " ".join(map(str, external.get("command") or [])),
            "hasPart": [{"@id": entity_id} for entity_id in parts],
            "description": "git: "
            + orjson.dumps(code.get("git") or [], option=orjson.OPT_SORT_KEYS).decode()
            + "; Python: "
            + orjson.dumps(python, option=orjson.OPT_SORT_KEYS).decode(),
        },
    }


def file_id(name: str, entry: dict) -> str:
    """A file's @id: its crate path when enclosed, else a local identifier."""
    return name if entry["enclosed"] else f"#not-enclosed/{name}"


def crate_graph(
    contents: CrateContents, kind: str, claim, license_url, extra_entities, published: str
) -> dict:
    """The crate's entities, as {@id: properties} in the order they are written; ``extra_entities``
    (verify's runs and comparisons) are added and mentioned by the root."""
    files, per_run, steps, reports = (
        contents.files,
        contents.per_run,
        contents.steps,
        contents.reports,
    )
    data_roots, undeclared = contents.data_roots, contents.undeclared
    graph = {}
    scripts = sorted({reports[run_id]["script"] for _, run_id in steps})
    commit = next(
        (r["git"]["commit"] for r in reports.values() if isinstance(r.get("git"), dict)), None
    )
    graph[ENGINE] = {
        "@type": "SoftwareApplication",
        "name": "crh pipeline (this project's scripts and Makefile)",
        "softwareVersion": commit or "not recorded",
    }
    graph[WORKFLOW_LANGUAGE] = {
        "@type": "ComputerLanguage",
        "name": "crh workflow description (workflow.json: the steps as they ran)",
    }
    for script in scripts:
        graph[f"#tool-{script}"] = {
            "@type": "SoftwareApplication",
            "name": script,
            "softwareVersion": commit or "not recorded",
            "input": [{"@id": f"#param-{script}-in"}],
            "output": [{"@id": f"#param-{script}-out"}],
        }
        for direction in ("in", "out"):
            graph[f"#param-{script}-{direction}"] = {
                "@type": "FormalParameter",
                "additionalType": "File",
                "name": f"{script} {'inputs' if direction == 'in' else 'outputs'}",
                "conformsTo": {
                    "@id": "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"
                },
            }
    for position, (step, run_id) in enumerate(steps):
        graph[f"#step-{step}"] = {
            "@type": "HowToStep",
            "name": step,
            "position": str(position),
            "workExample": {"@id": f"#tool-{reports[run_id]['script']}"},
        }
    for name, entry in sorted(files.items()):
        graph[file_id(name, entry)] = _file_entity(name, entry)
    for root, listing in data_roots.items():
        graph[f"#data-root-{root}"] = {
            "@type": "Dataset",
            "name": f"data root @{root}",
            "description": f"a folder outside the workspace, named @{root}; not enclosed: its "
            f"{listing['files']} files are listed by the SHA-256 of their names and digests",
            "identifier": f"sha256:{listing['listing_sha256']}",
        }
    for step, run_id in steps:
        report = reports[run_id]
        outputs, inputs = per_run[run_id]
        seed = report.get("seed") or {}
        graph[f"#seed-{run_id}"] = {
            "@type": "PropertyValue",
            "name": "base_seed",
            "value": str(seed.get("base_seed")),
        }
        graph.update(external_code_entities(run_id, report))
        graph[f"#run-{run_id}"] = {
            "@type": "CreateAction",
            "name": f"{step}: {run_id}",
            "instrument": {"@id": f"#tool-{report['script']}"},
            "object": [{"@id": file_id(n, files[n])} for n in inputs]
            + [{"@id": f"#seed-{run_id}"}],
            "result": [{"@id": file_id(n, files[n])} for n in outputs],
            "actionStatus": {
                "@id": "http://schema.org/CompletedActionStatus"
                if report.get("status", "ok") == "ok"
                else "http://schema.org/FailedActionStatus"
            },
            "description": f"environment hash {report.get('env_hash')}; arguments "
            + orjson.dumps(report.get("argv", [])).decode(),
        }
        if f"#code-{run_id}" in graph:
            graph[f"#run-{run_id}"]["instrument"] = [
                graph[f"#run-{run_id}"]["instrument"],
                {"@id": f"#code-{run_id}"},
            ]
        if undeclared.get(run_id):
            graph[f"#undeclared-{run_id}"] = {
                "@type": "PropertyValue",
                "name": "read but not declared",
                "value": str(len(undeclared[run_id])),
                "description": "opened for reading (Python's audit hooks), not declared as an "
                "input: " + ", ".join(undeclared[run_id]),
            }
            graph[f"#run-{run_id}"]["object"].append({"@id": f"#undeclared-{run_id}"})
        graph[f"#control-{step}"] = {
            "@type": "ControlAction",
            "name": f"orchestrate {step}",
            "instrument": {"@id": f"#step-{step}"},
            "object": {"@id": f"#run-{run_id}"},
        }
    every_output = sorted(n for run_id in per_run for n in per_run[run_id][0])
    every_input = sorted({n for run_id in per_run for n in per_run[run_id][1]} - set(every_output))
    graph["#workflow-run"] = {
        "@type": "CreateAction",
        "name": f"the {kind}'s workflow, as it ran",
        "instrument": {"@id": crates.WORKFLOW},
        "object": [{"@id": file_id(n, files[n])} for n in every_input]
        + [{"@id": f"#data-root-{root}"} for root in data_roots],
        "result": [{"@id": file_id(n, files[n])} for n in every_output],
    }
    graph["#organize"] = {
        "@type": "OrganizeAction",
        "name": "the pipeline runs its steps",
        "instrument": {"@id": ENGINE},
        "object": [{"@id": f"#control-{step}"} for step, _ in steps],
        "result": {"@id": "#workflow-run"},
    }
    graph[crates.WORKFLOW] = {
        "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
        "name": "the steps, as they ran",
        "programmingLanguage": {"@id": WORKFLOW_LANGUAGE},
        "hasPart": [{"@id": f"#tool-{script}"} for script in scripts],
        "step": [{"@id": f"#step-{step}"} for step, _ in steps],
        "input": [{"@id": f"#param-{scripts[0]}-in"}],
        "output": [{"@id": f"#param-{scripts[-1]}-out"}],
        "encodingFormat": "application/json",
    }
    graph[crates.PREVIEW] = {
        "@type": "File",
        "name": "the run's HTML page",
        "encodingFormat": "text/html",
    }
    if license_url is None:
        graph[LICENSE_NOT_STATED] = {
            "@type": "CreativeWork",
            "name": "No license stated",
            "description": "the authors of these runs have not stated a license: ask them",
        }
    graph.update(extra_entities or {})
    if claim is not None:
        graph["#claim"] = {
            "@type": "PropertyValue",
            "name": "reproduction claim",
            "value": orjson.dumps(claim, option=orjson.OPT_SORT_KEYS).decode(),
        }
    return {
        "root": {
            "name": f"Proof crate of a {kind}: " + ", ".join(run_id for _, run_id in steps[-1:]),
            "description": f"A Provenance Run Crate of a {kind} recorded by the crh scripts, "
            "with a signed in-toto statement (proof.dsse.json) over every file's SHA-256.",
            "license": {"@id": license_url or LICENSE_NOT_STATED},
            "datePublished": crates.stamp_date(published),
            "mainEntity": {"@id": crates.WORKFLOW},
            "mentions": [{"@id": "#workflow-run"}]
            + [
                {"@id": entity_id}
                for entity_id, properties in (extra_entities or {}).items()
                if properties.get("@type") in ("CreateAction", "AssessAction")
            ],
        },
        "entities": graph,
    }


def default_crate_folder(workspace: Path, label: str) -> Path:
    """Where a crate goes unless told: ``experiments/proofs/<label>`` (outside the run folders)."""
    return Path(workspace) / PROOFS / label


# --------------------------------------------------------------------------
# A verify's crate
# --------------------------------------------------------------------------


def verify_claim(summary: dict, settings: dict, compared: dict) -> dict:
    """What a verify signs: the verdict, the variations and how each was set, the spec's table,
    every cause, what stayed unexplained, and every artifact compared with the SHA-256 of its
    compared bytes (``compared``: verify's snapshot of the first run)."""
    return {
        "compared_sha256": dict(sorted(compared.items())),
        "identical": summary["identical"],
        "artifacts": summary["artifacts"],
        "differing": summary["differing"],
        "varied": summary["varied"],
        "settings": settings,
        "runs": summary["runs"],
        "spec_table": summary["spec_table"],
        "causes": summary.get("causes", []),
        "unexplained": summary.get("unexplained", []),
    }


def verify_entities(claim: dict, verify_report: str) -> dict:
    """The varied run and the comparison as PROV-compatible actions: the varied run a
    ``CreateAction`` of the workflow, the comparison an ``AssessAction`` whose result is the
    verdict and each cause."""
    entities = {
        "#varied-run": {
            "@type": "CreateAction",
            "name": "the same workflow, run again varied: " + ", ".join(claim["varied"]),
            "instrument": {"@id": crates.WORKFLOW},
            "description": "its workspace is not enclosed: the comparison below gives its outcome; "
            "how each variation was set: "
            + orjson.dumps(claim["settings"], option=orjson.OPT_SORT_KEYS).decode(),
        },
        "#verdict": {
            "@type": "PropertyValue",
            "name": "identical",
            "value": "true" if claim["identical"] else "false",
            "description": f"{claim['artifacts']} artifacts compared, {claim['differing']} differ",
        },
    }
    causes = []
    for number, cause in enumerate(claim["causes"], start=1):
        entity_id = f"#cause-{number}"
        causes.append({"@id": entity_id})
        entities[entity_id] = {
            "@type": "PropertyValue",
            "name": "cause",
            "value": " + ".join(cause.get("variations", [])),
            "description": crates.cause_text(cause),
        }
    entities["#comparison"] = {
        "@type": "AssessAction",
        "name": "every artifact of the two runs compared, differences explained",
        "object": [{"@id": "#workflow-run"}, {"@id": "#varied-run"}],
        "result": [{"@id": "#verdict"}, *causes, {"@id": verify_report}],
    }
    return entities


def certify_verify(
    first_workspace: Path,
    out: Path,
    signer,
    claim: dict,
    verify_report: Path,
    report_name: str,
    preview_html: str,
    commands: list,
    log=None,
) -> dict:
    """The crate of a verify: the first run's workspace (every step, and every other artifact
    verify compared: the records), the verify report, and the claim that the varied run gave the
    same bytes (or which causes made it differ)."""
    first_workspace = Path(first_workspace)
    artifacts = {name: first_workspace / name for name in claim["compared_sha256"]}
    return certify_runs(
        first_workspace,
        workspace_steps(first_workspace),
        out,
        "verify",
        signer,
        claim=claim,
        extra_files={**artifacts, report_name: verify_report},
        preview_html=preview_html,
        extra_entities=verify_entities(claim, report_name),
        commands=commands,
        published=Path(report_name).stem,
        log=log,
    )


# --------------------------------------------------------------------------
# A rerun's crate
# --------------------------------------------------------------------------


def certify_rerun(
    workspace: Path, report: dict, out: Path | None, signer, claim: dict, rerun_report: str, log
) -> dict:
    """The crate of a rerun: the recorded run (its report, outputs and inputs), the rerun's report,
    and the claim that re-running it from its record gave the same outputs (or how many
    differ)."""
    run_id = Path(rerun_report).stem
    entities = {
        "#rerun": {
            "@type": "CreateAction",
            "name": f"{report['run_id']} run again from its record alone, in a fresh workspace",
            "instrument": {"@id": f"#tool-{report['script']}"},
        },
        "#verdict": {
            "@type": "PropertyValue",
            "name": "identical",
            "value": "true" if claim["identical"] else "false",
            "description": f"{claim['outputs']} outputs compared, {claim['differing']} differ",
        },
        "#comparison": {
            "@type": "AssessAction",
            "name": "every recorded output compared with the rerun's",
            "object": [{"@id": f"#run-{report['run_id']}"}, {"@id": "#rerun"}],
            "result": [{"@id": "#verdict"}, {"@id": rerun_report}],
        },
    }
    return certify_runs(
        workspace,
        [(report["script"], report["run_id"])],
        out or default_crate_folder(workspace, run_id),
        "rerun",
        signer,
        claim=claim,
        extra_files={rerun_report: Path(workspace) / rerun_report},
        extra_entities=entities,
        published=run_id,
        log=log,
    )
