"""Which files a Python process opens for reading, through its audit hook (``sys.addaudithook``).

    PYTHONPATH=scripts/utils/read_tracing CRH_READS_DIR=/tmp/reads python train.py
    # /tmp/reads/<pid>.txt: one absolute path per line, per open for reading

Imported as ``sitecustomize`` (an external command: run_experiment puts this
folder first on its ``PYTHONPATH``), it starts tracing when
``CRH_READS_DIR`` is set, then runs a ``sitecustomize`` it shadows. Our own
scripts call ``start``/``stop`` (run_records.RunRecorder). Stdlib only: the
command's Python may be any Python 3.8+.

Every ``open`` audit event (``open()``, ``io.open_code``, ``os.open``) whose
mode or flags only read is written at once, one line, to the process's own
file (a forked worker gets its own, by pid): nothing is lost when a worker
ends with ``os._exit``. Files under the interpreter's prefixes (the
standard library, installed packages) are left out. Tracing changes no
output: it only appends to files outside the workspace.
"""

import os
import sys

_folders = []  # where each active tracer writes; the hook is installed once per process
_state = {"pid": None, "fds": {}, "busy": False, "installed": False}
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_SKIP = tuple({os.path.join(p, "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix) if p})


def _hook(event, args):
    if event != "open" or not _folders or _state["busy"]:
        return
    path, mode, flags = args
    if isinstance(path, int) or path is None:
        return
    if mode is not None:
        if any(c in mode for c in "wax+"):
            return
    elif flags & _WRITES:
        return
    _state["busy"] = True  # os.open below raises an open event of its own
    try:
        name = os.path.abspath(os.fsdecode(path))
        if name.startswith(_SKIP):
            return
        pid = os.getpid()
        if _state["pid"] != pid:  # a forked child: its own files
            _state["pid"], _state["fds"] = pid, {}
        line = os.fsencode(name) + b"\n"
        for folder in _folders:
            fd = _state["fds"].get(folder)
            if fd is None:
                fd = os.open(
                    os.path.join(folder, f"{pid}.txt"),
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                    0o600,
                )
                _state["fds"][folder] = fd
            os.write(fd, line)
    except (OSError, ValueError, TypeError):
        pass  # tracing never breaks the traced program
    finally:
        _state["busy"] = False


def start(folder) -> None:
    """Trace reads into ``folder`` (made by the caller) until ``stop(folder)``."""
    if not _state["installed"]:
        sys.addaudithook(_hook)
        _state["installed"] = True
    _folders.append(os.fspath(folder))


def stop(folder) -> None:
    folder = os.fspath(folder)
    if folder in _folders:
        _folders.remove(folder)
    fd = _state["fds"].pop(folder, None)
    if fd is not None:
        os.close(fd)


def _run_the_shadowed_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    # the one shadowed is the next on the path: searching every other folder would find, where
    # two such hooks are on the path, the one that ran this one, and run it again
    here = os.path.dirname(os.path.abspath(__file__))
    folders = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    after = sys.path[folders.index(here) + 1 :] if here in folders else sys.path
    others = [entry for entry in after if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":  # at start-up; not when imported as a module of ours
    if os.environ.get("CRH_READS_DIR"):
        start(os.environ["CRH_READS_DIR"])
    _run_the_shadowed_sitecustomize()
