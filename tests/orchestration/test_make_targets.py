"""make's variables as the commands' options (make_targets.target_argv), with no shell between."""

import os

import pytest

from scripts.orchestration.make_targets import target_argv


def argv_for(target, **variables):
    return target_argv(target, {f"CRH_MAKE_{name}": value for name, value in variables.items()})


@pytest.mark.parametrize(
    ("target", "variables", "expected"),
    [
        ("phase7", {}, ("pipeline", ["phase7", "--workspace", "."])),
        (
            "phase5",
            {"CERTIFY": "1", "KEY": "lab key.pem", "WORKSPACE": "/w"},
            ("pipeline", ["phase5", "--workspace", "/w", "--certify", "--key", "lab key.pem"]),
        ),
        ("phase5", {"CERTIFY": "0"}, ("pipeline", ["phase5", "--workspace", "."])),
        ("verify", {"CERTIFY": "yes"}, ("verify", ["--workspace", ".", "--certify"])),
        ("verify", {"KEY": "k.pem"}, ("verify", ["--workspace", "."])),  # a key alone signs nothing
        (
            "certify",
            {"RUN": "r.json", "KEY": "k.pem"},
            ("certify", ["r.json", "--workspace", ".", "--key", "k.pem"]),
        ),
        (
            "check-proof",
            {"CRATE": "$(rm -rf ~)", "RERUN": "true"},
            ("check_proof", ["$(rm -rf ~)", "--rerun"]),
        ),
        ("check-proof", {}, ("check_proof", [os.path.join(".", "experiments/proofs/phase7")])),
    ],
)
def test_each_variable_becomes_its_option(target, variables, expected):
    assert argv_for(target, **variables) == expected
