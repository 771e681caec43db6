"""Whole-model gradient checks: a two-layer MLP with cross-entropy, and a small causal
self-attention block built from primitive ops, in float64."""
import math

import numpy as np

import numpylm.functional as F
from numpylm import Tensor, gradcheck, nn


def test_two_layer_mlp_with_cross_entropy():
    rng = np.random.default_rng(0)
    mlp = nn.ModuleList([nn.Linear(5, 7, rng=rng), nn.Linear(7, 4, rng=rng)])
    mlp = mlp.to(np.float64)
    x = rng.standard_normal((6, 5))
    t = rng.integers(0, 4, 6)

    def loss():
        h = mlp[0](Tensor(x)).relu()
        return F.cross_entropy(mlp[1](h), t)

    gradcheck(loss, params=mlp.parameters(), max_elements=80)


def causal_self_attention(x, w_qkv, w_out, n_head):
    """x (B, T, C); one fused qkv projection, masked softmax, output projection."""
    B, T, C = x.shape
    hs = C // n_head
    q, k, v = (x @ w_qkv).split(3, axis=-1)  # each (B, T, C)
    heads = lambda z: z.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)  # (B, H, T, hs)
    q, k, v = heads(q), heads(k), heads(v)
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(hs))  # (B, H, T, T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    att = F.softmax(scores.masked_fill(future, -np.inf), axis=-1)
    y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return y @ w_out


def test_causal_self_attention_block():
    rng = np.random.default_rng(1)
    B, T, C, H = 2, 4, 6, 2
    x = rng.standard_normal((B, T, C))
    w_qkv = rng.standard_normal((C, 3 * C)) * 0.5
    w_out = rng.standard_normal((C, C)) * 0.5
    gradcheck(lambda a, b, c: causal_self_attention(a, b, c, H), x, w_qkv, w_out,
              max_elements=40)


def test_attention_is_causal():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 5, 4))
    w_qkv, w_out = rng.standard_normal((4, 12)), rng.standard_normal((4, 4))
    y = causal_self_attention(Tensor(x), Tensor(w_qkv), Tensor(w_out), 2).data
    x2 = x.copy()
    x2[:, 3:] += 10.0  # changing the future must not change the past
    y2 = causal_self_attention(Tensor(x2), Tensor(w_qkv), Tensor(w_out), 2).data
    np.testing.assert_allclose(y[:, :3], y2[:, :3])
    assert not np.allclose(y[:, 3:], y2[:, 3:])
