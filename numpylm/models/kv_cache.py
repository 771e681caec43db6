"""The KV cache, part 3 of the guide: why generating one token need not redo the whole prompt.

In causal attention, the keys and values of a token depend only on that token and the ones
before it, so they never change once computed. Generating token t + 1 needs the query of
token t only, attending to the keys and values of tokens 0..t. A cache keeps those keys and
values: the prompt is run once (filling the cache), then each new token costs one position
of work per layer instead of t.

The buffers are allocated once, at full length, so appending is a copy into place rather
than a growing concatenation (which would copy the whole cache every token).
"""
from __future__ import annotations

from typing import Any

import numpy as np


class KVCache:
    """Keys and values of every layer for `batch_size` sequences of up to `max_length` tokens.

    Buffers have shape (n_layer, B, H, capacity, D). A forward pass makes room for its new
    tokens (`reserve`), appends their keys and values layer by layer (`append`), then moves
    the shared position on (`advance`). The capacity starts small and doubles when a token
    would not fit, up to `max_length`: a model with an 8192-token context does not hold 8192
    positions per sequence for a chat of 300 tokens (SmolLM2: 377 MB against 14 MB), and a
    copy of the cache (`copy.deepcopy`, to score several continuations of one context) copies
    what is there, not the whole context. Doubling keeps the copying to at most about twice
    the final size in total.
    """

    INITIAL = 256  # positions allocated at first

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_length: int,
                 head_size: int, dtype: Any = np.float32) -> None:
        self._max_length = int(max_length)
        shape = (n_layer, batch_size, n_head, min(self._max_length, self.INITIAL), head_size)
        self.k = np.zeros(shape, dtype=dtype)
        self.v = np.zeros(shape, dtype=dtype)
        self.length = 0  # tokens stored so far, the same for every layer and sequence

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def capacity(self) -> int:
        """Positions allocated now (<= max_length)."""
        return self.k.shape[3]

    def reserve(self, T: int) -> None:
        """Make room for `T` more tokens (growing the buffers if needed); a `ValueError` if
        they would exceed `max_length`."""
        end = self.length + T
        if end > self._max_length:
            raise ValueError(f"KVCache: {self.length} cached + {T} new tokens exceed its "
                             f"max_length {self._max_length}")
        if end <= self.capacity:
            return
        size = min(self._max_length, max(2 * self.capacity, end))
        for name in ("k", "v"):
            old = getattr(self, name)
            new = np.zeros(old.shape[:3] + (size,) + old.shape[4:], dtype=old.dtype)
            new[:, :, :, :self.length] = old[:, :, :, :self.length]
            setattr(self, name, new)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def append(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store layer `layer`'s keys and values (B, H, T, D) of the new tokens after the
        cached ones; return views of all of them, (B, H, length + T, D)."""
        T = k.shape[2]
        end = self.length + T
        self.reserve(T)
        _, B, H, _, D = self.k.shape
        if k.ndim != 4 or k.shape[:2] != (B, H) or k.shape[3] != D or v.shape != k.shape:
            raise ValueError(f"KVCache: keys {k.shape} and values {v.shape} do not fit a "
                             f"cache for batch {B}, {H} heads of size {D}: expected "
                             f"({B}, {H}, T, {D})")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, T: int) -> None:
        """Count `T` more tokens as cached (after every layer has appended them)."""
        self.length += T

    def truncate(self, length: int) -> None:
        """Forget every token after the first `length` (speculative decoding takes back the
        drafted tokens the target rejected). Keys and values depend only on the tokens up to
        their own, so the kept ones stay valid; the buffers beyond are simply overwritten later."""
        if not isinstance(length, (int, np.integer)) or not 0 <= length <= self.length:
            raise ValueError(f"KVCache.truncate: length must be an integer in [0, {self.length}] "
                             f"(the tokens cached), got {length!r}")
        self.length = int(length)

    def reset(self) -> None:
        """Forget everything (the buffers are kept for reuse)."""
        self.length = 0
