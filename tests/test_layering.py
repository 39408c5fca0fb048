"""The code's layers, read from the imports with ``ast`` (every import, also those inside
functions).

* ``scripts/utils`` imports nothing from the other packages; ``data_tools`` and ``visualization``
  import only ``utils`` (and themselves); ``orchestration`` may import everything.
* Inside ``utils``, ranks: the frame (the modules at its top: cli, errors, logging, jsonio, limits,
  workspace, ...) below ``config`` and ``compute``, below ``formats``, below ``records``; a wing
  imports only its own rank or below, never a wing beside it. The commands in ``utils``
  (config_loader, seed_manager, ...) are imported by nobody, and no module in a wing imports the CLI
  frame (cli).
* No import cycles between modules.
* No private name (``_x``) of one module is imported or used by another.
* A name is imported from the module that defines it (its one home), never through a module that
  only imports it itself.
* Everything imported at run time is declared in requirements.in (see test_declared_dependencies).

There is no list of exceptions: a change that breaks a rule moves the code to where it belongs.
"""

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
RANK = {"utils": 0, "data_tools": 1, "visualization": 1, "orchestration": 2}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = SCRIPTS) -> dict:
    """{module name: ast tree} for every module under ``root``."""
    return {
        module_name(path): ast.parse(path.read_text(encoding="utf-8"), str(path))
        for path in sorted(root.rglob("*.py"))
    }


