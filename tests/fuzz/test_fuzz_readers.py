"""Property-based fuzzing of every reader, run as a user runs the scripts (subprocess).

Each test feeds random bytes, or a valid file mutated (bytes flipped,
inserted, cut), to one script and asserts the contract of issue 10: exit 0,
1 or 2 (never 3, never killed), only JSON lines on stderr with an error
record last when the exit is not 0, and the child's own peak memory under a
bound.

Profiles (``CRH_FUZZ_PROFILE``): ``ci`` (the default, in ``make test``) has
a fixed seed and a few examples per reader, so it is quick and repeatable;
``long`` (``make fuzz``) draws many more with a fresh seed and writes what it
tried to ``$CRH_FUZZ_REPORT`` (JSON: per reader, examples, exit codes, peak
memory, the errors seen).
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scripts.utils.formats import tensors
from tests.fuzz.harness import check_outcome, run_script

PEAK_MIB = 512
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("CRH_FUZZ_EXAMPLES", 10)),
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("CRH_FUZZ_EXAMPLES", 150)),
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("CRH_FUZZ_PROFILE", "ci"))

TRIED: dict = defaultdict(
    lambda: {"examples": 0, "exit_codes": Counter(), "peak_mib": 0.0, "errors": Counter()}
)


def judge(reader: str, outcome) -> None:
    """Check the contract, and note the outcome for the ``make fuzz`` report."""
    tried = TRIED[reader]
    tried["examples"] += 1
    tried["exit_codes"][outcome.rc] += 1
    tried["peak_mib"] = max(tried["peak_mib"], outcome.peak_mib or 0.0)
    if outcome.rc and outcome.last:
        tried["errors"][str(outcome.last.get("error", outcome.last.get("event")))[:80]] += 1
    check_outcome(outcome, peak_mib=PEAK_MIB)


def pytest_sessionfinish_report() -> None:
    target = os.environ.get("CRH_FUZZ_REPORT")
    if not target:
        return
    report = {
        reader: {
            "examples": t["examples"],
            "exit_codes": dict(sorted(t["exit_codes"].items())),
            "peak_mib": round(t["peak_mib"], 1),
            "errors": dict(t["errors"].most_common(12)),
        }
        for reader, t in sorted(TRIED.items())
    }
    Path(target).write_bytes(
        orjson.dumps(
            report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
        )
    )


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    pytest_sessionfinish_report()


# --------------------------------------------------------------------------
# Inputs: valid seeds and their mutations
# --------------------------------------------------------------------------


@st.composite
def mutated(draw, seed: bytes):
    """``seed`` with a few bytes replaced, inserted or deleted, and perhaps cut short."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "field"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "replace" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and data:
            del data[position : position + draw(st.integers(1, 16))]
        elif kind == "field" and len(data) >= 4:  # a length or count field set to an extreme
            position = min(position, len(data) - 4)
            data[position : position + 4] = struct.pack(
                "<I", draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF]))
            )
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def inputs_from(seed: bytes):
    return st.one_of(st.binary(max_size=2048), mutated(seed))


def cten_seed() -> bytes:
    rng = np.random.default_rng(0)
    return tensors.encode_cten(
        tensors.ChromaticTensor(
            rng.random((4, 5, 3), dtype=np.float32), rng.random((4, 5), dtype=np.float32)
        )
    )


def sten_seed() -> bytes:
    return tensors.encode_sten(
        tensors.SpectralTensor(
            np.linspace(0, 1, 16, dtype=np.float32), 20.0, 0.5, np.full(16, 0.1, np.float32), True
        )
    )


def png_seed() -> bytes:
    import imageio.v3 as iio

    pixels = (np.arange(8 * 6 * 3) % 251).astype(np.uint8).reshape(8, 6, 3)
    data = iio.imwrite("<bytes>", pixels, extension=".png")
    text = b"tEXt" + b"Comment\x00a colleague's note"  # a text chunk for the chunk reader
    chunk = (
        struct.pack(">I", len(text) - 4) + text + struct.pack(">I", zlib.crc32(text) & 0xFFFFFFFF)
    )
    return data[:33] + chunk + data[33:]


def dicom_seeds() -> list:
    from pydicom.data import get_testdata_file

    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"]
    return [Path(get_testdata_file(name)).read_bytes() for name in names]


CONFIG_SEEDS = {
    ".toml": b'[experiment]\nname = "phase7"\nsteps = 8\nlr = 1e-3\ntags = ["a", '
    b'"b"]\n[experiment.inner]\nx = 1\n',
    ".json": b'{"experiment": {"name": "phase7", "steps": 8, "lr": 0.001, "tags": ["a", "b"], '
    b'"inner": {"x": 1}}}',
    ".yaml": b"experiment:\n  name: phase7\n  steps: 8\n  lr: 1.0e-3\n  tags: [a, b]\n  base: &b "
    b"{x: 1}\n  inner: *b\n",
}
SEEDS_FILE = b"base_seed = 42\n[streams]\nsplit = 7\n"
LOG_SEED = (
    b"2025-10-31 12:00:00,123 INFO trainer: started\n  continuation line\n"
    b"[2025-10-31T12:00:01Z WARN core::dream] drift 0.3\n"
    b'{"ts": "2025-10-31T12:00:02Z", "level": "error", "msg": "boom", "n": 1}\n'
    b'level=info msg="logfmt line" step=3\nplain text line\n'
)
METRICS_SEED = (
    b"cycle,loss,val_loss,coherence\n1,0.5,0.6,0.9\n2,0.4,0.5,0.91\n3,0.3,0.45,0.93\n"
    b"4,0.25,0.4,0.95\n"
)


