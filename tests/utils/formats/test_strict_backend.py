"""The tensor code on an array namespace that refuses what CuPy refuses (tests/strict_xp.py): host
and device never mix unless the code says so, and the bytes are NumPy's."""

import hashlib
import sys

import numpy as np
import pytest

import scripts.data_tools.image_preprocessor as preprocessor
import scripts.orchestration.reference_experiment as reference
import scripts.visualization.tensor_visualizer as visualizer
from scripts.data_tools.sample_data import main as sample_data
from scripts.orchestration.run_experiment import main as run_experiment
from scripts.utils.formats.tensors import ChromaticTensor, write_cten
from tests.conftest import REPO, SMALL_RUN
from tests.strict_xp import cupyx_modules, strict


def device_array():
    return strict.asarray(np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize(
    "mix_up",
    [
        lambda: np.asarray(device_array()),  # implicit conversion to NumPy
        lambda: float(device_array().sum()),  # float() of a device array
        lambda: int(device_array()[0, 0]),
        lambda: np.exp(device_array()),  # a NumPy function on a device array
        lambda: np.add(device_array(), 1),
        lambda: device_array() + np.ones(3),  # a host array in device arithmetic
        lambda: strict.add(device_array(), np.ones(3)),
    ],
)
def test_the_strict_namespace_refuses_each_host_device_mix_up(mix_up):
    with pytest.raises(TypeError):
        mix_up()


def test_the_strict_namespace_computes_what_numpy_computes_when_asked_explicitly():
    a = device_array()
    assert (a @ a.T).get().tolist() == (
        np.arange(6.0).reshape(2, 3) @ np.arange(6.0).reshape(2, 3).T
    ).tolist()
    assert a.sum().item() == 15.0 and strict.exp(a).get()[0, 0] == 1.0


def outputs(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_reference_experiment_on_the_strict_namespace_writes_numpys_bytes(
    tmp_path, monkeypatch
):
    def run(name):
        workspace = tmp_path / name
        argv = [*SMALL_RUN, "--config", str(REPO / "trainer/config/phase7.toml")]
        argv += ["--logdir", str(workspace / "run"), "--workspace", str(workspace), "--quiet"]
        assert run_experiment(argv) == 0
        return outputs(workspace / "run")

    host = run("numpy")
    monkeypatch.setattr(reference, "array_module", lambda backend: (strict, "numpy"))
    device = run("strict")
    assert len(host) > 10 and device == host


def arrays(workspace):
    found = {}
    for path in sorted((workspace / "experiments/results").rglob("*.npz")):
        with np.load(path) as npz:
            found.update({f"{path.name}:{key}": npz[key] for key in npz.files})
    return found


@pytest.mark.parametrize("options", [[], ["--size", "32x32", "--augment"], ["--volumes"]])
def test_the_preprocessor_on_the_strict_namespace_gives_numpys_arrays(
    tmp_path, monkeypatch, options
):
    def run(name):
        workspace = tmp_path / name
        assert sample_data(["--workspace", str(workspace), "--quiet"]) == 0
        argv = ["--workspace", str(workspace), "--workers", "1", "--quiet", *options]
        assert preprocessor.main(argv) == 0
        return arrays(workspace)

    host = run("numpy")
    monkeypatch.setattr(preprocessor, "array_module", lambda backend: (strict, "numpy"))
    for name, module in cupyx_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    device = run("strict")
    assert len(host) > 20 and set(device) == set(host)
    for key in host:
        assert np.array_equal(host[key], device[key]) and host[key].dtype == device[key].dtype, key


def test_the_tensor_renders_on_the_strict_namespace_are_numpys_bytes(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    tensors = tmp_path / "tensors"
    tensors.mkdir()
    colours = rng.random((12, 10, 3), dtype=np.float32)
    colours[0, :3] = [0.5, 0.5, 0.5]  # grey: no saturation, hue 0
    write_cten(tensors / "dream.cten", ChromaticTensor(colours, colours[..., 1]))
    dark = np.full((8, 8, 3), 0.0013, np.float32)  # 8 bits drift too far: the 16-bit path
    write_cten(tensors / "dark.cten", ChromaticTensor(dark))
    np.savez(tensors / "gray.npz", slice=rng.random((9, 7)))

    def run(name):
        workspace = tmp_path / name
        argv = [str(tensors), "--workspace", str(workspace), "--quiet"]
        assert visualizer.main(argv) == 0
        found = outputs(workspace / "experiments/results")
        return {name: digest for name, digest in found.items() if not name.startswith(".")}

    host = run("numpy")
    monkeypatch.setattr(visualizer, "array_module", lambda backend: (strict, "numpy"))
    device = run("strict")
    pngs = [name for name in host if name.endswith(".png")]
    assert len(pngs) >= 14 and device == host  # every render, and the report's drift figures
