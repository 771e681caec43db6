"""Each fused op equals its readable composition of primitives, in value and gradient."""
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import numpylm.functional as F
from numpylm import Tensor
from numpylm.autograd import composed
from numpylm.testing import array, arrays_for


def _value_and_grads(fn, *arrays, seed=0):
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    g = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(g)
    return out.data, [t.grad for t in tensors]


def _assert_twins(fused, plain, *arrays):
    y1, g1 = _value_and_grads(fused, *arrays)
    y2, g2 = _value_and_grads(plain, *arrays)
    np.testing.assert_allclose(y1, y2, rtol=1e-10, atol=1e-12)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@given(array(low=-30, high=30), st.data())
def test_softmax_twins(x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    _assert_twins(lambda t: F.softmax(t, axis=axis), lambda t: composed.softmax(t, axis=axis), x)
    _assert_twins(lambda t: F.log_softmax(t, axis=axis),
                  lambda t: composed.log_softmax(t, axis=axis), x)


@given(array(min_dims=2, max_dims=3, low=-10, high=10), st.data(), st.booleans())
def test_cross_entropy_twins(logits, data, ignore):
    V = logits.shape[-1]
    n = int(np.prod(logits.shape[:-1]))
    t = np.asarray(data.draw(st.lists(st.integers(0, V - 1), min_size=n, max_size=n)))
    t = t.reshape(logits.shape[:-1])
    ignore_index = None
    if ignore and n > 1:
        ignore_index = -1
        t.reshape(-1)[-1] = -1
    _assert_twins(lambda x: F.cross_entropy(x, t, ignore_index=ignore_index),
                  lambda x: composed.cross_entropy(x, t, ignore_index=ignore_index), logits)


@given(array(min_dims=1, max_dims=3, low=-5, high=5), st.data())
def test_layer_norm_twins(x, data):
    C = x.shape[-1]
    w, b = data.draw(arrays_for((C,))), data.draw(arrays_for((C,)))
    _assert_twins(lambda t, s, c: F.layer_norm(t, s, c), lambda t, s, c: composed.layer_norm(t, s, c),
                  x, w, b)
    _assert_twins(lambda t: F.layer_norm(t, None, None),
                  lambda t: composed.layer_norm(t, None, None), x)


def test_fused_softmax_survives_huge_logits():
    x = Tensor(np.array([1000.0, 0.0, -1000.0], dtype=np.float32))
    np.testing.assert_allclose(F.softmax(x).data, [1.0, 0.0, 0.0])
    assert np.isfinite(F.cross_entropy(x.reshape(1, 3), np.array([2])).item())


@given(array(min_dims=1, max_dims=3, low=-5, high=5), st.data(), st.booleans())
def test_rms_norm_twins(x, data, affine):
    assume(np.all(np.mean(x * x, axis=-1) > 1e-3))
    w = data.draw(arrays_for((x.shape[-1],))) if affine else None
    if affine:
        _assert_twins(lambda t, s: F.rms_norm(t, s), lambda t, s: composed.rms_norm(t, s), x, w)
    else:
        _assert_twins(lambda t: F.rms_norm(t, None), lambda t: composed.rms_norm(t, None), x)


def test_rms_norm_by_hand():
    """x = [3, 4]: mean(x^2) = (9 + 16) / 2 = 12.5, so with eps = 0 the output is
    x / sqrt(12.5) = [0.84853, 1.13137], times weight [1, 2] -> [0.84853, 2.26274]."""
    x = np.array([3.0, 4.0], dtype=np.float32)
    y = F.rms_norm(x, np.array([1.0, 2.0], dtype=np.float32), eps=0.0)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, [3 / math.sqrt(12.5), 8 / math.sqrt(12.5)], rtol=1e-6)


def test_rms_norm_matches_hf_llama_rms_norm():
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32) * 3
    w = rng.standard_normal(16).astype(np.float32)
    norm = llama.LlamaRMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(w))
        expected = norm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(F.rms_norm(x, w, eps=1e-5).data, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(composed.rms_norm(Tensor(x), Tensor(w), eps=1e-5).data, expected,
                               rtol=1e-5, atol=1e-6)
