"""Error bars: the binomial standard error by hand, and the paired bootstrap's behaviour on
cases whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from numpylm.evaluation.stats import paired_bootstrap, stderr_of_mean


def test_binomial_stderr_by_hand():
    # m = 3/4 over 4 items: sqrt(m (1 - m) / (n - 1)) = sqrt(0.1875 / 3) = 0.25.
    assert stderr_of_mean([1, 1, 1, 0]) == pytest.approx(0.25)
    # m = 1/2 over 2 items: sqrt(0.25 / 1) = 0.5.
    assert stderr_of_mean([1, 0]) == pytest.approx(0.5)
    # 30 right of 100: sqrt(0.3 * 0.7 / 99) = 0.046057.
    assert stderr_of_mean([1] * 30 + [0] * 70) == pytest.approx(0.046057, abs=1e-6)
    # Real-valued scores: sample std (n - 1) over sqrt(n); 1, 2, 3, 4 has s^2 = 5/3.
    assert stderr_of_mean([1, 2, 3, 4]) == pytest.approx(math.sqrt(5 / 3) / 2)
    assert math.isnan(stderr_of_mean([1.0]))
    with pytest.raises(ValueError, match="non-empty"):
        stderr_of_mean([])


def test_paired_bootstrap_known_answers():
    rng = np.random.default_rng(0)
    b = rng.integers(0, 2, size=200).astype(float)
    # The same scores: no difference, and no spread at all.
    same = paired_bootstrap(b, b, seed=1)
    assert same.difference == 0 and same.stderr == 0 and same.low == same.high == 0
    # One model right on exactly 10 more items than the other, on top of shared noise.
    a = b.copy()
    a[np.flatnonzero(b == 0)[:10]] = 1
    d = paired_bootstrap(a, b, n_resamples=2000, seed=1)
    assert d.difference == pytest.approx(10 / 200)
    assert d.low <= d.difference <= d.high and d.low >= 0  # never worse on any item
    # The bootstrap's spread is the standard error of the mean per-item difference.
    assert d.stderr == pytest.approx(stderr_of_mean(a - b), rel=0.1)
    # Seeded: the same seed repeats, another seed resamples differently.
    assert paired_bootstrap(a, b, n_resamples=2000, seed=1) == d
    assert paired_bootstrap(a, b, n_resamples=2000, seed=2).low != d.low or \
        paired_bootstrap(a, b, n_resamples=2000, seed=2).stderr != d.stderr


def test_pairing_is_tighter_than_two_separate_error_bars():
    """Two models that mostly agree: the paired difference's error is far below the
    combined unpaired error sqrt(se_a^2 + se_b^2)."""
    rng = np.random.default_rng(3)
    b = rng.integers(0, 2, size=400).astype(float)
    a = b.copy()
    a[rng.choice(400, size=12, replace=False)] = 1 - a[rng.choice(400, size=12, replace=False)]
    paired = paired_bootstrap(a, b, seed=0).stderr
    unpaired = math.hypot(stderr_of_mean(a), stderr_of_mean(b))
    assert paired < unpaired / 2


def test_paired_bootstrap_refuses_unpaired_input():
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap([1, 0], [0, 1], n_resamples=1)
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([1, float("nan")], [0, 1])
