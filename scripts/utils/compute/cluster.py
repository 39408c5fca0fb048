"""Scale-out through Dask distributed: a scheduler address in, a ``concurrent.futures`` executor
out.

    python scripts/data_tools/metadata_extractor.py /mnt/archive --scheduler tcp://head-node:8786
    python scripts/data_tools/hash_integrity.py hash /mnt/archive --scheduler local:2
    CRH_DASK_SCHEDULER=tls://head-node:8786 make phase7 DATA=/mnt/archive

The data tools map their work over any executor and merge the results in
input order, so their outputs never depend on where it ran. This module only
connects them to a cluster (``cluster_executor``) and cuts their work into
batches (``batches``, ``map_batches``); scheduling, retries of tasks lost
with a worker, and the dashboard are Dask's.

``--scheduler`` (else ``$CRH_DASK_SCHEDULER``) is either a scheduler address
(``tcp://host:8786``, ``tls://host:8786``: a cluster started with ``dask
scheduler`` / ``dask worker``, dask-jobqueue or dask-kubernetes), or
``local:N``: a LocalCluster of N worker processes on this machine, started
and stopped with the run. Unset: everything runs locally, as without Dask.

Before any work, every worker is checked:

* it can import this project (its workers were started with the project's
  environment and ``PYTHONPATH`` at a checkout of it; paths to the inputs
  must name the same files there: shared storage);
* its environment fingerprint (the fields of utils/compute/environment.py that can
  change bytes) and the hash of this project's code equal the client's.

A worker that fails either check is refused: exit 2 naming it and the
differing fields. Workers only compute and return results; only the client
writes the registry, manifests, tables and reports, so no file lock is ever
taken on shared storage by a worker.

Secrets. A task that needs the de-identification key carries it to the
workers. It is never sent in clear across a network: with a key, a
``tcp://`` scheduler that is not on this machine is refused (exit 2), and
so is any worker reached in clear on another host (a loopback scheduler can
have remote workers); the tasks then run only on the workers checked at the
start, never on one that joins later. Use
``tls://`` with certificates set in Dask's configuration
(``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``, ``..._CLIENT__CERT``, ``..._CLIENT__KEY``;
see docs/scaling-out.md).

How the work was executed (scheduler, workers, batches) is written to the
log only: reports, tables and registries are byte-identical to a local run.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import ipaddress
import logging
import math
import os
import re
import urllib.parse
from concurrent.futures import Executor
from pathlib import Path

from scripts.utils.errors import InputError

SCHEDULER_ENV = "CRH_DASK_SCHEDULER"
BATCH_FILES = 1000  # files per task at most: a task costs the scheduler ~1 ms
BATCH_BYTES = 256 << 20  # bytes read per task at most (hashing): a few seconds of one core
TASKS_PER_WORKER = 4  # small inputs: at least this many tasks per worker, for balance
LOCAL_WORKER_BYTES = 1 << 30  # memory a local:N worker may need (a batch of images in flight)
LOCAL = re.compile(r"^local:([0-9]{1,6})$")
SCHEMES = ("tcp", "tls", "ws", "wss")
HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*|[0-9A-Fa-f:.]+)$"
)  # a DNS name, an IPv4 or an IPv6 address
REPO_ROOT = Path(__file__).resolve().parents[3]


def local_capacity() -> int:
    """The most ``local:N`` workers this machine can hold: one per CPU, and LOCAL_WORKER_BYTES of
    memory each."""
    cpus = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows: no sysconf; the CPUs decide
        memory = None
    return max(1, min(cpus, memory // LOCAL_WORKER_BYTES if memory else cpus))


def scheduler_address(given: str | None) -> str | None:
    """``--scheduler``, else ``$CRH_DASK_SCHEDULER``, else None (run locally); parsed once,
    strictly.

    ``local:N`` with 1 <= N <= ``local_capacity()``, or ``scheme://host[:port]`` with a scheme of
    SCHEMES, a host name or IP address and nothing else (no path, user or query). Anything else is
    bad input naming the address.
    """
    address = given if given is not None else os.environ.get(SCHEDULER_ENV) or None
    if address is None or address == "":
        return None
    match = LOCAL.match(address)
    if match:
        capacity = local_capacity()
        if not 1 <= int(match.group(1)) <= capacity:
            raise InputError(
                f"local:N needs 1 <= N <= {capacity} on this machine (one worker per CPU and "
                f"{LOCAL_WORKER_BYTES >> 30} GiB of memory each)",
                scheduler=address,
            )
        return address
    text = address if "://" in address else "tcp://" + address
    problem = "expected local:N, tcp://host:port or tls://host:port"
    try:
        parsed = urllib.parse.urlsplit(text)
        host, port = parsed.hostname, parsed.port
    except ValueError as exc:
        raise InputError(f"not a scheduler address: {exc}; {problem}", scheduler=address)
    if (
        parsed.scheme not in SCHEMES
        or any(c.isspace() or not c.isprintable() for c in text)
        or not host
        or not HOST.match(host)
        or parsed.path not in ("", "/")
        or parsed.query
        or parsed.fragment
        or parsed.username
        or parsed.password
        or port == 0
    ):
        raise InputError(f"not a scheduler address: {problem}", scheduler=address)
    return text.rstrip("/")


def is_encrypted_or_local(address: str) -> bool:
    """Whether what is sent to this scheduler's workers stays on this machine or is encrypted."""
    if LOCAL.match(address):
        return True
    parsed = urllib.parse.urlsplit(address)
    if parsed.scheme in ("tls", "wss"):
        return True
    host = parsed.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def code_hash(root: Path = REPO_ROOT) -> str:
    """SHA-256 over this project's Python sources (``scripts/**/*.py``): workers must run the
    same code."""
    digest = hashlib.sha256()
    for path in sorted((root / "scripts").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def client_identity() -> dict:
    """What every worker must share with the client: the environment fingerprint (the run
    records' own, taken once per process) and the code hash."""
    from scripts.utils.compute.environment import environment_fingerprint

    return {"environment": environment_fingerprint(), "code_sha256": _code_hash_once()}


@functools.lru_cache(maxsize=1)
def _code_hash_once() -> str:
    return code_hash()


def _identity_probe():
    """Runs on each worker (through ``client.run``). Sent by value, so it needs nothing of ours
    to unpickle."""
    import sys

    try:
        from scripts.utils.compute.cluster import client_identity as identity
    except ImportError as exc:
        return {"error": f"cannot import this project: {exc}", "python": sys.executable}
    return identity()


def check_workers(client) -> dict:
    """Compare every worker's identity with the client's; a differing worker is bad input (exit
    2)."""
    import sys

    import cloudpickle

    from scripts.utils.compute.environment import differences

    mine = client_identity()
    # cloudpickle sends functions of importable modules by reference; by value, the probe can report
    # a worker that cannot import the project at all instead of failing to unpickle.
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        theirs = client.run(_identity_probe)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    refused = []
    for worker, identity in sorted(theirs.items()):
        if "error" in identity:
            refused.append(
                {"worker": worker, "problem": identity["error"], "python": identity.get("python")}
            )
            continue
        differing = differences(mine, identity)
        if differing:
            refused.append(
                {
                    "worker": worker,
                    "problem": "its environment or code differs from the client's",
                    "differences": differing[:20],
                }
            )
    if refused:
        raise InputError(
            f"{len(refused)} of {len(theirs)} workers cannot give the same bytes as this machine; "
            "start them with this project's environment and code",
            worker=refused[0]["worker"],
            refused=refused,
        )
    if not theirs:
        raise InputError("the scheduler has no workers", scheduler=client.scheduler.address)
    return theirs


def check_worker_links(workers) -> None:
    """With the key on board, every worker must be reached over TLS or on this machine (else exit
    2, naming it): a loopback scheduler can still have workers on other hosts."""
    clear = sorted(address for address in workers if not is_encrypted_or_local(address))
    if clear:
        raise InputError(
            "the de-identification key would travel in clear to workers on other hosts; use TLS "
            "(docs/scaling-out.md) or --keep-phi",
            worker=clear[0],
            workers_in_clear=clear[:20],
        )


def _route_dask_logs() -> None:
    """Dask's loggers print plain text on their own handlers: send them to the root logger instead,
    which the scripts route into their JSON log (warnings and above)."""
    for name in ("distributed", "dask", "tornado", "bokeh"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


@contextlib.contextmanager
def cluster_executor(address: str | None, log=None, carries_secret: bool = False):
    """Yield an executor on the cluster at ``address`` (None: yield None, run locally).

    ``local:N`` starts a LocalCluster of N single-threaded worker processes
    and stops it afterwards. Connection problems and refused workers are
    bad input (exit 2). ``carries_secret``: the tasks carry the
    de-identification key, refused over an unencrypted network link.
    """
    if address is None:
        yield None
        return
    if carries_secret and not is_encrypted_or_local(address):
        raise InputError(
            "the de-identification key would travel to the workers in clear; use a tls:// "
            "scheduler (docs/scaling-out.md) or --keep-phi",
            scheduler=address,
        )
    import distributed

    _route_dask_logs()  # before the start: its messages too
    with contextlib.ExitStack() as stack:
        local = LOCAL.match(address)
        try:
            if local:
                cluster = stack.enter_context(
                    distributed.LocalCluster(
                        n_workers=int(local.group(1)),
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",
                        silence_logs=logging.CRITICAL,
                    )
                )
                client = stack.enter_context(distributed.Client(cluster))
            else:
                client = stack.enter_context(
                    distributed.Client(address)
                )  # distributed.comm.timeouts.connect
        except (OSError, TimeoutError, ValueError, ImportError) as exc:
            raise InputError(f"cannot reach the Dask scheduler: {exc}", scheduler=address)
        _route_dask_logs()  # again: LocalCluster's silence_logs sets Dask's loggers up anew
        if carries_secret:  # before any task, the probe's included
            check_worker_links(client.scheduler_info().get("workers", {}))
        workers = check_workers(client)
        from scripts.utils.compute.dask_worker import JsonStderr

        client.register_plugin(JsonStderr())
        executor = ClusterExecutor(client, only_on=sorted(workers) if carries_secret else None)
        if log is not None:
            log.info(
                "cluster",
                scheduler=address if not local else "local",
                address=executor.address,
                workers=len(workers),
                threads=executor.threads,
                dashboard=None if local else client.dashboard_link,
            )
        try:
            yield executor
        finally:
            executor.shutdown(wait=False)


class ClusterExecutor(Executor):
    """A ``concurrent.futures`` executor on a Dask client, with what the data tools need of a
    cluster.

    ``map`` keeps at most ``2 x threads`` tasks (at least 4) in flight and
    releases each result once it is handed over, so the memory a run holds
    on the workers stays bounded whatever its length; results come in input
    order. Tasks are never merged with earlier identical ones (``pure=False``:
    the same paths hashed again after the files changed are read again).
    """

    def __init__(self, client, only_on=None):
        self.client = client
        self.threads = max(
            1, sum(client.nthreads().values())
        )  # at the start; Dask rebalances if workers come or go
        self.only_on = (
            only_on  # the checked workers, when the tasks carry a secret: none that joins later
        )
        self._iterators = []

    def submit(self, fn, /, *args, **kwargs):
        return self.client.submit(fn, *args, pure=False, workers=self.only_on, **kwargs)

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        results = self._ordered(fn, zip(*iterables), max(4, 2 * self.threads), timeout)
        self._iterators.append(results)
        return results

    def _ordered(self, fn, calls, window: int, timeout):
        pending = collections.deque()
        try:
            for call in calls:
                pending.append(self.client.submit(fn, *call, pure=False, workers=self.only_on))
                if len(pending) >= window:
                    yield self._take(pending, timeout)
            while pending:
                yield self._take(pending, timeout)
        finally:
            for (
                future
            ) in pending:  # an abandoned map (an error, a closed iterator) leaves nothing running
                future.cancel()

    @staticmethod
    def _take(pending, timeout):
        future = pending.popleft()
        try:
            return future.result(timeout=timeout)
        finally:
            future.release()

    def shutdown(self, wait=True, *, cancel_futures=False):
        # An unfinished map cancels its futures when closed: that needs the client, so before the
        # client goes.
        for results in self._iterators:
            results.close()
        self._iterators = []

    @property
    def address(self) -> str:
        """The scheduler address (what other processes connect to)."""
        return self.client.scheduler.address


def worker_count(executor) -> int:
    """Threads across the cluster behind a ClusterExecutor; for any other executor, this
    machine's CPUs."""
    if isinstance(executor, ClusterExecutor):
        return executor.threads
    return os.cpu_count() or 1


def size_or_zero(path) -> int:
    """A file's size for cutting batches (0 when it cannot be read: the task reports that
    itself)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def batches(
    items: list,
    parallelism: int = 1,
    sizes: list | None = None,
    max_items: int = BATCH_FILES,
    max_bytes: int = BATCH_BYTES,
) -> list:
    """Cut ``items`` into consecutive batches: at most ``max_items`` each (and ``max_bytes`` of
    ``sizes``), and at least ``TASKS_PER_WORKER`` batches per unit of ``parallelism`` where there
    are enough items.

    Batches only decide where work runs: results are merged in input order,
    so no output depends on how the items were cut.
    """
    if not items:
        return []
    per_batch = max(
        1, min(max_items, math.ceil(len(items) / (TASKS_PER_WORKER * max(1, parallelism))))
    )
    cut, current, current_bytes = [], [], 0
    for index, item in enumerate(items):
        size = sizes[index] if sizes is not None else 0
        if current and (len(current) >= per_batch or current_bytes + size > max_bytes):
            cut.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    cut.append(current)
    return cut


def map_batches(executor, function, batched: list, *extra):
    """``function(batch, *extra)`` for every batch on ``executor``; yields each result's items in
    input order."""
    count = len(batched)
    for result in executor.map(function, batched, *[[value] * count for value in extra]):
        yield from result
