"""Attention through a block table, part 3 of the guide: how a sequence's queries meet keys that
are scattered over a shared pool, without copying them out first.

A sequence's keys lie in the pool in **runs** of consecutive slots (`PagedKVCache.runs`). The
readable way to attend is to copy the runs into one array and take the softmax as usual
(`attend_gathered`). The fast way (`attend_runs`) reads each run in place, as a view, and
combines the runs with the **online softmax** (Milakov & Gimelshein 2018, the rule inside
FlashAttention): for scores s split into pieces r, with

    m_r = max_j s_rj,   l_r = sum_j exp(s_rj - m_r),   o_r = sum_j exp(s_rj - m_r) v_j,

the whole softmax(s) V is  sum_r exp(m_r - m) o_r / sum_r exp(m_r - m) l_r  with m = max_r m_r,
exactly (up to rounding). The allocator keeps most sequences in one run, where this is the
plain softmax over a view. The tests prove both equal to a contiguous `KVCache`.

Decoding is the common case: one new token per sequence, its keys in one run, no mask (the
newest token sees every key). `attend_newest` does that case for a whole batch in one call,
five numpy calls a sequence (as `numpylm.models.llama_inference` does for one sequence), with
the 1 / sqrt(D) scale applied once to every query row instead of once per sequence; the
general functions above stay for prompt chunks and fragmented sequences.

Both take one sequence's queries q (n, H, D) at positions `start`..`start + n - 1`, whose keys
(and those before them) are already in the pool, and return (n, H * D). Query i sees key j when
j <= start + i (causal); grouped-query attention stacks the G = H / Hkv query heads of a
key-value head as G n rows, so each key-value head's keys are read once, never repeated.
"""
from __future__ import annotations

import math

import numpy as np

from numpylm.serving.paged_cache import PagedKVCache

__all__ = ["attend_gathered", "attend_newest", "attend_runs"]


def _grouped(q: np.ndarray, n_kv: int) -> np.ndarray:
    """q (n, H, D) -> (Hkv, G n, D), scaled by 1 / sqrt(D): row g n + i is query i's head
    h = kv G + g (heads of one key-value group are adjacent, as `repeat_kv` repeats them)."""
    n, H, D = q.shape
    G = H // n_kv
    return (q.reshape(n, n_kv, G, D).transpose(1, 2, 0, 3).reshape(n_kv, G * n, D)
            * (1.0 / math.sqrt(D)))


def _ungrouped(out: np.ndarray, n: int) -> np.ndarray:
    """(Hkv, G n, D) -> (n, H D), the inverse of `_grouped`'s layout."""
    n_kv, Gn, D = out.shape
    G = Gn // n
    return out.reshape(n_kv, G, n, D).transpose(2, 0, 1, 3).reshape(n, n_kv * G * D)


def _visible(start: int, n: int, G: int, first: int, count: int) -> np.ndarray | None:
    """(G n, count) True where query row (g, i) at position start + i may see the keys at
    positions first..first + count - 1; None when it sees them all (no mask needed)."""
    if first + count - 1 <= start:  # every key is at or before the first query
        return None
    keys = np.arange(first, first + count)
    seen = keys[None, :] <= np.arange(start, start + n)[:, None]  # (n, count)
    return np.tile(seen, (G, 1))


def attend_gathered(cache: PagedKVCache, seq, layer: int, q: np.ndarray,
                    start: int) -> np.ndarray:
    """The readable version: copy `seq`'s keys and values of `layer` out of the pool through
    its block table (`PagedKVCache.gather`), then softmax(q K^T / sqrt(D) + causal mask) V."""
    k, v = cache.gather(seq)
    k, v = k[layer], v[layer]  # (Hkv, L, D)
    n, n_kv = q.shape[0], k.shape[0]
    qg = _grouped(q, n_kv)
    s = np.matmul(qg, np.swapaxes(k, -1, -2))  # (Hkv, G n, L)
    mask = _visible(start, n, q.shape[1] // n_kv, 0, k.shape[1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return _ungrouped(np.matmul(p, v), n)


def attend_runs(cache: PagedKVCache, runs: list[tuple[int, int, int]], layer: int,
                q: np.ndarray, start: int) -> np.ndarray:
    """The fast version: each run of `runs` (`cache.runs(seq)`: first position, first slot,
    tokens) read in place from the pool as a view, the runs combined by the online softmax."""
    k_pool, v_pool = cache.k[layer], cache.v[layer]  # (Hkv, slots, D)
    n, n_kv = q.shape[0], k_pool.shape[0]
    G = q.shape[1] // n_kv
    qg = _grouped(q, n_kv)
    m = l = o = None
    for first, slot, count in runs:
        k = k_pool[:, slot:slot + count]  # views: nothing copied
        v = v_pool[:, slot:slot + count]
        s = np.matmul(qg, np.swapaxes(k, -1, -2))  # (Hkv, G n, count)
        mask = _visible(start, n, G, first, count)
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        m_r = s.max(axis=-1, keepdims=True)
        if mask is not None:  # a row that sees nothing of this run: weight 0, not nan
            m_r = np.where(np.isneginf(m_r), -np.inf, m_r)
            s -= np.where(np.isneginf(m_r), 0.0, m_r)
        else:
            s -= m_r
        np.exp(s, out=s)
        l_r = s.sum(axis=-1, keepdims=True)
        o_r = np.matmul(s, v)  # (Hkv, G n, D)
        if m is None:  # the first run, and with one run the only one: the plain softmax
            m, l, o = m_r, l_r, o_r
            continue
        # Rescale both partial sums to the larger maximum: exp(m_r - m) <= 1, no overflow.
        m_new = np.maximum(m, m_r)
        a, b = np.exp(m - m_new), np.exp(m_r - m_new)
        l, o, m = a * l + b * l_r, a * o + b * o_r, m_new
    return _ungrouped(o / l, n)


def attend_newest(cache: PagedKVCache, layer: int, q: np.ndarray, out: np.ndarray,
                  spans: list[tuple[int, int, int]]) -> None:
    """The decoding case: for each (row, first slot, tokens) of `spans`, query row `row` of
    q (N, H, D), one new token whose keys (itself included) are the `tokens` consecutive
    slots from `first slot` of `layer`'s pool, attends over them all (no mask: the newest
    token sees every key) and writes (H D,) into row `row` of `out` (N, H D). The same
    numbers as `attend_runs` over a one-run sequence with n = 1."""
    k_pool, v_pool = cache.k[layer], cache.v[layer]  # (Hkv, slots, D)
    n_kv, D = k_pool.shape[0], k_pool.shape[2]
    G = q.shape[1] // n_kv
    if not spans:
        return
    # Row i's heads as (Hkv, G, D), as `_grouped` with n = 1; scaled once for every row.
    qg = q[[r for r, _, _ in spans]].reshape(len(spans), n_kv, G, D)
    qg *= 1.0 / math.sqrt(D)
    for (row, slot, count), qb in zip(spans, qg):
        s = np.matmul(qb, np.swapaxes(k_pool[:, slot:slot + count], -1, -2))  # (Hkv, G, L)
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= np.add.reduce(s, axis=-1, keepdims=True)
        np.matmul(s, v_pool[:, slot:slot + count], out=out[row].reshape(n_kv, G, D))
