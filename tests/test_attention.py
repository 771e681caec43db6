"""The fused attention op against finite differences and against its composed twin."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpylm.functional as F
from numpylm import Tensor, gradcheck
from numpylm.autograd.ops_attention import attention_composed, packed_self_attention
from op_coverage import covers_op


@st.composite
def attention_inputs(draw, with_mask: bool | None = None):
    B = draw(st.integers(1, 2))
    H = draw(st.integers(1, 3))
    Tq = draw(st.integers(1, 5))
    Tk = Tq + draw(st.integers(0, 3))  # Tk >= Tq, as with a KV cache
    D = draw(st.integers(1, 4))
    Dv = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, Tq, D))
    k = rng.standard_normal((B, H, Tk, D))
    v = rng.standard_normal((B, H, Tk, Dv))
    mask = None
    if with_mask is None:
        with_mask = draw(st.booleans())
    if with_mask:
        # A padding-style mask over keys, (B, 1, 1, Tk); key 0 always stays visible, so that
        # no row, causal or not, is left with nothing to attend to.
        mask = rng.random((B, 1, 1, Tk)) < 0.7
        mask[..., 0] = True
    causal = draw(st.booleans())
    return q, k, v, causal, mask


@covers_op("scaled_dot_product_attention")
@settings(max_examples=20)
@given(attention_inputs())
def test_fused_attention_gradcheck(inputs):
    q, k, v, causal, mask = inputs
    gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal,
                                                             attn_mask=mask), q, k, v)


@settings(max_examples=20)
@given(attention_inputs(with_mask=True), st.booleans())
def test_fused_equals_composed_values_and_gradients(inputs, use_mask):
    q, k, v, causal, mask = inputs
    mask = mask if use_mask else None
    results = []
    for attend in (F.scaled_dot_product_attention, attention_composed):
        tq, tk, tv = (Tensor(a, requires_grad=True) for a in (q, k, v))
        out = attend(tq, tk, tv, causal=causal, attn_mask=mask)
        g = np.random.default_rng(1).standard_normal(out.shape)
        out.backward(g)
        results.append((out.data, tq.grad, tk.grad, tv.grad))
    for fused, composed in zip(*results):
        np.testing.assert_allclose(fused, composed, rtol=1e-10, atol=1e-12)


def test_zero_queries_average_the_visible_values():
    """With q = 0 every score is 0, so each query weighs its visible keys equally.

    Causal with Tq = Tk = 3 and values v = [1, 2, 3] (D_v = 1): query 0 sees key 0 -> 1;
    query 1 sees keys 0, 1 -> (1 + 2) / 2 = 1.5; query 2 sees all -> (1 + 2 + 3) / 3 = 2.
    With one cached key in front (Tk = 4, v = [7, 1, 2, 3]) and the same 3 queries, query i
    sees keys 0..i+1: (7+1)/2 = 4, (7+1+2)/3 = 10/3, (7+1+2+3)/4 = 13/4.
    """
    q = np.zeros((1, 1, 3, 2))
    v = np.array([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1)
    out = F.scaled_dot_product_attention(q, np.ones((1, 1, 3, 2)), v)
    np.testing.assert_allclose(out.data.ravel(), [1.0, 1.5, 2.0])
    v4 = np.array([7.0, 1.0, 2.0, 3.0]).reshape(1, 1, 4, 1)
    out = F.scaled_dot_product_attention(q, np.ones((1, 1, 4, 2)), v4)
    np.testing.assert_allclose(out.data.ravel(), [4.0, 10 / 3, 13 / 4])


def test_scores_are_scaled_by_root_head_size():
    """Two keys with q.k = 4 and 0 at D = 4: scaled scores 2 and 0, so the weights are
    e^2 / (e^2 + 1) and 1 / (e^2 + 1), and with values 1 and 0 the output is e^2 / (e^2 + 1)."""
    q = np.array([1.0, 1.0, 1.0, 1.0]).reshape(1, 1, 1, 4)
    k = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]).reshape(1, 1, 2, 4)
    v = np.array([1.0, 0.0]).reshape(1, 1, 2, 1)
    out = F.scaled_dot_product_attention(q, k, v, causal=False)
    e2 = np.exp(2.0)
    np.testing.assert_allclose(out.data.item(), e2 / (e2 + 1))


def test_a_row_that_sees_nothing_gives_zeros_not_nan():
    q = np.ones((1, 1, 2, 2))
    k = np.ones((1, 1, 2, 2))
    v = np.ones((1, 1, 2, 2))
    mask = np.array([[True, True], [False, False]])  # query 1 may attend to nothing
    t = Tensor(q, requires_grad=True)
    out = F.scaled_dot_product_attention(t, k, v, causal=False, attn_mask=mask)
    np.testing.assert_array_equal(out.data[0, 0, 1], [0.0, 0.0])
    out.sum().backward()
    assert np.isfinite(t.grad).all()


def test_a_tensor_mask_works_in_both_versions():
    rng = np.random.default_rng(3)
    q, k, v = (Tensor(rng.standard_normal((1, 2, 3, 4))) for _ in range(3))
    mask = np.array([[True, False, True], [True, True, False], [False, True, True]])
    outs = [attend(q, k, v, causal=False, attn_mask=m)
            for attend in (F.scaled_dot_product_attention, attention_composed)
            for m in (mask, Tensor(mask))]
    for out in outs[1:]:
        np.testing.assert_allclose(out.data, outs[0].data, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 4, 8)).astype(np.float32) for _ in range(3))
    assert F.scaled_dot_product_attention(q, k, v).dtype == np.float32


def test_bad_shapes_and_masks_are_named():
    with pytest.raises(ValueError, match="do not fit"):
        F.scaled_dot_product_attention(np.ones((1, 2, 3)), np.ones((1, 2, 4)), np.ones((1, 2, 3)))
    with pytest.raises(ValueError, match="same number"):
        F.scaled_dot_product_attention(np.ones((2, 3)), np.ones((1, 2, 3)), np.ones((1, 2, 3)))
    with pytest.raises(ValueError, match="does not broadcast"):
        F.scaled_dot_product_attention(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)),
                                       attn_mask=np.ones((3, 3), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        F.scaled_dot_product_attention(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)),
                                       attn_mask=np.ones((2, 2)))


@covers_op("packed_self_attention")
@settings(max_examples=15)
@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_packed_attention_is_split_attention_merge(B, T, H, D, use_mask, seed):
    """qkv (B, T, 3 H D) split into heads, attended, merged: values and gradients agree with
    the same steps written with reshape/transpose/getitem around the plain fused op, and
    the packed op passes a finite-difference check."""
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((B, T, 3 * H * D))
    mask = None
    if use_mask:
        mask = rng.random((B, 1, 1, T)) < 0.7
        mask[..., 0] = True

    def split_then_attend(x):
        heads = F.transpose(F.reshape(x, shape=(B, T, 3, H, D)), axes=(2, 0, 3, 1, 4))
        y = F.scaled_dot_product_attention(heads[0], heads[1], heads[2], attn_mask=mask)
        return F.reshape(F.transpose(y, axes=(0, 2, 1, 3)), shape=(B, T, H * D))

    g = rng.standard_normal((B, T, H * D))
    grads = []
    for fn in (lambda x: packed_self_attention(x, H, attn_mask=mask), split_then_attend):
        x = Tensor(qkv, requires_grad=True)
        out = fn(x)
        out.backward(g)
        grads.append((out.data, x.grad))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-12)
    gradcheck(lambda x: packed_self_attention(x, H, attn_mask=mask), qkv)


def test_packed_attention_rejects_a_width_that_is_not_three_heads():
    with pytest.raises(ValueError, match="3 \\* n_head"):
        packed_self_attention(np.ones((1, 2, 10)), 2)


@settings(max_examples=15)
@given(attention_inputs(), st.integers(1, 3))
def test_causal_query_blocks_change_nothing(inputs, block):
    """The causal kernel skips score tiles above the diagonal block by block of queries;
    with tiny blocks (so that the short test sequences are split) it still equals the
    composed version, values and gradients."""
    import numpylm.autograd.ops_attention as A
    q, k, v, causal, mask = inputs
    saved = A.QUERY_BLOCK
    A.QUERY_BLOCK = block
    try:
        results = []
        for attend in (F.scaled_dot_product_attention, attention_composed):
            tq, tk, tv = (Tensor(a, requires_grad=True) for a in (q, k, v))
            out = attend(tq, tk, tv, causal=True, attn_mask=mask)
            out.backward(np.random.default_rng(3).standard_normal(out.shape))
            results.append((out.data, tq.grad, tk.grad, tv.grad))
    finally:
        A.QUERY_BLOCK = saved
    for fused, composed in zip(*results):
        np.testing.assert_allclose(fused, composed, rtol=1e-10, atol=1e-12)


@settings(max_examples=25)
@given(attention_inputs(), st.integers(1, 3), st.sampled_from([1, 2, 3]), st.booleans())
def test_reference_backward_equals_the_blocked_backward(inputs, block, group, per_query_mask):
    """attention_backward_reference (the docstring's formulas, unblocked) against the fused
    op's blocked, in-place backward: causal or not, Tq <= Tk (a KV cache), padding masks
    or per-query masks, grouped-query attention (H = group * Hkv), small query blocks."""
    import numpylm.autograd.ops_attention as A
    q, k, v, causal, mask = inputs
    q = np.concatenate([q] * group, axis=1)  # group query heads per key-value head
    q = q + np.random.default_rng(0).standard_normal(q.shape)  # ... that differ
    if per_query_mask:
        mask = np.random.default_rng(1).random(q.shape[-2:-1] + k.shape[-2:-1]) < 0.6
        mask[:, 0] = True
    g = np.random.default_rng(2).standard_normal(q.shape[:-1] + v.shape[-1:])
    saved, A.QUERY_BLOCK = A.QUERY_BLOCK, block
    try:
        tq, tk, tv = (Tensor(a, requires_grad=True) for a in (q, k, v))
        F.scaled_dot_product_attention(tq, tk, tv, causal=causal, attn_mask=mask).backward(g)
    finally:
        A.QUERY_BLOCK = saved
    reference = A.attention_backward_reference(g, q, k, v, causal=causal, attn_mask=mask)
    for plain, fused in zip(reference, (tq.grad, tk.grad, tv.grad)):
        assert plain.shape == fused.shape
        np.testing.assert_allclose(plain, fused, rtol=1e-10, atol=1e-12)


def test_reference_backward_by_hand():
    """One query, two keys with scores 0 and 0 (q = 0): P = [1/2, 1/2], values [1, 3], so
    O = 2. With dO = 1: dV = P^T dO = [1/2, 1/2]; dP = dO V^T = [1, 3];
    rowsum(dP * P) = 2, dS = P * (dP - 2) = [-1/2, 1/2]; with k = [[0], [2]] (D = 1):
    dQ = dS K = -1/2 * 0 + 1/2 * 2 = 1, dK = dS^T Q = 0."""
    import numpylm.autograd.ops_attention as A
    q = np.zeros((1, 1, 1))
    k = np.array([[[0.0], [2.0]]])
    v = np.array([[[1.0], [3.0]]])
    dq, dk, dv = A.attention_backward_reference(np.ones((1, 1, 1)), q, k, v, causal=False)
    np.testing.assert_allclose(dv.ravel(), [0.5, 0.5])
    np.testing.assert_allclose(dq.ravel(), [1.0])
    np.testing.assert_allclose(dk.ravel(), [0.0, 0.0])


@pytest.mark.parametrize("use_mask", [False, True])
def test_long_grouped_blocks_equal_the_reference(use_mask):
    """Four causal blocks of 64 queries over up to 256 keys, grouped queries (dQ and dK
    scaled after their products, not dS): values and gradients equal the reference
    formulas and the composed twin, with and without a padding mask."""
    import numpylm.autograd.ops_attention as A
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2, 6, 256, 8))
    k, v = rng.standard_normal((2, 2, 256, 8)), rng.standard_normal((2, 2, 256, 8))
    mask = None
    if use_mask:
        mask = rng.random((2, 1, 1, 256)) < 0.8
        mask[..., 0] = True
    g = rng.standard_normal(q.shape)
    tq, tk, tv = (Tensor(a, requires_grad=True) for a in (q, k, v))
    out = F.scaled_dot_product_attention(tq, tk, tv, causal=True, attn_mask=mask)
    out.backward(g)
    composed = attention_composed(Tensor(q), Tensor(k), Tensor(v), causal=True,
                                  attn_mask=mask).data
    np.testing.assert_allclose(out.data, composed, rtol=1e-10, atol=1e-12)
    for mine, ref in zip((tq.grad, tk.grad, tv.grad),
                         A.attention_backward_reference(g, q, k, v, True, mask)):
        np.testing.assert_allclose(mine, ref, rtol=1e-9, atol=1e-11)
