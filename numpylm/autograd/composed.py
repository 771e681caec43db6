"""The readable versions of the composite ops, built only from primitive ops.

Read these first: each is the textbook formula, and autograd derives its gradient from
the primitives. `numpylm.functional` uses the fused twins in `ops_nn` (faster, one graph
node each); the tests prove the two give the same values and gradients.
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
