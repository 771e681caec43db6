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

`split(n, fn)` is the other half of a fused op's workspace: the cores. NumPy runs an
element-wise pass (a tanh over 4 M numbers, say) on one core, with the interpreter lock let
go inside the loop; so a pass cut into one contiguous part per core, each part run by its
own thread, takes about 1/cores of the time on an idle machine (PyTorch runs its element-wise
ops on every core too). `NUMPYLM_THREADS` caps the threads; small passes run inline.
"""
from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

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


SPLIT_MIN = 1 << 16      # elements below which a pass is not worth handing to threads
_executor: ThreadPoolExecutor | None = None


def cores() -> int:
    """Threads for element-wise passes: the cores this process may run on, or
    `NUMPYLM_THREADS` when it is set to a number."""
    fixed = os.environ.get("NUMPYLM_THREADS", "")
    if fixed.isdigit() and int(fixed) > 0:
        return int(fixed)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def split(n: int, fn: Callable[[int, int], None], align: int = 1) -> None:
    """Run `fn(start, stop)` over [0, n) cut into one contiguous part per core (each part a
    multiple of `align` long, but the last), in threads; inline when n is small or there is
    one core. `fn` must write only its own part."""
    global _executor
    parts = min(cores(), max(1, n // SPLIT_MIN))
    if parts < 2:
        fn(0, n)
        return
    step = -(-n // (parts * align)) * align
    bounds = [(a, min(a + step, n)) for a in range(0, n, step)]
    with _lock:
        if _executor is None or _executor._max_workers < len(bounds) - 1:
            if _executor is not None:  # more cores than before: a larger pool
                _executor.shutdown(wait=False)
            _executor = ThreadPoolExecutor(max_workers=len(bounds) - 1,
                                           thread_name_prefix="numpylm-split")
        executor = _executor
    futures = [executor.submit(fn, a, b) for a, b in bounds[1:]]
    fn(*bounds[0])  # this thread takes the first part
    for f in futures:
        f.result()  # re-raises a part's error here
