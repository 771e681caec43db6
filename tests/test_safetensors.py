"""Tests for numpylm.io: the safetensors layout byte by byte, every dtype, every kind of corrupt
file, interchange with the `safetensors` library when installed, atomic writes and JSON configs."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from numpylm.io import (
    TensorInfo,
    atomic_write,
    load_json,
    load_safetensors,
    load_safetensors_with_metadata,
    read_safetensors_header,
    save_json,
    save_safetensors,
)

# One array per numpy dtype that safetensors stores natively, with its extreme values.
ALL_DTYPES = {
    "F64": np.array([[0.0, -1.5, 1e300], [np.inf, -np.inf, 5e-324]], dtype=np.float64),
    "F32": np.array([[1.0, -2.5, 3.4e38], [np.inf, 1e-45, 0.1]], dtype=np.float32),
    "F16": np.array([1.0, -65504.0, 6e-8, np.inf], dtype=np.float16),
    "I64": np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max], dtype=np.int64),
    "I32": np.array([np.iinfo(np.int32).min, 7, np.iinfo(np.int32).max], dtype=np.int32),
    "I16": np.array([[np.iinfo(np.int16).min], [np.iinfo(np.int16).max]], dtype=np.int16),
    "I8": np.array([-128, 0, 127], dtype=np.int8),
    "U64": np.array([0, np.iinfo(np.uint64).max], dtype=np.uint64),
    "U32": np.array([0, np.iinfo(np.uint32).max], dtype=np.uint32),
    "U16": np.array([0, 65535], dtype=np.uint16),
    "U8": np.arange(256, dtype=np.uint8).reshape(16, 16),
    "BOOL": np.array([[True, False, True]]),
}


def write_raw(path, header, data: bytes = b"", length: int | None = None) -> None:
    """A hand-crafted file: 8-byte length, header (a dict, or raw bytes), then `data`."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(head) if length is None else length
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + head + data)


# --------------------------------------------------------------------------- layout and round trips


def test_layout_of_a_single_float32_tensor(tmp_path):
    """[1.0, 2.0] as F32: 1.0 = 0x3F800000 and 2.0 = 0x40000000, stored little-endian, so the
    byte buffer is 00 00 80 3F 00 00 00 40. The header is the compact JSON object padded with
    spaces to a multiple of 8, and its length is the first 8 bytes (little-endian)."""
    path = tmp_path / "one.safetensors"
    save_safetensors({"w": np.array([1.0, 2.0], dtype=np.float32)}, path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0
    header = raw[8 : 8 + n]
    body = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    assert header == body + b" " * (n - len(body))
    assert len(body) <= n < len(body) + 8
    assert raw[8 + n :] == bytes([0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x40])


@pytest.mark.parametrize("name", sorted(ALL_DTYPES))
def test_round_trip_every_dtype(tmp_path, name):
    array = ALL_DTYPES[name]
    path = tmp_path / f"{name}.safetensors"
    save_safetensors({"x": array}, path)
    info, _ = read_safetensors_header(path)
    assert info["x"] == TensorInfo(name, array.shape, (0, array.nbytes))
    back = load_safetensors(path)["x"]
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_many_tensors_aligned_and_in_one_file(tmp_path):
    """Mixed widths, a scalar and empty tensors: each tensor starts at a multiple of its element
    size, and all come back equal."""
    tensors = {f"{k.lower()}.t": v for k, v in ALL_DTYPES.items()}
    tensors["scalar"] = np.array(3.25, dtype=np.float32)
    tensors["empty"] = np.zeros((0, 4), dtype=np.float64)
    tensors["odd_bytes"] = np.ones(3, dtype=np.uint8)
    path = tmp_path / "many.safetensors"
    save_safetensors(tensors, path)
    info, _ = read_safetensors_header(path)
    for name, entry in info.items():
        assert entry.data_offsets[0] % tensors[name].dtype.itemsize == 0, name
    back = load_safetensors(path)
    assert set(back) == set(tensors)
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)


