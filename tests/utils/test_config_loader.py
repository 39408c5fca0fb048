import time

import pytest

from scripts.utils.config.loading import (
    apply_overrides,
    config_sha256,
    load_config,
    load_config_file,
)
from scripts.utils.errors import InputError
from tests.conftest import json_lines, run_script, single_error, tree

SAME_CONFIG = {
    "toml": (
        'name = "phase7"\nwhen = 2025-10-31T13:00:00+01:00\n'
        "[learner]\nlr = 0.001\nlayers = [8, 16]\nnesterov = true\n"
    ),
    "json": (
        '{"name": "phase7", "when": "2025-10-31T12:00:00Z",\n'
        ' "learner": {"lr": 0.001, "layers": [8, 16], "nesterov": true}}'
    ),
    "yaml": (
        "name: phase7\nwhen: 2025-10-31T12:00:00Z\n"
        "learner:\n  lr: 0.001\n  layers: [8, 16]\n  nesterov: true\n"
    ),
}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_format_loads_to_the_same_structure_and_hash(tmp_path):
    loaded = {
        fmt: load_config(write(tmp_path, f"c.{fmt}", text)) for fmt, text in SAME_CONFIG.items()
    }
    configs = [config for config, _ in loaded.values()]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0]["when"] == "2025-10-31T12:00:00Z"
    assert len({digest for _, digest in loaded.values()}) == 1
    assert (
        write(tmp_path, "c.yml", SAME_CONFIG["yaml"])
        and load_config_file(tmp_path / "c.yml") == configs[0]
    )


def test_hash_is_canonical_json_sha256():
    assert config_sha256({"b": 1, "a": [1.5, None]}) == config_sha256({"a": [1.5, None], "b": 1})
    assert config_sha256({"a": 1}) != config_sha256({"a": 1.0})


def test_yaml_words_stay_strings(tmp_path):
    config = load_config_file(write(tmp_path, "c.yaml", "on: yes\nflag: no\nreal: true\n"))
    assert config == {"on": "yes", "flag": "no", "real": True}


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    text = "base: &b {lr: 1, m: 2}\nrun:\n  <<: *b\n  lr: 3\n"
    assert load_config_file(write(tmp_path, "c.yaml", text))["run"] == {"lr": 3, "m": 2}


def test_empty_yaml_and_toml_are_empty_configs(tmp_path):
    assert load_config_file(write(tmp_path, "e.yaml", "")) == {}
    assert load_config_file(write(tmp_path, "e.toml", "")) == {}


@pytest.mark.parametrize(
    "item, expected",
    [
        ("learner.lr=0.01", 0.01),
        ("learner.lr=1e-3", 0.001),
        ("learner.nesterov=false", False),
        ("learner.layers=[1, 2]", [1, 2]),
        ("learner.lr=fast", "fast"),
        ('learner.lr="1"', "1"),
        ("learner.lr=a = 1", "a = 1"),
    ],
)
def test_overrides_parse_values_as_toml(item, expected):
    config = apply_overrides({"learner": {"lr": 0.1, "nesterov": True, "layers": [8]}}, [item])
    assert config["learner"][item.split("=")[0].split(".")[1]] == expected


def test_overrides_create_tables_and_leave_the_input_alone():
    original = {"a": {"b": 1}}
    config = apply_overrides(original, ["x.y.z=3", "a.c=2"])
    assert config == {"a": {"b": 1, "c": 2}, "x": {"y": {"z": 3}}}
    assert original == {"a": {"b": 1}}


@pytest.mark.parametrize("item", ["novalue", "=3", "a..b=1", "a.=1", "a.b.c=1"])
def test_bad_overrides(item):
    with pytest.raises(InputError):
        apply_overrides({"a": {"b": 1}}, [item])


