"""Decoding states, part 3 of the guide: what a model must remember between one generated token
and the next (see the contract in `numpylm.models.base`).

Two kinds of memory cover every family but the recurrent ones (whose state is their hidden
state, kept by `RNNLM` itself):

- `WindowState`: the last n ids of each sequence. An n-gram model, the bigram (n = 1) and the
  MLP (n = its context) predict from nothing else, so nothing else is kept.
- `TransformerState` with `transformer_step`: a KV cache (`numpylm.models.kv_cache`) plus the
  bookkeeping that makes left padding invisible. Prompts of different lengths are run as one
  batch by padding them on the left; an attention mask hides the padding from every real
  token, and positions count real tokens only, so each prompt gets exactly the logits it
  would get alone. When a sequence fills the model's whole context, the cache is rebuilt from
  the last `block_size` tokens of each sequence (a sliding window), which is what running the
  model without a cache on the cropped sequence does.

Speculative decoding feeds tokens it may take back: `TransformerState.truncate` forgets the
cached columns after a given one (the keys and values of earlier tokens never depend on later
ones, so nothing else changes), and `snapshot_state` copies any state whole, the way back for
states that cannot be cut (a recurrent hidden state has folded the rejected tokens in).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np

__all__ = ["TransformerState", "WindowState", "prefix_of", "select_rows", "snapshot_state",
           "start_from_prefixes", "transformer_step"]


def snapshot_state(state: Any) -> Any:
    """An independent copy of any decoding state (restoring it undoes every later step).

    It costs a copy of the whole state: a few vectors for a recurrent network or a window,
    but the full KV cache buffers (n_layer x B x H x block_size x D, twice) for a transformer,
    whose `truncate` is free instead.
    """
    return copy.deepcopy(state)


class WindowState:
    """The last `n` ids of each of `batch_size` sequences, `fill` where there are fewer."""

    def __init__(self, batch_size: int, n: int, fill: int) -> None:
        self.window = np.full((batch_size, n), fill, dtype=np.int64)
        self.seen = np.zeros(batch_size, dtype=np.int64)  # real ids fed so far, per row

    @property
    def batch_size(self) -> int:
        return self.window.shape[0]

    def push(self, ids: np.ndarray, mask: np.ndarray | None) -> None:
        """Append ids (B, T) to every row, leaving out the padding where `mask` is False."""
        n = self.window.shape[1]
        if mask is None:
            self.window = np.concatenate([self.window, ids], axis=1)[:, ids.shape[1]:]
            self.seen += ids.shape[1]
            return
        for row in range(ids.shape[0]):
            real = ids[row][mask[row]]
            self.window[row] = np.concatenate([self.window[row], real])[-n:] if n else []
            self.seen[row] += len(real)


class TransformerState:
    """A KV cache with the bookkeeping of left padding and of the sliding window.

    `cache` is any object with `length`, `reset()` and the append/advance protocol of
    `KVCache`; `capacity` is the most tokens it holds (the model's block_size).
    """

    def __init__(self, cache: Any, capacity: int) -> None:
        B = cache.batch_size
        self.cache, self.capacity = cache, capacity
        self.real = np.zeros((B, capacity), dtype=bool)  # True at cached real tokens
        self.lengths = np.zeros(B, dtype=np.int64)  # real tokens of each row in the cache
        self.padded = False  # whether any cached column is padding
        self.history: list[list[int]] = [[] for _ in range(B)]  # every real token, per row

    @property
    def batch_size(self) -> int:
        return len(self.history)

    def truncate(self, length: int) -> None:
        """Keep the first `length` cached columns and forget the rest, with their real
        tokens' history, as if the later tokens had never been fed.

        Only valid while the window has not slid since those tokens were fed (a slide
        rebuilds the cache, so its columns no longer line up with what was fed).
        """
        L = self.cache.length
        if not isinstance(length, (int, np.integer)) or not 0 <= length <= L:
            raise ValueError(f"TransformerState.truncate: length must be an integer in "
                             f"[0, {L}] (the cached columns), got {length!r}")
        if self.padded:  # real tokens forgotten, per row
            dropped = self.real[:, length:L].sum(axis=1)
            for history, n in zip(self.history, dropped.tolist()):
                del history[len(history) - n:]
        else:  # no padding: every forgotten column is a real token of every row
            dropped = int(L - length)
            for history in self.history:
                del history[len(history) - dropped:]
        self.real[:, length:] = False
        self.lengths -= dropped
        self.cache.truncate(int(length))
        if self.padded:  # cutting columns can take padding away, never add it
            self.padded = bool((~self.real[:, :length]).any())


def select_rows(state: Any, rows: np.ndarray) -> None:
    """Make row b of the batch a copy of row `rows[b]`, in place (beam search keeps the best
    beams: a good one may be continued twice, a poor one dropped).

    Knows the three kinds of state: a KV cache with its bookkeeping, a window of ids, and a
    recurrent hidden state (arrays (num_layers, B, H), and the last logits (B, V)).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(state, TransformerState):
        L = state.cache.length
        for buf in (state.cache.k, state.cache.v):  # (n_layer, B, H, capacity, D)
            buf[:, :, :, :L] = buf[:, rows, :, :L]
        state.real = state.real[rows]
        state.lengths = state.lengths[rows]
        state.history = [list(state.history[r]) for r in rows]
    elif isinstance(state, WindowState):
        state.window, state.seen = state.window[rows], state.seen[rows]
    elif hasattr(state, "hidden") and hasattr(state, "last_logits"):
        from numpylm.autograd.tensor import Tensor
        hidden = state.hidden
        if isinstance(hidden, tuple):
            state.hidden = tuple(Tensor(h.data[:, rows]) for h in hidden)
        elif hidden is not None:
            state.hidden = Tensor(hidden.data[:, rows])
        if state.last_logits is not None:
            state.last_logits = state.last_logits[rows]
    else:
        raise ValueError(f"select_rows: cannot reorder a {type(state).__name__} (known: "
                         f"TransformerState, WindowState, a recurrent state)")


def prefix_of(state: TransformerState, row: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Row `row`'s real tokens and copies of their keys and values, each (n_layer, H, n, D):
    what `start_from_prefixes` puts back. Only before the window has slid (a slide rebuilds
    the cache)."""
    cols = np.flatnonzero(state.real[row, :state.cache.length])
    if len(cols) != len(state.history[row]):
        raise ValueError("prefix_of: the window has slid; the cache no longer holds every "
                         "token fed")
    k = state.cache.k[:, row][:, :, cols]
    v = state.cache.v[:, row][:, :, cols]
    return list(state.history[row]), k, v


def start_from_prefixes(state: TransformerState,
                        prefixes: "list[tuple[list[int], np.ndarray, np.ndarray] | None]") -> None:
    """Make an empty batch state as if row b had been fed prefixes[b] (from `prefix_of`; None:
    nothing), the shorter ones padded on the left, so that one `step` continues every row
    from its own prefix. Keys and values depend only on a token and those before it, and a
    position counts real tokens only, so a prefix's cached keys and values are the ones the
    row would compute itself."""
    if state.cache.length:
        raise ValueError("start_from_prefixes: the state must be empty")
    if len(prefixes) != state.batch_size:
        raise ValueError(f"start_from_prefixes: {len(prefixes)} prefixes for a batch of "
                         f"{state.batch_size}")
    P = max((len(p[0]) for p in prefixes if p is not None), default=0)
    if P == 0:
        return
    if P > state.capacity:
        raise ValueError(f"start_from_prefixes: a prefix of {P} tokens exceeds the state's "
                         f"{state.capacity}")
    state.cache.reserve(P)
    for b, prefix in enumerate(prefixes):
        if prefix is None or not len(prefix[0]):
            continue
        ids, k, v = prefix
        n = len(ids)
        state.cache.k[:, b, :, P - n:P] = k
        state.cache.v[:, b, :, P - n:P] = v
        state.real[b, P - n:P] = True
        state.lengths[b] = n
        state.history[b] = list(ids)
    state.cache.advance(P)
    state.padded = bool((~state.real[:, :P]).any())


# run(ids (B, T), positions (B, T), attention_mask (B, L) or None) -> logits (B, V) of the
# last column, appending the new keys and values to the state's cache.
Runner = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


def transformer_step(state: TransformerState, ids: np.ndarray, mask: np.ndarray | None,
                     run: Runner) -> np.ndarray:
    """Feed ids (B, T) (with padding mask, or None) through `run`; logits (B, V) of the last
    column. Ids and mask are already checked (`numpylm.models.base.check_step_ids`)."""
    B, T = ids.shape
    if mask is None:
        for history, row in zip(state.history, ids.tolist()):
            history.extend(row)
    else:
        for history, row, real in zip(state.history, ids.tolist(), mask.tolist()):
            history.extend(t for t, r in zip(row, real) if r)
    if state.cache.length + T > state.capacity:
        return _refill(state, run)  # the context is full: slide the window
    L0 = state.cache.length
    if mask is None:  # no padding (decoding's usual case): T real tokens in every row
        state.real[:, L0:L0 + T] = True
        positions = state.lengths[:, None] + np.arange(T)
        state.lengths += T
    else:
        state.real[:, L0:L0 + T] = mask
        state.padded = True
        # Positions count real tokens only; padding gets position 0 (never attended to).
        positions = np.maximum(state.lengths[:, None] + np.cumsum(mask, axis=1) - 1, 0)
        state.lengths += mask.sum(axis=1)
    attention = state.real[:, :L0 + T] if state.padded else None
    return run(ids, positions, attention)


def _refill(state: TransformerState, run: Runner) -> np.ndarray:
    """Reset the cache and run the last `capacity` real tokens of every row, left-padded."""
    windows = [h[-state.capacity:] for h in state.history]
    L = max(map(len, windows))
    B = len(windows)
    ids = np.zeros((B, L), dtype=np.int64)
    mask = np.zeros((B, L), dtype=bool)
    for i, w in enumerate(windows):
        ids[i, L - len(w):] = w
        mask[i, L - len(w):] = True
    state.cache.reset()
    state.real[:] = False
    state.lengths[:] = 0
    state.padded = False
    for history, window in zip(state.history, windows):  # transformer_step adds them back
        del history[len(history) - len(window):]
    return transformer_step(state, ids, None if mask.all() else mask, run)
