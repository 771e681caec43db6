"""Rotary position embeddings: the op against finite differences and its composed twin, the
two pairing conventions, the weight permutation between them, and the cos/sin tables
(Llama 3 scaling included) against hand arithmetic and, when installed, HF transformers."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpylm.functional as F
from numpylm import Tensor, gradcheck
from numpylm.autograd import composed
from numpylm.autograd.ops_rope import (apply_rope, interleaved_to_rotate_half, rope_inv_freq,
                                       rope_tables, rotate_half_to_interleaved)
from op_coverage import covers_op


@st.composite
def rope_inputs(draw):
    B, H, T = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    D = 2 * draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    positions = rng.integers(0, 50, size=(B, T))  # per-row positions, as with left padding
    cos, sin = rope_tables(positions, D, rope_theta=draw(st.sampled_from([10.0, 1e4])),
                           dtype=np.float64)
    x = rng.standard_normal((B, H, T, D))
    return x, cos[:, None], sin[:, None], draw(st.booleans())


@covers_op("rope")
@settings(max_examples=20)
@given(rope_inputs())
def test_rope_gradcheck(inputs):
    x, cos, sin, interleaved = inputs
    gradcheck(lambda t: F.rope(t, cos, sin, interleaved=interleaved), x)


@settings(max_examples=20)
@given(rope_inputs())
def test_fused_rope_equals_composed(inputs):
    x, cos, sin, interleaved = inputs
    results = []
    for rotate in (F.rope, composed.rope):
        t = Tensor(x, requires_grad=True)
        out = rotate(t, cos, sin, interleaved=interleaved)
        out.backward(np.random.default_rng(0).standard_normal(out.shape))
        results.append((out.data, t.grad))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(apply_rope(x, cos, sin, interleaved), results[0][0])


def test_the_two_pairings_by_hand():
    """x = [1, 2, 3, 4] (D = 4), pair 0 turned by 90 degrees (cos 0, sin 1), pair 1 not at all.

    Rotate half pairs (x0, x2) = (1, 3) -> (1*0 - 3*1, 3*0 + 1*1) = (-3, 1): [-3, 2, 1, 4].
    Interleaved pairs (x0, x1) = (1, 2) -> (1*0 - 2*1, 2*0 + 1*1) = (-2, 1): [-2, 1, 3, 4].
    """
    x = np.array([1.0, 2.0, 3.0, 4.0])
    cos, sin = np.array([0.0, 1.0]), np.array([1.0, 0.0])
    np.testing.assert_array_equal(F.rope(x, cos, sin).data, [-3.0, 2.0, 1.0, 4.0])
    np.testing.assert_array_equal(F.rope(x, cos, sin, interleaved=True).data, [-2.0, 1.0, 3.0, 4.0])
    # The gradient turns back by -90 degrees: g = [1, 0, 0, 0] -> pair (1, 0) -> (0, -1).
    t = Tensor(x, requires_grad=True)
    F.rope(t, cos, sin).backward(np.array([1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(t.grad, [0.0, 0.0, -1.0, 0.0])


def test_tables_by_hand():
    """D = 4, theta = 100: theta_0 = 100^0 = 1, theta_1 = 100^(-2/4) = 0.1.
    At position 3 the angles are 3 and 0.3."""
    cos, sin = rope_tables(np.array([0, 3]), 4, rope_theta=100.0, dtype=np.float64)
    assert cos.shape == (2, 2)
    np.testing.assert_allclose(cos[0], [1.0, 1.0])
    np.testing.assert_allclose(sin[0], [0.0, 0.0])
    np.testing.assert_allclose(cos[1], [math.cos(3.0), math.cos(0.3)], rtol=1e-6)
    np.testing.assert_allclose(sin[1], [math.sin(3.0), math.sin(0.3)], rtol=1e-6)
    assert rope_tables(np.arange(3), 8)[0].dtype == np.float32


def test_scores_depend_only_on_the_offset():
    """(R(m) q) . (R(n) k) = q . R(n - m) k: shifting every position by 40 changes no score."""
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    for interleaved in (False, True):
        scores = []
        for start in (0, 40):
            cos, sin = rope_tables(np.arange(start, start + 5), 8, dtype=np.float64)
            qr, kr = (apply_rope(a, cos, sin, interleaved) for a in (q, k))
            scores.append(qr @ kr.T)
        np.testing.assert_allclose(scores[0], scores[1], rtol=1e-5, atol=1e-5)
        assert not np.allclose(scores[0], q @ k.T)  # and the rotation did change them


def test_per_row_positions_rotate_each_row_by_its_own():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 6))  # (B, H, T, D)
    positions = np.array([[0, 0, 1, 2], [5, 6, 7, 8]])  # row 0 left-padded by one
    cos, sin = rope_tables(positions, 6)
    batched = F.rope(x, cos[:, None], sin[:, None]).data
    for b in range(2):
        c, s = rope_tables(positions[b], 6)
        np.testing.assert_allclose(batched[b], apply_rope(x[b], c, s), rtol=1e-12)


def test_weight_permutation_by_hand():
    """The module docstring's table for D = 8: rotate-half row i comes from interleaved row 2i
    (i < 4) and row i + 4 from interleaved row 2i + 1. Two heads permute independently."""
    rows = np.arange(16.0)
    expected = [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15]
    np.testing.assert_array_equal(interleaved_to_rotate_half(rows, 2), expected)
    np.testing.assert_array_equal(rotate_half_to_interleaved(np.array(expected, float), 2), rows)
    w = np.arange(32.0).reshape(16, 2)
    np.testing.assert_array_equal(interleaved_to_rotate_half(w.T, 2, axis=1),
                                  interleaved_to_rotate_half(w, 2).T)
    with pytest.raises(ValueError, match="n_heads = 3"):
        interleaved_to_rotate_half(rows, 3)


def _attention_scores(x, wq, bq, wk, bk, H, Hkv, interleaved):
    """q/k projections (HF layout, (out, in)), heads, RoPE, scores (B, H, T, T) and outputs."""
    B, T, C = x.shape
    D = wq.shape[0] // H
    cos, sin = rope_tables(np.arange(T), D, rope_theta=500.0, dtype=np.float64)
    q = (x @ wq.T + bq).reshape(B, T, H, D).transpose(0, 2, 1, 3)
    k = (x @ wk.T + bk).reshape(B, T, Hkv, D).transpose(0, 2, 1, 3)
    q, k = (F.rope(a, cos, sin, interleaved=interleaved).data for a in (q, k))
    k = np.repeat(k, H // Hkv, axis=1)
    return q @ np.swapaxes(k, -1, -2) / math.sqrt(D)


def test_rotate_half_model_equals_interleaved_model_with_permuted_weights():
    """The same attention scores from an HF (rotate-half) checkpoint and its GGUF-style
    (interleaved) conversion, and the conversion round-trips; the unconverted weights
    under the other convention give different scores (what a porting bug looks like)."""
    rng = np.random.default_rng(3)
    B, T, C, H, Hkv, D = 2, 5, 12, 4, 2, 6
    x = rng.standard_normal((B, T, C))
    wq, wk = rng.standard_normal((H * D, C)), rng.standard_normal((Hkv * D, C))
    bq, bk = rng.standard_normal(H * D), rng.standard_normal(Hkv * D)
    hf = _attention_scores(x, wq, bq, wk, bk, H, Hkv, interleaved=False)
    wq_i, bq_i = rotate_half_to_interleaved(wq, H), rotate_half_to_interleaved(bq, H)
    wk_i, bk_i = rotate_half_to_interleaved(wk, Hkv), rotate_half_to_interleaved(bk, Hkv)
    gguf = _attention_scores(x, wq_i, bq_i, wk_i, bk_i, H, Hkv, interleaved=True)
    np.testing.assert_allclose(gguf, hf, rtol=1e-12, atol=1e-12)
    wrong = _attention_scores(x, wq, bq, wk, bk, H, Hkv, interleaved=True)
    assert np.abs(wrong - hf).max() > 0.1
    np.testing.assert_array_equal(interleaved_to_rotate_half(wq_i, H), wq)
    np.testing.assert_array_equal(interleaved_to_rotate_half(bk_i, Hkv), bk)


def test_llama3_scaling_by_hand():
    """D = 6, theta = 1e6: theta_i = 1, 0.01, 1e-4, wavelengths 2 pi / theta_i = 6.28, 628, 62832.
    With original context 1000, low_freq_factor 1, high_freq_factor 4, factor 8: wavelengths
    below 1000 / 4 = 250 stay (1), above 1000 / 1 are divided by 8 (1.25e-5), and 628 is blended
    with s = (1000 / 628.3 - 1) / (4 - 1): (1 - s) * 0.01 / 8 + s * 0.01."""
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 1000}
    s = (1000 / (2 * math.pi / 0.01) - 1) / 3
    expected = [1.0, (1 - s) * 0.01 / 8 + s * 0.01, 1e-4 / 8]
    np.testing.assert_allclose(rope_inv_freq(6, 1e6, scaling), expected, rtol=1e-5)
    old_style = dict(scaling, type="llama3")
    del old_style["rope_type"]
    np.testing.assert_array_equal(rope_inv_freq(6, 1e6, old_style), rope_inv_freq(6, 1e6, scaling))
    np.testing.assert_array_equal(rope_inv_freq(6, 1e6, {"rope_type": "default"}),
                                  rope_inv_freq(6, 1e6))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="rope_scaling.rope_type 'yarn'"):
        rope_tables(np.arange(3), 8, rope_scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match="rope_scaling.low_freq_factor"):
        rope_tables(np.arange(3), 8, rope_scaling={"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(ValueError, match="head_dim"):
        rope_tables(np.arange(3), 7)
    with pytest.raises(TypeError, match="integers"):
        rope_tables(np.array([0.5]), 8)
    cos, sin = rope_tables(np.arange(3), 8)
    with pytest.raises(ValueError, match="even head size"):
        F.rope(np.ones((3, 7)), cos, sin)
    with pytest.raises(ValueError, match="do not broadcast"):
        F.rope(np.ones((2, 4, 8)), cos, sin)  # T = 4 against 3 positions
    with pytest.raises(ValueError, match="D/2 = 4"):
        F.rope(np.ones((3, 8)), cos[:, :2], sin[:, :2])


def test_float32_stays_float32():
    cos, sin = rope_tables(np.arange(4), 8, dtype=np.float64)
    x = np.ones((2, 4, 8), dtype=np.float32)
    assert F.rope(x, cos, sin).dtype == np.float32
    assert apply_rope(x, cos, sin, interleaved=True).dtype == np.float32


@pytest.mark.parametrize("scaling", [None, {"rope_type": "llama3", "factor": 8.0,
                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 64}])
def test_tables_and_rotation_match_hf_transformers(scaling):
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig
    config = LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=512,
                         rope_theta=50000.0, rope_scaling=scaling)
    positions = np.array([[0, 1, 2, 300], [7, 8, 9, 511]])
    x = np.random.default_rng(4).standard_normal((2, 2, 4, 32)).astype(np.float32)
    rotary = llama.LlamaRotaryEmbedding(config)
    cos_hf, sin_hf = rotary(torch.from_numpy(x), torch.from_numpy(positions))
    q_hf, _ = llama.apply_rotary_pos_emb(torch.from_numpy(x), torch.from_numpy(x), cos_hf, sin_hf)
    cos, sin = rope_tables(positions, 32, rope_theta=50000.0, rope_scaling=scaling)
    np.testing.assert_allclose(np.concatenate([cos, cos], -1), cos_hf.numpy(), atol=2e-7)
    np.testing.assert_allclose(np.concatenate([sin, sin], -1), sin_hf.numpy(), atol=2e-7)
    np.testing.assert_allclose(F.rope(x, cos[:, None], sin[:, None]).data, q_hf.numpy(),
                               atol=1e-6)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotation_shared_among_threads_equals_composed(monkeypatch, threads, per_row,
                                                      interleaved):
    """x (5, 6, 300, 16): split along its first axis, with tables of their own per row
    (B, 1, T, D/2) or shared (T, D/2); the same values and gradients as the composed twin."""
    monkeypatch.setenv("NUMPYLM_THREADS", threads)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 6, 300, 16))
    positions = rng.integers(0, 1000, (5, 300)) if per_row else np.arange(300)
    cos, sin = rope_tables(positions, 16, dtype=np.float64)
    if per_row:
        cos, sin = cos[:, None], sin[:, None]
    g = rng.standard_normal(x.shape)
    results = []
    for rotate in (F.rope, composed.rope):
        t = Tensor(x, requires_grad=True)
        out = rotate(t, cos, sin, interleaved=interleaved)
        out.backward(g)
        results.append((out.data, t.grad))
    for mine, readable in zip(*results):
        np.testing.assert_allclose(mine, readable, rtol=1e-12, atol=1e-12)
