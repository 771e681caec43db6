"""Hypothesis strategies for property-testing your own ops, as numpylm tests its own.

    from hypothesis import given
    from numpylm.testing import broadcast_pair, arrays_for
    from numpylm import gradcheck

    @given(broadcast_pair())
    def test_my_op(pair):
        a, b = pair
        gradcheck(my_op, a, b)

Shapes include size-1 axes and missing leading axes, the cases where broadcasting bugs
hide. Hypothesis is imported when a strategy is first built, so `import numpylm` never
needs it.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _st():
    from hypothesis import strategies as st  # lazily: hypothesis is a test-only dependency
    return st


def shapes(min_dims: int = 1, max_dims: int = 3, min_side: int = 1,
           max_side: int = 4) -> Any:
    """Array shapes such as (3,), (1, 4), (2, 1, 3)."""
    st = _st()
    return st.lists(st.integers(min_side, max_side), min_size=min_dims,
                    max_size=max_dims).map(tuple)


def arrays_for(shape: tuple[int, ...], low: float = -2.0, high: float = 2.0,
               min_gap: float = 0.0, dtype: Any = np.float64) -> Any:
    """float arrays of `shape` with entries in [low, high].

    `min_gap > 0` keeps all entries at least that far apart: no ties (for max) and, with a
    range straddling 0 and an offset, no entry sitting on a kink. Use `assume()` in the
    test for domain conditions that depend on the op.
    """
    st = _st()
    size = int(np.prod(shape, dtype=np.int64))
    values = st.lists(st.floats(low, high, allow_nan=False, allow_infinity=False),
                      min_size=size, max_size=size)
    if min_gap > 0:
        def spread(v: list[float]) -> bool:
            s = np.sort(np.asarray(v))
            return size < 2 or bool(np.min(np.diff(s)) >= min_gap)
        values = values.filter(spread)
    return values.map(lambda v: np.asarray(v, dtype=dtype).reshape(shape))


def array(min_dims: int = 1, max_dims: int = 3, low: float = -2.0, high: float = 2.0,
          min_gap: float = 0.0, max_side: int = 4) -> Any:
    """A float64 array of a random shape (a shape strategy and a values strategy in one)."""
    return shapes(min_dims, max_dims, max_side=max_side).flatmap(
        lambda s: arrays_for(s, low, high, min_gap))


def broadcast_shapes(shape: tuple[int, ...]) -> Any:
    """Shapes that broadcast with `shape`: some leading axes dropped, some sides set to 1."""
    st = _st()
    def shrink(drop_and_ones: tuple[int, list[bool]]) -> tuple[int, ...]:
        drop, ones = drop_and_ones
        kept = shape[drop:]
        return tuple(1 if one else n for n, one in zip(kept, ones))
    return st.tuples(st.integers(0, len(shape)),
                     st.lists(st.booleans(), min_size=len(shape), max_size=len(shape))
                     ).map(shrink)


def broadcast_pair(low: float = -2.0, high: float = 2.0, max_dims: int = 3) -> Any:
    """Two float64 arrays whose shapes broadcast together (either may be the smaller)."""
    st = _st()
    def build(full: tuple[int, ...]) -> Any:
        return st.tuples(broadcast_shapes(full), st.booleans()).flatmap(
            lambda sb: st.tuples(arrays_for(full if not sb[1] else sb[0], low, high),
                                 arrays_for(sb[0] if not sb[1] else full, low, high)))
    return shapes(1, max_dims).flatmap(build)
