import collections
import io
import os
import pickle
import tarfile
import wave
import zipfile

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from scripts.utils.formats.artifact_diff import compare
from scripts.utils.formats.model_files import read_model
from tests.conftest import REPO

DATA = REPO / "tests/utils/data"


def places(result) -> list:
    return [item["where"] for item in result["differences"]]


def npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def png(values):
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", values, extension=".png")


def wav(samples):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(100)
        out.writeframes(np.asarray(samples, "<i2").tobytes())
    return buffer.getvalue()


def tar(members: dict, mode=0o644):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_json_lists_every_differing_key_path():
    a = {"classes": ["bird", "fish"], "trained": "12:00", "same": 1, "gone": 2}
    b = {"classes": ["fish", "bird"], "trained": "02:00", "same": 1, "new": 3}
    result = compare("model.json", orjson.dumps(a), orjson.dumps(b))
    assert places(result) == ["$.classes[0]", "$.classes[1]", "$.gone", "$.new", "$.trained"]
    assert result["differences"][0] == {"where": "$.classes[0]", "first": "bird", "second": "fish"}
    lines = compare("log.jsonl", b'{"a":1}\n{"a":2}\n', b'{"a":1}\n{"a":3}\n{"a":4}\n')
    assert places(lines) == ["line 2: $.a", "lines"]


def test_csv_lists_every_differing_cell_by_column_name():
    result = compare(
        "m.csv",
        b"cycle,loss,acc\n1,0.5,0.9\n2,0.4,0.8\n",
        b"cycle,loss,acc\n1,0.5,0.7\n2,0.9,0.1\n",
    )
    assert places(result) == ["row 2, column acc", "row 3, column loss", "row 3, column acc"]


def test_arrays_are_compared_tensor_by_tensor():
    a = np.zeros((6, 6))
    b = a.copy()
    b[0:2, 0:2], b[5, 5] = 1.0, -3.0
    result = compare("s.npz", npz(x=a, y=np.arange(3)), npz(x=b, y=np.arange(4)))
    assert places(result) == ["x", "y: shape and dtype"]
    x = result["differences"][0]
    assert (x["differing_values"], x["values"], x["max_abs_difference"]) == (5, 36, 3.0)
    assert x["first_index"] == [0, 0] and (x["first"], x["second"]) == (0.0, 1.0)
    assert (
        x["shape"] == [6, 6]
        and x["dtype"] == "float64"
        and x["regions"] == ["[0:2, 0:2]", "[5:6, 5:6]"]
    )


def test_a_pytorch_file_is_compared_by_tensor_name_without_torch():
    result = compare(
        "ckpt.pt", (DATA / "torch_a.pt").read_bytes(), (DATA / "torch_b.pt").read_bytes()
    )
    assert result["type"] == "model" and places(result) == ["epoch", "model.2.weight"]
    epoch, weight = result["differences"]
    assert (epoch["first"], epoch["second"]) == (3, 4)
    assert (
        weight["shape"] == [2, 3]
        and weight["dtype"] == "float32"
        and weight["first_index"] == [1, 2]
    )
    assert weight["differing_values"] == 1 and abs(weight["max_abs_difference"] - 0.125) < 1e-6
    tensors = read_model("ckpt.pt", (DATA / "torch_a.pt").read_bytes())
    assert tensors["optimizer.param_groups[0].lr"] == 1.0 and tensors[
        "optimizer.state.0.square_avg"
    ].shape == (3, 4)


def test_a_pickle_in_a_model_file_never_runs_code(tmp_path):
    victim = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {victim}",)

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"weights": Payload()}, protocol=2))
    tensors = read_model("evil.pt", buffer.getvalue())
    assert not victim.exists() and tensors["weights"].endswith("system>")


def safetensors(tensors: dict) -> bytes:
    header, body = {}, b""
    for name, array in tensors.items():
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": {"float32": "F32", "int64": "I64"}[str(array.dtype)],
            "shape": list(array.shape),
            "data_offsets": [len(body), len(body) + len(data)],
        }
        body += data
    encoded = orjson.dumps(header)
    return len(encoded).to_bytes(8, "little") + encoded + body


