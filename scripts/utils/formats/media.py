"""Media files written and read byte-reproducibly: GIF, MP4 (H.264), WAV.

    from scripts.utils.formats.media import gif_bytes, read_mp4_frames, wav_bytes, write_mp4
    write_mp4(frames, fps=4, path=Path("replay.mp4"))     # frames: (H, W, 3) uint8 arrays
    frames = read_mp4_frames(Path("replay.mp4"))          # how two MP4s are compared

GIFs use one fixed palette and no dithering; MP4s are encoded with bit-exact
flags, one x264 thread and no metadata, so equal frames give equal bytes.
"""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import numpy as np


def fixed_palette() -> list:
    """216 colours of a 6x6x6 cube, then 40 grays: 256 RGB triples, flattened."""
    levels = [0, 51, 102, 153, 204, 255]
    palette = [value for r in levels for g in levels for b in levels for value in (r, g, b)]
    for index in range(40):
        gray = round(index * 255 / 39)
        palette += [gray, gray, gray]
    return palette


def gif_bytes(frames: list, fps: float) -> bytes:
    from PIL import Image

    palette = Image.new("P", (1, 1))
    palette.putpalette(fixed_palette())
    images = [
        Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames
    ]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        loop=0,
        duration=round(1000 / fps),
        optimize=False,
        disposal=1,
    )
    return buffer.getvalue()


def write_mp4(frames: list, fps: float, path: Path) -> dict:
    """H.264, bit-exact flags, no metadata; odd sizes padded by one edge pixel (never resized)."""
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    pad = (height % 2, width % 2)
    if any(pad):
        frames = [np.pad(f, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge") for f in frames]
    size = (frames[0].shape[1], frames[0].shape[0])
    temp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    writer = imageio_ffmpeg.write_frames(
        str(temp),
        size,
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        quality=None,
        bitrate=None,
        output_params=[
            "-fflags",
            "+bitexact",
            "-flags:v",
            "+bitexact",
            "-map_metadata",
            "-1",
            "-crf",
            "18",
            "-x264-params",
            "threads=1",
        ],
    )
    try:
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return {"size": list(size), "padded_rows": pad[0], "padded_columns": pad[1]}


def read_mp4_frames(path: Path) -> list:
    """Decoded frames of an MP4 (how MP4s are compared)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = reader.__next__()
    width, height = meta["size"]
    return [np.frombuffer(frame, dtype=np.uint8).reshape(height, width, 3) for frame in reader]


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV file holding ``samples``."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()