@settings(max_examples=20)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda name: name != "__metadata__"),
        hnp.arrays(
            dtype=st.sampled_from([a.dtype for a in ALL_DTYPES.values()]),
            shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        ),
        max_size=5,
    )
)
def test_round_trip_property(tmp_path_factory, tensors):
    """Any names (unicode included), dtypes and shapes (0-d and empty too) come back bitwise."""
    path = tmp_path_factory.mktemp("prop") / "p.safetensors"
    save_safetensors(tensors, path)
    back = load_safetensors(path)
    assert set(back) == set(tensors)
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        assert back[name].tobytes() == array.tobytes()  # bitwise, so NaNs compare too


def test_loaded_arrays_are_writable_and_own_their_memory(tmp_path):
    path = tmp_path / "w.safetensors"
    save_safetensors({"a": np.ones(4, np.float32), "b": np.zeros(2, np.int64)}, path)
    back = load_safetensors(path)
    for array in back.values():
        assert array.flags.writeable and array.flags.owndata and array.flags.c_contiguous
    back["a"][0] = 5.0
    assert load_safetensors(path)["a"][0] == 1.0


def test_non_contiguous_and_big_endian_inputs_are_stored_as_c_order_little_endian(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T  # Fortran-ordered view
    b = np.array([1, 256], dtype=">i4")
    path = tmp_path / "order.safetensors"
    save_safetensors({"a": a, "b": b}, path)
    back = load_safetensors(path)
    np.testing.assert_array_equal(back["a"], a)
    np.testing.assert_array_equal(back["b"], [1, 256])
    raw = path.read_bytes()
    # I32 [1, 256] little-endian: 01 00 00 00 00 01 00 00; it is the last tensor (both are
    # 4 bytes wide, so order is by name: "a" then "b").
    assert raw[-8:] == bytes([1, 0, 0, 0, 0, 1, 0, 0])


def test_metadata_round_trip(tmp_path):
    path = tmp_path / "meta.safetensors"
    meta = {"format": "np", "note": "ünïcode ✓", "empty": ""}
    save_safetensors({"a": np.zeros(1)}, path, metadata=meta)
    tensors, back = load_safetensors_with_metadata(path)
    assert back == meta and list(tensors) == ["a"]
    save_safetensors({"a": np.zeros(1)}, tmp_path / "plain.safetensors")
    assert load_safetensors_with_metadata(tmp_path / "plain.safetensors")[1] == {}


def test_no_tensors_at_all(tmp_path):
    path = tmp_path / "empty.safetensors"
    save_safetensors({}, path, metadata={"k": "v"})
    assert load_safetensors_with_metadata(path) == ({}, {"k": "v"})


# --------------------------------------------------------------------------- BF16


def test_bf16_is_read_into_float32(tmp_path):
    """bfloat16 bits are the top half of a float32: 0x3F80 -> 0x3F800000 = 1.0,
    0xC000 -> -2.0, 0x3EAA -> 0x3EAA0000 = 0.33203125, 0x7F80 -> +inf, 0x0001 -> 2^-133."""
    words = [0x3F80, 0xC000, 0x3EAA, 0x7F80, 0x0001]
    data = struct.pack("<5H", *words)
    path = tmp_path / "bf16.safetensors"
    write_raw(path, {"x": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}}, data)
    x = load_safetensors(path)["x"]
    assert x.dtype == np.float32
    expected = np.array([1.0, -2.0, 0.33203125, np.inf, 2.0**-133], np.float32)
    np.testing.assert_array_equal(x, expected)


def test_bf16_write_rounds_to_nearest_even(tmp_path):
    """1 + 2^-8 (0x3F808000) lies exactly between bf16 0x3F80 and 0x3F81: ties go to the even
    0x3F80. 1 + 3*2^-8 (0x3F818000) lies between 0x3F81 and 0x3F82: even is 0x3F82.
    1 + 2^-8 + 2^-20 is just above halfway: 0x3F81. NaN stays a quiet NaN, 0x7FC0; the largest
    float32 rounds up past the largest bfloat16 to +inf, 0x7F80."""
    x = np.array(
        [1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, np.nan, np.finfo(np.float32).max, -2.0],
        dtype=np.float32,
    )
    path = tmp_path / "bf16w.safetensors"
    save_safetensors({"x": x, "keep": x[:2]}, path, dtypes={"x": "BF16"})
    info, _ = read_safetensors_header(path)
    assert info["x"].dtype == "BF16" and info["keep"].dtype == "F32"
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    start = 8 + n + info["x"].data_offsets[0]
    words = struct.unpack("<7H", raw[start : start + 14])
    assert words == (0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x7FC0, 0x7F80, 0xC000)


