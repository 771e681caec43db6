"""Tests for numpylm.optim.schedules: values worked out by hand, the shape of the warmup-cosine
curve as properties, bad input, and writing a value into an optimiser."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.nn import Parameter
from numpylm.optim import (
    SGD,
    Adam,
    ConstantSchedule,
    LinearWarmupSchedule,
    WarmupCosineSchedule,
    constant_lr,
    linear_warmup_lr,
    set_lr,
    warmup_cosine_lr,
)


def test_constant():
    assert [constant_lr(s, 3e-4) for s in (0, 1, 10_000)] == [3e-4] * 3
    assert ConstantSchedule(0.5)(7) == 0.5


def test_linear_warmup_by_hand():
    """lr=0.3, W=3: 0.3*1/3, 0.3*2/3, 0.3*3/3 for steps 0, 1, 2, then 0.3 for ever."""
    values = [linear_warmup_lr(s, 0.3, 3) for s in range(5)]
    np.testing.assert_allclose(values, [0.1, 0.2, 0.3, 0.3, 0.3], rtol=1e-15)
    assert LinearWarmupSchedule(0.3, 0)(0) == 0.3  # no warmup at all


def test_warmup_cosine_by_hand():
    """lr=1, min_lr=0.1, W=2, D=4.
    step 0: 1 * 1/2 = 0.5;  step 1: 1 * 2/2 = 1.0                        (warmup)
    step 2: progress 0    -> coeff (1 + cos 0)/2 = 1         -> 1.0
    step 3: progress 1/4  -> coeff (1 + cos(pi/4))/2 = 0.853553 -> 0.1 + 0.9*0.853553 = 0.868198
    step 4: progress 1/2  -> coeff 1/2                       -> 0.1 + 0.45 = 0.55
    step 5: progress 3/4  -> coeff (1 - cos(pi/4))/2 = 0.146447 -> 0.1 + 0.131802 = 0.231802
    step 6 and after: min_lr = 0.1."""
    schedule = WarmupCosineSchedule(lr=1.0, min_lr=0.1, warmup_steps=2, decay_steps=4)
    values = [schedule(s) for s in range(9)]
    r = math.sqrt(0.5)  # cos(pi/4)
    expected = [0.5, 1.0, 1.0, 0.1 + 0.9 * (1 + r) / 2, 0.55, 0.1 + 0.9 * (1 - r) / 2]
    expected += [0.1, 0.1, 0.1]
    np.testing.assert_allclose(values, expected, rtol=1e-14)
    np.testing.assert_allclose(values[3], 0.868198, atol=1e-6)
    assert warmup_cosine_lr(10**9, 1.0, 0.1, 2, 4) == 0.1


def test_nanogpt_convention():
    """nanoGPT's get_lr(it) with warmup_iters W and lr_decay_iters L: during warmup
    lr*(it+1)/W; for it > L, min_lr; else cosine with ratio (it - W)/(L - W). Here it is written
    out for W=10, L=110 and compared with decay_steps = L - W = 100 at every step up to 130."""
    lr, min_lr, W, L = 6e-4, 6e-5, 10, 110

    def get_lr(it):
        if it < W:
            return lr * (it + 1) / W
        if it > L:
            return min_lr
        ratio = (it - W) / (L - W)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    for step in range(131):
        ours = warmup_cosine_lr(step, lr, min_lr, W, L - W)
        assert math.isclose(ours, get_lr(step), rel_tol=1e-12, abs_tol=1e-18)


def test_edge_cases():
    """No decay phase: min_lr straight after warmup. No warmup: the cosine starts at step 0."""
    assert [warmup_cosine_lr(s, 1.0, 0.25, 2, 0) for s in range(4)] == [0.5, 1.0, 0.25, 0.25]
    assert warmup_cosine_lr(0, 1.0, 0.0, 0, 10) == 1.0
    assert math.isclose(warmup_cosine_lr(5, 1.0, 0.0, 0, 10), 0.5, rel_tol=1e-15)


@settings(max_examples=25)
@given(
    lr=st.floats(1e-6, 1.0),
    frac=st.floats(0.0, 1.0),
    warmup=st.integers(0, 50),
    decay=st.integers(0, 200),
)
def test_warmup_cosine_shape(lr, frac, warmup, decay):
    """Rises to lr during warmup, then never rises again, stays within [min_lr, lr], and is
    continuous where the phases meet (one step of warmup adds lr/W at most)."""
    min_lr = lr * frac
    s = WarmupCosineSchedule(lr, min_lr, warmup, decay)
    values = [s(t) for t in range(warmup + decay + 3)]
    assert all(0 < v <= lr * (1 + 1e-12) for v in values[:warmup])
    if warmup:
        assert math.isclose(values[warmup - 1], lr, rel_tol=1e-12)
    tail = values[warmup:]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(tail, tail[1:]))
    assert all(min_lr * (1 - 1e-12) <= v <= lr * (1 + 1e-12) for v in tail)
    assert values[-1] == min_lr


def test_bad_input():
    with pytest.raises(ValueError, match="step"):
        warmup_cosine_lr(-1, 1.0, 0.1, 2, 4)
    with pytest.raises(ValueError, match="min_lr"):
        WarmupCosineSchedule(lr=0.1, min_lr=1.0, warmup_steps=0, decay_steps=5)
    with pytest.raises(ValueError, match="warmup_steps"):
        LinearWarmupSchedule(0.1, -3)
    with pytest.raises(ValueError, match="lr"):
        ConstantSchedule(float("nan"))
    with pytest.raises(ValueError, match="lr"):
        set_lr(SGD([Parameter(np.zeros(1))], lr=0.1), -0.5)


def test_set_lr_changes_every_group_and_the_next_step():
    """SGD on gradient 1 with the schedule's value 0.25: the parameter moves by exactly 0.25."""
    a, b = Parameter(np.zeros(1)), Parameter(np.zeros(1))
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.9}], lr=0.5)
    schedule = LinearWarmupSchedule(lr=1.0, warmup_steps=4)
    assert set_lr(opt, schedule(0)) == 0.25
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]
    a.grad = b.grad = np.ones(1)
    opt.step()
    np.testing.assert_array_equal([a.data[0], b.data[0]], [-0.25, -0.25])
    adam = Adam([Parameter(np.zeros(1))])
    set_lr(adam, schedule(3))
    assert adam.param_groups[0]["lr"] == 1.0
