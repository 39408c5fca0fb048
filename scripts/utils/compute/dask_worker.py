"""What every Dask worker of a run is given (utils/compute/cluster.py registers it; never imported
without Dask).

    client.register_plugin(JsonStderr())

``JsonStderr`` keeps the design's rule that nothing is logged as plain text:
C libraries (OpenJPEG, GDCM) write their complaints straight to file
descriptor 2 of the worker process, past Python. The plugin points that
descriptor at a pipe and turns each line into a JSON record (``event``
``native_output``, the worker's address, the text) on the worker's real
stderr. Lines that already are JSON pass unchanged. It is set up again in a
worker that Dask restarts.
"""

from __future__ import annotations

import os
import threading

import orjson
from distributed.diagnostics.plugin import WorkerPlugin

from scripts.utils import timestamps

_installed = False


class JsonStderr(WorkerPlugin):
    name = "crh-json-stderr"

    def setup(self, worker) -> None:
        global _installed
        if (
            _installed
        ):  # registered again by the next script of a pipeline: one pipe per process is enough
            return
        _installed = True
        original = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        address = worker.address
        threading.Thread(
            target=_pump, args=(read, original, address), daemon=True, name="crh-json-stderr"
        ).start()


def _pump(read: int, original: int, worker: str) -> None:
    with os.fdopen(read, "rb") as source, os.fdopen(original, "wb", buffering=0) as sink:
        for line in source:
            if line.startswith(b"{"):
                sink.write(line)
                continue
            text = line.decode("utf-8", errors="replace").rstrip("\r\n")
            if not text.strip():
                continue
            sink.write(
                orjson.dumps(
                    {
                        "ts": timestamps.format_iso(timestamps.wall_clock(), "milliseconds"),
                        "level": "warning",
                        "script": "dask_worker",
                        "event": "native_output",
                        "worker": worker,
                        "text": text,
                    }
                )
                + b"\n"
            )