def test_float_conversions_on_save_and_refusals(tmp_path):
    x = np.array([1.0, 0.5], dtype=np.float64)
    path = tmp_path / "f16.safetensors"
    save_safetensors({"x": x}, path, dtypes={"x": "F16"})
    assert load_safetensors(path)["x"].dtype == np.float16
    with pytest.raises(ValueError, match="only floating-point"):
        save_safetensors({"i": np.arange(3)}, path, dtypes={"i": "F32"})
    with pytest.raises(ValueError, match="unknown safetensors dtype 'F8'"):
        save_safetensors({"x": x}, path, dtypes={"x": "F8"})
    with pytest.raises(ValueError, match="not being saved"):
        save_safetensors({"x": x}, path, dtypes={"y": "BF16"})


# --------------------------------------------------------------------------- bad input on save


def test_save_rejects_bad_input(tmp_path):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(TypeError, match="'c'.*complex128"):
        save_safetensors({"c": np.zeros(2, np.complex128)}, path)
    with pytest.raises(TypeError, match="'l' is a list"):
        save_safetensors({"l": [1.0, 2.0]}, path)
    with pytest.raises(TypeError, match="metadata must map strings to strings"):
        save_safetensors({"a": np.zeros(1)}, path, metadata={"n": 3})
    with pytest.raises(ValueError, match="reserved"):
        save_safetensors({"__metadata__": np.zeros(1)}, path)
    with pytest.raises(TypeError, match="names must be strings"):
        save_safetensors({3: np.zeros(1)}, path)
    assert not path.exists() and os.listdir(tmp_path) == []


def test_save_hints_at_data_for_tensor_like_objects(tmp_path):
    class Holder:
        data = np.zeros(2)

    with pytest.raises(TypeError, match=r"pass its \.data array"):
        save_safetensors({"p": Holder()}, tmp_path / "p.safetensors")


# --------------------------------------------------------------------------- malformed files


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize(
    "header, data, length, message",
    [
        (GOOD, b"\0" * 8, 10_000, "header length 10000 reaches beyond the end of the file"),
        (GOOD, b"\0" * 5, None, "reach beyond the 5-byte data buffer"),  # truncated data
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}},
            b"\0" * 8,
            None,
            "reach beyond",  # offsets out of range
        ),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            b"\0" * 8,
            None,
            "overlap",
        ),
        (
            {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
            b"\0" * 8,
            None,
            "gap of 4 bytes at the start",
        ),
        (
            {
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
            },
            b"\0" * 12,
            None,
            "gap of 4 bytes after tensor 'a'",
        ),
        (GOOD, b"\0" * 12, None, "4 bytes after the last tensor"),
        (b'{"a": {"dtype": "F32",', b"", None, "not valid UTF-8 JSON"),
        (b'\xff\xfe{}', b"", None, "not valid UTF-8 JSON"),
        (b"[1, 2]", b"", None, "JSON list, not an object"),
        (
            b'{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
            b'"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}',
            b"",
            None,
            "appears twice",
        ),
        (
            {"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}},
            b"\0\0",
            None,
            "unknown dtype 'F8_E4M3'",
        ),
        (
            {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
            b"\0" * 8,
            None,
            r"needs 12 bytes but data_offsets \[0, 8\] span 8",
        ),
        (
            {"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 0]}},
            b"",
            None,
            "non-negative ints",
        ),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"", None, "begin <= end"),
        ({"a": {"dtype": "F32", "shape": [1]}}, b"", None, r"missing \['data_offsets'\]"),
        ({"a": [1, 2]}, b"", None, "not a JSON object"),
        ({"__metadata__": {"n": 1}}, b"", None, "must map strings to strings"),
        ({"__metadata__": ["x"]}, b"", None, "must map strings to strings"),
        (
            {"b": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}},
            b"\x01\x02",
            None,
            "bytes other than 0 and 1",
        ),
    ],
)
def test_malformed_files_give_clear_errors(tmp_path, header, data, length, message):
    path = tmp_path / "bad.safetensors"
    write_raw(path, header, data, length)
    with pytest.raises(ValueError, match=message) as info:
        load_safetensors(path)
    assert str(path) in str(info.value)  # every message names the file


