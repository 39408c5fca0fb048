"""The shapes of the project's config files, as JSON Schema: unknown keys refused, every error
reported at once.

    from scripts.utils.config.schema import validate
    # InputError (exit 2) listing all errors:
    validate(config, "experiment", source="trainer/config/phase7.toml")

Three shapes: ``experiment`` (run_experiment's config: the reference
Dreamer + Learner, or an external command), ``sweep`` (run_experiment
--sweep) and ``seeds`` (seeds.toml). The schemas are exported for editors
(VS Code's YAML/TOML extensions, taplo, check-jsonschema) to
``docs/schemas/<shape>.schema.json`` by::

    python scripts/utils/config_loader.py --export-schemas docs/schemas

Why jsonschema rather than pydantic: the schema *is* the exported artifact
(no model-to-schema translation that can drift), the configs are plain data
already (config_loader), and it never coerces a value: ``"3"`` stays a
string and is refused where a number is due, where pydantic's default mode
would quietly accept it.

A key that is not allowed is named with its path and, when one is close, a
suggestion: ``experiment.cylces: unknown key (did you mean 'cycles'?)``.
With ``experiment.kind = "external"`` the config also holds the external
program's own sections, so only the project's sections are checked strictly.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import orjson
from jsonschema import Draft202012Validator, validators

from scripts.utils.errors import InputError
from scripts.utils.jsonio import atomic_write_bytes

SEED_LIMIT = 2**63
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def integer(low: int, high: int, description: str) -> dict:
    return {"type": "integer", "minimum": low, "maximum": high, "description": description}


def number(description: str, **bounds) -> dict:
    return {"type": "number", **bounds, "description": description}


def section(description: str, properties: dict) -> dict:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "additionalProperties": False,
    }


SEED = integer(0, SEED_LIMIT - 1, "a seed: an integer with 0 <= seed < 2**63")
REFERENCE_SECTIONS = {
    "experiment": ["kind", "cycles", "checkpoint_every", "backend"],
    "data": ["source", "size", "samples", "val_fraction"],
    "dreamer": ["candidates", "pool_size", "blend", "harmonics", "mask_fraction"],
    "learner": ["hidden", "lr", "batch", "steps_per_cycle"],
    "bridge": ["f_min", "octaves", "bins"],
}
EXPERIMENT_PROPERTIES = {
    "phase": integer(5, 9, "the phase this config belongs to (5..9)"),
    "experiment": section(
        "what runs and how",
        {
            "kind": {
                "enum": ["reference", "external"],
                "description": '"reference": the built-in Dreamer + Learner; "external": '
                "external.command",
            },
            "cycles": integer(1, 100_000, "dream/learn cycles"),
            "checkpoint_every": integer(
                1, 100_000, "a checkpoint every this many cycles (and after the last)"
            ),
            "backend": {
                "enum": ["auto", "numpy", "cupy"],
                "description": "array backend (auto: CuPy when a GPU works)",
            },
        },
    ),
    "data": section(
        "the samples the reference experiment learns from",
        {
            "source": {
                "type": "string",
                "minLength": 1,
                "description": '"auto" (the newest image_preprocessor run, else synthetic), '
                '"synthetic", '
                "or a run folder",
            },
            "split": {
                "type": "string",
                "minLength": 1,
                "description": '"auto" (the newest dataset_splitter run, when it covers the '
                "samples), "
                '"seeded" (data.val_fraction), or a dataset_splitter run folder',
            },
            "size": integer(4, 512, "ChromaticTensor height and width"),
            "samples": integer(4, 100_000, "samples drawn"),
            "val_fraction": number(
                "share of samples held out for validation", exclusiveMinimum=0, exclusiveMaximum=1
            ),
        },
    ),
    "dreamer": section(
        "the Dreamer: candidate dreams from harmonic noise",
        {
            "candidates": integer(1, 1024, "candidates per cycle"),
            "pool_size": integer(1, 1024, "dreams kept"),
            "blend": number("weight of the harmonic noise", minimum=0, maximum=1),
            "harmonics": integer(1, 64, "harmonics of the noise"),
            "mask_fraction": number(
                "area of the injected rectangle", minimum=0, exclusiveMaximum=1
            ),
        },
    ),
    "learner": section(
        "the Learner: a one-hidden-layer autoencoder",
        {
            "hidden": integer(1, 4096, "hidden units"),
            "lr": number("learning rate", exclusiveMinimum=0, maximum=1000),
            "batch": integer(1, 100_000, "batch size"),
            "steps_per_cycle": integer(1, 100_000, "SGD steps per cycle"),
        },
    ),
    "bridge": section(
        "the colour-to-spectrum bridge (docs/design.md)",
        {
            "f_min": number("lowest frequency, Hz", exclusiveMinimum=0, maximum=100_000),
            "octaves": number("octaves spanned", exclusiveMinimum=0, maximum=20),
            "bins": integer(1, 65_536, "spectral bins"),
        },
    ),
    "external": section(
        'an external training program (experiment.kind = "external")',
        {
            "command": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string"},
                "description": "argv with {config} (config.json), {seed} (0 .. 2**32-1) and "
                "{logdir} (.: the command runs in its log folder) placeholders",
            },
            "metrics": {
                "type": "string",
                "description": "the script's metrics file in its log folder (CSV, JSON lines "
                "or JSON); default: found by name (utils/formats/run_metrics.py)",
            },
            "goals": {
                "type": "object",
                "additionalProperties": {"enum": ["min", "max"]},
                "description": 'metric = "min" or "max": which value is best, where the name does '
                "not say",
            },
            "code": {
                "type": "array",
                "items": {"type": "string"},
                "description": "more files and folders of the program's code to record (relative "
                "to the folder run_experiment is started in); the files the command names are "
                "recorded anyway",
            },
        },
    ),
}
EXTERNAL = {
    "properties": {
        "experiment": {"properties": {"kind": {"const": "external"}}, "required": ["kind"]}
    },
    "required": ["experiment"],
}

SCHEMAS = {
    "experiment": {
        "$schema": DRAFT,
        "title": "run_experiment config",
        "description": "trainer/config/*.toml: the reference experiment, or an external program",
        "type": "object",
        "properties": EXPERIMENT_PROPERTIES,
        "required": ["experiment"],
        "if": EXTERNAL,  # phases are the pipeline's: an external run needs none
        "then": {"required": ["external"], "properties": {"external": {"required": ["command"]}}},
        "else": {
            "required": ["phase", *REFERENCE_SECTIONS],
            "propertyNames": {"enum": list(EXPERIMENT_PROPERTIES)},
            "properties": {name: {"required": keys} for name, keys in REFERENCE_SECTIONS.items()},
        },
    },
    "sweep": {
        "$schema": DRAFT,
        "title": "run_experiment --sweep file",
        "description": "a [grid] of --set values (every combination) or a list of [[runs]], times "
        "optional seeds (seeds alone: the config once per seed)",
        "type": "object",
        "properties": {
            "seeds": {
                "type": "array",
                "minItems": 1,
                "items": SEED,
                "description": "base seeds; each configuration runs once per seed",
            },
            "grid": {
                "type": "object",
                "minProperties": 1,
                "description": "--set key = [values]",
                "additionalProperties": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": ["string", "number", "boolean", "array"]},
                },
            },
            "runs": {
                "type": "array",
                "minItems": 1,
                "description": "one table per run",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "set": {
                            "type": "object",
                            "description": "this run's --set overrides: key = value",
                            "additionalProperties": {
                                "type": ["string", "number", "boolean", "array"]
                            },
                        },
                        "seed": SEED,
                    },
                },
            },
        },
        "additionalProperties": False,
        "anyOf": [{"required": ["grid"]}, {"required": ["runs"]}, {"required": ["seeds"]}],
        "not": {"required": ["grid", "runs"]},
    },
    "seeds": {
        "$schema": DRAFT,
        "title": "seeds file",
        "description": "scripts/utils/seeds.toml: the base seed, and streams pinned to explicit "
        "seeds",
        "type": "object",
        "properties": {
            "base_seed": SEED,
            "streams": {
                "type": "object",
                "additionalProperties": SEED,
                "description": "stream name = seed (streams not listed derive from base_seed)",
            },
        },
        "required": ["base_seed"],
        "additionalProperties": False,
    },
}
# An integer is an int here, never 16.0 (JSON Schema alone would accept it): the value is hashed as
# written. A number is finite: NaN passes every bound (every comparison with it is false), and TOML
# and YAML write nan and inf as floats.
STRICT_TYPES = Draft202012Validator.TYPE_CHECKER.redefine_many(
    {
        "integer": lambda checker, value: isinstance(value, int) and not isinstance(value, bool),
        "number": lambda checker, value: (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ),
    }
)
StrictValidator = validators.extend(Draft202012Validator, type_checker=STRICT_TYPES)
VALIDATORS = {name: StrictValidator(schema) for name, schema in SCHEMAS.items()}


def dotted(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def suggestion(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _messages(error) -> list:
    """(key, message, expected) for one jsonschema error; an if/then/else or oneOf error is
    unfolded."""
    where = list(error.absolute_path)
    if error.context and error.validator in ("oneOf", "anyOf"):
        if error.validator == "oneOf" and set(error.schema.get("properties", {})) >= {
            "grid",
            "runs",
        }:
            return [("", "a sweep file needs either [grid] or [[runs]] (not both)", "grid or runs")]
        return [item for sub in error.context for item in _messages(sub)]
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = error.schema.get("properties", {})
        extra = [key for key in error.instance if key not in known]
        return [
            (
                dotted(where + [key]),
                f"unknown key{suggestion(key, known)}",
                f"one of: {', '.join(known)}",
            )
            for key in extra
        ]
    if "propertyNames" in error.relative_schema_path:  # a key outside the enum of known names
        key = error.instance
        known = error.validator_value
        return [
            (
                dotted(where + [key]),
                f"unknown key{suggestion(key, known)}",
                f"one of: {', '.join(known)}",
            )
        ]
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        results = []
        for key in missing:
            schema = error.schema.get("properties", {}).get(key) or _experiment_property(
                where + [key]
            )
            results.append(
                (dotted(where + [key]), "missing required key", describe(schema, where + [key]))
            )
        return results
    return [
        (
            dotted(where),
            f"{_value_text(error.instance)}: {_problem(error)}",
            describe(error.schema, where),
        )
    ]


def _experiment_property(path) -> dict:
    """The schema of ``path`` among the experiment properties (for keys required by its
    if/then/else)."""
    node = {"properties": EXPERIMENT_PROPERTIES}
    for part in path:
        node = (
            node.get("properties", {}).get(part, {})
            if isinstance(part, str)
            else node.get("items", {})
        )
    return node


def describe(schema: dict, path=()) -> str:
    """What a value must be, in words: ``an integer from 1 to 100000 (dream/learn cycles)``."""
    if "description" not in schema and "type" not in schema and "enum" not in schema:
        schema = {**_experiment_property(path), **schema}
    kind = schema.get("type")
    if "enum" in schema:
        text = "one of " + ", ".join(orjson.dumps(item).decode() for item in schema["enum"])
    elif kind in ("integer", "number"):
        text = "an integer" if kind == "integer" else "a number"
        if "minimum" in schema and "maximum" in schema:
            text += f" from {schema['minimum']:g} to {schema['maximum']:g}"
        else:
            limits = [
                f"{sign} {schema[key]:g}"
                for key, sign in (
                    ("minimum", ">="),
                    ("exclusiveMinimum", ">"),
                    ("maximum", "<="),
                    ("exclusiveMaximum", "<"),
                )
                if key in schema
            ]
            text += " " + " and ".join(limits) if limits else ""
    else:
        words = {
            "string": "text",
            "number": "a number",
            "array": "a list",
            "object": "a table",
            "boolean": "true or false",
        }
        text = " or ".join(
            words.get(item, item)
            for item in (kind if isinstance(kind, list) else [kind] if kind else [])
        )
    description = schema.get("description", "")
    return f"{text} ({description})" if text and description else text or description


def _value_text(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    text = (
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        if not isinstance(value, str)
        else repr(value)
    )
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(error) -> str:
    value = error.validator_value
    if error.validator == "type":
        kinds = value if isinstance(value, list) else [value]
        if isinstance(error.instance, float) and not math.isfinite(error.instance):
            return "must be a finite number"
        return "must be " + " or ".join(
            {
                "integer": "an integer",
                "number": "a number",
                "string": "a string",
                "boolean": "true or false",
                "array": "a list",
                "object": "a table",
            }[kind]
            for kind in kinds
        )
    if error.validator == "enum":
        return "must be one of " + ", ".join(orjson.dumps(item).decode() for item in value)
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if error.validator in bounds:
        return f"must be {bounds[error.validator]} {value:g}"
    if error.validator in ("minItems", "minProperties", "minLength"):
        return "must not be empty"
    if error.validator == "const":
        return f"must be {orjson.dumps(value).decode()}"
    return error.message


def problems(config, shape: str) -> list:
    """Every problem of ``config`` against schema ``shape``: dicts with key, error and expected,
    sorted by key."""
    found = {}
    for error in VALIDATORS[shape].iter_errors(config):
        for key, message, expected in _messages(error):
            found.setdefault((key, message), {"key": key, "error": message, "expected": expected})
    return sorted(found.values(), key=lambda item: (item["key"], item["error"]))


def validate(config, shape: str, source=None) -> None:
    """Raise InputError (exit 2) naming every problem at once; the first is also in
    ``key``/``expected``."""
    found = problems(config, shape)
    if not found:
        return
    first = found[0]
    summary = "; ".join(f"{item['key'] or '(top level)'}: {item['error']}" for item in found[:5])
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    raise InputError(
        f"{SCHEMAS[shape]['title']}: {len(found)} problem{'s' * (len(found) > 1)}: {summary}{more}",
        file=source,
        key=first["key"],
        expected=first["expected"],
        problems=found,
    )


def export_schemas(folder) -> list:
    """Write ``<shape>.schema.json`` for each shape into ``folder`` (sorted, indented: stable
    bytes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in SCHEMAS.items():
        document = {"$id": f"{name}.schema.json", **schema}
        path = folder / f"{name}.schema.json"
        atomic_write_bytes(
            path,
            orjson.dumps(
                document,
                option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE,
            ),
        )
        written.append(path)
    return written