@pytest.mark.parametrize(
    "name, text, line, column, fragment",
    [
        ("bad.toml", "a = 1\nb = = 2\n", 2, 5, "invalid TOML"),
        ("dup.toml", "a = 1\na = 2\n", 2, None, "invalid TOML"),
        ("bad.json", '{"a": 1,\n "b": }', 2, 7, "invalid JSON"),
        ("dup.json", '{"a": 1,\n "b": {"x": 1,\n  "x": 2}}', 2, 7, "duplicate key 'x'"),
        ("bad.yaml", "a: [1, 2\nb: 3\n", None, None, "invalid YAML"),
        ("dup.yaml", "a: 1\nb:\n  c: 2\n  c: 3\n", 4, 3, "duplicate key 'c'"),
        ("key.yaml", "1: one\n", 1, 1, "keys must be strings"),
        ("evil.yaml", 'x: !!python/object/apply:os.system ["echo hi"]\n', 1, 4, "tag not allowed"),
        ("obj.yaml", "x: !!python/name:os.system\n", 1, 4, "tag not allowed"),
        ("loop.yaml", "a: &a [*a]\n", None, None, "invalid YAML"),
        ("list.json", "[1, 2]", None, None, "top level"),
        ("bin.yaml", "x: !!binary aGVsbG8=\n", None, None, "unsupported value type"),
    ],
)
def test_bad_files_name_file_line_and_column(tmp_path, name, text, line, column, fragment):
    path = write(tmp_path, name, text)
    with pytest.raises(InputError) as caught:
        load_config_file(path)
    record = caught.value.record()
    assert fragment in record["error"]
    assert record["file"] == str(path)
    if line is not None:
        assert record["line"] == line
    if column is not None:
        assert record["column"] == column


def test_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    path = write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(InputError, match="alias"):
        load_config_file(path)
    assert time.perf_counter() - start < 2


def test_small_alias_use_is_fine(tmp_path):
    config = load_config_file(write(tmp_path, "ok.yaml", "a: &x [1, 2]\nb: *x\n"))
    assert config == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize(
    "name, fragment", [("c.ini", "unknown config format"), ("missing.toml", "not found")]
)
def test_unknown_or_missing_files(tmp_path, name, fragment):
    with pytest.raises(InputError, match=fragment):
        load_config_file(
            tmp_path / name if name.startswith("missing") else write(tmp_path, name, "a=1")
        )


def test_invalid_utf8_names_the_position(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b'a = "ok"\nb = "\xff"\n')
    with pytest.raises(InputError) as caught:
        load_config_file(path)
    assert caught.value.details["line"] == 2


def test_cli_prints_config_and_hash(tmp_path):
    path = write(tmp_path, "c.toml", SAME_CONFIG["toml"])
    result = run_script("utils", "config_loader", path, "--set", "learner.lr=0.5")
    assert result.returncode == 0, result.stderr
    printed = json_lines(result.stdout)[0]
    assert printed["config"]["learner"]["lr"] == 0.5
    assert printed["sha256"] == config_sha256(printed["config"])
    assert printed["format"] == "toml"


@pytest.mark.parametrize(
    "name, text",
    [
        ("bad.toml", "a = [1,\n"),
        ("bad.json", "{'single': 'quotes'}"),
        ("bad.yaml", "a: b: c\n"),
        ("dup.json", '{"a": 1, "a": 2}'),
        ("dup.yaml", "a: 1\na: 2\n"),
        (
            "bomb.yaml",
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
                for i in range(8)
            ),
        ),
        ("evil.yaml", "x: !!python/object/apply:subprocess.call [[touch, pwned]]\n"),
    ],
)
def test_cli_bad_config_exits_2_with_one_record_and_writes_nothing(tmp_path, name, text):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path = write(inputs, name, text)
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    before = tree(tmp_path)
    result = run_script("utils", "config_loader", path, cwd=run_dir)
    assert result.returncode == 2
    error = single_error(result.stderr)
    assert error["file"] == str(path) and error["event"] == "bad_input"
    assert result.stdout == b""
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mode: 0755\n", {"mode": 755}),  # YAML 1.1 read it as octal: 493
        ("mode: 0o755\n", {"mode": 493}),  # 1.2's octal
        ("at: 1:30\n", {"at": "1:30"}),  # 1.1 read it as sexagesimal: 90
        ("flag: off\n", {"flag": "off"}),
        ("lr: 1e-3\n", {"lr": 0.001}),  # 1.1 read it as the text "1e-3"
        ("f: .inf\nn: ~\n", {"f": float("inf"), "n": None}),
    ],
)
def test_yaml_follows_1_2(tmp_path, text, expected):
    assert load_config_file(write(tmp_path, "c.yaml", text)) == expected


def test_a_yaml_1_1_directive_is_refused_naming_the_line(tmp_path):
    with pytest.raises(InputError) as error:
        load_config_file(write(tmp_path, "old.yaml", "# settings\n%YAML 1.1\n---\nmode: 0755\n"))
    assert "YAML 1.2" in str(error.value) and error.value.details["line"] == 2