def test_file_too_short_for_length_field(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x08\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        load_safetensors(path)


def test_truncating_a_real_file_is_detected(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_safetensors({"a": np.arange(10, dtype=np.float64)}, path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="reach beyond the 77-byte data buffer"):
        load_safetensors(path)


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "model.safetensors"
    save_safetensors({"a": np.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half a file")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary left behind


def test_atomic_write_replaces_and_uses_ordinary_permissions(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_into_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_write(tmp_path / "nope" / "f.bin") as f:
            f.write(b"x")


# --------------------------------------------------------------------------- interchange


def test_files_interchange_with_the_safetensors_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    tensors = {f"t.{k}": v for k, v in ALL_DTYPES.items()}
    tensors["empty"] = np.zeros((2, 0), dtype=np.float32)
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    save_safetensors(tensors, ours, metadata={"who": "numpylm"})
    st.save_file(tensors, str(theirs), metadata={"who": "safetensors"})
    for loaded, meta in [
        (st.load_file(str(ours)), None),
        (load_safetensors_with_metadata(theirs)[0], load_safetensors_with_metadata(theirs)[1]),
    ]:
        assert set(loaded) == set(tensors)
        for name, array in tensors.items():
            assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
            np.testing.assert_array_equal(loaded[name], array)
        if meta is not None:
            assert meta == {"who": "safetensors"}
    from safetensors import safe_open

    with safe_open(str(ours), framework="numpy") as f:
        assert f.metadata() == {"who": "numpylm"}


def test_scalars_interchange_with_the_safetensors_library(tmp_path):
    """A 0-d array is stored with shape []. The library writes it the same way, and its own
    numpy loader hands it back with shape (1,), so only the header and values are compared."""
    st = pytest.importorskip("safetensors.numpy")
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    save_safetensors({"s": np.array(2.5)}, ours)
    st.save_file({"s": np.array(2.5)}, str(theirs))
    assert ours.read_bytes() == theirs.read_bytes()
    assert load_safetensors(theirs)["s"].shape == ()
    assert st.load_file(str(ours))["s"].tolist() in (2.5, [2.5])


def test_bf16_interchanges_with_torch_files(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)).astype(np.float32) * 100
    theirs = tmp_path / "theirs.safetensors"
    st_torch.save_file({"x": torch.from_numpy(x).to(torch.bfloat16)}, str(theirs))
    expected = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(load_safetensors(theirs)["x"], expected)

    ours = tmp_path / "ours.safetensors"
    save_safetensors({"x": x}, ours, dtypes={"x": "BF16"})
    back = st_torch.load_file(str(ours))["x"]
    assert back.dtype == torch.bfloat16
    np.testing.assert_array_equal(back.float().numpy(), expected)


# --------------------------------------------------------------------------- JSON configs


def test_json_round_trip_and_exact_text(tmp_path):
    path = tmp_path / "config.json"
    config = {"n_layer": 2, "name": "tiny ✓", "betas": [0.9, 0.95], "a": {"z": 1, "b": None}}
    save_json(config, path)
    assert load_json(path) == config
    expected = (
        '{\n  "a": {\n    "b": null,\n    "z": 1\n  },\n  "betas": [\n    0.9,\n    0.95\n  ],\n'
        '  "n_layer": 2,\n  "name": "tiny ✓"\n}\n'
    )
    assert path.read_bytes() == expected.encode("utf-8")


def test_json_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": 1,\n "b": }')
    with pytest.raises(ValueError, match=r"bad\.json: bad JSON at line 2, column 7"):
        load_json(path)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match="not valid UTF-8"):
        load_json(path)
    out = tmp_path / "out.json"
    with pytest.raises(ValueError, match="out.json"):
        save_json({"loss": float("nan")}, out)
    with pytest.raises(TypeError, match="out.json"):
        save_json({"x": object()}, out)
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["bad.json"]
