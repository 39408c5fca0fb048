"""Benchmarks of the visualization scripts, each beside its anchor measured in the same run."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

from bench.common import best_of_alternating, figure
from scripts.utils.formats.media import gif_bytes
from scripts.utils.formats.tensors import ChromaticTensor, write_cten
from scripts.visualization import dream_animation, tensor_visualizer


def _frames(count: int, size: int) -> list:
    rng = np.random.Generator(np.random.PCG64(5))
    base = rng.random((size // 8, size // 8, 3))
    frames = []
    for index in range(count):
        tensor = np.clip(np.kron(base, np.ones((8, 8, 1))) + 0.2 * np.sin(index / 7), 0, 1).astype(
            np.float32
        )
        frames.append(ChromaticTensor(tensor, tensor[..., 0]))
    return frames


def _naive_gif(tensors: list) -> bytes:
    """Each frame drawn with matplotlib imshow + savefig, then assembled by imageio."""
    import imageio.v3 as iio

    from scripts.utils.formats.plotting import pyplot

    plt = pyplot()
    images = []
    for tensor in tensors:
        fig, axis = plt.subplots(figsize=(2.56, 2.56), dpi=100)
        axis.imshow(tensor.rgb)
        axis.axis("off")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        images.append(iio.imread(buffer.getvalue(), extension=".png")[..., :3])
    return iio.imwrite("<bytes>", np.stack(images), extension=".gif", loop=0)


def bench_gif(scratch: Path, quick: bool, repeat: int) -> list:
    count = 40 if quick else 300
    tensors = _frames(count, 256)

    def ours():
        pictures = [
            dream_animation.frame_pixels(t, 1, f"cycle {i + 1}") for i, t in enumerate(tensors)
        ]
        gif_bytes(pictures, 4.0)

    def naive():
        _naive_gif(tensors)

    best = best_of_alternating({"ours": ours, "naive": naive}, 1 if not quick else repeat)
    return [
        figure(
            "dream_animation_gif",
            f"dream_animation GIF of {count} frames of 256x256 (with captions)",
            count / best["ours"],
            "frames/s",
            "matplotlib imshow + savefig per frame, imageio GIF",
            count / best["naive"],
            5.0,
            {"input": {"frames": count, "size": [256, 256]}},
        )
    ]


def bench_visualizer(scratch: Path, quick: bool, repeat: int) -> list:
    count = (
        20 if quick else 80
    )  # a throughput figure: 80 files give it within a few percent, in 15 s
    folder = scratch / "ctens"
    for index, tensor in enumerate(_frames(count, 32)):
        write_cten(folder / f"t{index:05d}.cten", tensor)
    workspace = scratch

    def ours():
        out = scratch / "rendered"
        tensor_visualizer.visualize(workspace, [folder], out)
        shutil.rmtree(out)

    def naive():
        from scripts.utils.formats.plotting import pyplot
        from scripts.utils.formats.tensors import read_cten

        plt = pyplot()
        out = scratch / "naive"
        out.mkdir(exist_ok=True)
        for path in sorted(folder.glob("*.cten")):
            fig, axis = plt.subplots(figsize=(3, 3))
            axis.imshow(read_cten(path).rgb)
            fig.savefig(out / f"{path.stem}.png")
            plt.close(fig)
        shutil.rmtree(out)

    best = best_of_alternating({"ours": ours, "naive": naive}, 1 if not quick else repeat)
    shutil.rmtree(folder)
    return [
        figure(
            "tensor_visualizer_files",
            "tensor_visualizer: 5 direct renders with drift checks + a panel figure per .cten",
            count / best["ours"],
            "files/s",
            "matplotlib imshow + savefig of the RGB view per file",
            count / best["naive"],
            None,
            {"input": {"files": count, "shape": [32, 32, 3]}},
        )
    ]


BENCHMARKS = {"gif": bench_gif, "visualizer": bench_visualizer}
