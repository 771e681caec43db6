"""Learning-rate schedules: the learning rate as a pure function of the step number.

Part of the engine under everything. Training a transformer usually warms the learning rate
up from near zero (Adam's early moment estimates are noisy, so early steps should be small),
then lets it decay along a half cosine to a floor. Each schedule here is a pure function
of the step, `lr_at(step) -> float`, so resuming at step s gives exactly the value an
uninterrupted run would have used; `set_lr` writes a value into an optimiser's groups.

Steps count from 0. With peak `lr`, floor `min_lr`, `W = warmup_steps`, `D = decay_steps`
(nanoGPT's `get_lr` convention, with its lr_decay_iters = W + D):

    step < W:            lr * (step + 1) / W          linear warmup, reaching lr at step W-1
    W <= step < W + D:   min_lr + (lr - min_lr) * (1 + cos(pi * (step - W) / D)) / 2
    step >= W + D:       min_lr

At step W the cosine factor is 1 (value lr); at step W + D it would be 0 (value min_lr).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ConstantSchedule",
    "LinearWarmupSchedule",
    "WarmupCosineSchedule",
    "constant_lr",
    "linear_warmup_lr",
    "set_lr",
    "warmup_cosine_lr",
]


def _check_rate(name: str, value: float) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (is_number and 0 <= value < math.inf):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _check_step(step: int) -> None:
    _check_count("step", step)


def constant_lr(step: int, lr: float) -> float:
    """The same `lr` at every step."""
    _check_step(step)
    return float(lr)


def linear_warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """`lr * (step + 1) / warmup_steps` during warmup, then `lr` (warmup_steps may be 0)."""
    _check_step(step)
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return float(lr)


def warmup_cosine_lr(
    step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int
) -> float:
    """Linear warmup over `warmup_steps`, cosine decay to `min_lr` over `decay_steps`, then min_lr.

    See the module docstring for the formula; e.g. lr=1, min_lr=0.1, W=2, D=4 gives
    0.5, 1.0, 1.0, 0.8682..., 0.55, 0.2318..., 0.1, 0.1, ... for steps 0, 1, 2, ...
    """
    _check_step(step)
    if step < warmup_steps:
        return linear_warmup_lr(step, lr, warmup_steps)
    if step >= warmup_steps + decay_steps:  # also covers decay_steps == 0
        return float(min_lr)
    progress = (step - warmup_steps) / decay_steps  # in [0, 1)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return min_lr + coeff * (lr - min_lr)


@dataclass(frozen=True)
class ConstantSchedule:
    """Callable form of `constant_lr`: `ConstantSchedule(3e-4)(step)`."""

    lr: float

    def __post_init__(self) -> None:
        _check_rate("lr", self.lr)

    def __call__(self, step: int) -> float:
        return constant_lr(step, self.lr)


@dataclass(frozen=True)
class LinearWarmupSchedule:
    """Callable form of `linear_warmup_lr`."""

    lr: float
    warmup_steps: int

    def __post_init__(self) -> None:
        _check_rate("lr", self.lr)
        _check_count("warmup_steps", self.warmup_steps)

    def __call__(self, step: int) -> float:
        return linear_warmup_lr(step, self.lr, self.warmup_steps)


@dataclass(frozen=True)
class WarmupCosineSchedule:
    """Callable form of `warmup_cosine_lr`; refuses `min_lr > lr`, which would decay upwards."""

    lr: float
    min_lr: float
    warmup_steps: int
    decay_steps: int

    def __post_init__(self) -> None:
        _check_rate("lr", self.lr)
        _check_rate("min_lr", self.min_lr)
        _check_count("warmup_steps", self.warmup_steps)
        _check_count("decay_steps", self.decay_steps)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")

    def __call__(self, step: int) -> float:
        return warmup_cosine_lr(step, self.lr, self.min_lr, self.warmup_steps, self.decay_steps)


def set_lr(optimizer: Any, lr: float) -> float:
    """Set `"lr"` in every param group of `optimizer` to `lr` and return it.

    Typical use in a training loop: `set_lr(opt, schedule(step)); opt.step()`.
    """
    _check_rate("lr", lr)
    for group in optimizer.param_groups:
        group["lr"] = float(lr)
    return float(lr)
