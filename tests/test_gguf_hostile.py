"""GGUF files that lie: every length, count, type and offset the reader trusts, falsified one
at a time, must give a FileFormatError naming the field, quickly and without a big allocation.
Files are assembled byte by byte here (not by numpylm's writer), so the reader is tested
against the layout itself."""
from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.io import FileFormatError, GGMLType, read_gguf, write_gguf
from numpylm.io.gguf_read import MAX_ARRAY_DEPTH


def string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return string(key) + struct.pack("<I", vtype) + payload


def tensor_info(name: str, ne: list[int], ggml_type: int, offset: int) -> bytes:
    return (string(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
            + struct.pack("<IQ", ggml_type, offset))


def gguf(kvs=(), infos=(), data=b"", version=3, n_kv=None, n_tensors=None, alignment=32,
         pad=True) -> bytes:
    head = (b"GGUF" + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                  len(kvs) if n_kv is None else n_kv)
            + b"".join(kvs) + b"".join(infos))
    if pad:
        head += bytes(-len(head) % alignment)
    return head + data


F32_ONE = struct.pack("<f", 1.0)


def expect_error(tmp_path, content: bytes, field_part: str, message_part: str = "") -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(FileFormatError) as info:
        read_gguf(path)
    assert time.perf_counter() - start < 1.0
    assert info.value.field is not None and field_part in info.value.field, str(info.value)
    assert message_part in str(info.value)
    assert str(path) in str(info.value)


def test_the_builder_makes_a_valid_file(tmp_path):
    """The hand-assembled layout the hostile cases start from is itself readable."""
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf([kv("a", 4, struct.pack("<I", 7))],
                          [tensor_info("t", [1], GGMLType.F32, 0)], F32_ONE))
    f = read_gguf(path)
    assert f.metadata == {"a": 7}
    assert np.frombuffer(f.raw("t"), "<f4").tolist() == [1.0]


@pytest.mark.parametrize("content, field, message", [
    (b"", "header", "too short"),
    (b"GGUF\x03\x00\x00\x00", "header", "too short"),
    (b"GGML" + bytes(20), "magic", "GGUF"),
    (gguf(version=1), "version", "version 1"),
    (gguf(version=0x03000000), "version", "big-endian"),
    (gguf(version=99), "version", "99"),
])
def test_bad_preamble(tmp_path, content, field, message):
    expect_error(tmp_path, content, field, message)


def test_huge_counts_are_refused_before_any_loop(tmp_path):
    expect_error(tmp_path, gguf(n_kv=2**62), "n_kv", "claims")
    expect_error(tmp_path, gguf(n_tensors=2**60), "n_tensors", "claims")
    expect_error(tmp_path, gguf([kv("a", 4, struct.pack("<I", 1))], n_tensors=3), "n_tensors")


def test_lengths_beyond_the_file(tmp_path):
    huge_key = struct.pack("<Q", 2**63) + b"k"
    expect_error(tmp_path, gguf([huge_key + struct.pack("<I", 4) + bytes(4)]), "metadata[0].key")
    long_value = kv("s", 8, struct.pack("<Q", 10**12) + b"abc")
    expect_error(tmp_path, gguf([long_value]), "s", "remain")
    long_array = kv("a", 9, struct.pack("<IQ", 6, 2**40) + bytes(8))
    expect_error(tmp_path, gguf([long_array]), "a (array length)", "claims")
    string_array = kv("a", 9, struct.pack("<IQ", 8, 2**30) + bytes(16))
    expect_error(tmp_path, gguf([string_array]), "a (array length)")


def test_a_value_cut_off_by_the_end_of_the_file(tmp_path):
    content = gguf([kv("x", 11, struct.pack("<q", 5))], pad=False)
    expect_error(tmp_path, content[:-3], "x", "remain")


def test_unknown_value_types(tmp_path):
    expect_error(tmp_path, gguf([kv("x", 13, bytes(8))]), "x", "unknown value type 13")
    inner = kv("y", 9, struct.pack("<IQ", 77, 1) + bytes(8))
    expect_error(tmp_path, gguf([inner]), "y[]", "unknown value type 77")


def test_arrays_nested_too_deep(tmp_path):
    payload = struct.pack("<I", 4) + struct.pack("<Q", 0)  # innermost: empty uint32 array
    for _ in range(MAX_ARRAY_DEPTH + 1):
        payload = struct.pack("<I", 9) + struct.pack("<Q", 1) + payload
    expect_error(tmp_path, gguf([kv("deep", 9, payload)]), "deep", "nest deeper")


