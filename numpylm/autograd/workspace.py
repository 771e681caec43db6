"""Scratch arrays reused from one training step to the next.

Memory fresh from the operating system costs a page fault for every 4 KiB page the first
time it is written, and numpy's allocator hands large arrays back to the system when they
are freed. A fused op that allocates a few arrays of several MB per call (the LSTM's gates
over all time steps, say) can then spend a third of its time in page faults, once per
training step, although it needs the same shapes every step.

`empty(shape, dtype)` is `np.empty` that first looks for an array of that shape it handed
out before and that nothing uses any more. "Nothing uses it" is read from the reference
count: the pool's own list is the only holder left, no tensor, no saved-for-backward
closure and no view (a view keeps its base array alive, so it counts as a reference too).
Such an array can be reused without anyone noticing. The pool keeps a few arrays per
shape; everything else falls back to a plain `np.empty` (as does everything on an
interpreter without reference counts).
"""
from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

MIN_BYTES = 1 << 18      # smaller arrays come from the heap's free lists without page faults
PER_SHAPE = 4            # arrays kept per (shape, dtype): enough for a few layers in flight
MAX_BYTES = 1 << 30      # and no more than this in all

_pool: dict[tuple, list[np.ndarray]] = {}
_pooled_bytes = 0
_lock = threading.Lock()  # two threads must not both take the same free array


def _references(array: np.ndarray) -> int:
    return sys.getrefcount(array)


def _free_count() -> int:
    """The reference count `_references` reports for a pooled array nobody else holds:
    measured rather than assumed, since interpreters count temporary references differently."""
    probe = [np.empty(0)]
    return _references(probe[0])


_COUNTED = hasattr(sys, "getrefcount")
_FREE = _free_count() if _COUNTED else 0


def empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array, like `np.empty(shape, dtype)`, reused when possible."""
    global _pooled_bytes
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if nbytes < MIN_BYTES or not _COUNTED:
        return np.empty(shape, dtype)
    with _lock:  # the array returned is referenced before the lock is released
        arrays = _pool.setdefault((shape, dtype.str), [])
        for i in range(len(arrays)):
            if _references(arrays[i]) <= _FREE:
                return arrays[i]
        array = np.empty(shape, dtype)
        if len(arrays) < PER_SHAPE and _pooled_bytes + nbytes <= MAX_BYTES:
            arrays.append(array)
            _pooled_bytes += nbytes
        return array


def clear() -> None:
    """Forget every pooled array (arrays still in use stay valid; they are just not reused)."""
    global _pooled_bytes
    with _lock:
        _pool.clear()
        _pooled_bytes = 0
