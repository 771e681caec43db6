"""Block formats and quantizers: each format on blocks assembled by hand from its definition,
the readable and vectorised dequantizers proven equal on random bytes, agreement with the
`gguf` package when installed, and quantize -> dequantize errors within each format's bound."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from numpylm.io import GGMLType, read_gguf, write_gguf
from numpylm.quant import (
    FORMATS,
    dequantize,
    dequantize_int8,
    dequantize_readable,
    load_tensor,
    quantize_absmax_int8,
    quantize_blocks,
    quantize_zero_point_int8,
)
from numpylm.quant.quantize import round_half_away


def half(x: float) -> bytes:
    return struct.pack("<e", x)


def both(raw: bytes, ggml_type: GGMLType, n: int) -> np.ndarray:
    """Decode with both twins, check they agree, return the values."""
    raw = np.frombuffer(raw, np.uint8)
    fast, slow = dequantize(raw, ggml_type, (n,)), dequantize_readable(raw, ggml_type, (n,))
    np.testing.assert_array_equal(fast, slow)
    return fast


# --------------------------------------------------------------------------- hand-made blocks


def test_float_formats_by_hand():
    """1.0 is 0x3F800000 in float32, 0x3C00 in float16, 0x3F80 in bfloat16; -6.0 is 0xC0C0 in
    bfloat16 (sign 1, exponent 129, mantissa .5)."""
    assert both(b"\0\0\x80\x3f", GGMLType.F32, 1).tolist() == [1.0]
    assert both(b"\0\x3c\0\xbc", GGMLType.F16, 2).tolist() == [1.0, -1.0]
    assert both(b"\x80\x3f\xc0\xc0", GGMLType.BF16, 2).tolist() == [1.0, -6.0]


def test_q8_0_by_hand():
    """d = 0.5 and codes -16..15: x_i = 0.5 * (i - 16)."""
    block = half(0.5) + bytes((i - 16) % 256 for i in range(32))
    assert both(block, GGMLType.Q8_0, 32).tolist() == [0.5 * (i - 16) for i in range(32)]


def test_q4_0_by_hand():
    """d = 2, byte j = (j) | (15 - j) << 4: element j has code j, element j + 16 code 15 - j;
    x = 2 * (code - 8)."""
    block = half(2.0) + bytes(j | (15 - j) << 4 for j in range(16))
    expected = [2.0 * (j - 8) for j in range(16)] + [2.0 * (15 - j - 8) for j in range(16)]
    assert both(block, GGMLType.Q4_0, 32).tolist() == expected


def test_q4_1_by_hand():
    """d = 0.25, m = -1, byte j = 15 | (j % 4) << 4: x_j = 0.25 * 15 - 1 = 2.75 for j < 16,
    x_{j+16} = 0.25 * (j % 4) - 1."""
    block = half(0.25) + half(-1.0) + bytes(15 | (j % 4) << 4 for j in range(16))
    expected = [2.75] * 16 + [0.25 * (j % 4) - 1 for j in range(16)]
    assert both(block, GGMLType.Q4_1, 32).tolist() == expected


def pack_q4_k_scales(sc: list[int], mins: list[int]) -> bytes:
    """The 12 scale bytes of Q4_K, written from the layout: bytes 0..3 hold sc_0..3 in their low
    6 bits and the top 2 bits of sc_4..7; bytes 4..7 the same for the minimums; bytes 8..11 the
    low 4 bits of sc_4..7 (low nibble) and of m_4..7 (high nibble)."""
    out = [0] * 12
    for k in range(4):
        out[k] = sc[k] | (sc[k + 4] >> 4) << 6
        out[k + 4] = mins[k] | (mins[k + 4] >> 4) << 6
        out[k + 8] = (sc[k + 4] & 15) | (mins[k + 4] & 15) << 4
    return bytes(out)


def test_q4_k_by_hand():
    """d = 1, dmin = 0.5, sub-block scales 1..8 but the last three 6-bit values large (40, 50,
    63, to use the high bits), minimums 0, 1, 2, 3, 60, 61, 62, 63; code of element i of
    sub-block j is (i + j) % 16. x = d * sc_j * q - dmin * m_j."""
    sc = [1, 2, 3, 4, 5, 40, 50, 63]
    mins = [0, 1, 2, 3, 60, 61, 62, 63]
    codes = [[(i + j) % 16 for i in range(32)] for j in range(8)]
    qs = bytes(codes[2 * c][i] | codes[2 * c + 1][i] << 4 for c in range(4) for i in range(32))
    block = half(1.0) + half(0.5) + pack_q4_k_scales(sc, mins) + qs
    expected = [sc[j] * codes[j][i] - 0.5 * mins[j] for j in range(8) for i in range(32)]
    assert both(block, GGMLType.Q4_K, 256).tolist() == expected


def test_q6_k_by_hand():
    """d = 0.5, the 16 scales -8..7, code of element k = k % 64; x_k = 0.5 * scale[k // 16] *
    (q_k - 32). The codes are packed by the layout: in half h, element 128h + 32g + l takes its
    low 4 bits from ql[64h + l + 32 (g odd)] (low nibble for g < 2, high for g >= 2) and its high
    2 bits from bits 2g, 2g + 1 of qh[32h + l]."""
    q = [k % 64 for k in range(256)]
    ql, qh = [0] * 128, [0] * 64
    for h in range(2):
        for g in range(4):
            for l in range(32):
                code = q[128 * h + 32 * g + l]
                at = 64 * h + l + (32 if g % 2 else 0)
                ql[at] |= (code & 15) << (4 if g >= 2 else 0)
                qh[32 * h + l] |= (code >> 4) << (2 * g)
    scales = list(range(-8, 8))
    block = bytes(ql) + bytes(qh) + struct.pack("<16b", *scales) + half(0.5)
    expected = [0.5 * scales[k // 16] * (q[k] - 32) for k in range(256)]
    assert both(block, GGMLType.Q6_K, 256).tolist() == expected


# ------------------------------------------------------------------ twins and the gguf package


@settings(max_examples=30)
@given(ggml_type=st.sampled_from(list(FORMATS)), seed=st.integers(0, 2**32 - 1),
       rows=st.integers(1, 3))
def test_readable_and_vectorised_twins_agree_on_any_bytes(ggml_type, seed, rows):
    """Random bytes, so every bit pattern of codes, scales and (float) NaN/inf is reached."""
    per_row = 2 if ggml_type.block_size == 1 else 1
    n_blocks = rows * per_row
    raw = np.random.default_rng(seed).integers(0, 256, n_blocks * ggml_type.type_size, np.uint8)
    shape = (rows, per_row * ggml_type.block_size)
    with np.errstate(all="ignore"):
        fast = dequantize(raw, ggml_type, shape)
        slow = dequantize_readable(raw, ggml_type, shape)
    np.testing.assert_array_equal(fast, slow)  # NaNs in the same places compare equal


@pytest.mark.parametrize("ggml_type", list(FORMATS), ids=lambda t: t.name)
def test_the_gguf_package_decodes_the_same_numbers(ggml_type):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(int(ggml_type))
    raw = rng.integers(0, 256, (4, 8 * ggml_type.type_size), np.uint8)
    shape = (4, 8 * ggml_type.block_size)
    with np.errstate(all="ignore"):
        theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(ggml_type)))
        np.testing.assert_array_equal(dequantize(raw, ggml_type, shape), theirs)


def test_other_types_are_refused_by_name():
    with pytest.raises(ValueError, match="Q5_K is not supported"):
        dequantize(np.zeros(176, np.uint8), GGMLType.Q5_K, (256,))
    with pytest.raises(ValueError, match="unknown ggml type 99"):
        dequantize(np.zeros(4, np.uint8), 99, (1,))
    with pytest.raises(ValueError, match="takes 34 bytes"):
        dequantize(np.zeros(35, np.uint8), GGMLType.Q8_0, (32,))
    with pytest.raises(ValueError, match="whole blocks"):
        dequantize(np.zeros(34, np.uint8), GGMLType.Q8_0, (2, 16))
    with pytest.raises(ValueError, match="cannot quantize to Q4_K"):
        quantize_blocks(np.zeros(256), GGMLType.Q4_K)
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_blocks(np.zeros(40), GGMLType.Q8_0)
    with pytest.raises(ValueError, match="non-finite"):
        quantize_blocks(np.full(32, np.inf), GGMLType.Q4_0)


# --------------------------------------------------------------------------- quantizers


def test_round_half_away_from_zero():
    v = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, 2.4], np.float32)
    assert round_half_away(v).tolist() == [1, 2, 3, -1, -3, 0, 2]


def test_q8_0_quantizer_by_hand():
    """x = i - 16: max |x| = 16, d = 16 / 127, codes round(x * 127 / 16): -16 -> -127, 0 -> 0,
    1 -> round(7.9375) = 8, 2 -> round(15.875) = 16, 15 -> round(119.0625) = 119."""
    raw = quantize_blocks(np.arange(32) - 16.0, GGMLType.Q8_0).data
    assert struct.unpack("<e", raw[:2].tobytes())[0] == np.float16(16 / 127)
    codes = raw[2:].view(np.int8)
    assert [codes[i] for i in (0, 16, 17, 18, 31)] == [-127, 0, 8, 16, 119]


def test_q4_0_quantizer_by_hand():
    """x_0 = -4 has the largest magnitude: d = -4 / -8 = 0.5, code = floor(x / 0.5 + 8.5),
    capped at 15: -4 -> 0, 0 -> 8, 1 -> 10, 1.3 -> 11, 3.9 -> 16 -> 15."""
    x = np.zeros(32, np.float32)
    x[:5] = [-4, 0, 1, 1.3, 3.9]
    raw = quantize_blocks(x, GGMLType.Q4_0).data
    assert struct.unpack("<e", raw[:2].tobytes())[0] == 0.5
    assert [b & 15 for b in raw[2:7]] == [0, 8, 10, 11, 15]


def test_q4_1_quantizer_by_hand():
    """min -1, max 2: d = 3 / 15 = 0.2, m = -1, code = floor((x + 1) / 0.2 + 0.5): -1 -> 0,
    2 -> 15, 0.45 -> floor(7.75) = 7, 0 -> 5."""
    x = np.zeros(32, np.float32)
    x[:3] = [-1, 2, 0.45]
    raw = quantize_blocks(x, GGMLType.Q4_1).data
    assert struct.unpack("<ee", raw[:4].tobytes()) == (np.float16(0.2), -1.0)
    assert [b & 15 for b in raw[4:8]] == [0, 15, 7, 5]


def test_bf16_rounds_to_nearest_even():
    """1 + 2^-8 lies halfway between bfloat16 1.0 and 1 + 2^-7: ties go to the even 1.0;
    1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6: it goes up."""
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, np.nan], np.float32)
    back = dequantize(quantize_blocks(x, GGMLType.BF16).data, GGMLType.BF16, (3,))
    assert back[:2].tolist() == [1.0, 1 + 2**-6] and np.isnan(back[2])


def test_the_gguf_package_quantizes_to_the_same_bytes():
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((16, 128)) * rng.uniform(1e-3, 10, (16, 1))).astype(np.float32)
    x[0, :32] = 0.0
    x[1, :32] = np.arange(32) - 16
    for t in (GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.BF16):
        theirs = gguf.quants.quantize(x, gguf.GGMLQuantizationType(int(t)))
        np.testing.assert_array_equal(quantize_blocks(x, t).data, theirs.view(np.uint8).reshape(-1))


weights = hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([32, 64, 96])),
                     elements=st.floats(-1e4, 1e4, width=32))


def block_view(x):
    return x.reshape(-1, 32).astype(np.float64)


@given(x=weights)
def test_q8_0_error_bound(x):
    """|x - d16 q| <= d / 2 + 127 |d - d16| with d = max|x| / 127 and d16 its float16."""
    back = dequantize(quantize_blocks(x, GGMLType.Q8_0).data, GGMLType.Q8_0, x.shape)
    blocks = block_view(x)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127
    bound = d / 2 + 127 * np.abs(d - d.astype(np.float16)) + 1e-6 * d + 1e-30
    assert np.all(np.abs(block_view(back) - blocks) <= bound)


@given(x=weights)
def test_q4_0_error_bound(x):
    """|d| = max|x| / 8. Every code is within half a step except the far end opposite the
    extreme, which code 15 can only reach to within one step: |error| <= |d| + 8 |d - d16|."""
    back = dequantize(quantize_blocks(x, GGMLType.Q4_0).data, GGMLType.Q4_0, x.shape)
    blocks = block_view(x)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 8
    bound = d + 8 * np.abs(d - d.astype(np.float16)) + 1e-6 * d + 1e-30
    assert np.all(np.abs(block_view(back) - blocks) <= bound)


@given(x=weights)
def test_q4_1_error_bound(x):
    """d = (max - min) / 15: half a step, plus the float16 rounding of d (times 15 codes) and
    of m = min."""
    back = dequantize(quantize_blocks(x, GGMLType.Q4_1).data, GGMLType.Q4_1, x.shape)
    blocks = block_view(x)
    low, high = blocks.min(axis=1, keepdims=True), blocks.max(axis=1, keepdims=True)
    d = (high - low) / 15
    bound = (d / 2 + 15 * np.abs(d - d.astype(np.float16)) + np.abs(low - low.astype(np.float16))
             + 1e-6 * (d + np.abs(low)) + 1e-30)
    assert np.all(np.abs(block_view(back) - blocks) <= bound)


@given(x=weights, axis=st.sampled_from([0, -1]))
def test_int8_quantizers_error_bounds(x, axis):
    """Both int8 schemes: at most half a step per weight, step = scale of the weight's channel.
    absmax: scale = max|w| / 127 and zero stays zero; zero point: scale = (max - min) / 255
    over a range that includes 0."""
    for quantize in (quantize_absmax_int8, quantize_zero_point_int8):
        q = quantize(x, axis=axis)
        assert q.codes.dtype == np.int8 and q.codes.shape == x.shape
        step = np.expand_dims(q.scale, axis).astype(np.float64)
        error = np.abs(dequantize_int8(q).astype(np.float64) - x)
        assert np.all(error <= step / 2 * (1 + 1e-5) + 1e-30)
    absmax = quantize_absmax_int8(x, axis=axis)
    assert np.all(dequantize_int8(absmax)[x == 0] == 0)
    expected_scale = np.abs(x).max(axis=axis) / np.float32(127)
    np.testing.assert_allclose(absmax.scale, expected_scale, rtol=1e-6)


def test_zero_point_int8_by_hand():
    """w = [0, 1, 2, 3]: scale = 3 / 255, zero point -128 (the code of 0.0), codes
    round(w * 85) - 128 = [-128, -43, 42, 127]."""
    q = quantize_zero_point_int8(np.array([[0.0, 1.0, 2.0, 3.0]]))
    assert q.codes.tolist() == [[-128, -43, 42, 127]] and q.zero_point.tolist() == [-128]
    np.testing.assert_allclose(q.scale, [3 / 255], rtol=1e-6)


@pytest.mark.parametrize("name", ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"])
def test_quantized_tensors_round_trip_through_a_gguf_file(tmp_path, name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 64)).astype(np.float32)
    packed = quantize_blocks(x, name)
    path = tmp_path / "q.gguf"
    write_gguf(path, {"general.architecture": "test"}, {"x": packed})
    f = read_gguf(path)
    assert f.tensors["x"].ggml_type == GGMLType[name.upper()] and f.tensors["x"].shape == x.shape
    np.testing.assert_array_equal(load_tensor(f, "x"),
                                  dequantize(packed.data, packed.ggml_type, x.shape))
    if name == "f32":
        np.testing.assert_array_equal(load_tensor(f, "x"), x)
