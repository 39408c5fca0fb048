"""The built-in reference experiment: a small Dreamer + Learner on ChromaticTensors.

Research code plugs its own experiment in (``experiment.kind = "external"``
in the config); until then this one lets every phase run out of the box.
NumPy or CuPy, one code path (``xp``).

Data. ``data.source`` names an ``image_preprocessor`` run folder (its npz
samples; the pipeline hands over the one its preprocess step made), or is
"auto" (the newest such run in the workspace, else synthetic) or
"synthetic" (phantom slices synthesized from the seeds). The samples become
ChromaticTensors: ``size x size x 3`` in [0, 1] (gray repeated over R, G,
B). Training and validation follow a ``dataset_splitter`` run's "train" and
"val" (``data.split``: its folder, handed over by the pipeline, or "auto":
the newest) when it covers the samples; otherwise ("seeded") a seeded
permutation sets ``data.val_fraction`` aside.

Dreamer, each cycle (generator: seeds stream ``dreamer``, key = cycle):
``dreamer.candidates`` dreams, each a real training sample blended with
harmonic noise (a sum of ``dreamer.harmonics`` random plane waves per
channel) by ``dreamer.blend``, with a random rectangle (``mask_fraction`` of
the area) replaced by the same place in another sample (masked injection).
Each dream is scored by its *coherence*: one minus the mean absolute
difference between every cell and the mean of its four neighbours (edges
repeated), averaged over the three channels; 1 means perfectly smooth, and a
dream of pure noise scores low. The ``dreamer.pool_size`` most coherent
dreams so far are kept (ties: the older dream first).

Learner: a linear autoencoder ``x -> x W1 -> x W1 W2 + b`` trained by SGD
(``learner.steps_per_cycle`` steps of ``learner.batch`` images drawn from
training samples and pool dreams; generator: stream ``learner``, key =
cycle) on the mean squared reconstruction error; validated on the
validation samples.

Determinism. Every reduction over many terms is fixed-point (scale 2**20,
summed in int64), and every matrix product is exact on values quantized to
2**-20 (``utils/compute/exact.py``): the integer matrices are multiplied by float64
BLAS (DGEMM, cuBLAS on a GPU), which commits no rounding while every
partial sum stays below 2**53. That bound is checked before each product;
an operand that would pass it is split into high and low bits whose
products are summed exactly in int64, and a product beyond 2**62 stops the
run (exit 2, naming it). So the results are the bits an int64 product
gives, on any thread count, BLAS kernel or device, at BLAS speed. Each
cycle's generators come from (seed, cycle), so a run resumed from a
checkpoint continues exactly as an uninterrupted one.

The cycle's dream is its own most coherent candidate laid over the pool's
most coherent dream so far, in equal parts: the pool may keep its best for
many cycles, but every cycle's candidates are new, and so is its dream (its
coherence, energy and mean colours are the row's).

Outputs in the log folder, per cycle: a row in ``metrics.csv`` (rewritten)
and ``metrics.jsonl`` (appended; the live file the monitor follows), the
cycle's dream as ``dreams/cycle_NNNN.cten`` (with its coherence map) and its
bridge encoding as ``bridge/cycle_NNNN.sten``; every
``experiment.checkpoint_every`` cycles and at the end, a checkpoint
``checkpoints/cycle_NNNN.npz``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import orjson

from scripts.utils.compute.exact import (
    Fixed,
    blas_threads,
    exact_matmul,
    fixed_mean,
)
from scripts.utils.errors import InputError
from scripts.utils.formats.arrays import array_module, npz_bytes, read_arrays, to_numpy
from scripts.utils.formats.colour import bridge_encode
from scripts.utils.formats.tensors import ChromaticTensor, write_cten, write_sten
from scripts.utils.jsonio import (
    atomic_write_bytes,
    encode_nonfinite,
    joined,
    json_line,
    read_json,
    read_json_lines,
)
from scripts.utils.limits import MAX_EXPERIMENT_BYTES_ENV, max_experiment_bytes
from scripts.utils.records.holdings import WorkspaceRecords
from scripts.utils.workspace import path_inside, run_folder

METRIC_COLUMNS = (
    "cycle",
    "phase",
    "loss",
    "val_loss",
    "coherence",
    "energy",
    "mean_r",
    "mean_g",
    "mean_b",
    "dreamer_seed",
    "learner_seed",
)

# --------------------------------------------------------------------------
# Coherence
# --------------------------------------------------------------------------


def coherence_map(xp, image):
    """Per cell: 1 - |cell - mean of its 4 neighbours|, averaged over the channels."""
    padded = xp.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    neighbours = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) / 4.0
    return 1.0 - xp.abs(image - neighbours).mean(axis=2)


def coherence(xp, image) -> float:
    return fixed_mean(xp, coherence_map(xp, image))


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def memory_need(config: dict) -> dict:
    """The bytes the run will hold at most, by the config keys that drive them: an upper estimate
    made from the config alone, before anything is allocated (float64 arrays, with the copies the
    exact products make)."""
    data, dcfg, lcfg = config["data"], config["dreamer"], config["learner"]
    dim = data["size"] * data["size"] * 3
    return {
        "data.samples x data.size^2": 8 * dim * data["samples"] * 3,
        "learner.hidden x data.size^2": 8 * dim * lcfg["hidden"] * 12,
        "learner.batch x data.size^2": 8 * dim * lcfg["batch"] * 8
        + 8 * lcfg["batch"] * lcfg["hidden"] * 6,
        "dreamer.candidates + dreamer.pool_size": 8
        * dim
        * (dcfg["candidates"] + dcfg["pool_size"])
        * 2,
    }


def check_memory(config: dict, source=None) -> None:
    """Refuse (exit 2, naming the keys) a config whose memory need is over
    ``limits.max_experiment_bytes()``."""
    need = memory_need(config)
    cap = max_experiment_bytes()
    if sum(need.values()) > cap:
        largest = max(need, key=need.get)
        raise InputError(
            f"the reference experiment would need about {sum(need.values()) / 2**30:.1f} GiB, over "
            f"the cap of {cap / 2**30:.1f} GiB (mostly {largest}); make those smaller or raise "
            f"{MAX_EXPERIMENT_BYTES_ENV}",
            file=source,
            key=largest,
            need_bytes={key: value for key, value in sorted(need.items())},
            max_bytes=cap,
        )


def load_samples(workspace: Path, config: dict, seeds) -> tuple[np.ndarray, list, str, Path | None]:
    """``(samples (n, size, size, 3) float64 in [0, 1], each sample's source, description, the
    preprocessor run folder read or None)``."""
    size, count, source = (
        config["data"]["size"],
        config["data"]["samples"],
        config["data"]["source"],
    )
    folder = None
    if source == "auto":
        run_id = WorkspaceRecords(workspace).latest("image_preprocessor")
        folder = workspace / run_folder(run_id) if run_id else None
    elif source != "synthetic":
        folder = Path(source) if Path(source).is_absolute() else workspace / source
        if not (folder / "records.jsonl").is_file():
            raise InputError(
                "data.source must be an image_preprocessor run folder (with records.jsonl)",
                file=str(folder),
            )
    images, sources = [], []
    if folder is not None:
        from scipy import ndimage

        for record in read_json_lines(folder / "records.jsonl"):
            if not isinstance(record, dict) or record.get("error") or len(images) == count:
                continue
            output = path_inside(folder, record.get("output"), folder / "records.jsonl")
            arrays = read_arrays(output)
            if "image" not in arrays:
                raise InputError("the preprocessed sample holds no 'image' array", file=str(output))
            sources.append(str(record.get("source")))
            image = arrays["image"].astype(np.float64)
            while image.ndim > 3 or (image.ndim == 3 and image.shape[-1] != 3):
                image = image[0]  # first frame of a multi-frame image
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            factors = (size / image.shape[0], size / image.shape[1], 1)
            images.append(
                np.clip(ndimage.zoom(image, factors, order=1, grid_mode=True, mode="nearest"), 0, 1)
            )
        description = f"image_preprocessor run {folder.name}"
    if len(images) < 4:
        from scripts.data_tools.phantoms import phantom_hu

        images, sources = [], []
        for index in range(count):
            rng = seeds.generator("reference_data", index)
            hu = phantom_hu(size, index % 8, 8, rng)
            gray = np.clip((hu + 160) / 400, 0, 1)
            tint = rng.uniform(0.85, 1.0, 3)
            images.append(np.clip(gray[..., None] * tint, 0, 1))
            sources.append(f"synthetic/{index}")
        description, folder = "synthetic phantom slices", None
    return np.stack(images[:count]), sources[:count], description, folder


def split_indices(workspace: Path, sources: list, val_fraction: float, seeds, split: str = "auto"):
    """Train and validation indices: a dataset_splitter run's (``split``: its folder, as the
    pipeline hands it over, or "auto": the newest) when it covers the samples (its "train" and
    "val" splits), else ("seeded", or no such run) a seeded split of ``val_fraction``; with a
    description and the splitter run folder read (or None): read even when its split did not
    cover the samples, since that decided the seeded split."""
    folder = None
    if split == "auto":
        run_id = WorkspaceRecords(workspace).latest("dataset_splitter")
        folder = run_folder(run_id) if run_id else None
    elif split != "seeded":
        folder = split
        if not (workspace / folder / "split.json").is_file():
            raise InputError(
                "data.split must be a dataset_splitter run folder (with split.json)",
                file=str(workspace / folder),
                key="data.split",
            )
    if folder is not None:
        assignments = read_json(workspace / folder / "split.json")["assignments"]
        splits = [assignments.get(source) for source in sources]
        train = np.array([i for i, s in enumerate(splits) if s == "train"], dtype=np.int64)
        val = np.array([i for i, s in enumerate(splits) if s == "val"], dtype=np.int64)
        if len(train) >= 1 and len(val) >= 1:
            return train, val, f"dataset_splitter run {Path(folder).name}", workspace / folder
    order = seeds.generator("reference_split").permutation(len(sources))
    val = max(1, int(round(len(sources) * val_fraction)))
    seeded = f"seeded, val_fraction {val_fraction}"
    read = workspace / folder if folder is not None else None
    return np.sort(order[val:]), np.sort(order[:val]), seeded, read


# --------------------------------------------------------------------------
# Dreamer, learner, bridge
# --------------------------------------------------------------------------


def harmonic_noise(xp, rng, size: int, harmonics: int):
    y, x = np.mgrid[0:size, 0:size] / size
    noise = np.zeros((size, size, 3))
    for channel in range(3):
        for _ in range(harmonics):
            fx, fy = rng.integers(1, 6, 2)
            phase = rng.uniform(0, 2 * math.pi)
            noise[..., channel] += np.sin(2 * math.pi * (fx * x + fy * y) + phase)
    noise = (noise / harmonics + 1) / 2
    return xp.asarray(noise)


def make_dreams(xp, train, rng, dcfg: dict):
    """Candidate dreams: blends of real samples with harmonic noise, plus a masked injection."""
    size = train.shape[1]
    dreams = []
    for _ in range(dcfg["candidates"]):
        base, donor = (int(i) for i in rng.integers(0, train.shape[0], 2))
        dream = (1 - dcfg["blend"]) * train[base] + dcfg["blend"] * harmonic_noise(
            xp, rng, size, dcfg["harmonics"]
        )
        side = max(1, int(round(size * math.sqrt(dcfg["mask_fraction"]))))
        if dcfg["mask_fraction"] > 0 and side < size:
            top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
            dream[top : top + side, left : left + side] = train[donor][
                top : top + side, left : left + side
            ]
        dreams.append(xp.clip(dream, 0.0, 1.0))
    return dreams


def init_learner(xp, dim: int, hidden: int, rng) -> dict:
    scale = 1.0 / math.sqrt(dim)
    return {
        "w1": xp.asarray(rng.normal(0, scale, (dim, hidden))),
        "w2": xp.asarray(rng.normal(0, scale, (hidden, dim))),
        "b": xp.zeros(dim),
    }


def det_matmul(xp, a, b, name: str = "product"):
    """The experiment's matrix product: exact on values quantized to 2**-20
    (``utils/compute/exact.py``)."""
    return exact_matmul(xp, a, b, name)


def reconstruction_loss(xp, model: dict, batch) -> float:
    hidden = det_matmul(xp, batch, model["w1"], "validation encoder (batch @ w1)")
    out = det_matmul(xp, hidden, model["w2"], "validation decoder (hidden @ w2)") + model["b"]
    return fixed_mean(xp, (out - batch) ** 2)


DREAM_MIX = (
    0.5  # the share of the cycle's own best candidate in its dream; the rest is the pool's best
)


def dream_of_cycle(xp, memory, newest):
    """The cycle's dream: its most coherent new candidate over the pool's most coherent dream so
    far (equal parts). The pool may keep its best for many cycles; each cycle's candidates are
    its own, and so is its dream."""
    return xp.clip((1 - DREAM_MIX) * memory + DREAM_MIX * newest, 0.0, 1.0)


def sgd_step(xp, model: dict, batch, lr: float) -> float:
    # Each operand is quantized once and used in every product it enters (the same bits as
    # quantizing each time).
    batch_q, w2_q = Fixed(xp, batch), Fixed(xp, model["w2"])
    hidden = batch_q.matmul(Fixed(xp, model["w1"]), "encoder (batch @ w1)")
    hidden_q = Fixed(xp, hidden)
    error = hidden_q.matmul(w2_q, "decoder (hidden @ w2)") + model["b"] - batch
    loss = fixed_mean(xp, error**2)
    grad_out_q = Fixed(xp, 2.0 * error / error.size)
    grad_w2 = hidden_q.T.matmul(grad_out_q, "gradient of w2")
    grad_b = Fixed(xp, xp.ones((1, batch.shape[0]))).matmul(grad_out_q, "gradient of b")[0]
    grad_hidden = grad_out_q.matmul(w2_q.T, "gradient of the hidden layer")
    grad_w1 = batch_q.T.matmul(Fixed(xp, grad_hidden), "gradient of w1")
    model["w1"] = xp.clip(model["w1"] - lr * grad_w1, -64, 64)
    model["w2"] = xp.clip(model["w2"] - lr * grad_w2, -64, 64)
    model["b"] = xp.clip(model["b"] - lr * grad_b, -64, 64)
    return loss


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def checkpoint_name(cycle: int) -> str:
    return f"checkpoints/cycle_{cycle:04d}.npz"


def latest_checkpoint(logdir: Path):
    found = sorted((logdir / "checkpoints").glob("cycle_*.npz"))
    return found[-1] if found else None


def save_checkpoint(xp, logdir: Path, cycle: int, model: dict, pool: list, rows: list) -> None:
    arrays = {
        "cycle": np.array(cycle),
        "w1": to_numpy(model["w1"]),
        "w2": to_numpy(model["w2"]),
        "b": to_numpy(model["b"]),
        "rows": np.frombuffer(orjson.dumps(encode_nonfinite(rows)), dtype=np.uint8),
    }
    if pool:
        arrays["pool"] = np.stack([to_numpy(image) for _, _, image in pool])
        arrays["pool_scores"] = np.array([[score, order] for score, order, _ in pool])
    atomic_write_bytes(logdir / checkpoint_name(cycle), npz_bytes(arrays))


def load_checkpoint(xp, path: Path):
    try:
        data = read_arrays(
            path
        )  # headers checked first: a checkpoint claiming a huge array is refused unread
    except InputError as exc:
        raise InputError(
            f"cannot resume: the checkpoint is unreadable ({exc.message})", file=str(path)
        )
    try:
        model = {
            "w1": xp.asarray(data["w1"]),
            "w2": xp.asarray(data["w2"]),
            "b": xp.asarray(data["b"]),
        }
        rows = orjson.loads(data["rows"].tobytes())
        pool = []
        if "pool" in data:
            pool = [
                (float(s), int(o), xp.asarray(img))
                for (s, o), img in zip(data["pool_scores"], data["pool"])
            ]
        return int(data["cycle"]), model, pool, rows
    except Exception as exc:
        raise InputError(
            f"cannot resume: the checkpoint is unreadable ({type(exc).__name__}: {exc})",
            file=str(path),
        )


def write_metrics(logdir: Path, rows: list) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(METRIC_COLUMNS)
    for row in rows:
        writer.writerow([encode_nonfinite(row[column]) for column in METRIC_COLUMNS])
    atomic_write_bytes(logdir / "metrics.csv", text.getvalue().encode())


def run_reference(
    workspace: Path,
    logdir: Path,
    config: dict,
    seeds,
    backend: str,
    log=None,
    resume: bool = False,
    should_stop=lambda: False,
) -> dict:
    """Run (or resume) the experiment into ``logdir``; returns a summary (``read``: the run folders
    it took its data and split from, for the recorder, not the report's results).

    ``should_stop()`` is polled between cycles: when it says so, the run
    returns with ``stopped`` set; ``--resume`` continues from the last checkpoint.
    """
    with blas_threads():
        return _run_reference(workspace, logdir, config, seeds, backend, log, resume, should_stop)


def _run_reference(
    workspace: Path, logdir: Path, config: dict, seeds, backend: str, log, resume: bool, should_stop
) -> dict:
    xp, backend = array_module(backend)
    exp, dcfg, lcfg, bcfg = (
        config["experiment"],
        config["dreamer"],
        config["learner"],
        config["bridge"],
    )
    samples, sources, data_source, data_folder = load_samples(workspace, config, seeds)
    train_idx, val_idx, split_source, split_folder = split_indices(
        workspace,
        sources,
        config["data"]["val_fraction"],
        seeds,
        config["data"].get("split", "auto"),
    )
    train, val = xp.asarray(samples[train_idx]), xp.asarray(samples[val_idx])
    dim = int(np.prod(samples.shape[1:]))
    val_flat = val.reshape(val.shape[0], dim)

    start, rows, pool = 1, [], []
    model = init_learner(xp, dim, lcfg["hidden"], seeds.generator("learner_init"))
    if resume:
        checkpoint = latest_checkpoint(logdir)
        if checkpoint is not None:
            done, model, pool, rows = load_checkpoint(xp, checkpoint)
            start = done + 1
            if log:
                log.info(
                    "resumed",
                    checkpoint=checkpoint.relative_to(logdir).as_posix(),
                    next_cycle=start,
                )
        else:
            for name in ("metrics.jsonl", "metrics.csv"):
                (logdir / name).unlink(missing_ok=True)
    # The live file holds exactly the rows of the cycles done (a resume cuts what came after the
    # checkpoint).
    atomic_write_bytes(logdir / "metrics.jsonl", joined(json_line(row) for row in rows))
    order = len(rows) * dcfg["candidates"]
    stopped = False
    cycle = start - 1
    for cycle in range(start, exp["cycles"] + 1):
        dreamer_seed, learner_seed = seeds.seed("dreamer", cycle), seeds.seed("learner", cycle)
        rng = np.random.Generator(np.random.PCG64(dreamer_seed))
        candidates = []
        for dream in make_dreams(xp, train, rng, dcfg):
            candidates.append((coherence(xp, dream), order, dream))
            order += 1
        pool += candidates
        pool.sort(key=lambda item: (-item[0], item[1]))
        pool = pool[: dcfg["pool_size"]]

        rng = np.random.Generator(np.random.PCG64(learner_seed))
        bank = [train[i] for i in range(train.shape[0])] + [image for _, _, image in pool]
        losses = []
        for _ in range(lcfg["steps_per_cycle"]):
            picks = rng.integers(0, len(bank), lcfg["batch"])
            batch = xp.stack([bank[int(i)] for i in picks]).reshape(lcfg["batch"], dim)
            losses.append(sgd_step(xp, model, batch, lcfg["lr"]))
        dream = dream_of_cycle(
            xp, pool[0][2], min(candidates, key=lambda item: (-item[0], item[1]))[2]
        )
        dream_host = to_numpy(dream)
        row = {
            "cycle": cycle,
            "phase": config["phase"],
            "loss": losses[-1],
            "val_loss": reconstruction_loss(xp, model, val_flat),
            "coherence": coherence(xp, dream),
            "energy": fixed_mean(xp, dream**2),
            "mean_r": fixed_mean(xp, dream[..., 0]),
            "mean_g": fixed_mean(xp, dream[..., 1]),
            "mean_b": fixed_mean(xp, dream[..., 2]),
            "dreamer_seed": dreamer_seed,
            "learner_seed": learner_seed,
        }
        rows.append(row)
        write_cten(
            logdir / f"dreams/cycle_{cycle:04d}.cten",
            ChromaticTensor(
                dream_host.astype(np.float32), to_numpy(coherence_map(xp, dream)).astype(np.float32)
            ),
        )
        write_sten(logdir / f"bridge/cycle_{cycle:04d}.sten", bridge_encode(dream_host, bcfg))
        with open(logdir / "metrics.jsonl", "ab") as live:
            live.write(json_line(row))
        write_metrics(logdir, rows)
        if log:
            log.info(
                "cycle",
                cycle=cycle,
                of=exp["cycles"],
                loss=row["loss"],
                val_loss=row["val_loss"],
                coherence=row["coherence"],
            )
        if cycle % exp["checkpoint_every"] == 0 or cycle == exp["cycles"]:
            save_checkpoint(xp, logdir, cycle, model, pool, rows)
        if should_stop() and cycle < exp["cycles"]:
            # No extra checkpoint: a resume restarts after the last regular one and
            # rewrites the later cycles' files with the same bytes.
            stopped = True
            break
    return {
        "cycles_done": cycle,
        "cycles": exp["cycles"],
        "stopped": stopped,
        "backend": backend,
        "data": data_source,
        "split": split_source,
        "train_samples": int(train.shape[0]),
        "val_samples": int(val.shape[0]),
        "final": rows[-1] if rows else None,
        "read": [str(folder) for folder in (data_folder, split_folder) if folder is not None],
    }
