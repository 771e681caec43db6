"""Stochastic gradient descent with momentum, the simplest optimiser, as in torch.optim.SGD.

Part of the engine under everything. With gradient g_t of the loss at step t, learning rate
lr, momentum mu, dampening tau and weight decay wd, one step is (torch's documented algorithm):

    g     = g_t + wd * theta                       (L2 penalty wd/2 |theta|^2, if wd != 0)
    b_t   = g                      at the first step,
            mu * b_{t-1} + (1 - tau) * g   after   (only if mu != 0)
    g     = g + mu * b_t   if nesterov   else   b_t
    theta = theta - lr * g

Subtle: the first momentum step stores the raw (decayed) gradient as the buffer, undampened,
so dampening only affects later steps. Nesterov needs momentum > 0 and zero dampening.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import numpy as np

from numpylm.optim.optimizer import Optimizer, _check_non_negative

__all__ = ["SGD"]


class SGD(Optimizer):
    """`SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False)`.

    Same defaults and update as `torch.optim.SGD`; the momentum buffer is kept in the
    parameter's dtype under the state key `"momentum_buffer"`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        for key in ("lr", "momentum", "weight_decay"):
            _check_non_negative(key, group[key])
        if not isinstance(group["dampening"], (int, float)) or isinstance(group["dampening"], bool):
            raise ValueError(f"dampening must be a number, got {group['dampening']!r}")
        if not isinstance(group["nesterov"], bool):
            raise ValueError(f"nesterov must be True or False, got {group['nesterov']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and dampening == 0")

    def _state_keys(self, group: Any) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _update(
        self, p: Any, grad: np.ndarray, group: dict[str, Any], state: dict[str, Any]
    ) -> None:
        theta = p.data
        buf, first = None, False
        if group["momentum"] != 0:
            buf = state.get("momentum_buffer")
            if buf is None:  # filled with the first gradient by the rule
                buf = state["momentum_buffer"] = np.empty_like(theta)
                first = True
        rule = functools.partial(
            _sgd_block,
            lr=group["lr"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            first=first,
        )
        self._blockwise(rule, [theta, grad, buf], n_scratch=2)


def _sgd_block(
    theta: np.ndarray,
    grad: np.ndarray,
    buf: np.ndarray | None,
    decayed: np.ndarray,
    tmp: np.ndarray,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first: bool,
) -> None:
    """One SGD step on matching blocks of theta, g (and the momentum buffer), in place.

    `decayed` and `tmp` are scratch; `grad` is only read.
    """
    d = grad
    if weight_decay != 0:
        d = np.multiply(theta, weight_decay, out=decayed)  # g + wd * theta
        d += grad
    if buf is not None:
        if first:
            np.copyto(buf, d)  # b_1 = g, undampened
        else:
            buf *= momentum  # b_t = mu b_{t-1} + (1 - tau) g
            if dampening == 0:
                buf += d
            else:
                buf += np.multiply(d, 1.0 - dampening, out=tmp)
        if nesterov:
            look_ahead = np.multiply(buf, momentum, out=tmp)  # g + mu b_t
            look_ahead += d
            d = look_ahead
        else:
            d = buf
    # theta <- theta - lr * d
    theta += np.multiply(d, -lr, out=tmp)
