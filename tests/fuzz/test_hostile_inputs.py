"""The classes of hostile input of issue 10, one example each, through the real scripts.

Every case asserts the contract (exit 0, 1 or 2, only JSON on stderr with an
error record last, bounded peak memory: ``harness.check_outcome``) and the
exit code and message it must give. ``test_fuzz_readers.py`` draws random
variations of the same readers.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest

from scripts.utils.formats import tensors
from tests.fuzz.harness import check_outcome, run_script

POSIX = os.name == "posix"
needs_posix = pytest.mark.skipif(
    not POSIX, reason="FIFOs, sockets and non-UTF-8 names are POSIX matters"
)


def expect(outcome, rc: int, *words, peak_mib: float = 1024):
    check_outcome(outcome, peak_mib=peak_mib)
    assert outcome.rc == rc, outcome.describe()
    if rc:
        message = str(outcome.last.get("error", "")).lower()
        for word in words:
            assert word.lower() in message, outcome.describe()
    return outcome


def png(width: int, height: int, rows: bytes | None = None) -> bytes:
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    if rows is None:
        rows = zlib.compress(b"".join(b"\0" + bytes(width * 3) for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def sample_workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "ws"
    outcome = run_script(
        "sample_data",
        ["--patients", "2", "--slices", "2", "--size", "16", "--workspace", folder],
        env={"SOURCE_DATE_EPOCH": "1761912000"},
    )
    assert outcome.rc == 0, outcome.describe()
    return folder


@pytest.fixture
def ws(sample_workspace, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(sample_workspace, copy, symlinks=True)
    return copy


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "ok.png").write_bytes(png(4, 4))
    return folder


# --------------------------------------------------------------------------
# Names and file types
# --------------------------------------------------------------------------

TREE_TOOLS = [("hash_integrity", ["hash"]), ("metadata_extractor", []), ("image_preprocessor", [])]


def write_raw_name(folder: Path, raw_name: bytes, data: bytes) -> bytes:
    """Write a file whose name is raw bytes (not UTF-8, say); return its full path as bytes."""
    raw = os.fsencode(folder) + b"/" + raw_name
    with open(raw, "wb") as handle:
        handle.write(data)
    return raw


def bind_socket(path: Path) -> None:
    """A Unix socket at ``path``, bound through a relative name: deep test folders exceed
    AF_UNIX's 108 bytes."""
    here = os.getcwd()
    os.chdir(path.parent)
    try:
        socket.socket(socket.AF_UNIX).bind(path.name)
    finally:
        os.chdir(here)


@needs_posix
@pytest.mark.parametrize("tool,extra", TREE_TOOLS)
def test_odd_entries_in_a_tree_are_skipped_with_a_reason(ws, outside, tool, extra):
    write_raw_name(outside, b"caf\xe9.png", png(4, 4))
    os.mkfifo(outside / "pipe.png")
    bind_socket(outside / "sock.png")
    os.symlink("loop", outside / "loop")
    os.symlink(".", outside / "self")
    os.symlink("/dev/zero", outside / "zero.png")
    outcome = expect(run_script(tool, [*extra, outside, "--workspace", ws], timeout=60), 0)
    report = [line for line in outcome.stderr.splitlines() if b"run_recorded" in line]
    assert report, outcome.describe()
    run = orjson.loads(report[-1])["report"]
    skipped = {
        item["file"]: item for item in orjson.loads((ws / run).read_bytes())["results"]["skipped"]
    }
    name = "@outside/caf\\xe9.png"
    assert (
        bytes.fromhex(skipped[name]["name_hex"]) == b"@outside/caf\xe9.png"
    )  # the record name, exactly
    assert "not valid UTF-8" in skipped[name]["reason"]
    for entry in ("pipe.png", "sock.png"):
        assert "not a regular file" in skipped[f"@outside/{entry}"]["reason"]
    for entry in ("loop", "self", "zero.png"):
        assert "symbolic link" in skipped[f"@outside/{entry}"]["reason"]
    strict = run_script(tool, [*extra, outside, "--strict", "--workspace", ws], timeout=60)
    expect(strict, 2, "strict")