def test_bad_utf8_and_duplicates(tmp_path):
    expect_error(tmp_path, gguf([kv(b"\xff\xfe", 4, bytes(4))]), "metadata[0].key", "UTF-8")
    twice = [kv("a", 4, bytes(4)), kv("a", 4, bytes(4))]
    expect_error(tmp_path, gguf(twice), "a", "twice")
    infos = [tensor_info("t", [1], 0, 0), tensor_info("t", [1], 0, 32)]
    expect_error(tmp_path, gguf([], infos, F32_ONE + bytes(28) + F32_ONE), "tensor 't'", "twice")


@pytest.mark.parametrize("payload, vtype", [
    (struct.pack("<I", 48), 4),           # not a power of two
    (struct.pack("<I", 0), 4),
    (struct.pack("<Q", 64), 10),          # a uint64, not the uint32 the format fixes
])
def test_bad_alignment(tmp_path, payload, vtype):
    expect_error(tmp_path, gguf([kv("general.alignment", vtype, payload)]), "general.alignment")


def test_bad_tensor_descriptions(tmp_path):
    five_dims = tensor_info("t", [1, 1, 1, 1, 1], 0, 0)
    expect_error(tmp_path, gguf([], [five_dims], F32_ONE), "tensor 't'.n_dims", "at most 4")
    expect_error(tmp_path, gguf([], [tensor_info("t", [1], 99, 0)], F32_ONE),
                 "tensor 't'.type", "unknown ggml type 99")
    # a Q8_0 row of 33 elements is not a whole number of 32-element blocks
    expect_error(tmp_path, gguf([], [tensor_info("t", [33], GGMLType.Q8_0, 0)], bytes(68)),
                 "tensor 't'.ne", "whole blocks")


def test_dimensions_and_offsets_beyond_the_file(tmp_path):
    huge = tensor_info("t", [2**32, 2**32, 2**30], 0, 0)
    expect_error(tmp_path, gguf([], [huge], F32_ONE), "tensor 't'.offset", "holds only 4")
    far = tensor_info("t", [1], 0, 2**40)
    expect_error(tmp_path, gguf([], [far], F32_ONE), "tensor 't'.offset", "data section")
    truncated = tensor_info("t", [4], 0, 0)  # 16 bytes claimed, 4 present
    expect_error(tmp_path, gguf([], [truncated], F32_ONE), "tensor 't'.offset", "truncated")


def test_misaligned_and_overlapping_tensors(tmp_path):
    misaligned = tensor_info("t", [1], 0, 4)
    expect_error(tmp_path, gguf([], [misaligned], bytes(8)), "tensor 't'.offset", "multiple")
    a = tensor_info("a", [16], 0, 0)   # bytes 0..64
    b = tensor_info("b", [8], 0, 32)   # bytes 32..64: inside a
    expect_error(tmp_path, gguf([], [a, b], bytes(64)), "tensor 'b'.offset", "overlap")


def test_missing_tensor_name(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(gguf([], [tensor_info("t", [1], 0, 0)], F32_ONE))
    with pytest.raises(FileFormatError, match="no tensor named 'u'"):
        read_gguf(path).raw("u")


def _valid_file(tmp_path) -> bytes:
    path = tmp_path / "valid.gguf"
    write_gguf(path, {"general.architecture": "llama", "n": 3, "xs": [1.5, 2.5],
                      "words": ["a", "bc"], "nested": [[1], [2, 3]]},
               {"w": np.arange(64, dtype=np.float32).reshape(2, 32),
                "b": np.ones(3, np.float16)})
    return path.read_bytes()


@settings(max_examples=60)
@given(cut=st.integers(0, 10**6))
def test_every_truncation_is_a_file_format_error(tmp_path_factory, cut):
    """Cutting a valid file anywhere before its last tensor's end never crashes the reader
    with anything but a FileFormatError."""
    tmp_path = tmp_path_factory.mktemp("cut")
    content = _valid_file(tmp_path)
    end = len(content) - 32 + 6  # the last tensor (3 float16) ends 6 bytes into its padding
    cut = cut % end
    path = tmp_path / "cut.gguf"
    path.write_bytes(content[:cut])
    with pytest.raises(FileFormatError):
        read_gguf(path)


@settings(max_examples=80)
@given(position=st.integers(0, 10**6), value=st.integers(0, 255))
def test_a_corrupted_byte_is_read_or_refused_cleanly(tmp_path_factory, position, value):
    """Overwriting any one byte gives either a readable file or a FileFormatError."""
    tmp_path = tmp_path_factory.mktemp("flip")
    content = bytearray(_valid_file(tmp_path))
    content[position % len(content)] = value
    path = tmp_path / "flip.gguf"
    path.write_bytes(bytes(content))
    try:
        f = read_gguf(path)
    except FileFormatError:
        return
    for name in f.tensors:
        assert f.raw(name).size == f.tensors[name].nbytes
