"""Gradient clipping by global norm: one rare huge gradient should not wreck a training run.

Part of the engine under everything. All gradients are treated as one long vector g; if its
L2 norm |g| is too large the whole vector is shrunk, keeping its direction (Pascanu et al.
2013). Following torch.nn.utils.clip_grad_norm_ exactly:

    |g|   = sqrt(sum over params of sum(grad**2))
    coef  = max_norm / (|g| + 1e-6)
    grad *= coef   for every gradient, whenever coef < 1 (in effect, when |g| > max_norm)

The 1e-6 keeps the division safe when |g| = 0, and makes the clipped norm land a hair under
max_norm. The norm *before* clipping is returned: it is worth logging, and a NaN or infinite
value tells the training loop that this step went wrong.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["clip_grad_norm_", "grad_norm"]


def _grads(params: Iterable[Any] | Any) -> list[np.ndarray]:
    if hasattr(params, "grad"):  # a single parameter
        params = [params]
    return [p.grad for p in params if p.grad is not None]


def _global_norm(grads: list[np.ndarray]) -> float:
    total = 0.0
    for g in grads:
        flat = g.reshape(-1)
        # A dot product is one fused BLAS pass: the sum of squares without a squared temporary.
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def grad_norm(params: Iterable[Any]) -> float:
    """The global L2 norm of all gradients that are not None (0.0 if there are none)."""
    return _global_norm(_grads(params))


def clip_grad_norm_(
    params: Iterable[Any], max_norm: float, *, error_if_nonfinite: bool = False
) -> float:
    """Scale all gradients in place so their global L2 norm is at most `max_norm`.

    Returns the norm before clipping. With `error_if_nonfinite=True` a NaN or infinite norm
    raises `ValueError` instead; otherwise, as in torch, the gradients are scaled by the
    (then NaN or zero) coefficient, and the caller should check the returned value.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm >= 0:
        raise ValueError(f"max_norm must be a number >= 0, got {max_norm!r}")
    grads = _grads(params)
    norm = _global_norm(grads)
    if error_if_nonfinite and not math.isfinite(norm):
        raise ValueError(f"the total gradient norm is {norm}, so the gradients cannot be clipped")
    coef = max_norm / (norm + 1e-6)
    # "not coef >= 1" rather than "coef < 1": a NaN coefficient propagates, as torch's does.
    if not coef >= 1.0:
        with np.errstate(invalid="ignore"):  # inf * 0 = NaN is the documented outcome
            for g in grads:
                np.multiply(g, coef, out=g)
    return norm

