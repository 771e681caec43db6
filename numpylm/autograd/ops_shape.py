"""Ops that move numbers around without changing them: reshape, transpose, indexing,
concatenation, stacking, selection and embedding lookup.

Their gradients move the upstream gradient back to where each number came from. When one
input element feeds several outputs (a repeated index, an embedding row used twice), the
contributions add up, which is why the scatter uses `np.add.at` rather than assignment.
"""
from __future__ import annotations

import numpy as np

from numpylm.autograd.op import op
from numpylm.autograd.tensor import Tensor


@op
def reshape(x, shape):
    x = np.asarray(x)
    try:
        y = x.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape an array of shape {x.shape} "
                         f"into shape {tuple(shape)}") from None
    def backward(g):  # a reshape only renames positions: put them back
        return (g.reshape(x.shape),)
    return y, backward


@op
def transpose(x, axes=None):
    x = np.asarray(x)
    perm = tuple(range(x.ndim))[::-1] if axes is None else tuple(a % x.ndim for a in axes)
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of {x.ndim} axes")
    inverse = tuple(np.argsort(perm))
    def backward(g):  # undo the permutation
        return (np.transpose(g, inverse),)
    return np.transpose(x, perm), backward


def _is_advanced(index) -> bool:
    """Whether numpy indexing with `index` may select one element more than once."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (np.ndarray, list)) for p in parts)


def _clean_index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(p.data if isinstance(p, Tensor) else p for p in index)
    return index


def getitem(x, index):
    """`x[index]` for slices, integers, None/Ellipsis and integer or boolean arrays."""
    return _getitem(x, _clean_index(index))


@op(name="getitem")
def _getitem(x, index):
    x = np.asarray(x)
    y = x[index]
    def backward(g):
        gx = np.zeros_like(x, dtype=g.dtype)
        if _is_advanced(index):
            np.add.at(gx, index, g)  # repeated indices must add up, not overwrite
        else:
            gx[index] = g  # basic indexing selects each element at most once
        return gx, None
    return y, backward


@op
def concatenate(xs, axis=0):
    xs = [np.asarray(x) for x in xs]
    y = np.concatenate(xs, axis=axis)
    bounds = np.cumsum([x.shape[axis] for x in xs])[:-1]
    def backward(g):  # each input gets back its own slice
        return (np.split(g, bounds, axis=axis),)
    return y, backward


@op
def stack(xs, axis=0):
    xs = [np.asarray(x) for x in xs]
    y = np.stack(xs, axis=axis)
    def backward(g):  # input i gets back the i-th slice along the new axis
        return ([np.take(g, i, axis=axis) for i in range(len(xs))],)
    return y, backward


def split(x: Tensor, indices_or_sections, axis: int = 0) -> list[Tensor]:
    """Split like `np.split`; composed from slicing, so it needs no rule of its own."""
    n = x.shape[axis]
    if isinstance(indices_or_sections, int):
        if n % indices_or_sections:
            raise ValueError(f"split: axis {axis} of length {n} does not divide "
                             f"into {indices_or_sections} equal parts")
        step = n // indices_or_sections
        bounds = list(range(0, n + 1, step))
    else:
        bounds = [0, *indices_or_sections, n]
    pieces = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, stop)
        pieces.append(getitem(x, tuple(index)))
    return pieces


@op
def where(condition, a, b):
    """`a` where `condition` holds, else `b` (all three broadcast together)."""
    condition = np.asarray(condition, dtype=bool)
    def backward(g):  # the gradient goes to whichever side was chosen
        return None, (lambda: np.where(condition, g, 0)), (lambda: np.where(condition, 0, g))
    return np.where(condition, a, b), backward


def masked_fill(x: Tensor, mask, value: float) -> Tensor:
    """`x` with `value` wherever `mask` is true (e.g. -inf above the causal diagonal)."""
    mask = mask.data if isinstance(mask, Tensor) else mask
    return where(mask, value, x)


@op
def embedding(ids, weight):
    """Rows of `weight` (V, C) picked by integer `ids` of any shape: output ids.shape + (C,)."""
    ids = np.asarray(ids)
    weight = np.asarray(weight)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must have shape (V, C), got {weight.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
        bad = ids[(ids < 0) | (ids >= weight.shape[0])].flat[0]
        raise ValueError(f"embedding: id {bad} is outside the vocabulary "
                         f"[0, {weight.shape[0]})")
    def backward(g):  # each row's gradient is the sum of the gradients of its lookups
        gw = np.zeros_like(weight, dtype=g.dtype)
        flat = ids.ravel()
        if flat.size:
            # Sum the gradient rows of equal ids as contiguous runs after sorting by id
            # (the same sums as np.add.at(gw, ids, g), several times faster).
            order = np.argsort(flat, kind="stable")
            sorted_ids = flat[order]
            starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
            rows = g.reshape(-1, weight.shape[1])[order]
            gw[sorted_ids[starts]] = np.add.reduceat(rows, starts, axis=0)
        return None, gw
    return weight[ids], backward


@op
def astype(x, dtype):
    """A dtype cast; the gradient is cast back by `@op`."""
    def backward(g):  # d/dx x = 1
        return (g,)
    return np.asarray(x).astype(dtype), backward
