"""The config shapes (utils/config/schema.py): unknown keys refused with a suggestion, every
problem at once."""

import pytest

from scripts.utils.config.loading import apply_overrides, load_config, load_config_file
from scripts.utils.config.schema import SCHEMAS, export_schemas, problems, validate
from scripts.utils.errors import InputError
from tests.conftest import REPO, json_lines, run_script, single_error

PHASE7 = REPO / "trainer/config/phase7.toml"


def test_every_shipped_config_and_the_seeds_file_fit_their_schema():
    for path in sorted((REPO / "trainer/config").glob("*.toml")):
        assert problems(load_config(path)[0], "experiment") == [], path
    assert problems(load_config_file(REPO / "scripts/utils/seeds.toml"), "seeds") == []


def test_a_typo_is_named_with_a_suggestion_and_every_problem_is_reported_at_once():
    config = apply_overrides(
        load_config(PHASE7)[0],
        ["experiment.cylces=3", "learner.lr=fast", "data.size=2", "dreamer.pool=3", "extra=1"],
    )
    with pytest.raises(InputError) as error:
        validate(config, "experiment", source=PHASE7)
    found = {item["key"]: item for item in error.value.details["problems"]}
    assert set(found) == {"experiment.cylces", "learner.lr", "data.size", "dreamer.pool", "extra"}
    assert found["experiment.cylces"]["error"] == "unknown key (did you mean 'cycles'?)"
    assert found["dreamer.pool"]["error"] == "unknown key (did you mean 'pool_size'?)"
    assert found["data.size"]["expected"].startswith("an integer from 4 to 512")
    assert "must be a number" in found["learner.lr"]["error"]
    assert (
        error.value.details["key"] == "data.size"
    )  # the first, sorted: also in the record's own fields


def test_types_are_not_coerced():
    config = apply_overrides(
        load_config(PHASE7)[0],
        ['experiment.cycles="3"', "learner.batch=16.0", "experiment.checkpoint_every=true"],
    )
    assert {item["key"] for item in problems(config, "experiment")} == {
        "experiment.cycles",
        "learner.batch",
        "experiment.checkpoint_every",
    }


def test_an_external_config_keeps_its_own_sections_but_not_typos_in_ours():
    config = {
        "phase": 7,
        "experiment": {"kind": "external"},
        "external": {"command": ["python", "train.py"]},
        "model": {"depth": 50},
    }
    assert problems(config, "experiment") == []
    config["external"]["comand"] = ["x"]
    del config["external"]["command"]
    keys = {item["key"]: item["error"] for item in problems(config, "experiment")}
    assert keys == {
        "external.comand": "unknown key (did you mean 'command'?)",
        "external.command": "missing required key",
    }


@pytest.mark.parametrize(
    "shape, document, key",
    [
        ("seeds", {"base_seed": -1}, "base_seed"),
        ("seeds", {"base_seed": 1, "stream": {"a": 1}}, "stream"),
        ("seeds", {"base_seed": 1, "streams": {"a": 2**63}}, "streams.a"),
        ("sweep", {"grid": {"learner.lr": [0.1]}, "runs": [{"set": {}}]}, ""),
        ("sweep", {"grid": {"learner.lr": []}}, "grid.learner.lr"),
        ("sweep", {"runs": [{"set": {"learner.lr": 0.1}, "sed": 3}]}, "runs[0].sed"),
        ("sweep", {"grid": {"learner.lr": [0.1]}, "seed": [1]}, "seed"),
    ],
)
def test_sweep_and_seeds_files_are_checked_too(shape, document, key):
    assert key in {item["key"] for item in problems(document, shape)}


def test_the_exported_schemas_are_current(tmp_path):
    written = export_schemas(tmp_path)
    assert sorted(path.name for path in written) == sorted(
        f"{name}.schema.json" for name in SCHEMAS
    )
    for path in written:
        assert path.read_bytes() == (REPO / "docs/schemas" / path.name).read_bytes(), (
            f"docs/schemas/{path.name} is stale: run "
            "python scripts/utils/config_loader.py --export-schemas docs/schemas"
        )


def test_run_experiment_refuses_a_typo_before_writing_anything(workspace):
    result = run_script(
        "orchestration",
        "run_experiment",
        "--set",
        "experiment.cylces=3",
        "--logdir",
        workspace / "run",
        "--workspace",
        workspace,
    )
    assert result.returncode == 2
    error = single_error(result.stderr)
    assert error["key"] == "experiment.cylces" and "did you mean 'cycles'" in error["error"]
    assert not (workspace / "run").exists()


def test_config_loader_checks_a_shape_on_request(tmp_path):
    path = tmp_path / "seeds.yaml"
    path.write_text("base_seed: 7\nstreams: {dreamer: 1}\n")
    ok = run_script("utils", "config_loader", path, "--schema", "seeds")
    assert ok.returncode == 0 and json_lines(ok.stdout)[0]["config"]["base_seed"] == 7
    path.write_text("base_seed: 7\nstreems: {dreamer: 1}\n")
    bad = run_script("utils", "config_loader", path, "--schema", "seeds")
    assert bad.returncode == 2 and "did you mean 'streams'" in single_error(bad.stderr)["error"]