def test_safetensors_are_compared_by_tensor_name():
    a = {"encoder.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "steps": np.array([7])}
    b = {
        **a,
        "encoder.weight": a["encoder.weight"]
        * np.array([1, 1, 1, 1, 1, 2], np.float32).reshape(2, 3),
    }
    result = compare("m.safetensors", safetensors(a), safetensors(b))
    [item] = result["differences"]
    assert (
        item["where"] == "encoder.weight"
        and item["first_index"] == [1, 2]
        and item["max_abs_difference"] == 5.0
    )


def test_images_give_boxes_and_audio_gives_ranges():
    first = np.zeros((10, 10, 3), np.uint8)
    second = first.copy()
    second[1:3, 2:4], second[8, 9] = 255, 7
    assert places(compare("r.png", png(first), png(second))) == [
        "rows 1-2, columns 2-3",
        "rows 8-8, columns 9-9",
    ]
    audio = compare("s.wav", wav([0] * 20), wav([0] * 5 + [9, 9, 9] + [0] * 10 + [4, 0]))
    assert places(audio) == ["samples 5-7", "samples 18-18"]
    assert audio["differences"][0]["seconds"] == [0.05, 0.08]


def test_archives_are_compared_member_by_member_recursively():
    inner_a, inner_b = tar({"deep.json": b'{"k": 1}'}), tar({"deep.json": b'{"k": 2}'})
    a = tar({"model.json": b'{"a": 1, "b": 2}', "inner.tar": inner_a, "old.txt": b"x"})
    b = tar({"model.json": b'{"a": 1, "b": 3}', "inner.tar": inner_b, "new.txt": b"x"}, mode=0o664)
    result = compare("bundle.tar", a, b)
    assert "model.json: $.b" in places(result) and "inner.tar: deep.json: $.k" in places(result)
    assert (
        "old.txt" in places(result)
        and "new.txt" in places(result)
        and "model.json: mode" in places(result)
    )
    buffers = []
    for text in (b"one\ntwo\n", b"one\nTWO\n"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(zipfile.ZipInfo("notes.txt", (1980, 1, 1, 0, 0, 0)), text)
        buffers.append(buffer.getvalue())
    assert places(compare("a.zip", *buffers)) == ["notes.txt: line 2"]


def test_text_lines_bytes_ranges_and_a_file_that_does_not_parse():
    assert places(compare("notes.txt", b"a\nb\nc\nd\n", b"a\nB\nc\nD\nE\n")) == ["line 2", "line 4"]
    raw = compare("x.bin", b"\0abcdef" + bytes(40) + b"zz", b"\0abXdef" + bytes(40) + b"yy")
    assert places(raw) == ["bytes 3-3", "bytes 47-48"]
    broken = compare("bad.json", b"{not json", b"{not jsoN")
    assert broken["type"] == "text" and "parse_error" in broken


def test_the_list_stops_at_the_limit_and_says_how_many_there_were():
    result = compare(
        "big.json", orjson.dumps(list(range(100))), orjson.dumps(list(range(1, 101))), limit=5
    )
    assert len(result["differences"]) == 5 and result["count"] == 100 and result["truncated"]


def hostile_torch_file(size: tuple, stride: tuple) -> bytes:
    """A torch.save-shaped zip whose one tensor claims ``size`` over a 4-value storage (built
    without torch)."""

    class Storage:
        pass

    # pickled as OrderedDict(...) and Counter, then renamed to torch's names in the bytes
    class Tensor:
        def __reduce__(self):
            return collections.OrderedDict, (Storage(), 0, size, stride, False, {})

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return (
                ("storage", collections.Counter, "0", "cpu", 4)
                if isinstance(obj, Storage)
                else None
            )

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"w": Tensor()})
    payload = buffer.getvalue().replace(
        b"ccollections\nOrderedDict\n", b"ctorch._utils\n_rebuild_tensor_v2\n"
    )
    payload = payload.replace(b"ccollections\nCounter\n", b"ctorch\nFloatStorage\n")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/data/0", np.arange(4, dtype="<f4").tobytes())
    return out.getvalue()


def test_a_model_file_that_claims_more_values_than_it_holds_is_compared_as_bytes():
    sane = hostile_torch_file((2, 2), (2, 1))
    assert read_model("m.pt", sane)["w"].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    for size, stride in [((10**12,), (0,)), ((4, 4), (4, 1)), ((2,), (-1,))]:
        result = compare("m.pt", hostile_torch_file(size, stride), sane)
        assert result["type"] == "bytes" and "parse_error" in result, (size, stride)


def test_a_scikit_learn_model_pickled_or_dumped_with_joblib_is_compared_by_attribute(tmp_path):
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.linear_model import SGDClassifier

    X, y = load_digits(return_X_y=True)
    labels = np.array(
        [f"digit {t}" for t in y], dtype=object
    )  # object arrays: a pickle inside joblib's stream
    models = [
        SGDClassifier(max_iter=3, tol=None, random_state=seed).fit(X, labels) for seed in (0, 1)
    ]
    for suffix, save in (
        (".pkl", lambda m, p: p.write_bytes(pickle.dumps(m))),
        (".joblib", joblib.dump),
    ):
        paths = [tmp_path / f"m{seed}{suffix}" for seed in (0, 1)]
        for model, path in zip(models, paths):
            save(model, path)
        result = compare(paths[0].name, paths[0].read_bytes(), paths[1].read_bytes())
        assert result["type"] == "model" and places(result) == [
            "coef_",
            "intercept_",
            "random_state",
        ], suffix
        assert result["differences"][0]["shape"] == [10, 64]
        tensors = read_model(paths[0].name, paths[0].read_bytes())
        assert tensors["classes_"].tolist() == [f"digit {d}" for d in range(10)]


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_a_damaged_model_file_is_compared_as_bytes_never_an_exception(data):
    original = (
        (DATA / "torch_a.pt").read_bytes()
        if data.draw(st.booleans())
        else pickle.dumps(
            {
                "coef_": np.arange(6.0).reshape(2, 3),
                "classes_": np.array(["a", "b"], dtype=object),
                "n": 3,
            },
            protocol=2,
        )
    )
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(damaged) - 1))
        damaged[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        damaged = damaged[: data.draw(st.integers(0, len(damaged)))]
    result = compare("model.pt", original, bytes(damaged))
    assert result["type"] in ("model", "bytes") and isinstance(result["differences"], list)