@needs_posix
@pytest.mark.parametrize("tool,extra", TREE_TOOLS)
def test_a_non_utf8_name_given_is_bad_input(ws, outside, tool, extra):
    raw = write_raw_name(outside, b"\xff\xfe.png", png(4, 4))
    expect(run_script(tool, [*extra, os.fsdecode(raw), "--workspace", ws]), 2, "not valid UTF-8")


@needs_posix
@pytest.mark.parametrize(
    "script,name,args",
    [
        ("config_loader", "config.toml", ["{fifo}"]),
        ("seed_manager", "seeds.toml", ["--seeds", "{fifo}"]),
        (
            "image_preprocessor",
            "table.jsonl",
            ["data/sample/png", "--table", "{fifo}", "--workspace", "{ws}"],
        ),
        ("archive_results", "run.tar.gz", ["--verify", "{fifo}", "--workspace", "{ws}"]),
        ("log_formatter", "train.log", ["{fifo}"]),
        ("metric_plotter", "metrics.csv", ["{fifo}", "--workspace", "{ws}"]),
    ],
)
def test_a_fifo_is_never_read(ws, tmp_path, script, name, args):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    outcome = expect(
        run_script(script, [a.format(fifo=fifo, ws=ws) for a in args], cwd=ws, timeout=30), 2
    )
    assert "regular file" in outcome.last["error"] or "not a file" in outcome.last["error"], (
        outcome.describe()
    )


@needs_posix
@pytest.mark.parametrize("kind", ["non_utf8", "loop", "fifo", "hard_link_out", "socket"])
def test_archiving_refuses_what_it_cannot_keep_before_moving_anything(ws, tmp_path, kind):
    run = ws / "experiments/results/scratch"
    run.mkdir(parents=True)
    (run / "a.txt").write_text("kept")
    if kind == "non_utf8":
        write_raw_name(run, b"b\xff.txt", b"x")
    elif kind == "loop":
        os.symlink("sub", run / "sub")
    elif kind == "fifo":
        os.mkfifo(run / "pipe")
    elif kind == "socket":
        bind_socket(run / "sock")
    else:
        secret = tmp_path / "secret.txt"
        secret.write_text("not yours")
        os.link(secret, run / "link.txt")
    before = sorted(os.listdir(os.fsencode(run)))
    expect(run_script("archive_results", [run, "--archive", "tar.gz", "--workspace", ws]), 2)
    assert sorted(os.listdir(os.fsencode(run))) == before
    assert not (ws / "experiments/results/archive").exists()


def test_a_hard_link_inside_the_workspace_is_archived(ws):
    run = ws / "experiments/results/scratch"
    run.mkdir(parents=True)
    (run / "a.txt").write_text("kept")
    os.link(ws / "data/sample/png" / sorted(os.listdir(ws / "data/sample/png"))[0], run / "b.png")
    expect(run_script("archive_results", [run, "--workspace", ws]), 0)
    assert (ws / "experiments/results/archive/scratch/b.png").is_file()


@pytest.mark.parametrize("folder", ["data", "meta", "meta/chronicle", "."])
def test_archiving_the_workspace_records_is_refused(ws, folder):
    before = sorted(p.relative_to(ws).as_posix() for p in ws.rglob("*"))
    expect(run_script("archive_results", [ws / folder, "--workspace", ws]), 2)
    assert sorted(p.relative_to(ws).as_posix() for p in ws.rglob("*")) == before


def test_temp_files_of_an_interrupted_move_are_never_packed(ws):
    run = ws / "experiments/results/scratch"
    run.mkdir(parents=True)
    (run / "a.txt").write_text("kept")
    (run / ".a.txt.123.abcd.tmp").write_text("half a copy")
    destination = ws / "experiments/results/archive/scratch"
    destination.mkdir(parents=True)
    (destination / ".b.txt.999.dead.tmp").write_text("left by a killed copy")
    expect(run_script("archive_results", [run, "--archive", "zip", "--workspace", ws]), 0)
    with zipfile.ZipFile(destination.with_name("scratch.zip")) as archive:
        assert archive.namelist() == ["scratch/MANIFEST.json", "scratch/a.txt"]


