import io
import wave

import numpy as np
import pytest

from scripts.orchestration import verify as vf
from scripts.utils.jsonio import read_json
from tests.conftest import REPO, json_lines, run_script, single_error

LEAKY = REPO / "tests/orchestration/leaky_step.py"


def verify(workspace, *args):
    return run_script("orchestration", "verify", *args, "--workspace", workspace, cwd=workspace, timeout=600)


@pytest.mark.parametrize("leak, cause", [("tz", "tz"), ("hashseed", "hashseed")])
def test_an_injected_nondeterminism_is_caught_explained_and_bisected(workspace, leak, cause):
    import sys

    result = verify(workspace, "--command", f"{sys.executable} {LEAKY} {leak} --workspace {{workspace}}")
    assert result.returncode == 1, result.stderr
    error = single_error(result.stderr)
    assert error["cause"] == cause
    assert error["first"]["artifact"].endswith("/value.txt") and error["first"]["type"] == "bytes"
    report = read_json(workspace / error["report"])
    assert report["status"] == "check_failed" and report["results"]["bisect"]["cause"] == cause
    artifacts = {d["artifact"].rsplit("/", 1)[-1] for d in report["results"]["differing"]}
    assert "value.txt" in artifacts and "stable.json" not in artifacts


def test_a_steady_pipeline_is_identical(workspace):
    import sys

    result = verify(workspace, "--command", f"{sys.executable} {LEAKY} none --workspace {{workspace}}")
    assert result.returncode == 0, result.stderr
    identical = [r for r in json_lines(result.stderr) if r["event"] == "identical"][0]
    assert identical["artifacts"] == 3 and "tz" in identical["varied"]


def test_the_real_pipeline_is_identical_under_variation(workspace):
    result = verify(workspace, "--phases", "phase5,phase9", "--no-bisect")
    assert result.returncode == 0, result.stderr
    identical = [r for r in json_lines(result.stderr) if r["event"] == "identical"][0]
    table = identical["spec_table"]
    assert all(row["pass"] for row in table.values())
    assert set(table) == {"hash_reproducibility", "environment_parity", "dataset_split_determinism",
                          "visualization_energy_drift"}


def npz(values):
    buffer = io.BytesIO()
    np.savez(buffer, x=values)
    return buffer.getvalue()


def png(values):
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", values, extension=".png")


def wav(samples):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(44100)
        out.writeframes(np.asarray(samples, "<i2").tobytes())
    return buffer.getvalue()


def test_explanations_by_type(tmp_path):
    from pathlib import Path

    assert vf.explain(Path("r.json"), b'{"a": {"b": [1, 2]}}', b'{"a": {"b": [1, 3]}}') == \
        {"type": "json", "key_path": "$.a.b[1]", "first": 2, "second": 3}
    assert vf.explain(Path("m.csv"), b"cycle,loss\n1,0.5\n2,0.4\n", b"cycle,loss\n1,0.5\n2,0.9\n") == \
        {"type": "csv", "row": 3, "column": "loss", "first": "0.4", "second": "0.9"}
    a = np.zeros((4, 4))
    b = a.copy()
    b[1, 2], b[3, 3] = 0.5, -2.0
    array = vf.explain(Path("s.npz"), npz(a), npz(b))
    assert (array["differing_elements"], array["max_abs_difference"], array["shape"]) == (2, 2.0, [4, 4])
    image_a = np.zeros((8, 8, 3), np.uint8)
    image_b = image_a.copy()
    image_b[2:4, 5:7] = 255
    image = vf.explain(Path("r.png"), png(image_a), png(image_b))
    assert image["differing_pixels"] == 4 and image["bounding_box"] == {"top": 2, "left": 5, "bottom": 3, "right": 6}
    assert vf.explain(Path("s.wav"), wav([0, 1, 2, 3]), wav([0, 1, 9, 3]))["first_differing_sample"] == 2
    assert vf.explain(Path("x.bin"), b"abcdef", b"abcXef") == {"type": "bytes", "first_differing_byte": 3,
                                                                "sizes": [6, 6]}
