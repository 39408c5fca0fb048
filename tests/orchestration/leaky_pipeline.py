"""Test helper: a researcher's own pipeline (no run records), with nondeterminisms chosen by name.

    python tests/orchestration/leaky_pipeline.py OUT_DIR [LEAK ...]

Writes ordinary files into OUT_DIR. Each LEAK makes one place depend on one variation of verify:

    hashseed  model.json $.classes           set order under PYTHONHASHSEED
    tz        model.json $.trained_local     a local time string
    path      paths.txt                      the absolute output path
    umask     bundle.tar member data.txt     the file mode recorded in a tar
    locale    locale.txt                     the locale's name
    threads   sums.csv row 2, column total   a float sum in OMP_NUM_THREADS partial sums
    cpu       matmul.npy                     a 300x300 float64 matmul (the BLAS kernel)
    workers   order.jsonl                    results in completion order of CRH_WORKERS workers
    resume    state.json $.starts            how many times the run started
    tz*threads  both.txt                     changes only when both vary (an interaction)
"""

import os
import sys
from pathlib import Path

out, leaks = Path(sys.argv[1]), set(sys.argv[2:])
out.mkdir(parents=True, exist_ok=True)
state = out / "state.json"  # first: a run killed early has already left it
starts = (int(state.read_text().split(":")[1].strip(" }\n")) if state.exists() else 0) + 1
state.write_text(f'{{"starts": {starts if "resume" in leaks else 1}}}\n')

import json  # noqa: E402  (after the state file: the resume leak needs it written at once)
import math  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

time.sleep(0.3)  # something to interrupt
classes = (
    list({"bird", "fish", "cat", "dog", "owl"})
    if "hashseed" in leaks
    else ["bird", "cat", "dog", "fish", "owl"]
)
local = time.strftime("%Y-%m-%d %H:%M", time.localtime(0)) if "tz" in leaks else "1970-01-01 00:00"
(out / "model.json").write_text(
    json.dumps({"classes": classes, "trained_local": local, "weights": [0.5, 0.25]}, sort_keys=True)
    + "\n"
)
(out / "paths.txt").write_text((str(out.resolve()) if "path" in leaks else "<out>") + "\n")
data = out / "data.txt"
data.write_text("payload\n")
if "umask" not in leaks:
    data.chmod(0o644)
with tarfile.open(out / "bundle.tar", "w", format=tarfile.PAX_FORMAT) as bundle:
    info = bundle.gettarinfo(str(data), arcname="data.txt")
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    with open(data, "rb") as handle:
        bundle.addfile(info, handle)
if "locale" in leaks:
    import locale

    (out / "locale.txt").write_text(str(locale.setlocale(locale.LC_ALL, "")) + "\n")
values = [0.1 * (index % 7) + 1e-3 * index for index in range(1001)]
parts = int(os.environ.get("OMP_NUM_THREADS", "1")) if "threads" in leaks else 1
total = sum(
    math.fsum(values[lane::parts]) for lane in range(parts)
)  # each part exactly rounded, then added
(out / "sums.csv").write_text(f"name,total\nvalues,{total!r}\n")
matrix = np.random.default_rng(3).standard_normal((300, 300))
small = np.round(matrix * 8)  # small integers: their products and sums are exact under any kernel
with threadpool_limits(
    1
):  # one BLAS thread: the kernel alone decides (threads change a float matmul too)
    product = matrix @ matrix if "cpu" in leaks else small @ small
np.save(out / "matmul.npy", product)
workers = int(os.environ.get("CRH_WORKERS", "1")) if "workers" in leaks else 1
order = [index for lane in range(workers) for index in range(lane, 6, workers)]
(out / "order.jsonl").write_text("".join(json.dumps({"item": index}) + "\n" for index in order))
if "tz*threads" in leaks:
    both = time.localtime(0).tm_hour > 12 and os.environ.get("OMP_NUM_THREADS") == "2"
    (out / "both.txt").write_text(f"{both}\n")
