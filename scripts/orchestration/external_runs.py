"""An external training command's own code and environment, recorded with its run and checked by
rerun.

    from scripts.orchestration.external_runs import (
        code_record, external_command, interpreter_environment)
    # {seed}, {logdir}, {train.lr}, ... filled, relative paths from the code folder
    command = external_command(config, seed=7, code_dir=Path("proj"))
    code = code_record(command, code_dir, extra_code=["src/"], logdir=logdir)
    environment = interpreter_environment(command, env=None, cwd=logdir)
    changed_since({"code": code, "environment": environment}, recorded)   # [] when nothing changed

``external_command`` fills ``external.command``'s placeholders; the pipeline's
fingerprint of a step whose config is external covers the code too
(``config_code_hashes``). The command runs in its log folder, so an argument
that names an existing file or folder relative to the config's folder
(``train.py``, ``data/train.csv``, ``--data=data``) is given as an absolute
path. The code of a run is every file its command names (the script, a
module given to ``python -m``, but not the files in its own log folder), the
local modules those Python files import (``from model import Net`` next to
``train.py``, followed through the imports they make in turn), plus the files
and folders that ``[external] code = [...]`` lists (relative to the config's
folder), each by SHA-256, and the git state (commit, uncommitted changes) of
the repositories they live in. The environment is asked of the interpreter
that runs the command (``python``, or the Python named by the ``#!`` line of
a program such as ``torchrun``): its Python, its installed distributions (as
``pip freeze`` lists them), and where torch is installed the torch, CUDA and
cuDNN versions, the visible GPUs, and the determinism settings (deterministic
algorithms, cuDNN deterministic and benchmark, ``CUBLAS_WORKSPACE_CONFIG``,
threads).
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import orjson

from scripts.utils.errors import InputError

PROBE_SECONDS = 120
SKIPPED_FOLDERS = {".git", "__pycache__", ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache"}
MAX_CODE_FILES = 10_000

# Run by the command's own interpreter: prints one JSON object (stdlib json: that Python may lack
# orjson). Imports torch only where it is installed.
PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, platform, sys
found = {"python": platform.python_version(), "implementation": platform.python_implementation(),
         "distributions": sorted({f"{d.metadata['Name']}=={d.version}" for d in md.distributions()
                                  if d.metadata['Name']}, key=str.lower),
         "variables": {k: os.environ[k] for k in (
             "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED",
             "CUDA_VISIBLE_DEVICES") if k in os.environ}}
if importlib.util.find_spec("torch") is not None:
    import torch
    found["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                      "cudnn": torch.backends.cudnn.version()
                               if torch.backends.cudnn.is_available() else None,
                      "gpus": [torch.cuda.get_device_name(i)
                               for i in range(torch.cuda.device_count())]
                              if torch.cuda.is_available() else [],
                      "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                      "cudnn_deterministic": torch.backends.cudnn.deterministic,
                      "cudnn_benchmark": torch.backends.cudnn.benchmark,
                      "threads": torch.get_num_threads()}
print(json.dumps(found))
"""


PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def external_command(config: dict, seed: int, code_dir: Path | None = None) -> list:
    """external.command with its placeholders filled in: {config}, {seed}, {logdir}, and any
    config value by its dotted key ({train.lr} from a [train] table), so an argparse script can
    be swept over any argument. With ``code_dir``, an argument naming an existing file or folder
    relative to it becomes its absolute path."""
    fill = {"config": "config.json", "seed": str(seed), "logdir": "."}

    def value(match) -> str:
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        name = match.group(1)
        if name in fill:
            return fill[name]
        found = config
        for part in name.split("."):
            if not isinstance(found, dict) or part not in found:
                raise InputError(
                    f"external.command has an unknown placeholder {{{name}}}: neither config, "
                    f"seed, "
                    "logdir nor a key of the config",
                    key="external.command",
                    placeholder=name,
                )
            found = found[part]
        if isinstance(found, bool):
            return "true" if found else "false"
        return (
            found
            if isinstance(found, str)
            else (str(found) if isinstance(found, (int, float)) else orjson.dumps(found).decode())
        )

    filled = [PLACEHOLDER.sub(value, part) for part in config["external"]["command"]]
    if code_dir is None:
        return filled
    return [
        filled[0]
        if os.sep not in filled[0] and "/" not in filled[0]
        else anchored(filled[0], code_dir),
        *(anchored(part, code_dir) for part in filled[1:]),
    ]


