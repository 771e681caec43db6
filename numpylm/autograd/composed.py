"""The readable versions of the composite ops, built only from primitive ops.

Read these first: each is the textbook formula, and autograd derives its gradient from
the primitives. `numpylm.functional` uses the fused twins in `ops_nn` and `ops_rope`
(faster, one graph node each); the tests prove the two give the same values and gradients.
"""
from __future__ import annotations

import numpy as np

from numpylm.autograd import ops_math as m
from numpylm.autograd import ops_reduce as r
from numpylm.autograd import ops_shape as s
from numpylm.autograd.tensor import Tensor


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j).

    Subtracting max(x) first changes nothing mathematically (it cancels in the ratio) but
    keeps exp from overflowing; the max is treated as a constant (detached), which is
    exact because the result does not depend on it.
    """
    shift = Tensor(np.max(x.data, axis=axis, keepdims=True))
    e = m.exp(m.sub(x, shift))
    return m.div(e, r.sum(e, axis=axis, keepdims=True))


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log softmax(x)_i = x_i - log sum_j exp(x_j) = x_i - logsumexp(x)."""
    return m.sub(x, r.logsumexp(x, axis=axis, keepdims=True))


def cross_entropy(logits: Tensor, targets, ignore_index: int | None = None) -> Tensor:
    """Mean over counted positions of -log softmax(logits)[target]."""
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of "
                         f"shape {logits.shape[:-1]}, got targets of shape {targets.shape}")
    V = logits.shape[-1]
    logp = log_softmax(s.reshape(logits, shape=(-1, V)), axis=-1)  # (N, V)
    t = targets.reshape(-1)
    keep = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    rows = np.arange(len(t))[keep]
    picked = s.getitem(logp, (rows, t[keep]))  # log-probability of each counted target
    return m.neg(r.mean(picked))


def layer_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None,
               eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance)."""
    mu = r.mean(x, axis=-1, keepdims=True)
    xc = m.sub(x, mu)
    var = r.mean(m.mul(xc, xc), axis=-1, keepdims=True)
    y = m.div(xc, m.sqrt(m.add(var, eps)))
    if weight is not None:
        y = m.mul(y, weight)
    if bias is not None:
        y = m.add(y, bias)
    return y


def rms_norm(x: Tensor, weight: Tensor | None, eps: float = 1e-6) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis: HF's LlamaRMSNorm,
    x * rsqrt(mean(x^2) + eps) * weight."""
    mean_square = r.mean(m.mul(x, x), axis=-1, keepdims=True)
    y = m.div(x, m.sqrt(m.add(mean_square, eps)))
    return y if weight is None else m.mul(y, weight)


def silu(x: Tensor) -> Tensor:
    """silu(x) = x * sigmoid(x)."""
    return m.mul(x, m.sigmoid(x))


def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """Llama's gated MLP activation: silu(gate) * up; the MLP is down(swiglu(gate(x), up(x)))."""
    return m.mul(silu(gate), up)


def rope(x: Tensor, cos, sin, interleaved: bool = False) -> Tensor:
    """Rotate each pair (x1, x2) of x (..., D) by its angle:
    (x1 cos - x2 sin, x2 cos + x1 sin), with cos and sin (..., D/2) from `rope_tables`.

    Rotate half (interleaved=False) pairs x[i] with x[i + D/2]: the two rotated halves are
    concatenated. Interleaved pairs x[2i] with x[2i + 1]: the rotated halves are stacked on a
    new last axis, which puts each pair side by side again, and flattened back to D.
    """
    cos = cos.data if isinstance(cos, Tensor) else np.asarray(cos)
    sin = sin.data if isinstance(sin, Tensor) else np.asarray(sin)
    D = x.shape[-1]
    if interleaved:
        x1, x2 = s.getitem(x, (Ellipsis, slice(0, D, 2))), s.getitem(x, (Ellipsis, slice(1, D, 2)))
    else:
        x1, x2 = s.getitem(x, (Ellipsis, slice(0, D // 2))), s.getitem(x, (Ellipsis, slice(D // 2, D)))
    y1 = m.sub(m.mul(x1, cos), m.mul(x2, sin))
    y2 = m.add(m.mul(x2, cos), m.mul(x1, sin))
    if interleaved:
        return s.reshape(s.stack([y1, y2], axis=-1), shape=x.shape)
    return s.concatenate([y1, y2], axis=-1)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Grouped-query attention the readable way: K or V (..., Hkv, T, D) -> (..., Hkv * n_rep,
    T, D), where query head h reads key-value head h // n_rep (each head copied n_rep times,
    side by side). Autograd's gather then sums the gradient of the copies back into one head."""
    if n_rep == 1:
        return x
    heads = np.repeat(np.arange(x.shape[-3]), n_rep)  # [0, 0, 1, 1, ...] for n_rep = 2
    return s.getitem(x, (Ellipsis, heads, slice(None), slice(None)))
