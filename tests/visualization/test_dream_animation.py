import wave

import numpy as np
import pytest

from scripts.utils.formats.media import read_mp4_frames
from scripts.utils.formats.tensors import ChromaticTensor, write_cten
from scripts.visualization import dream_animation as da
from tests.conftest import json_lines, run_script, single_error, tree


def animate(workspace, *args, expect=0):
    result = run_script(
        "visualization", "dream_animation", *args, "--workspace", workspace, cwd=workspace
    )
    assert result.returncode == expect, result.stderr
    if expect:
        return None, result
    run_id = [r for r in json_lines(result.stderr) if r["event"] == "run_recorded"][0]["run_id"]
    return workspace / "experiments/results" / run_id, result


def test_gif_wav_png_are_byte_identical_and_mp4_frames_equal(run_workspace):
    first, _ = animate(run_workspace, "run")
    second, _ = animate(run_workspace, "run")
    assert tree(first) == ["replay.gif", "replay.mp4", "sonification.wav", "spectrogram.png"]
    for name in ("replay.gif", "sonification.wav", "spectrogram.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    frames_a, frames_b = (
        read_mp4_frames(first / "replay.mp4"),
        read_mp4_frames(second / "replay.mp4"),
    )
    assert len(frames_a) == 6 and all(np.array_equal(a, b) for a, b in zip(frames_a, frames_b))
    from PIL import Image

    gif = Image.open(first / "replay.gif")
    assert gif.n_frames == 6 and gif.info["loop"] == 0 and gif.size == (264, 264)  # 12 x 22 scale
    with wave.open(str(first / "sonification.wav")) as audio:
        assert (audio.getframerate(), audio.getsampwidth(), audio.getnchannels()) == (44100, 2, 1)
        assert audio.getnframes() == 6 * round(0.25 * 44100)


def test_odd_sizes_are_padded_not_resized(workspace):
    folder = workspace / "frames"
    rng = np.random.Generator(np.random.PCG64(0))
    for index in range(3):
        write_cten(
            folder / f"cycle_{index + 1:04d}.cten",
            ChromaticTensor(rng.random((7, 9, 3), dtype=np.float32)),
        )
    out, _ = animate(workspace, "frames", "--scale", "3", "--no-overlay")
    frames = read_mp4_frames(out / "replay.mp4")
    assert frames[0].shape == (
        22,
        28,
        3,
    )  # 21 x 27 padded by one row and one column, nothing rescaled


def test_sonification_follows_the_bridge_mapping():
    red = ChromaticTensor(
        np.tile(np.array([1.0, 0.0, 0.0], np.float32), (4, 4, 1))
    )  # hue 0 -> f_min
    samples = da.sonify([red], 0.25).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    frequencies = np.fft.rfftfreq(samples.size, 1 / da.SAMPLE_RATE)
    assert abs(frequencies[np.argmax(spectrum)] - 55.0) < 10


@pytest.mark.parametrize("case", ["empty", "shapes", "corrupt"])
def test_bad_input(workspace, case):
    folder = workspace / "frames"
    folder.mkdir()
    if case != "empty":
        write_cten(folder / "cycle_0001.cten", ChromaticTensor(np.zeros((4, 4, 3), np.float32)))
        write_cten(
            folder / "cycle_0002.cten",
            ChromaticTensor(np.zeros((4, 5 if case == "shapes" else 4, 3), np.float32)),
        )
    if case == "corrupt":
        data = (folder / "cycle_0002.cten").read_bytes()
        (folder / "cycle_0002.cten").write_bytes(data[:10] + b"\xff" + data[11:])
    _, result = animate(workspace, "frames", expect=2)
    single_error(result.stderr)
    assert not (workspace / "experiments").exists() or not list(
        (workspace / "experiments/results").glob("dream_*")
    )
