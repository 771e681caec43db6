"""Error bars, part 4 of the guide: an accuracy measured on n items is an estimate, and whether
one model beats another depends on how far apart the two estimates are compared with their
noise.

- **Standard error of a mean** (`stderr_of_mean`): each item gives a score x_i (1 or 0 for an
  accuracy); the reported value is their mean m, and its standard error is

      se = s / sqrt(n),   s^2 = sum_i (x_i - m)^2 / (n - 1)     (the sample variance)

  For 0/1 scores s^2 = n m (1 - m) / (n - 1), so se = sqrt(m (1 - m) / (n - 1)): the binomial
  standard error, with the n - 1 that lm-evaluation-harness also uses. A 95% interval is about
  m +- 1.96 se.
- **Paired bootstrap** (`paired_bootstrap`): two models scored on the *same* n items. Their
  difference d = mean(a) - mean(b) is far less noisy than the two error bars suggest, because
  an easy item is easy for both. Resample the n items with replacement (the same indices for
  both models), recompute d each time; the spread of those d is its standard error and their
  2.5th and 97.5th percentiles a 95% interval. Seeded, so the numbers repeat.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["PairedDifference", "paired_bootstrap", "stderr_of_mean"]


def _scores(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{what}: need a non-empty 1-D list of per-item scores, "
                         f"got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: per-item scores must be finite numbers")
    return x


def stderr_of_mean(values: Sequence[float]) -> float:
    """The standard error s / sqrt(n) of the mean of per-item scores (sample variance with
    n - 1); for 0/1 scores, the binomial sqrt(m (1 - m) / (n - 1)). NaN for a single item.

    >>> round(stderr_of_mean([1, 1, 1, 0]), 4)   # m = 3/4: sqrt(0.75 * 0.25 / 3) = 0.25
    0.25
    """
    x = _scores(values, "stderr_of_mean")
    if x.size < 2:
        return math.nan
    return float(x.std(ddof=1) / math.sqrt(x.size))


@dataclass(frozen=True)
class PairedDifference:
    """mean(a) - mean(b) over the same items, with its bootstrap error bar."""

    difference: float
    stderr: float
    low: float   # the 2.5th percentile of the resampled differences
    high: float  # the 97.5th percentile
    n_items: int
    n_resamples: int

    def as_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_resamples: int = 1000,
                     seed: int = 0) -> PairedDifference:
    """Bootstrap the difference of two models' mean scores on the same items (see the module
    docstring): resample item indices with replacement `n_resamples` times, seeded."""
    x, y = _scores(a, "paired_bootstrap a"), _scores(b, "paired_bootstrap b")
    if x.shape != y.shape:
        raise ValueError(f"paired_bootstrap: both models must be scored on the same items, "
                         f"got {x.size} and {y.size} scores")
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 2:
        raise ValueError(f"paired_bootstrap: n_resamples must be an integer >= 2, "
                         f"got {n_resamples!r}")
    d = x - y  # the per-item differences carry the pairing
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_resamples, d.size))
    means = d[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedDifference(float(d.mean()), float(means.std(ddof=1)), float(low), float(high),
                            int(d.size), int(n_resamples))