@pytest.mark.parametrize(
    "args",
    [
        ["hash", "data/sample", "--registry", "{outside}/registry.json"],
        ["hash", "data/sample", "--export", "{outside}/export.txt"],
    ],
)
def test_output_options_outside_the_workspace_are_refused(ws, outside, args):
    outcome = run_script(
        "hash_integrity", [a.format(outside=outside) for a in args] + ["--workspace", ws], cwd=ws
    )
    expect(outcome, 2, "outside the workspace")
    assert sorted(os.listdir(outside)) == ["ok.png"]


def test_run_experiment_logdir_outside_is_refused(ws, outside):
    outcome = run_script(
        "run_experiment", ["--logdir", outside / "run", "--dry-run", "--workspace", ws], cwd=ws
    )
    expect(outcome, 2, "outside the workspace")


# --------------------------------------------------------------------------
# Numbers and structure
# --------------------------------------------------------------------------

BIG = str(2**70)


@pytest.mark.parametrize(
    "name,text,key",
    [
        ("big.toml", f"[a]\nb = {BIG}\n", "a.b"),
        ("big.json", f'{{"a": {{"b": -{BIG}}}}}', "a.b"),
        ("big.yaml", f"a:\n  b: {BIG}\n", "a.b"),
        ("surrogate.json", '{"a": "\\udcff"}', "a"),
        ("surrogate.yaml", 'a: "\\udcff"\n', None),  # refused by the YAML parser itself
        ("deep.json", "[" * 100_000 + "]" * 100_000, None),
        ("deep.yaml", "a: " + "[" * 20_000 + "]" * 20_000, None),
        ("deep.toml", "[" + ".".join(["t"] * 20_000) + "]\nx = 1\n", None),
        ("deeper.toml", "x = " + "[" * 20_000 + "]" * 20_000, None),
    ],
)
def test_config_values_json_cannot_hold_are_bad_input(tmp_path, name, text, key):
    path = tmp_path / name
    path.write_text(text)
    outcome = expect(run_script("config_loader", [path]), 2)
    if key:
        assert outcome.last["key"] == key, outcome.describe()


@pytest.mark.parametrize(
    "override,words",
    [
        (f"a={BIG}", ["64 bits"]),
        ("a=" + "[" * 5000 + "]" * 5000, ["nested"]),
        (".".join(["k"] * 5000) + "=1", ["limit"]),
        (os.fsdecode(b"a=\xff") if POSIX else "a=\udcff", ["unicode"]),
        (os.fsdecode(b"\xff=1") if POSIX else "\udcff=1", ["unicode"]),
    ],
)
def test_set_overrides_json_cannot_hold_are_bad_input(tmp_path, override, words):
    path = tmp_path / "ok.toml"
    path.write_text("a = 1\n")
    expect(run_script("config_loader", [path, "--set", override]), 2, *words)


def test_exact_64_bit_integers_are_kept(tmp_path):
    path = tmp_path / "edge.json"
    path.write_text('{"low": -9223372036854775808, "high": 18446744073709551615}')
    outcome = expect(run_script("config_loader", [path]), 0)
    assert orjson.loads(outcome.stdout)["config"] == {"low": -(2**63), "high": 2**64 - 1}


@pytest.mark.parametrize(
    "script,args",
    [
        ("log_formatter", ["--utc-offset=+99:99"]),
        ("log_formatter", ["--utc-offset=+24:00"]),
        ("log_formatter", ["--utc-offset=+05:60"]),
        ("log_formatter", ["--year=99999"]),
        ("log_formatter", ["--year=2025-13-01"]),
        ("dream_animation", ["x", "--fps", "1e-300"]),
        ("dream_animation", ["x", "--fps", "nan"]),
        ("dream_animation", ["x", "--scale", "0"]),
        ("image_preprocessor", ["x", "--epoch", BIG]),
        ("image_preprocessor", ["x", "--mask-threshold", "nan"]),
        ("pipeline_monitor", ["x", "--stall-seconds", "nan"]),
        ("pipeline_monitor", ["x", "--interval", "-1"]),
        ("hash_integrity", ["hash", "x", "--workers", "100000"]),
    ],
)
def test_options_are_checked_against_their_real_range(tmp_path, script, args):
    outcome = run_script(script, args, cwd=tmp_path, stdin=b"2025-10-31 12:00:00,000 INFO x: hi\n")
    expect(outcome, 2)


