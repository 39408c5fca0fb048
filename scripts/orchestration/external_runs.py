"""An external training command's own code and environment, recorded with its run and checked by rerun.

    from scripts.orchestration.external_runs import code_record, external_command, interpreter_environment
    command = external_command(config, seed=7)        # placeholders filled: {seed}, {logdir}, {train.lr}, ...
    code = code_record(command, config_dir, extra_code=["src/"], cwd=logdir)
    environment = interpreter_environment(command, env=None, cwd=logdir)
    changed_since({"code": code, "environment": environment}, recorded)   # [] when nothing changed

``external_command`` fills ``external.command``'s placeholders; the pipeline's
fingerprint of a step whose config is external covers the code too
(``config_code_hashes``). The code of a run is every file its command names (the script, a module
file, but not the files in its own log folder), plus the files and folders
that ``[external] code = [...]`` lists (relative to the config's folder), each
by SHA-256, and the git state (commit, uncommitted changes) of the
repositories they live in. The environment is asked of the interpreter that
runs the command: its Python, its installed distributions (as ``pip freeze``
lists them), and where torch is installed the torch, CUDA and cuDNN versions,
the visible GPUs, and the determinism settings (deterministic algorithms,
cuDNN deterministic and benchmark, ``CUBLAS_WORKSPACE_CONFIG``, threads).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import orjson

from scripts.utils.errors import InputError

PROBE_SECONDS = 120
SKIPPED_FOLDERS = {".git", "__pycache__", ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache"}
MAX_CODE_FILES = 10_000

# Run by the command's own interpreter: prints one JSON object (stdlib json: that Python may lack orjson).
# Imports torch only where it is installed.
PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, platform, sys
found = {"python": platform.python_version(), "implementation": platform.python_implementation(),
         "executable": sys.executable,
         "distributions": sorted({f"{d.metadata['Name']}=={d.version}" for d in md.distributions()
                                  if d.metadata['Name']}, key=str.lower),
         "variables": {k: os.environ[k] for k in ("CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                   "PYTHONHASHSEED", "CUDA_VISIBLE_DEVICES") if k in os.environ}}
if importlib.util.find_spec("torch") is not None:
    import torch
    found["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                      "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                      "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                              if torch.cuda.is_available() else [],
                      "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                      "cudnn_deterministic": torch.backends.cudnn.deterministic,
                      "cudnn_benchmark": torch.backends.cudnn.benchmark,
                      "threads": torch.get_num_threads()}
print(json.dumps(found))
"""


PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def external_command(config: dict, seed: int) -> list:
    """external.command with its placeholders filled in: {config}, {seed}, {logdir}, and any config value by its
    dotted key ({train.lr} from a [train] table), so an argparse script can be swept over any argument."""
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
                raise InputError(f"external.command has an unknown placeholder {{{name}}}: neither config, seed, "
                                 "logdir nor a key of the config", key="external.command", placeholder=name)
            found = found[part]
        if isinstance(found, bool):
            return "true" if found else "false"
        return found if isinstance(found, str) else (str(found) if isinstance(found, (int, float))
                                                      else orjson.dumps(found).decode())

    return [PLACEHOLDER.sub(value, part) for part in config["external"]["command"]]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _named_files(command: list, cwd: Path) -> list:
    """The files the command's arguments name (its interpreter's binary and its own log folder left out)."""
    files = []
    for index, part in enumerate(command):
        candidate = Path(part) if Path(part).is_absolute() else cwd / part
        if index == 0 and Path(part).name.startswith("python"):
            continue  # the interpreter: its environment is asked of it instead
        try:
            if candidate.is_file() and cwd.resolve() not in candidate.resolve().parents:
                files.append(candidate.resolve())
        except OSError:
            continue
    return files


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
                    raise InputError(f"external.code lists more than {MAX_CODE_FILES:,} files", key="external.code",
                                     value=entry)
        else:
            raise InputError("external.code names a file or folder that does not exist", key="external.code",
                             value=entry)
    return files


def git_state_of(folder: Path) -> dict | None:
    """{"root", "commit", "dirty"} of the git repository holding ``folder`` (None outside one, or without git)."""
    try:
        result = subprocess.run(["git", "-C", str(folder), "status", "--porcelain=v2", "--branch",
                                 "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        root = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0 or root.returncode != 0:
        return None
    lines = result.stdout.splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    return {"root": root.stdout.strip(), "commit": None if commit == "(initial)" else commit,
            "dirty": any(not line.startswith("#") for line in lines)}


def code_record(command: list, config_dir: Path, extra_code: list, cwd: Path) -> dict:
    """{"files": {path: sha256}, "git": [repository states]} of the code a command runs."""
    files = sorted(set(_named_files(command, cwd)) | set(_listed_files(extra_code, config_dir)))
    repositories = {}
    for path in files:
        state = git_state_of(path.parent)
        if state is not None:
            repositories[state["root"]] = state
    return {"files": {str(path): sha256_of(path) for path in files},
            "git": [repositories[root] for root in sorted(repositories)]}


def interpreter_environment(command: list, env: dict | None, cwd: Path) -> dict | None:
    """What the command's Python reports about itself (None when the command is not run by a Python)."""
    program = command[0]
    if not Path(program).name.startswith("python"):
        return None
    try:
        result = subprocess.run([program, "-c", PROBE], capture_output=True, env=env, cwd=cwd, timeout=PROBE_SECONDS)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"the interpreter could not be asked: {exc}"}
    if result.returncode != 0:
        return {"error": "the interpreter could not be asked",
                "stderr_tail": result.stderr.decode(errors="replace").splitlines()[-3:]}
    try:
        return orjson.loads(result.stdout.splitlines()[-1])
    except (orjson.JSONDecodeError, IndexError):
        return {"error": "the interpreter's answer was not JSON"}


def changed_since(recorded: dict, now: dict) -> list:
    """What differs between a run's recorded code and environment and today's: refusals for rerun."""
    found = []
    old_files, new_files = (recorded.get("code") or {}).get("files", {}), (now.get("code") or {}).get("files", {})
    for path, digest in sorted(old_files.items()):
        if path not in new_files:
            found.append({"what": "a file of the command's code is gone", "file": path})
        elif new_files[path] != digest:
            found.append({"what": "a file of the command's code changed", "file": path,
                          "recorded": digest, "now": new_files[path]})
    old_env, new_env = recorded.get("environment") or {}, now.get("environment") or {}
    if "distributions" in old_env and "distributions" in new_env:
        before, after = set(old_env["distributions"]), set(new_env["distributions"])
        if before != after:
            found.append({"what": "the command's Python has other packages",
                          "removed": sorted(before - after)[:20], "added": sorted(after - before)[:20]})
    for key in ("python", "torch"):
        if key in old_env and old_env.get(key) != new_env.get(key):
            found.append({"what": f"the command's {key} changed", "recorded": old_env.get(key),
                          "now": new_env.get(key)})
    return found


def config_code_hashes(config: dict, cwd: Path) -> dict:
    """{file: sha256} of an external config's code (what the pipeline's fingerprint of its step covers)."""
    if (config.get("experiment") or {}).get("kind") != "external" or not isinstance(config.get("external"), dict):
        return {}
    try:
        command = external_command(config, 0)
        return code_record(command, cwd, config["external"].get("code", []), cwd)["files"]
    except InputError:
        return {}
