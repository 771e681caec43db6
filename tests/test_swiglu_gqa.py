"""SiLU and the fused SwiGLU against finite differences and their composed twins; grouped-query
attention (fewer key-value heads than query heads) against repeat_kv + the composed attention."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpylm.autograd.ops_attention as A
import numpylm.functional as F
from numpylm import Tensor, gradcheck
from numpylm.autograd import composed
from numpylm.testing import array, arrays_for
from op_coverage import covers_op


def _value_and_grads(fn, *arrays, seed=0):
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.backward(np.random.default_rng(seed).standard_normal(out.shape))
    return [out.data] + [t.grad for t in tensors]


@covers_op("silu")
@given(array(low=-6, high=6))
def test_silu_gradcheck(x):
    gradcheck(F.silu, x)


@covers_op("swiglu")
@given(array(low=-6, high=6), st.data())
def test_swiglu_gradcheck(gate, data):
    up = data.draw(arrays_for(gate.shape, -3.0, 3.0))
    gradcheck(F.swiglu, gate, up)


@given(array(low=-8, high=8), st.integers(0, 2**32 - 1))
def test_silu_and_swiglu_equal_their_composed_twins(gate, seed):
    up = np.random.default_rng(seed).standard_normal(gate.shape)
    for fused, plain in zip(_value_and_grads(F.silu, gate), _value_and_grads(composed.silu, gate)):
        np.testing.assert_allclose(fused, plain, rtol=1e-12, atol=1e-14)
    for fused, plain in zip(_value_and_grads(F.swiglu, gate, up),
                            _value_and_grads(composed.swiglu, gate, up)):
        np.testing.assert_allclose(fused, plain, rtol=1e-12, atol=1e-14)


def test_silu_by_hand():
    """silu(0) = 0; silu(1) = 1 / (1 + e^-1); silu(-1) = -1 / (1 + e); silu(-200) is -0, not nan
    (e^200 overflows float32); d/dx silu at 0 is s(0) (1 + 0) = 1/2."""
    x = Tensor(np.array([0.0, 1.0, -1.0, -200.0], dtype=np.float32), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        y = F.silu(x)
    np.testing.assert_allclose(y.data, [0.0, 1 / (1 + math.exp(-1)), -1 / (1 + math.e), 0.0],
                               rtol=1e-6, atol=1e-30)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad[0] == pytest.approx(0.5)


def test_swiglu_by_hand_and_bad_shapes():
    """swiglu(gate = 1, up = 3) = 3 / (1 + e^-1); d/dup = silu(1), d/dgate = 3 s (1 + 1 (1 - s))."""
    gate = Tensor(np.array([1.0], dtype=np.float32), requires_grad=True)
    up = Tensor(np.array([3.0], dtype=np.float32), requires_grad=True)
    y = F.swiglu(gate, up)
    s = 1 / (1 + math.exp(-1))
    assert y.dtype == np.float32 and y.item() == pytest.approx(3 * s, rel=1e-6)
    y.backward()
    assert up.grad[0] == pytest.approx(s, rel=1e-6)
    assert gate.grad[0] == pytest.approx(3 * s * (2 - s), rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        F.swiglu(np.ones((2, 3)), np.ones((2, 4)))


def test_swiglu_extreme_gates_in_pieces_and_threads():
    """Gates far beyond float32's exp range (e^1000 is inf) in an array of several pieces, shared
    among threads: value and gradients equal float64's, with no overflow warning in any thread."""
    from numpylm.autograd import ops_nn
    n = 3 * ops_nn.PIECE + 5
    rng = np.random.default_rng(3)
    gate = rng.choice(np.array([-1000.0, -100.0, -88.5, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0,
                                1000.0], dtype=np.float32), n)
    up = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = _value_and_grads(F.swiglu, gate, up)
        y, backward = ops_nn.swiglu.rule(gate, up)
        dgate, dup = (grad() for grad in backward(g))
    g64, u64 = gate.astype(np.float64), up.astype(np.float64)
    with np.errstate(over="ignore"):
        s = 1 / (1 + np.exp(-g64))
    np.testing.assert_allclose(y, g64 * s * u64, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(dup, g64 * s * g, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(dgate, u64 * s * (1 + g64 * (1 - s)) * g, rtol=1e-5, atol=1e-30)
    assert all(np.isfinite(a).all() for a in ours)


def test_swiglu_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    gate, up = (rng.standard_normal((4, 7)).astype(np.float32) * 4 for _ in range(2))
    expected = torch.nn.functional.silu(torch.from_numpy(gate)) * torch.from_numpy(up)
    np.testing.assert_allclose(F.swiglu(gate, up).data, expected.numpy(), rtol=1e-5, atol=1e-6)


@st.composite
def grouped_inputs(draw):
    B, Hkv, G = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(2, 3))
    Tq = draw(st.integers(1, 5))
    Tk = Tq + draw(st.integers(0, 3))  # Tk > Tq: new queries against a KV cache
    D, Dv = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rng.standard_normal((B, Hkv * G, Tq, D))
    k = rng.standard_normal((B, Hkv, Tk, D))
    v = rng.standard_normal((B, Hkv, Tk, Dv))
    kind = draw(st.sampled_from([None, "padding", "per head", "per query"]))
    mask = {None: None, "padding": (B, 1, 1, Tk), "per head": (B, Hkv * G, Tq, Tk),
            "per query": (Tq, Tk)}[kind]
    if mask is not None:
        mask = rng.random(mask) < 0.7
        mask[..., 0] = True  # every query row keeps a key
    return q, k, v, draw(st.booleans()), mask


@settings(max_examples=25)
@given(grouped_inputs(), st.sampled_from([1, 2, 64]))
def test_grouped_attention_equals_repeat_kv_then_attention(inputs, block):
    """The fused op (no K/V copies) against repeat_kv + the composed attention, values and
    gradients, with tiny causal query blocks too; and the unblocked reference backward."""
    q, k, v, causal, mask = inputs
    G = q.shape[1] // k.shape[1]
    saved, A.QUERY_BLOCK = A.QUERY_BLOCK, block
    try:
        fused = _value_and_grads(
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal, attn_mask=mask),
            q, k, v)
    finally:
        A.QUERY_BLOCK = saved
    plain = _value_and_grads(
        lambda q, k, v: A.attention_composed(q, composed.repeat_kv(k, G), composed.repeat_kv(v, G),
                                             causal=causal, attn_mask=mask), q, k, v)
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(0).standard_normal(fused[0].shape)
    for a, b in zip(A.attention_backward_reference(g, q, k, v, causal, mask), fused[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@settings(max_examples=10)
@given(grouped_inputs())
def test_grouped_attention_gradcheck(inputs):
    q, k, v, causal, mask = inputs
    gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=causal,
                                                             attn_mask=mask), q, k, v)