# --------------------------------------------------------------------------
# Tensors and plots
# --------------------------------------------------------------------------


def _cten(h, w, rgb=None) -> bytes:
    rgb = np.full((h, w, 3), 0.5, np.float32) if rgb is None else rgb
    return tensors._seal(
        tensors.CTEN_MAGIC + struct.pack("<HHII", 1, 0, h, w) + rgb.astype("<f4").tobytes()
    )


def _nan_rgb():
    rgb = np.full((4, 4, 3), 0.5, np.float32)
    rgb[1, 2, 0], rgb[3, 3, 1] = np.nan, np.inf
    return rgb


@pytest.mark.parametrize(
    "name,write,words",
    [
        ("empty.cten", lambda p: p.write_bytes(_cten(0, 5)), ["empty"]),
        (
            "nan.cten",
            lambda p: p.write_bytes(_cten(4, 4, _nan_rgb())),
            ["2 non-finite", "[1, 2, 0]"],
        ),
        (
            "huge.cten",
            lambda p: p.write_bytes(
                b"CTEN" + struct.pack("<HHII", 1, 0, 100_000, 100_000) + bytes(64)
            ),
            ["cap"],
        ),
        (
            "empty.sten",
            lambda p: p.write_bytes(
                tensors._seal(tensors.STEN_MAGIC + struct.pack("<HHIff", 1, 0, 0, 20, 1))
            ),
            ["empty"],
        ),
        (
            "nan.sten",
            lambda p: p.write_bytes(
                tensors._seal(
                    tensors.STEN_MAGIC
                    + struct.pack("<HHIff", 1, 0, 3, 20, 1)
                    + np.array([1, np.nan, -np.inf], "<f4").tobytes()
                )
            ),
            ["2 non-finite", "[1]"],
        ),
        (
            "nan.npy",
            lambda p: np.save(p, np.array([[1, np.nan], [np.inf, 2]], np.float32)),
            ["non-finite"],
        ),
        ("empty.npy", lambda p: np.save(p, np.zeros((0, 3), np.float32)), ["empty"]),
        (
            "objects.npy",
            lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
            ["object"],
        ),
        ("complex.npy", lambda p: np.save(p, np.zeros((4, 4), np.complex64)), ["complex"]),
        ("text.npy", lambda p: np.save(p, np.array(["a", "b"])), ["real numbers"]),
        (
            "bomb.npz",
            lambda p: np.savez_compressed(p, a=np.zeros((12_000, 12_000), np.uint8)),
            ["cap"],
        ),
    ],
)
def test_tensors_that_cannot_be_rendered_are_bad_input(ws, tmp_path, name, write, words):
    path = tmp_path / name
    write(path)
    expect(run_script("tensor_visualizer", [path, "--workspace", ws]), 2, *words, peak_mib=400)


def test_dream_frames_with_nan_are_bad_input(ws, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "frame_0001.cten").write_bytes(_cten(4, 4))
    (frames / "frame_0002.cten").write_bytes(_cten(4, 4, _nan_rgb()))
    expect(run_script("dream_animation", [frames, "--no-mp4", "--workspace", ws]), 2, "non-finite")


# --------------------------------------------------------------------------
# Resource bombs
# --------------------------------------------------------------------------


def test_a_small_png_claiming_a_huge_image_is_refused_before_decoding(ws, tmp_path):
    compressor, row = zlib.compressobj(9), b"\0" + bytes(12_000 * 3)
    rows = b"".join(compressor.compress(row) for _ in range(12_000)) + compressor.flush()
    bomb = tmp_path / "bomb" / "bomb.png"
    bomb.parent.mkdir()
    bomb.write_bytes(png(12_000, 12_000, rows))
    assert bomb.stat().st_size < 1_000_000
    expect(
        run_script("image_preprocessor", [bomb.parent, "--workspace", ws]), 2, "cap", peak_mib=400
    )
    skipped = run_script("image_preprocessor", [bomb.parent, "--workspace", ws, "--skip-errors"])
    expect(skipped, 0, peak_mib=400)  # an error row, and the run goes on
    assert b"decoded-size cap" in skipped.stderr


