"""Adam and AdamW: per-coordinate step sizes from running moments, as in torch.optim.Adam/AdamW.

Part of the engine under everything. With gradient g_t at step t = 1, 2, ..., learning rate
lr, betas (b1, b2), eps and weight decay wd (Kingma & Ba 2015; Loshchilov & Hutter 2019):

    Adam:   g = g_t + wd * theta                 (L2 penalty folded into the gradient)
    AdamW:  theta = theta * (1 - lr * wd)        (decoupled decay, applied to the weights first)

    m_t   = b1 * m_{t-1} + (1 - b1) * g          first moment, m_0 = 0
    v_t   = b2 * v_{t-1} + (1 - b2) * g^2        second moment, v_0 = 0
    vmax  = max(vmax, v_t)                       only with amsgrad; used in place of v_t below
    theta = theta - (lr / (1 - b1^t)) * m_t / (sqrt(v_t) / sqrt(1 - b2^t) + eps)

The divisions by 1 - b^t undo the bias of starting the averages at zero. Note where eps
sits: it is added after the bias correction of sqrt(v), exactly as torch computes it, so the
numbers match torch's and not the paper's slightly different placement.

Speed: the update is about a dozen in-place passes using `out=` and two reusable scratch
buffers, so a step allocates nothing, and it runs block by block (`Optimizer._blockwise`) so
those passes hit cache instead of RAM.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from numpylm.optim.optimizer import Optimizer, _check_non_negative

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """`Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False)`.

    Same defaults and update as `torch.optim.Adam`. State keys, as in torch: `"step"` (int),
    `"exp_avg"` (m), `"exp_avg_sq"` (v) and, with amsgrad, `"max_exp_avg_sq"`; arrays are
    kept in the parameter's dtype.
    """

    # Adam adds wd * theta to the gradient; AdamW shrinks theta instead (see module docstring).
    _decoupled = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        for key in ("lr", "eps", "weight_decay"):
            _check_non_negative(key, group[key])
        betas = group["betas"]
        if (
            not isinstance(betas, (tuple, list))
            or len(betas) != 2
            or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0
                for b in betas
            )
        ):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        group["betas"] = (float(betas[0]), float(betas[1]))
        if not isinstance(group["amsgrad"], bool):
            raise ValueError(f"amsgrad must be True or False, got {group['amsgrad']!r}")

    def _state_keys(self, group: Any) -> tuple[str, ...]:
        keys = ("step", "exp_avg", "exp_avg_sq")
        return keys + ("max_exp_avg_sq",) if group["amsgrad"] else keys

    def _update(
        self, p: Any, grad: np.ndarray, group: dict[str, Any], state: dict[str, Any]
    ) -> None:
        theta = p.data
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(theta)
            state["exp_avg_sq"] = np.zeros_like(theta)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(theta)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        rule = functools.partial(
            _adam_block,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled=self._decoupled,
            step=state["step"],
        )
        arrays = [theta, grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq")]
        self._blockwise(rule, arrays, n_scratch=2)


def _adam_block(
    theta: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    vmax: np.ndarray | None,
    decayed: np.ndarray,
    tmp: np.ndarray,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    step: int,
) -> None:
    """One Adam step on matching blocks of theta, g, m, v (and vmax with amsgrad), in place.

    `decayed` and `tmp` are scratch; `grad` is only read.
    """
    g = grad
    if weight_decay != 0:
        if decoupled:
            theta *= 1.0 - lr * weight_decay  # AdamW: theta <- theta (1 - lr wd)
        else:
            g = np.multiply(theta, weight_decay, out=decayed)  # Adam: g <- g + wd theta
            g += grad
    # m <- m + (1 - b1)(g - m): torch's lerp, algebraically b1*m + (1 - b1)*g.
    np.subtract(g, m, out=tmp)
    tmp *= 1.0 - beta1
    m += tmp
    # v <- b2*v + (1 - b2) g^2
    v *= beta2
    np.multiply(g, g, out=tmp)
    tmp *= 1.0 - beta2
    v += tmp
    if vmax is not None:  # amsgrad: the largest v so far stands in for v
        np.maximum(vmax, v, out=vmax)
        v = vmax
    # denominator: sqrt(v) / sqrt(1 - b2^t) + eps
    np.sqrt(v, out=tmp)
    tmp /= math.sqrt(1.0 - beta2**step)
    tmp += eps
    # theta <- theta - (lr / (1 - b1^t)) * m / denominator
    np.divide(m, tmp, out=tmp)
    tmp *= -lr / (1.0 - beta1**step)
    theta += tmp


class AdamW(Adam):
    """`AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)`.

    Adam with decoupled weight decay: theta is multiplied by 1 - lr*wd before the Adam step,
    instead of wd*theta being added to the gradient. Same defaults as `torch.optim.AdamW`.
    """

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad
        )