def test_multi_query_by_hand():
    """One K/V head shared by two query heads (Hkv = 1), q = 0 so each query averages the
    values it sees: causal over v = [1, 2, 3] gives [1, 1.5, 2] for both heads; the gradient
    of the sum with respect to v is, per key, the weight it gets summed over queries and both
    heads: key 0: 2 (1 + 1/2 + 1/3), key 1: 2 (1/2 + 1/3), key 2: 2 (1/3)."""
    q = np.zeros((1, 2, 3, 2))
    v = Tensor(np.array([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1), requires_grad=True)
    out = F.scaled_dot_product_attention(q, np.ones((1, 1, 3, 2)), v)
    np.testing.assert_allclose(out.data[0, :, :, 0], [[1, 1.5, 2], [1, 1.5, 2]])
    out.sum().backward()
    np.testing.assert_allclose(v.grad.ravel(), [2 * (1 + 1 / 2 + 1 / 3), 2 * (1 / 2 + 1 / 3),
                                                2 / 3])


def test_grouped_heads_read_their_own_kv_head():
    """Query heads 0, 1 read K/V head 0 and heads 2, 3 read head 1 (h // G, as in HF)."""
    rng = np.random.default_rng(6)
    q, k, v = rng.standard_normal((1, 4, 3, 4)), rng.standard_normal((1, 2, 3, 4)), \
        rng.standard_normal((1, 2, 3, 4))
    out = F.scaled_dot_product_attention(q, k, v).data
    for h in range(4):
        alone = F.scaled_dot_product_attention(q[:, h:h + 1], k[:, h // 2:h // 2 + 1],
                                               v[:, h // 2:h // 2 + 1]).data
        np.testing.assert_allclose(out[:, h:h + 1], alone, rtol=1e-12)


def test_grouped_float32_and_bad_heads():
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2, 6, 5, 8)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, 5, 8)).astype(np.float32) for _ in range(2))
    t = Tensor(q, requires_grad=True)
    out = F.scaled_dot_product_attention(t, k, v)
    out.sum().backward()
    assert out.dtype == np.float32 and t.grad.dtype == np.float32
    with pytest.raises(ValueError, match="6 query heads cannot share 4 key-value heads"):
        F.scaled_dot_product_attention(q, np.ones((2, 4, 5, 8)), np.ones((2, 4, 5, 8)))
    with pytest.raises(ValueError, match="6 query heads cannot share 4"):
        A.attention_composed(Tensor(q), Tensor(np.ones((2, 4, 5, 8))), Tensor(np.ones((2, 4, 5, 8))))
    with pytest.raises(ValueError, match="does not broadcast"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((2, 2, 5, 5), dtype=bool))


def test_grouped_attention_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    q = rng.standard_normal((2, 6, 4, 8)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, 9, 8)).astype(np.float32) for _ in range(2))
    # A KV cache: 4 new queries after 5 cached keys, the causal mask aligned bottom-right.
    mask = np.tril(np.ones((4, 9), dtype=bool), k=5)
    expected = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k).repeat_interleave(3, dim=1),
        torch.from_numpy(v).repeat_interleave(3, dim=1), attn_mask=torch.from_numpy(mask))
    got = F.scaled_dot_product_attention(q, k, v, causal=True).data
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