def archive_seed(kind: str, manifest: bytes | None = None) -> bytes:
    payload = b"some result\n"
    if manifest is None:
        import hashlib

        manifest = orjson.dumps(
            {
                "format": "crh-archive",
                "version": 1,
                "source": "experiments/results/x",
                "files": {
                    "a.txt": {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
                },
            }
        )
    members = {"run/MANIFEST.json": manifest, "run/a.txt": payload}
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def json_values(max_leaves: int = 12):
    """Any JSON-like value, with the awkward cases: huge integers, surrogates, deep nesting."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(["\udcff", "\ud800x", "\x00", "NaN", "Infinity"]),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------
# One test per reader
# --------------------------------------------------------------------------


@given(data=inputs_from(cten_seed()))
def test_cten_reader(workspace, tmp_path, data):
    path = write(tmp_path, "frame_0001.cten", data)
    judge("cten", run_script("tensor_visualizer", [path, "--workspace", workspace], cwd=tmp_path))


@given(data=inputs_from(sten_seed()))
def test_sten_reader(workspace, tmp_path, data):
    path = write(tmp_path, "spectrum.sten", data)
    judge("sten", run_script("tensor_visualizer", [path, "--workspace", workspace], cwd=tmp_path))


@given(suffix=st.sampled_from(sorted(CONFIG_SEEDS)), data=st.data())
def test_config_reader(tmp_path, suffix, data):
    raw = data.draw(
        st.one_of(
            inputs_from(CONFIG_SEEDS[suffix]),
            json_values().map(
                lambda v: (
                    orjson.dumps(v, default=str, option=orjson.OPT_NON_STR_KEYS)
                    if _dumpable(v)
                    else b"{}"
                )
            ),
        )
    )
    path = write(tmp_path, "config" + suffix, raw)
    override = data.draw(
        st.one_of(
            st.just([]),
            st.tuples(st.text(max_size=20), st.text(max_size=40)).map(
                lambda kv: ["--set", f"{kv[0]}={kv[1]}"]
            ),
        )
    )
    judge("config", run_script("config_loader", [path, *override], cwd=tmp_path))


def _dumpable(value) -> bool:
    try:
        orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
        return True
    except TypeError:
        return False


@given(data=inputs_from(SEEDS_FILE))
def test_seeds_reader(tmp_path, data):
    path = write(tmp_path, "seeds.toml", data)
    judge("seeds", run_script("seed_manager", ["--seeds", path, "--stream", "split"], cwd=tmp_path))


@given(data=inputs_from(png_seed()))
def test_png_chunk_reader(workspace, tmp_path, data):
    folder = tmp_path / "pngs"
    folder.mkdir(exist_ok=True)
    write(folder, "image.png", data)
    judge("png", run_script("metadata_extractor", [folder, "--workspace", workspace], cwd=tmp_path))


@given(index=st.integers(0, 4), data=st.data())
def test_dicom_header_reader(workspace, tmp_path, index, data):
    seed = dicom_seeds()[index]
    head = data.draw(mutated(seed[:2048]))  # the header is where the parser works
    folder = tmp_path / "dicom"
    folder.mkdir(exist_ok=True)
    write(folder, "image.dcm", head + seed[2048:])
    judge(
        "dicom", run_script("metadata_extractor", [folder, "--workspace", workspace], cwd=tmp_path)
    )


@given(kind=st.sampled_from(["zip", "tar.gz"]), data=st.data())
def test_archive_reader(workspace, tmp_path, kind, data):
    raw = data.draw(
        st.one_of(
            mutated(archive_seed(kind)),
            json_values().map(
                lambda v: archive_seed(
                    kind,
                    orjson.dumps(v, default=str, option=orjson.OPT_NON_STR_KEYS)
                    if _dumpable(v)
                    else b"[]",
                )
            ),
            inputs_from(archive_seed(kind, b'{"files": {"a.txt": {"sha256": "00", "size": 1}}}')),
        )
    )
    path = write(tmp_path, f"run.{kind}", raw)
    judge(
        "archive",
        run_script("archive_results", ["--verify", path, "--workspace", workspace], cwd=tmp_path),
    )


@given(data=inputs_from(LOG_SEED), workers=st.sampled_from(["1", "2"]))
def test_raw_log_reader(tmp_path, data, workers):
    path = write(tmp_path, "train.log", data)
    judge("log", run_script("log_formatter", [path, "--workers", workers], cwd=tmp_path))


@given(data=inputs_from(METRICS_SEED))
def test_metrics_reader(workspace, tmp_path, data):
    path = write(tmp_path, "metrics.csv", data)
    judge(
        "metrics",
        run_script(
            "metric_plotter", [path, "--format", "png", "--workspace", workspace], cwd=tmp_path
        ),
    )
