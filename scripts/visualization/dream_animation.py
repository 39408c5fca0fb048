"""Replay a dream-cycle sequence as GIF and MP4, and sonify it (WAV + spectrogram).

    python scripts/visualization/dream_animation.py experiments/results/run_2025_10_31
    python scripts/visualization/dream_animation.py frames/ --fps 8 --scale 4 --no-mp4

Frames are the ``.cten`` files of a folder (or of a run folder's
``dreams/``), in name order; they must all have the same shape. Each frame
is scaled up by ``--scale`` (nearest neighbour; default: to at least 256
pixels) and, unless ``--no-overlay``, carries its cycle number and mean
coherence.

* ``replay.gif``: one fixed 256-colour palette (a 6x6x6 colour cube and 40
  grays) for every frame, no dithering, loop forever: byte-identical run to
  run.
* ``replay.mp4`` (unless ``--no-mp4``): H.264 through imageio-ffmpeg with
  bit-exact flags and no metadata. ffmpeg is never allowed to resize: an
  odd width or height (yuv420p needs even ones) is padded by one edge pixel,
  and the report says so. Container bytes can carry the encoder's version,
  so MP4s are compared by their decoded frames.
* ``sonification.wav``: the Phase 7 "sonic mapping". Each frame's bridge
  encoding (docs/design.md: hue -> frequency f = f_min 2^(octaves H / 2pi),
  saturation -> amplitude, lightness -> kernel width) sounds for
  ``--seconds-per-frame``: every bin a sine partial at its centre frequency
  with its amplitude, under a Gaussian envelope whose width grows with the
  bin's sigma (lightness), tapered to zero at the frame's edges (no clicks);
  phases run on across frames. 16-bit PCM, 44.1
  kHz, mono, peak-normalized; partials are summed in a fixed order, so the
  bytes are the same on every run.
* ``spectrogram.png``: the WAV's short-time spectrum.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (
    None,
    "",
):  # run as a file: find the project and its Python
    sys.path[0] = str(Path(__file__).resolve().parents[2])
    from scripts.utils.bootstrap import use_project_python

    use_project_python()

import numpy as np

from scripts.utils import cli
from scripts.utils.errors import InputError
from scripts.utils.formats.colour import bridge_encode
from scripts.utils.formats.media import gif_bytes, wav_bytes, write_mp4
from scripts.utils.formats.plotting import pyplot, save_figure
from scripts.utils.formats.tensors import read_cten
from scripts.utils.jsonio import atomic_write_bytes
from scripts.utils.limits import check_pixels
from scripts.utils.records.data_roots import collect_inputs
from scripts.utils.records.run_records import RunRecorder
from scripts.utils.workspace import resolve_workspace

SAMPLE_RATE = 44_100
BRIDGE = {"f_min": 55.0, "octaves": 5.0, "bins": 48}


def load_frames(workspace: Path, inputs) -> list:
    """``(cycle, name, ChromaticTensor)`` in name order; differing shapes are bad input.

    The frames together may hold at most the pixel cap of limits.py (checked
    from their sizes before any is read).
    """
    folders = []
    for given in inputs:
        folder = Path(given)
        if folder.is_dir() and (folder / "plan.json").is_file():
            folder = folder / "dreams"
        if not folder.exists():
            raise InputError("input not found", file=str(folder))
        folders.append(folder)
    found = collect_inputs(workspace, folders, bind=False)
    files = [(Path(path), info) for _, path, info in found.files if path.endswith(".cten")]
    if not files:
        raise InputError("no .cten frames found", file=str(inputs[0]))
    check_pixels(
        sum(info.st_size for _, info in files) // 12, f"{len(files)} frames", file=str(inputs[0])
    )
    frames = []
    for index, (path, _) in enumerate(files):
        tensor = read_cten(path)
        if frames and tensor.rgb.shape != frames[0][2].rgb.shape:
            raise InputError(
                f"frame shape {tensor.rgb.shape} differs from the first frame's "
                f"{frames[0][2].rgb.shape}",
                file=str(path),
            )
        match = re.search(r"(\d{1,18})", path.stem)
        frames.append((int(match.group(1)) if match else index + 1, path.name, tensor))
    return frames


def frame_pixels(tensor, scale: int, caption: str | None) -> np.ndarray:
    from PIL import Image, ImageDraw

    pixels = np.rint(np.clip(tensor.rgb, 0, 1) * 255).astype(np.uint8)
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    if caption:
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, min(image.width - 1, 8 + 6 * len(caption)), 13), fill=(0, 0, 0))
        draw.text((3, 1), caption, fill=(255, 255, 255))
        pixels = np.asarray(image)
    return pixels


def sonify(tensors: list, seconds_per_frame: float) -> np.ndarray:
    """int16 samples of the whole sequence (see the module docstring)."""
    length = int(round(seconds_per_frame * SAMPLE_RATE))
    local = np.arange(length) / SAMPLE_RATE
    taper = np.sin(np.pi * (np.arange(length) + 0.5) / length)  # zero at the frame edges: no clicks
    signal = np.zeros(length * len(tensors))
    for index, tensor in enumerate(tensors):
        spectrum = bridge_encode(np.clip(tensor.rgb.astype(np.float64), 0, 1), BRIDGE)
        frequencies = spectrum.frequencies()
        start = index * length
        absolute = (start + np.arange(length)) / SAMPLE_RATE
        segment = np.zeros(length)
        for amplitude, frequency, sigma in zip(
            spectrum.bins, frequencies, spectrum.sigma
        ):  # fixed order
            if amplitude <= 0 or frequency >= SAMPLE_RATE / 2:
                continue
            width = (0.15 + 0.35 * float(sigma)) * seconds_per_frame
            envelope = np.exp(-0.5 * ((local - seconds_per_frame / 2) / width) ** 2) * taper
            segment += (
                float(amplitude) * envelope * np.sin(2 * math.pi * float(frequency) * absolute)
            )
        signal[start : start + length] = segment
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    if peak > 0:
        signal *= 0.9 / peak
    return np.rint(signal * 32767).astype("<i2")


def spectrogram_figure(samples: np.ndarray):
    window, hop = 1024, 256
    values = samples.astype(np.float64) / 32768
    if values.size < window:
        values = np.pad(values, (0, window - values.size))
    count = 1 + (values.size - window) // hop
    frames = np.stack([values[i * hop : i * hop + window] for i in range(count)]) * np.hanning(
        window
    )
    magnitude = 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)).T + 1e-9)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.2))
    image = axis.imshow(
        magnitude,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=-120,
        vmax=magnitude.max(),
        extent=(0, values.size / SAMPLE_RATE, 0, SAMPLE_RATE / 2),
    )
    axis.set_ylim(0, min(SAMPLE_RATE / 2, BRIDGE["f_min"] * 2 ** BRIDGE["octaves"] * 1.5))
    axis.set_xlabel("time (s)")
    axis.set_ylabel("frequency (Hz)")
    figure.colorbar(image, ax=axis, label="dB")
    figure.tight_layout()
    return figure


def animate(args, log) -> int:
    workspace = resolve_workspace(args.workspace)
    frames = load_frames(workspace, args.inputs)
    height, width = frames[0][2].rgb.shape[:2]
    scale = args.scale or max(1, -(-256 // max(height, width)))
    check_pixels(
        len(frames) * height * width * scale * scale,
        f"{len(frames)} frames of {height * scale}x{width * scale}",
        file=args.inputs[0],
    )
    pictures = []
    for cycle, _, tensor in frames:
        caption = None
        if not args.no_overlay:
            coherence = (
                f"  coh {float(np.mean(tensor.coherence)):.3f}"
                if tensor.coherence is not None
                else ""
            )
            caption = f"cycle {cycle}{coherence}"
        pictures.append(frame_pixels(tensor, scale, caption))
    config = {
        "fps": args.fps,
        "scale": scale,
        "overlay": not args.no_overlay,
        "mp4": not args.no_mp4,
        "seconds_per_frame": args.seconds_per_frame,
    }
    with RunRecorder(
        "dream_animation", argv=args.argv, workspace=workspace, log=log, config=config
    ) as record:
        for given in args.inputs:
            record.consume(given)
        atomic_write_bytes(record.output_path("replay.gif"), gif_bytes(pictures, args.fps))
        results = {
            "frames": len(frames),
            "frame_size": [height * scale, width * scale],
            "first": frames[0][1],
            "last": frames[-1][1],
        }
        if not args.no_mp4:
            results["mp4"] = write_mp4(pictures, args.fps, record.output_path("replay.mp4"))
        samples = sonify([tensor for _, _, tensor in frames], args.seconds_per_frame)
        atomic_write_bytes(record.output_path("sonification.wav"), wav_bytes(samples, SAMPLE_RATE))
        figure = spectrogram_figure(samples)
        save_figure(figure, record.output_path("spectrogram.png"))
        pyplot().close(figure)
        results["audio_seconds"] = round(samples.size / SAMPLE_RATE, 3)
        record.results.update(results)
    log.info("animated", frames=len(frames), folder=record.folder)
    return 0


def main(argv=None) -> int:
    parser = cli.ScriptParser(
        "dream_animation",
        doc=__doc__,
        description="Replay .cten dream frames as GIF and MP4, "
        "and sonify them (WAV + spectrogram).",
        example="python scripts/visualization/dream_animation.py "
        "experiments/results/run_2025_10_31 --fps 4",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="PATH", help="run folders, folders of .cten frames, or frames"
    )
    parser.add_argument(
        "--fps",
        type=cli.bounded(float, 0.1, 120),
        default=4.0,
        help="frames per second (0.1 to 120)",
    )
    parser.add_argument(
        "--scale",
        type=cli.bounded(int, 1, 64),
        default=None,
        help="pixel scale, 1 to 64 (default: up to at least 256 pixels)",
    )
    parser.add_argument(
        "--no-overlay", action="store_true", help="no cycle/coherence caption on the frames"
    )
    parser.add_argument("--no-mp4", action="store_true", help="skip the MP4")
    parser.add_argument(
        "--seconds-per-frame",
        type=cli.bounded(float, 0.01, 10),
        default=0.25,
        help="audio length of each frame (0.01 to 10)",
    )
    cli.add_common_options(parser)
    return cli.run(parser, animate, argv)


if __name__ == "__main__":
    sys.exit(main())