def anchored(argument: str, code_dir: Path) -> str:
    """``argument`` as an absolute path when it (or the value of ``--name=value``) names an
    existing file or folder relative to ``code_dir``; unchanged otherwise."""
    prefix, value = "", argument
    if argument.startswith("-"):
        prefix, _, value = argument.partition("=")
        if not value:
            return argument
        prefix += "="
    if not value or value in (".", "..") or Path(value).is_absolute():
        return argument
    try:
        candidate = code_dir / value
        if candidate.exists():
            return prefix + str(candidate.resolve())
    except (OSError, ValueError):
        pass
    return argument


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _named_files(command: list, code_dir: Path, logdir: Path | None) -> list:
    """The files the command's arguments name (its interpreter's binary and the files in its log
    folder left out), a module given to ``python -m`` (found in the config's folder), and the
    local modules the Python files among them import."""
    files = []
    for index, part in enumerate(command):
        if index == 0 and command_interpreter(command) is not None:
            continue  # the interpreter or a Python program: its environment is asked of it instead
        if (
            index > 0 and command[index - 1] == "-m"
        ):  # the module, and the packages' __init__ on the way to it
            parts = part.split(".")
            for depth in range(1, len(parts) + 1):
                files += _module_files(parts[:depth], [code_dir])
            if code_dir.joinpath(
                *parts, "__main__.py"
            ).is_file():  # ``python -m package`` runs its __main__
                files.append(code_dir.joinpath(*parts, "__main__.py").resolve())
            continue
        candidate = Path(part) if Path(part).is_absolute() else (logdir / part if logdir else None)
        try:
            if (
                candidate is not None
                and candidate.is_file()
                and (logdir is None or logdir.resolve() not in candidate.resolve().parents)
            ):
                files.append(candidate.resolve())
        except OSError:
            continue
    return local_imports(files)


def _module_files(parts: list, folders: list) -> list:
    """The file of module ``a.b.c`` (``a/b/c.py`` or ``a/b/c/__init__.py``) in the first folder
    that has it."""
    for folder in folders:
        base = folder.joinpath(*parts)
        for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
            if candidate.is_file():
                return [candidate.resolve()]
    return []


