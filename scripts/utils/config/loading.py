"""Load TOML, JSON or YAML configs into one plain structure, with a hash.

* Every format loads into dicts, lists, str, int, float, bool and None.
  Dates and times become ISO 8601 strings (zoned ones in canonical UTC, like
  ``2025-10-31T12:00:00Z``), so the same settings hash the same in any format.
* Duplicate keys are an error in every format, JSON and YAML included.
* YAML is read as YAML 1.2 (ruamel.yaml, safe loading): ``0755`` is 755,
  ``1:30`` is the text "1:30", only true/false are booleans (no ``on``/``no``
  surprises). Tags that construct objects are refused, keys must be strings,
  and alias expansion is bounded, so an alias bomb is refused at once.
* Errors name the file, line and column: exit 2 with one JSON record.
* Limits (limits.py): a regular file of at most 256 MB; integers within 64
  bits; strings of valid Unicode; at most 64 levels of nesting, in files and
  in ``--set`` keys and values alike. Beyond them: exit 2 naming the key.
* ``--set key.sub=value`` overrides (or adds) a key; the value is read as
  TOML where it parses (``1e-3``, ``true``, ``[1, 2]``), else as a string.
* The config hash is the SHA-256 of the resolved config's canonical JSON
  (sorted keys, UTF-8, trailing newline): see ``jsonio.canonical_json``.

The command ``scripts/utils/config_loader.py`` prints a resolved config.

    from scripts.utils.config.loading import load_config
    config, sha256 = load_config("trainer/config/phase7.toml", ["learner.lr=0.01"])
"""

from __future__ import annotations

import hashlib
import io
import json  # parsing only, for duplicate-key detection; all output is orjson
import json.decoder
import json.scanner
import math
import re
import sys
from datetime import date, datetime, time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import orjson
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from scripts.utils import timestamps
from scripts.utils.errors import InputError
from scripts.utils.jsonio import canonical_json
from scripts.utils.limits import (
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    check_plain,
    plain_copy,
    printable_name,
    read_input_bytes,
)

FORMATS = {".toml": "toml", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}
MAX_YAML_NODES = (
    1_000_000  # nodes that aliases add when expanded (an alias counts its whole node each use)
)

# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def load_config_file(path) -> dict:
    """Load one config file into a plain dict (see the module docstring)."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"unknown config format {path.suffix!r}: use .toml, .json, .yaml or .yml", file=path
        )
    raw = read_input_bytes(path, MAX_CONFIG_BYTES, "config file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _line_column(raw.decode("utf-8", "replace"), exc.start)
        raise InputError("config file is not valid UTF-8", file=path, line=line, column=column)
    try:
        data = {"toml": _load_toml, "json": _load_json, "yaml": _load_yaml}[fmt](text, path)
    except RecursionError:
        raise InputError(
            f"config is nested too deeply (the limit is {MAX_DEPTH} levels)", file=path
        )
    if data is None and fmt == "yaml":
        data = {}
    if not isinstance(data, dict):
        raise InputError(
            f"the top level of a config must be a mapping, not {type(data).__name__}", file=path
        )
    return plain_copy(data, path, _date_text, lambda value: _plain(value, path, ""))


def _line_column(text: str, offset: int):
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _load_toml(text: str, path: Path):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(where.group(1)) if where else getattr(exc, "lineno", None)
        column = int(where.group(2)) if where else getattr(exc, "colno", None)
        message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        raise InputError(f"invalid TOML: {message}", file=path, line=line, column=column)


class _DuplicateKey(Exception):
    def __init__(self, key, offset=None):
        self.key, self.offset = key, offset


def _unique_pairs(pairs):
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _locating_decoder() -> json.JSONDecoder:
    """A slow JSON decoder that knows where a duplicate key's object starts.

    The C scanner does not tell object positions; this pure-Python one is
    used only to place a duplicate the fast pass found.
    """
    decoder = json.JSONDecoder()

    def parse_object(s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo=None):
        text, start = s_and_end
        pairs, end = json.decoder.JSONObject(s_and_end, strict, scan_once, None, list, memo)
        try:
            return _unique_pairs(pairs), end
        except _DuplicateKey as exc:
            raise _DuplicateKey(exc.key, start - 1)

    decoder.parse_object = parse_object
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    return decoder


def _finite(text: str) -> float:
    """A JSON number as a float; one that overflows to infinity (1e400) is bad input, as NaN and
    Infinity are."""
    value = float(text)
    if not math.isfinite(value):
        raise InputError(f"number {text[:40]} is beyond what a 64-bit float holds")
    return value


def _no_constant(text: str):
    raise InputError(f"{text} is not a number JSON allows (write a finite number)")


def _load_json(text: str, path: Path):
    try:
        return json.loads(
            text, object_pairs_hook=_unique_pairs, parse_float=_finite, parse_constant=_no_constant
        )
    except InputError as exc:
        raise InputError(exc.message, file=path)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", file=path, line=exc.lineno, column=exc.colno)
    except _DuplicateKey as exc:
        try:
            _locating_decoder().decode(text)
        except _DuplicateKey as located:
            line, column = _line_column(text, located.offset)
            raise InputError(
                f"duplicate key {located.key!r} in the object that starts here",
                file=path,
                line=line,
                column=column,
                key=located.key,
            )
        except RecursionError:
            pass
        raise InputError(f"duplicate key {exc.key!r}", file=path, key=exc.key)


YAML_1_1 = re.compile(r"^%YAML[ \t]+1\.[01]\b", re.M)


def _check_keys_and_size(root) -> None:
    """String keys only (ints or lists as keys have no JSON form), and alias expansion bounded.

    Nodes are counted as if every alias were copied out (as the canonical JSON will be): a cycle or
    an alias bomb is refused before anything is built.
    """
    sizes: dict = {}
    visiting: set = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise MarkedYAMLError(
                problem="recursive alias (a node that contains itself)",
                problem_mark=node.start_mark,
            )
        total = 1
        if isinstance(node, (SequenceNode, MappingNode)):
            visiting.add(key)
            for child in node.value:
                if isinstance(node, MappingNode):
                    key_node, child = child
                    if key_node.tag != "tag:yaml.org,2002:merge" and (
                        not isinstance(key_node, ScalarNode)
                        or key_node.tag != "tag:yaml.org,2002:str"
                    ):
                        text = key_node.value if isinstance(key_node, ScalarNode) else key_node.tag
                        raise MarkedYAMLError(
                            problem=f"mapping keys must be strings (quote it: '{text}')",
                            problem_mark=key_node.start_mark,
                        )
                    total += size(key_node)
                total += size(child)
            visiting.discard(key)
        if (
            total > MAX_YAML_NODES + len(sizes) + len(visiting) + 1
        ):  # only aliases add more than the distinct nodes
            raise MarkedYAMLError(
                problem=f"alias expansion exceeds {MAX_YAML_NODES:,} nodes (an alias bomb?)",
                problem_mark=node.start_mark,
            )
        sizes[key] = total
        return total

    size(root)


def _load_yaml(text: str, path: Path):
    """YAML 1.2 (ruamel.yaml, safe): 0755 is 755, 1:30 is text, only true/false are booleans.

    Refused, naming line and column: tags that build objects, duplicate keys, non-string keys, alias
    bombs and cycles, and a ``%YAML 1.1`` directive (it would bring back the 1.1 readings).
    """
    directive = YAML_1_1.search(text)
    if directive:
        raise InputError(
            "YAML 1.1 is not read here: configs are YAML 1.2 (remove the %YAML directive)",
            file=path,
            line=text.count("\n", 0, directive.start()) + 1,
            column=1,
        )
    reader = YAML(typ="safe", pure=True)
    reader.allow_duplicate_keys = False
    parser = None
    try:  # the reader checks the first characters at once: a NUL there fails here
        constructor, parser = reader.get_constructor_parser(io.StringIO(text))
        node = constructor.composer.get_single_node()
        if node is None:
            return None
        _check_keys_and_size(node)
        return constructor.construct_document(node)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if "could not determine a constructor" in problem:
            problem = (
                "YAML tag not allowed (only plain data loads): " + problem.split("for the tag ")[-1]
            )
        elif "found duplicate key" in problem:
            problem = "duplicate key " + repr(
                problem.split("found duplicate key ")[-1].split(" with value")[0].strip('"')
            )
        raise InputError(
            f"invalid YAML: {problem}",
            file=path,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        )
    except YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", file=path)
    finally:
        if parser is not None:
            parser.dispose()


def _plain(value, path: Path, where: str):
    """Normalize to JSON-compatible types; dates and times become strings (the careful, slow
    way)."""
    if isinstance(value, dict):
        return {
            key: _plain(item, path, f"{where}.{key}" if where else key)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_plain(item, path, f"{where}[{index}]") for index, item in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (datetime, date, time)):
        return _date_text(value)
    raise InputError(
        f"unsupported value type {type(value).__name__} (use plain data)",
        file=path,
        key=where or None,
    )


def _date_text(value):
    """Dates and times as ISO 8601 text (zoned datetimes in canonical UTC)."""
    if isinstance(value, datetime):
        return (
            timestamps.format_iso(value, "microseconds" if value.microsecond else "seconds")
            if value.tzinfo is not None
            else value.isoformat()
        )
    if isinstance(value, (date, time)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


# --------------------------------------------------------------------------
# Overrides and hashing
# --------------------------------------------------------------------------


def parse_override_value(text: str):
    """Read an override value as TOML where it parses, else as a string."""
    if "\n" in text or "\r" in text:
        return text
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise InputError(
            f"--set value is nested too deeply (the limit is {MAX_DEPTH} levels)",
            value=printable_name(text[:80]),
        )
    return plain_copy(value, "--set", _date_text, lambda plain: _plain(plain, Path("--set"), ""))


def apply_overrides(config: dict, overrides, log=None) -> dict:
    """Apply ``key.sub=value`` strings to a copy of ``config``."""
    if not overrides:
        return config
    config = orjson.loads(
        orjson.dumps(config)
    )  # a deep copy (the config is plain: checked when loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(part.strip() for part in parts):
            raise InputError("--set needs key.sub=value with non-empty key parts", value=item)
        parts = [part.strip() for part in parts]
        if len(parts) > MAX_DEPTH:
            raise InputError(
                f"--set key has {len(parts)} parts: the limit is {MAX_DEPTH} levels",
                key=printable_name(".".join(parts[:3])) + "...",
            )
        for part in parts:
            check_plain(part, "--set", printable_name(key.strip()))
        value = parse_override_value(raw.strip())
        check_plain(value, "--set", ".".join(parts), depth=len(parts))
        node = config
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(
                    f"--set cannot go inside {'.'.join(parts[: depth + 1])!r}: it is not a table",
                    value=item,
                    key=".".join(parts[: depth + 1]),
                )
        if parts[-1] not in node and log is not None:
            log.warning(
                "override_adds_key",
                key=".".join(parts),
                note="the key was not in the config: a typo?",
            )
        node[parts[-1]] = value
    return config


def config_sha256(config: dict) -> str:
    return hashlib.sha256(canonical_json(config)).hexdigest()


def load_config(path, overrides=(), log=None) -> tuple[dict, str]:
    """Load, apply overrides, and hash: returns ``(config, sha256)``."""
    config = apply_overrides(load_config_file(path), overrides, log)
    return config, config_sha256(config)


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict) and value:
        flat = {}
        for key in sorted(value):
            flat.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}
