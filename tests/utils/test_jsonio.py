import math
import os
from pathlib import Path

import numpy as np
import orjson
import pytest

from scripts.utils import jsonio
from scripts.utils.errors import InputError


def test_canonical_json_sorts_keys_and_ends_with_newline():
    data = jsonio.canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}})
    assert data == '{"a":{"c":"é","d":[1,2]},"b":1}\n'.encode()


def test_non_finite_floats_are_strings_and_come_back():
    data = jsonio.canonical_json({"loss": math.nan, "up": math.inf, "down": -math.inf, "ok": 0.5})
    assert b"null" not in data
    parsed = orjson.loads(data)
    assert parsed == {"down": "-Infinity", "loss": "NaN", "ok": 0.5, "up": "Infinity"}
    restored = jsonio.restore_nonfinite(parsed)
    assert (
        math.isnan(restored["loss"])
        and restored["up"] == math.inf
        and restored["down"] == -math.inf
    )
    assert jsonio.as_float("NaN") != jsonio.as_float("NaN") and jsonio.as_float(2) == 2.0
    with pytest.raises(ValueError):
        jsonio.as_float("fast")


def test_numpy_values_and_tuples_become_plain_json():
    data = jsonio.canonical_json(
        {"a": np.float32(0.5), "b": np.arange(3), "c": (1, np.nan), "d": np.int64(7)}
    )
    assert orjson.loads(data) == {"a": 0.5, "b": [0, 1, 2], "c": [1, "NaN"], "d": 7}


@pytest.mark.parametrize("value", [{1, 2}, {"p": Path("/abs")}])
def test_unordered_or_path_values_are_refused(value):
    with pytest.raises(TypeError):
        jsonio.canonical_json(value)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "file.json"
    jsonio.atomic_write_bytes(target, b"one\n")
    jsonio.atomic_write_bytes(target, b"two\n")
    assert target.read_bytes() == b"two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "file.json"
    target.write_bytes(b"old\n")
    with pytest.raises(RuntimeError):
        with jsonio.atomic_output(target) as handle:
            handle.write(b"half of the new conte")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old\n"
    assert os.listdir(tmp_path) == ["file.json"]


def test_read_json_errors_name_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": 1,\n  "b": ]\n}')
    with pytest.raises(InputError) as caught:
        jsonio.read_json(path)
    assert caught.value.details["line"] == 2 and caught.value.details["column"] == 8
    with pytest.raises(InputError, match="not found"):
        jsonio.read_json(tmp_path / "missing.json")


def test_locked_update_starts_from_empty(tmp_path):
    path = tmp_path / "reg.json"
    jsonio.locked_update(path, lambda doc: {**doc, "n": doc["n"] + 1}, lambda: {"n": 0})
    jsonio.locked_update(path, lambda doc: {**doc, "n": doc["n"] + 1}, lambda: {"n": 0})
    assert orjson.loads(path.read_bytes()) == {"n": 2}


def test_json_lines_skip_a_torn_last_line_only(tmp_path):
    path = tmp_path / "log.jsonl"
    jsonio.append_json_line(path, {"a": 1})
    jsonio.append_json_line(path, {"a": float("nan")})
    with open(path, "ab") as handle:
        handle.write(b'{"a": 3, "tor')
    assert jsonio.read_json_lines(path) == [{"a": 1}, {"a": "NaN"}]
    path.write_bytes(b'{"a": 1}\n{"broken\n{"a": 2}\n')
    with pytest.raises(InputError) as caught:
        jsonio.read_json_lines(path)
    assert caught.value.details["line"] == 2


def test_json_objects_names_the_bad_line_or_passes_it_over():
    lines = [b'{"a": 1}', b"", b"[1, 2]", b'{"b": 2}', b'{"c": ']
    assert list(jsonio.json_objects(lines, skip_bad=True)) == [(1, {"a": 1}), (4, {"b": 2})]
    with pytest.raises(InputError) as caught:
        list(jsonio.json_objects(lines, file="m.jsonl"))
    assert caught.value.details["line"] == 3 and "object" in str(caught.value)
