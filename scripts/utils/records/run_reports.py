"""Run reports read back: their shape and their SHA-256 checked (holdings.py finds them).

    from scripts.utils.records.run_reports import read_report
    results = workspace / "experiments/results"
    report = read_report(workspace, results / "run_experiment_20251031T120000Z.json")
    # a report this manifest does not list: used anyway
    report = read_report(workspace, Path("colleague/run.json"), force=True)

A report read back is untrusted input (docs/design.md, "Run records"): it may
come from a colleague, be damaged, or be edited. Before anything uses one:

* its shape is checked against ``REPORT_SCHEMA`` (JSON Schema): a run id of
  the form ``<script>_<stamp>[-N]``, a script name of plain letters, every
  output and log folder a workspace-relative name that cannot climb out
  (no ``..``, no absolute path), the verify fields the HTML page shows;
* its bytes must have the SHA-256 that ``meta/chronicle/manifest.json``
  holds for its run. A report the manifest does not list, or lists with
  another hash, is refused naming both hashes, unless ``force`` (a report
  from elsewhere, used knowingly; the caller says so in its own record).

Anything else is bad input (exit 2) naming the report and the field.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from jsonschema import Draft202012Validator

from scripts.utils.errors import InputError
from scripts.utils.jsonio import parse_json
from scripts.utils.limits import MAX_TABLE_BYTES, read_input_bytes
from scripts.utils.records.registry import MANIFEST, read_manifest
from scripts.utils.workspace import RUN_ID, SAFE_NAME

SCRIPT_NAME = r"^[a-z][a-z0-9_]{0,63}$"
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
NAME = {"type": "string", "pattern": SAFE_NAME}
TEXT = {"type": "string", "maxLength": 100_000}
DIFFERENCE = {"type": "object", "required": ["where"], "properties": {"where": TEXT}}
REPORT_SCHEMA = {
    "type": "object",
    "required": ["run_id", "script"],
    "properties": {
        "run_id": {"type": "string", "pattern": RUN_ID.pattern},
        "script": {"type": "string", "pattern": SCRIPT_NAME},
        "status": {"type": "string"},
        "argv": {"type": "array", "items": {"type": "string"}},
        "config": {"type": ["object", "null"]},
        "config_sha256": {"type": ["string", "null"]},
        "seed": {
            "type": ["object", "null"],
            "properties": {
                "base_seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**63 - 1},
                "streams": {
                    "type": "object",
                    "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
                },
            },
        },
        "env_hash": {"type": ["string", "null"]},
        "environment": {"type": "object"},
        "git": {"type": ["object", "null"]},
        "outputs": {
            "type": "object",
            "propertyNames": {"pattern": SAFE_NAME},
            "additionalProperties": {
                "type": "object",
                "required": ["sha256"],
                "properties": {"sha256": SHA256, "size": {"type": "integer", "minimum": 0}},
            },
        },
        "results": {
            "type": "object",
            "properties": {
                "logdir": NAME,
                "warnings": {"type": "array"},
                "skipped": {"type": "array"},
                "varied": {"type": "array", "items": TEXT},
                "runs": {
                    "type": ["integer", "array"]
                },  # verify's and a sweep's count, or metric_plotter's run names
                "spec_table": {"type": "object", "additionalProperties": {"type": "object"}},
                "causes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["variations", "artifacts"],
                        "properties": {
                            "variations": {"type": "array", "items": TEXT},
                            "interaction": {"type": "boolean"},
                            "changed": {"type": "array", "items": TEXT},
                            "fix": TEXT,
                            "likely_sources": {"type": "array", "items": TEXT},
                            "artifacts": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["artifact", "differences"],
                                    "properties": {
                                        "artifact": NAME,
                                        "differences": {"type": "array", "items": DIFFERENCE},
                                    },
                                },
                            },
                        },
                    },
                },
                "differences": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["artifact", "differences"],
                        "properties": {
                            "artifact": NAME,
                            "type": TEXT,
                            "differences": {"type": "array", "items": DIFFERENCE},
                        },
                    },
                },
            },
        },
        "data_roots": {"type": "object"},
        "consumed": {
            "type": "object",
            "propertyNames": NAME,
            "additionalProperties": {"anyOf": [{"type": "null"}, TEXT]},
        },
    },
}
_VALIDATOR = Draft202012Validator(REPORT_SCHEMA)


def checked_report(document, file) -> dict:
    """``document`` if it has a run report's shape, else an InputError naming the first field
    that is wrong."""
    errors = sorted(
        _VALIDATOR.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if errors:
        error = errors[0]
        field = ".".join(str(p) for p in error.absolute_path) or "(the document)"
        raise InputError(
            f"not a valid run report: {field}: {error.message[:300]}",
            file=file,
            key=field,
            problems=len(errors),
        )
    return document


def read_report(
    workspace: Path, path: Path, force: bool = False, manifest: dict | None = None
) -> dict:
    """The report at ``path``, its shape checked and its SHA-256 matched to the manifest of
    ``workspace`` (``manifest``: that manifest, already read)."""
    data = read_input_bytes(path, MAX_TABLE_BYTES, "run report")
    report = checked_report(parse_json(data, path), path)
    if manifest is None:
        manifest = read_manifest(Path(workspace) / MANIFEST)
    entry = manifest.get(report["run_id"])
    actual = hashlib.sha256(data).hexdigest()
    recorded = entry.get("report_sha256") if isinstance(entry, dict) else None
    if recorded != actual and not force:
        problem = (
            "the manifest does not list this run"
            if entry is None
            else "the report differs from the SHA-256 the manifest holds (edited or damaged)"
        )
        raise InputError(
            f"{problem}: --force uses it anyway",
            file=path,
            run=report["run_id"],
            manifest=str(Path(workspace) / MANIFEST),
            recorded_sha256=recorded,
            actual_sha256=actual,
        )
    return report


def command_path(script) -> Path:
    """The project command ``scripts/<category>/<script>.py`` a record names; anything else is
    refused."""
    scripts = Path(__file__).resolve().parents[2]
    found = (
        sorted(scripts.glob(f"*/{script}.py"))
        if isinstance(script, str) and re.match(SCRIPT_NAME, script)
        else []
    )
    if not found or "def main(" not in found[0].read_text(encoding="utf-8"):
        raise InputError("the record names no command of this project", value=repr(script)[:200])
    return found[0]