def local_imports(files: list) -> list:
    """``files`` plus every module file, next to a Python file among them, that it imports
    (``import model``, ``from utils.data import load``, ``from . import layers``), followed
    through their own imports. Installed packages are the environment's: they are not code files
    of the run."""
    found, todo = list(dict.fromkeys(files)), [f for f in files if f.suffix == ".py"]
    while todo and len(found) <= MAX_CODE_FILES:
        path = todo.pop()
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [(alias.name.split("."), path.parent) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = path.parent
                for _ in range(max(node.level - 1, 0)):
                    base = base.parent
                module = node.module.split(".") if node.module else []
                if node.level == 0 and not module:
                    continue
                names = [(module, base)] + [([*module, alias.name], base) for alias in node.names]
            else:
                continue
            for parts, folder in names:
                for index in range(
                    1, len(parts) + 1
                ):  # a package's __init__ files run on the way down
                    for module_file in _module_files(parts[:index], [folder]):
                        if module_file not in found:
                            found.append(module_file)
                            todo.append(module_file)
    return found


def _listed_files(entries: list, base: Path) -> list:
    files = []
    for entry in entries:
        path = Path(entry) if Path(entry).is_absolute() else base / entry
        if path.is_file():
            files.append(path.resolve())
        elif path.is_dir():
            for root, folders, names in os.walk(path):
                folders[:] = sorted(f for f in folders if f not in SKIPPED_FOLDERS)
                files += [(Path(root) / name).resolve() for name in sorted(names)]
                if len(files) > MAX_CODE_FILES:
                    raise InputError(
                        f"external.code lists more than {MAX_CODE_FILES:,} files",
                        key="external.code",
                        value=entry,
                    )
        else:
            raise InputError(
                "external.code names a file or folder that does not exist",
                key="external.code",
                value=entry,
            )
    return files


def git_state_of(folder: Path) -> dict | None:
    """{"root", "commit", "dirty"} of the git repository holding ``folder`` (None outside one, or
    without git)."""
    try:
        result = subprocess.run(
            [
                "git",
                "-C",
                str(folder),
                "status",
                "--porcelain=v2",
                "--branch",
                "--untracked-files=no",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        root = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0 or root.returncode != 0:
        return None
    lines = result.stdout.splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    return {
        "root": root.stdout.strip(),
        "commit": None if commit == "(initial)" else commit,
        "dirty": any(not line.startswith("#") for line in lines),
    }


def code_name(path: Path, code_dir: Path) -> str:
    """A code file's name in the record: relative to the code folder, POSIX (``../lib/x.py``
    above it), never absolute, so the same project elsewhere records the same names."""
    return Path(os.path.relpath(path, code_dir)).as_posix()


def code_record(command: list, code_dir: Path, extra_code: list, logdir: Path | None) -> dict:
    """{"files": {name: sha256}, "git": [repository states]} of the code a command runs, named
    relative to ``code_dir`` (``logdir``: its log folder, whose files are outputs, not code; None
    before there is one)."""
    code_dir = code_dir.resolve()
    files = sorted(
        set(_named_files(command, code_dir, logdir)) | set(_listed_files(extra_code, code_dir))
    )
    repositories = {}
    for path in files:
        state = git_state_of(path.parent)
        if state is not None:
            repositories[state["root"]] = {
                **state,
                "root": code_name(Path(state["root"]), code_dir),
            }
    return {
        "files": {code_name(path, code_dir): sha256_of(path) for path in files},
        "git": [repositories[root] for root in sorted(repositories)],
    }


def current_code(recorded: dict, code_dir: Path) -> dict:
    """{name: sha256} today of the files a run's code record names (a file now missing is left
    out)."""
    names = (recorded.get("files") or {}) if isinstance(recorded, dict) else {}
    return {name: sha256_of(code_dir / name) for name in names if (code_dir / name).is_file()}


def command_interpreter(command: list) -> str | None:
    """The Python that runs ``command``: its first word when that is a Python, or the Python
    named by the ``#!`` line of a program found on PATH (``torchrun``, ``accelerate``); None for
    any other program."""
    program = command[0]
    if Path(program).name.startswith("python"):
        return program
    found = shutil.which(program)
    if found is None:
        return None
    try:
        with open(found, "rb") as handle:
            first = handle.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if words and Path(words[0]).name == "env":
        words = [w for w in words[1:] if not w.startswith("-")]
    return words[0] if words and Path(words[0]).name.startswith("python") else None


def interpreter_environment(command: list, env: dict | None, cwd: Path) -> dict | None:
    """What the command's Python reports about itself (None when the command is not run by a
    Python)."""
    program = command_interpreter(command)
    if program is None:
        return None
    try:
        result = subprocess.run(
            [program, "-c", PROBE], capture_output=True, env=env, cwd=cwd, timeout=PROBE_SECONDS
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"the interpreter could not be asked: {exc}"}
    if result.returncode != 0:
        return {
            "error": "the interpreter could not be asked",
            "stderr_tail": result.stderr.decode(errors="replace").splitlines()[-3:],
        }
    try:
        return orjson.loads(result.stdout.splitlines()[-1])
    except (orjson.JSONDecodeError, IndexError):
        return {"error": "the interpreter's answer was not JSON"}


def changed_since(recorded: dict, now: dict) -> list:
    """What differs between a run's recorded code and environment and today's: refusals for
    rerun."""
    found = []
    old_files, new_files = (
        (recorded.get("code") or {}).get("files", {}),
        (now.get("code") or {}).get("files", {}),
    )
    for path, digest in sorted(old_files.items()):
        if path not in new_files:
            found.append({"what": "a file of the command's code is gone", "file": path})
        elif new_files[path] != digest:
            found.append(
                {
                    "what": "a file of the command's code changed",
                    "file": path,
                    "recorded": digest,
                    "now": new_files[path],
                }
            )
    old_env, new_env = recorded.get("environment") or {}, now.get("environment") or {}
    if "distributions" in old_env and "distributions" in new_env:
        before, after = set(old_env["distributions"]), set(new_env["distributions"])
        if before != after:
            found.append(
                {
                    "what": "the command's Python has other packages",
                    "removed": sorted(before - after)[:20],
                    "added": sorted(after - before)[:20],
                }
            )
    for key in ("python", "torch"):
        before, after = old_env.get(key), new_env.get(key)
        if key in old_env and before != after:
            what = f"the command's {key} changed"
            if isinstance(before, dict) and isinstance(after, dict):  # torch: name its fields
                fields = sorted(
                    k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
                )
                what += (
                    " (" + ", ".join(f"{k} {before.get(k)} -> {after.get(k)}" for k in fields) + ")"
                )
            found.append({"what": what, "recorded": before, "now": after})
    return found


def config_code_hashes(config: dict, code_dir: Path) -> dict:
    """{file: sha256} of an external config's code (what the pipeline's fingerprint of its step
    covers)."""
    if (config.get("experiment") or {}).get("kind") != "external" or not isinstance(
        config.get("external"), dict
    ):
        return {}
    try:
        command = external_command(config, 0, code_dir)
        return code_record(command, code_dir, config["external"].get("code", []), None)["files"]
    except InputError:
        return {}