def test_the_log_converter_stays_small_for_any_worker_count(tmp_path):
    log = tmp_path / "tiny.log"
    log.write_bytes(b"x\n" * 1_000_000)
    outputs = set()
    for workers in ("1", "2", "16"):
        outcome = expect(run_script("log_formatter", [log, "--workers", workers]), 0, peak_mib=200)
        outputs.add(outcome.stdout)
    assert len(outputs) == 1


def _zip_bomb(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("run/big.bin", "w", force_zip64=True) as member:
            chunk = bytes(1 << 24)
            for _ in range(64):  # 1 GiB of zeros, about 1 MB compressed
                member.write(chunk)
        archive.writestr(
            "run/MANIFEST.json",
            orjson.dumps({"files": {"big.bin": {"sha256": "0" * 64, "size": 1 << 30}}}),
        )


def test_archive_verification_streams_members(ws, tmp_path):
    path = tmp_path / "bomb.zip"
    _zip_bomb(path)
    outcome = expect(
        run_script("archive_results", ["--verify", path, "--workspace", ws]),
        1,
        "differs",
        peak_mib=200,
    )
    assert outcome.last["changed"] == 1


# --------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------


def _zip(members: dict, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.create_system = 3
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _tar(members: dict, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


GOOD = orjson.dumps({"files": {}})


@pytest.mark.parametrize("suffix,pack", [(".zip", _zip), (".tar.gz", _tar)])
@pytest.mark.parametrize(
    "members,link,words",
    [
        ({"run/MANIFEST.json": GOOD}, "run/link", ["not a regular file"]),
        ({"run/MANIFEST.json": b"{not json"}, None, ["not valid json"]),
        ({"run/MANIFEST.json": b"[1, 2]"}, None, ["'files'"]),
        ({"run/MANIFEST.json": b'{"files": {"a": 5}}'}, None, ["sha256, size"]),
        (
            {"run/MANIFEST.json": b'{"files": {"../x": {"sha256": "0", "size": 1}}}'},
            None,
            ["escapes"],
        ),
        ({"run/a.txt": b"x"}, None, ["manifest"]),
    ],
)
def test_archive_verification_refuses_bad_archives(
    ws, tmp_path, suffix, pack, members, link, words
):
    path = tmp_path / f"run{suffix}"
    path.write_bytes(pack(members, link))
    expect(run_script("archive_results", ["--verify", path, "--workspace", ws]), 2, *words)


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_garbage_archives_are_bad_input(ws, tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    expect(run_script("archive_results", ["--verify", path, "--workspace", ws]), 2)


# --------------------------------------------------------------------------
# Disk and locks
# --------------------------------------------------------------------------


@needs_posix
@pytest.mark.parametrize(
    "lock",
    [
        "data/.hash_registry.json.lock",
        "meta/chronicle/.records.lock",
        "meta/chronicle/.manifest.json.lock",
    ],
)
def test_a_lock_path_that_is_a_folder_is_bad_input_and_nothing_is_registered(ws, lock):
    (ws / lock).unlink(missing_ok=True)
    (ws / lock).mkdir()
    before = {p.relative_to(ws).as_posix(): p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    outcome = expect(
        run_script("hash_integrity", ["hash", ws / "data/sample", "--workspace", ws]), 2
    )
    assert outcome.last["file"].endswith(lock.split("/")[-1]), outcome.describe()
    after = {p.relative_to(ws).as_posix(): p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    assert after == before


@needs_posix
def test_a_log_file_fifo_without_a_reader_fails_at_once(tmp_path):
    fifo = tmp_path / "log"
    os.mkfifo(fifo)
    expect(run_script("time_utils", ["--log-file", fifo, "now"], timeout=30), 2, "log file")


@pytest.mark.parametrize(
    "name,text,words",
    [
        ("wide.csv", "path,patient_id\n" + "a" * 200_000 + ",1\nb,2\n", ["invalid csv"]),
        ("extra.csv", "path,patient_id\na,1,surplus\nb,2\n", ["more fields"]),
        (
            "deep.jsonl",
            '{"path": "a", "patient_id": ' + "[" * 2000 + "]" * 2000 + "}\n",
            ["invalid json"],
        ),
        ("surrogate.jsonl", '{"path": "\\udcff", "patient_id": 1}\n', ["invalid json"]),
    ],
)
def test_records_tables_that_cannot_be_split_are_bad_input(ws, tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    expect(run_script("dataset_splitter", [path, "--workspace", ws]), 2, *words)


@needs_posix
def test_a_fifo_as_de_identification_key_or_live_metrics_is_never_read(ws, tmp_path):
    key = tmp_path / "key"
    os.mkfifo(key)
    outcome = run_script(
        "metadata_extractor",
        [ws / "data/sample", "--deid-key-file", key, "--workspace", ws],
        timeout=30,
    )
    expect(outcome, 2, "regular file")
    run = ws / "experiments/results/live"
    run.mkdir(parents=True)
    (run / "plan.json").write_text('{"cycles": 4}')
    os.mkfifo(run / "metrics.jsonl")
    expect(run_script("pipeline_monitor", [run, "--workspace", ws], timeout=30), 2, "regular file")


@pytest.mark.parametrize(
    "tool, extra",
    [
        ("metadata_extractor", []),
        ("metadata_extractor", ["--all-tags"]),
        ("image_preprocessor", []),
        ("image_preprocessor", ["--volumes"]),
    ],
)
def test_a_huge_private_dicom_value_is_never_read(ws, tmp_path, tool, extra):
    import pydicom
    from pydicom.data import get_testdata_file

    folder = tmp_path / "dicom"
    folder.mkdir()
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.add_new(0x00091010, "OB", bytes(200 * 1024 * 1024))
    dataset.save_as(folder / "big.dcm")
    dataset.add_new(
        0x00204000, "LT", "x" * (50 * 1024 * 1024)
    )  # Image Comments: public, identifying, deferred
    dataset.save_as(folder / "big.dcm")
    expect(run_script(tool, [folder, "--workspace", ws, *extra]), 0, peak_mib=180)


@needs_posix
def test_non_utf8_folders_above_the_records_are_fine(sample_workspace, tmp_path):
    """Only recorded names must be UTF-8: a workspace or data folder whose own path is not still
    works."""
    workspace = Path(os.fsdecode(os.fsencode(tmp_path) + b"/ws\xff"))
    shutil.copytree(sample_workspace, workspace)
    expect(
        run_script("hash_integrity", ["hash", workspace / "data/sample", "--workspace", workspace]),
        0,
    )
    data = Path(os.fsdecode(os.fsencode(tmp_path) + b"/scans\xe9"))
    shutil.copytree(sample_workspace / "data/sample/png", data)
    refused = run_script("metadata_extractor", [data, "--workspace", workspace])
    expect(refused, 2, "--data-name")
    expect(
        run_script("metadata_extractor", [data, "--data-name", "scans", "--workspace", workspace]),
        0,
    )


@pytest.mark.parametrize(
    "args,words",
    [
        (["--command", 'echo "unbalanced'], ["cannot split"]),
        (["--command", ""], ["empty command"]),
        (["--command", "/nonexistent/binary {workspace}"], ["cannot start"]),
        (["--phases", ",,"], ["nothing to run"]),
    ],
)
def test_verify_commands_that_cannot_run_are_bad_input(tmp_path, args, words):
    outcome = run_script(
        "verify",
        [*args, "--no-bisect", "--keep", tmp_path / "kept", "--workspace", tmp_path / "ws"],
    )
    expect(outcome, 2, *words)


def test_a_reader_that_stops_early_gets_exit_2_and_no_plain_text(tmp_path):
    import subprocess
    import sys

    from tests.fuzz.harness import plain_text_lines, script_path

    log = tmp_path / "tiny.log"
    log.write_bytes(b"x\n" * 200_000)
    process = subprocess.Popen(
        [sys.executable, str(script_path("log_formatter")), str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.read(10)
    process.stdout.close()  # like `| head -c 10`
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 2, stderr
    assert not plain_text_lines(stderr) and b"closed by its reader" in stderr
