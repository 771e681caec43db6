"""Reductions: sum, mean, max and logsumexp over an axis (numpy-style `axis`, `keepdims`).

A reduction's gradient flows back to every element that took part: a sum passes `g`
unchanged to each summand, a mean passes `g / n`, a max passes `g` to the maximum.
"""
from __future__ import annotations

import builtins

import numpy as np

from numpylm.autograd.op import op


def _normalise_axis(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    return tuple(sorted(a % ndim if ndim else 0 for a in axes))


def _expand(g: np.ndarray, axis, ndim: int, keepdims: bool) -> np.ndarray:
    """Put the reduced axes back (as size 1) so `g` broadcasts against the input."""
    if keepdims or ndim == 0:
        return g
    return np.expand_dims(g, _normalise_axis(axis, ndim))


@op
def sum(x, axis=None, keepdims=False):
    x = np.asarray(x)
    def backward(g):  # d/dx_i sum_j x_j = 1
        return (np.broadcast_to(_expand(g, axis, x.ndim, keepdims), x.shape),)
    return np.sum(x, axis=axis, keepdims=keepdims), backward


@op
def mean(x, axis=None, keepdims=False):
    x = np.asarray(x)
    y = np.mean(x, axis=axis, keepdims=keepdims)
    count = x.size // builtins.max(np.size(y), 1)  # how many elements each mean averages
    def backward(g):  # d/dx_i (1/n) sum_j x_j = 1/n
        return (np.broadcast_to(_expand(g, axis, x.ndim, keepdims) / count, x.shape),)
    return y, backward


@op
def max(x, axis=None, keepdims=False):
    """Maximum along `axis`. Ties share the gradient equally: if k elements equal the
    maximum, each receives g / k (the average of the subgradients, as PyTorch's amax)."""
    x = np.asarray(x)
    y = np.max(x, axis=axis, keepdims=keepdims)
    def backward(g):
        y_kept = _expand(y, axis, x.ndim, keepdims)
        is_max = (x == y_kept)
        share = is_max / np.sum(is_max, axis=axis, keepdims=True)
        return (share * _expand(g, axis, x.ndim, keepdims),)
    return y, backward


@op
def logsumexp(x, axis=-1, keepdims=False):
    """log sum_i exp(x_i), computed as m + log sum_i exp(x_i - m) with m = max x so that
    no exp overflows."""
    x = np.asarray(x)
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    s = np.sum(e, axis=axis, keepdims=True)
    y = m + np.log(s)
    def backward(g):  # d/dx_i logsumexp(x) = exp(x_i) / sum_j exp(x_j) = softmax(x)_i
        return (e / s * _expand(g, axis, x.ndim, keepdims),)
    return (y if keepdims else np.squeeze(y, axis=axis)), backward