def imports(tree: ast.AST, modules: dict) -> list:
    """``(module, name or None, line)`` for every import of a project module in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "scripts"
        ):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in modules:  # `from scripts.utils import cli`: the module itself
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((node.module, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [
                (alias.name, None, node.lineno) for alias in node.names if alias.name in modules
            ]
    return found


def top_level_names(tree: ast.Module) -> tuple:
    """(names the module defines itself, names it only imports)."""
    defined, imported = set(), set()
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and node in tree.body
        ):
            defined.add(node.name)
    for node in tree.body:
        for child in ast.walk(node):
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                defined.add(child.id)
            elif isinstance(child, (ast.FunctionDef, ast.ClassDef)) and isinstance(
                node, (ast.If, ast.Try)
            ):
                defined.add(child.name)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.If, ast.Try)):
            for child in ast.walk(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    imported |= {
                        (alias.asname or alias.name).split(".")[0] for alias in child.names
                    }
    return defined, imported - defined


MODULES = project_modules()
UTILS_COMMANDS = {
    "config_loader",
    "seed_manager",
    "log_formatter",
    "time_utils",
    "clean_workspace",
    "venv_setup",
}
UTILS_RANK = {"frame": 0, "config": 1, "compute": 1, "formats": 2, "records": 3, "command": 4}


def utils_room(name: str) -> str | None:
    """Where a module lives inside ``scripts/utils``: its wing, "frame" or "command" (None
    outside)."""
    parts = name.split(".")
    if parts[:2] != ["scripts", "utils"] or len(parts) < 3:
        return None
    if parts[2] in UTILS_RANK:
        return parts[2]
    return "command" if parts[2] in UTILS_COMMANDS else "frame"


def utils_violations(modules: dict) -> list:
    problems = []
    for name, tree in modules.items():
        room = utils_room(name)
        for target, _, line in imports(tree, modules):
            target_room = utils_room(target)
            if target_room == "command" and target != name:
                problems.append(f"{name}:{line} imports the command {target}")
            elif (
                room in UTILS_RANK
                and room not in ("frame", "command")
                and target == "scripts.utils.cli"
            ):
                problems.append(f"{name}:{line} imports the CLI frame")
            elif room is not None and target_room is not None and room != target_room:
                above = UTILS_RANK[target_room] > UTILS_RANK[room]
                beside = UTILS_RANK[target_room] == UTILS_RANK[room] and room != "command"
                if above or beside:
                    problems.append(
                        f"{name}:{line} imports {target} ({target_room} is above or beside {room})"
                    )
    return problems


def layer_violations(modules: dict) -> list:
    problems = []
    for name, tree in modules.items():
        package = name.split(".")[1] if name.count(".") >= 1 else None
        for target, _, line in imports(tree, modules):
            target_package = target.split(".")[1] if target.count(".") >= 1 else None
            if package not in RANK or target_package not in RANK:
                continue
            above = RANK[target_package] > RANK[package]
            beside = RANK[package] == 1 and target_package not in ("utils", package)
            if above or beside:
                problems.append(
                    f"{name}:{line} imports {target} ({target_package} is above or beside "
                    f"{package})"
                )
    return problems


def import_cycles(modules: dict) -> list:
    graph = {
        name: sorted(
            {
                target
                for target, _, _ in imports(tree, modules)
                if target != name and target in modules
            }
        )
        for name, tree in modules.items()
    }
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for successor in graph[node]:
            if state.get(successor) == "open":
                cycles.append(" -> ".join(stack[stack.index(successor) :] + [successor]))
            elif successor not in state:
                visit(successor)
        state[node] = "done"
        stack.pop()

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def private_uses(modules: dict) -> list:
    problems = []
    for name, tree in modules.items():
        aliases = {}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] == "scripts"
            ):
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in modules:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    elif alias.name.startswith("_"):
                        problems.append(
                            f"{name}:{node.lineno} imports {alias.name} from {node.module}"
                        )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                problems.append(f"{name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return problems


def borrowed_names(modules: dict, importers: dict) -> list:
    """Names imported from a module that does not define them (a second home)."""
    homes = {name: top_level_names(tree) for name, tree in modules.items()}
    problems = []
    for name, tree in importers.items():
        aliases = {}
        for target, imported, line in imports(tree, modules):
            if imported is None:
                continue
            defined, only_imported = homes.get(target, (set(), set()))
            if imported not in defined and imported in only_imported:
                problems.append(
                    f"{name}:{line} imports {imported} from {target}, which only imports it"
                )
        for node in ast.walk(tree):  # `module.NAME` where the module only imports NAME
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] == "scripts"
            ):
                aliases.update(
                    {
                        alias.asname or alias.name: f"{node.module}.{alias.name}"
                        for alias in node.names
                        if f"{node.module}.{alias.name}" in modules
                    }
                )
            elif isinstance(node, ast.Import):
                aliases.update(
                    {
                        alias.asname: alias.name
                        for alias in node.names
                        if alias.name in modules and alias.asname
                    }
                )
        shadowed = {
            node.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
        }
        shadowed |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
        aliases = {
            alias: module for alias, module in aliases.items() if alias not in shadowed
        }  # a local variable
        patched = (
            set()
        )  # `module.NAME = wrapper(module.NAME)`: a test patching a name where it is used
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    patched |= {
                        (child.value.id, child.attr)
                        for child in ast.walk(target)
                        if isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name)
                    }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                defined, only_imported = homes[aliases[node.value.id]]
                if (
                    node.attr in defined
                    or node.attr.startswith("__")
                    or (node.value.id, node.attr) in patched
                ):
                    continue
                problems.append(
                    f"{name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}, which that "
                    f"module "
                    + ("only imports" if node.attr in only_imported else "does not define")
                )
    return problems


def test_each_package_imports_only_its_own_layer_or_below():
    assert layer_violations(MODULES) == []


def command_imports(modules: dict) -> list:
    """Imports of a command module (one with a top-level ``main``) other than its ``main``: what
    another module needs lives in a library module, not in a command file."""
    commands = {
        name
        for name, tree in modules.items()
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)
    }
    return [
        f"{name}:{line} imports {imported or 'the module'} from the command {target}"
        for name, tree in modules.items()
        for target, imported, line in imports(tree, modules)
        if target in commands and target != name and imported != "main"
    ]


def test_no_module_imports_from_a_command_file():
    assert command_imports(MODULES) == []


def test_the_wings_of_utils_keep_their_ranks():
    assert utils_violations(MODULES) == []


def test_no_import_cycles():
    assert import_cycles(MODULES) == []


def test_no_private_name_crosses_a_module():
    assert private_uses(MODULES) == []


def test_every_name_is_imported_from_its_home():
    everything = dict(MODULES)
    for folder in ("tests", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            everything[module_name(path)] = ast.parse(path.read_text(encoding="utf-8"))
    assert borrowed_names(MODULES, everything) == []


@pytest.mark.parametrize(
    "source, problem",
    [
        (
            {
                "scripts.utils.a": "from scripts.orchestration import b",
                "scripts.orchestration.b": "",
            },
            "layer",
        ),
        (
            {
                "scripts.visualization.a": "from scripts.data_tools.b import f",
                "scripts.data_tools.b": "def f(): pass",
            },
            "layer",
        ),
        (
            {
                "scripts.utils.a": "def f():\n    from scripts.utils import b",
                "scripts.utils.b": "from scripts.utils import a",
            },
            "cycle",
        ),
        (
            {
                "scripts.utils.a": "from scripts.utils.b import _hidden",
                "scripts.utils.b": "_hidden = 1",
            },
            "private",
        ),
        (
            {
                "scripts.utils.a": "from scripts.utils import b\nb._hidden()",
                "scripts.utils.b": "def _hidden(): pass",
            },
            "private",
        ),
        (
            {
                "scripts.utils.a": "from scripts.utils.b import Path",
                "scripts.utils.b": "from pathlib import Path",
            },
            "borrowed",
        ),
        (
            {
                "scripts.utils.a": "from scripts.utils import b\nb.Path",
                "scripts.utils.b": "from pathlib import Path",
            },
            "borrowed",
        ),
        (
            {
                "scripts.utils.formats.a": "from scripts.utils.records import b",
                "scripts.utils.records.b": "",
            },
            "wings",
        ),
        (
            {
                "scripts.utils.config.a": "from scripts.utils.compute.b import f",
                "scripts.utils.compute.b": "def f(): pass",
            },
            "wings",
        ),
        (
            {
                "scripts.utils.records.a": "from scripts.utils.seed_manager import main",
                "scripts.utils.seed_manager": "def main(): pass",
            },
            "wings",
        ),
        (
            {"scripts.utils.formats.a": "from scripts.utils import cli", "scripts.utils.cli": ""},
            "wings",
        ),
        (
            {
                "scripts.visualization.a": "from scripts.visualization.b import helper",
                "scripts.visualization.b": "def helper(): pass\ndef main(): pass",
            },
            "command",
        ),
    ],
)
def test_the_checks_catch_what_they_are_for(source, problem):
    modules = {name: ast.parse(text) for name, text in source.items()}
    found = {
        "layer": layer_violations,
        "cycle": import_cycles,
        "private": private_uses,
        "borrowed": lambda m: borrowed_names(m, m),
        "wings": utils_violations,
        "command": command_imports,
    }[problem](modules)
    assert found, problem
