import struct

import numpy as np
import pytest

from scripts.utils.errors import InputError
from scripts.utils.formats import tensors
from scripts.utils.formats.tensors import ChromaticTensor, SpectralTensor


def test_crc64_xz_check_value():
    assert tensors.crc64_xz(b"123456789") == 0x995DC9BBDF1939FA


def test_cten_layout_is_exactly_the_design():
    rgb = np.array([[[0.0, 0.5, 1.0], [0.25, 0.75, 0.125]]], dtype=np.float32)  # h=1, w=2
    coherence = np.array([[1.0, 0.5]], dtype=np.float32)
    data = tensors.encode_cten(ChromaticTensor(rgb, coherence))
    body = (
        b"CTEN"
        + struct.pack("<HHII", 1, 1, 1, 2)
        + rgb.astype("<f4").tobytes()
        + coherence.astype("<f4").tobytes()
    )
    assert data == body + struct.pack("<Q", tensors.crc64_xz(body))
    assert len(data) == 16 + 2 * 12 + 2 * 4 + 8


def test_sten_layout_is_exactly_the_design():
    bins = np.array([0.5, 1.0, 0.0], dtype=np.float32)
    data = tensors.encode_sten(SpectralTensor(bins, 55.0, 1 / 12, None, log_layout=True))
    body = b"STEN" + struct.pack("<HHIff", 1, 2, 3, 55.0, 1 / 12) + bins.astype("<f4").tobytes()
    assert data == body + struct.pack("<Q", tensors.crc64_xz(body))


def test_round_trips(tmp_path):
    rng = np.random.Generator(np.random.PCG64(0))
    cten = ChromaticTensor(
        rng.random((5, 7, 3), dtype=np.float32), rng.random((5, 7), dtype=np.float32)
    )
    tensors.write_cten(tmp_path / "a.cten", cten)
    back = tensors.read_cten(tmp_path / "a.cten")
    assert np.array_equal(back.rgb, cten.rgb) and np.array_equal(back.coherence, cten.coherence)
    plain = tensors.decode_cten(tensors.encode_cten(ChromaticTensor(cten.rgb)))
    assert plain.coherence is None
    sten = SpectralTensor(
        rng.random(16, dtype=np.float32), 110.0, 4.0, rng.random(16, dtype=np.float32)
    )
    tensors.write_sten(tmp_path / "a.sten", sten)
    again = tensors.read_sten(tmp_path / "a.sten")
    assert np.array_equal(again.bins, sten.bins) and np.array_equal(again.sigma, sten.sigma)
    assert again.f_min == 110.0 and again.f_res == 4.0 and not again.log_layout
    assert tensors.SpectralTensor(
        np.zeros(3), 100.0, 1.0, log_layout=True
    ).frequencies().tolist() == [100, 200, 400]


def corrupt(data: bytes, kind: str) -> bytes:
    if kind == "magic":
        return b"XTEN" + data[4:]
    if kind == "version":
        return data[:4] + struct.pack("<H", 2) + data[6:]
    if kind == "length":
        return data[:-12] + data[-8:]
    if kind == "crc":
        index = len(data) // 2
        return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]
    return data[:6] + struct.pack("<H", 0x80) + data[8:]  # unknown flag


@pytest.mark.parametrize("kind", ["magic", "version", "length", "crc", "flags"])
@pytest.mark.parametrize("fmt", ["cten", "sten"])
def test_damage_is_refused_and_named(fmt, kind):
    if fmt == "cten":
        data, decode = (
            tensors.encode_cten(ChromaticTensor(np.full((3, 3, 3), 0.5, np.float32))),
            tensors.decode_cten,
        )
    else:
        data, decode = (
            tensors.encode_sten(SpectralTensor(np.ones(8, np.float32), 55.0, 1.0)),
            tensors.decode_sten,
        )
    damaged = corrupt(data, kind)
    if kind in (
        "version",
        "flags",
        "length",
    ):  # keep the CRC right, so that the named check is the one that fires
        damaged = damaged[:-8] + struct.pack("<Q", tensors.crc64_xz(damaged[:-8]))
    with pytest.raises(InputError) as caught:
        decode(damaged, "x." + fmt)
    assert caught.value.details["problem"] == kind
    assert caught.value.details["file"] == "x." + fmt


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="not found"):
        tensors.read_cten(tmp_path / "none.cten")


def test_npz_keeps_shapes_and_is_deterministic(tmp_path):
    import io

    from scripts.utils.formats.arrays import npz_bytes

    arrays = {"scalar": np.array(4), "matrix": np.arange(6.0).reshape(2, 3)[:, ::-1]}
    data = npz_bytes(arrays)
    assert data == npz_bytes(arrays)
    loaded = np.load(io.BytesIO(data))
    assert loaded["scalar"].shape == () and int(loaded["scalar"]) == 4
    assert np.array_equal(loaded["matrix"], arrays["matrix"])
