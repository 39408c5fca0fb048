"""Everything the code imports is declared: the scripts' imports in requirements.in (their
run-time dependencies, which pyproject.toml installs), the tests' and benchmarks' in
requirements-dev.in too, CuPy in requirements-gpu.in. A package that arrives only as someone
else's dependency is a missing one."""

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from scripts.utils.bootstrap import CORE_MODULES

REPO = Path(__file__).resolve().parents[1]
NOT_INSTALLED_HERE = {
    "cupy": "cupy-cuda12x",
    "cupyx": "cupy-cuda12x",
}  # the GPU extra: make setup-gpu


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(*files) -> set:
    names = set()
    for file in files:
        for line in (REPO / file).read_text(encoding="utf-8").splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                names.add(normalize(re.split(r"[\s;<>=!~\[]", line)[0]))
    return names


def imported_modules(*folders) -> dict:
    """{top-level module: first file importing it} for third-party imports (stdlib and the
    project left out)."""
    found = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], path.relative_to(REPO).as_posix())
    project = {"scripts", "tests", "bench"}
    return {
        name: where
        for name, where in found.items()
        if name not in sys.stdlib_module_names | project
    }


def undeclared(modules: dict, allowed: set) -> list:
    owners = metadata.packages_distributions()
    missing = []
    for module, where in sorted(modules.items()):
        distributions = {
            normalize(d) for d in owners.get(module, [NOT_INSTALLED_HERE.get(module, module)])
        }
        if not distributions & allowed:
            missing.append(
                f"{module} (imported by {where}; from {', '.join(sorted(distributions))})"
            )
    return missing


def test_the_scripts_import_only_what_requirements_in_declares():
    assert (
        undeclared(imported_modules("scripts"), declared("requirements.in", "requirements-gpu.in"))
        == []
    )


def test_tests_and_benchmarks_import_only_what_the_requirements_declare():
    # torch (several GB) is in no lock: its tests run where it can be imported
    # (tests/orchestration/test_verify_torch.py)
    allowed = declared("requirements.in", "requirements-dev.in", "requirements-gpu.in") | {"torch"}
    assert undeclared(imported_modules("tests", "bench"), allowed) == []


def test_the_bootstrap_checks_declared_modules():
    owners = metadata.packages_distributions()
    runtime = declared("requirements.in")
    assert all(
        {normalize(d) for d in owners[name.split(".")[0]]} & runtime for name in CORE_MODULES
    )


def test_the_check_finds_an_undeclared_import():
    assert undeclared({"threadpoolctl": "x.py"}, {"scikit-learn"}) != []
    assert undeclared({"yaml": "x.py"}, {"pyyaml"}) == []
