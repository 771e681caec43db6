"""BLAS threads: how many cores a matrix product may use, chosen on purpose.

Part of the engine under everything. NumPy's matrix products run in OpenBLAS, which starts
one thread per core and lets idle threads *spin* (busy-wait) for the next call. That pays on
an idle machine for large products; for the small products of a small model, or on a
machine where another process is busy, the threads fight that process (and each other) for
the cores: on two cores with one busy neighbour, a 128 x 128 product went from 0.1 ms with
one thread to 30 ms with two. Nobody should need to know `OPENBLAS_NUM_THREADS` to avoid
that, and setting it only works before NumPy is imported. So numpylm finds NumPy's own
OpenBLAS with `ctypes` and sets its thread count at run time:

- `get_threads()`, `set_threads(n)` and the context manager `threads(n)`;
- `choose_threads(work)`, the policy (below), and `apply_thread_policy(work)`, which sets it;
- the environment setting `NUMPYLM_THREADS`: a number of threads, or `auto` (the policy).

The policy, `choose_threads(work, cores, others)`:

1. `NUMPYLM_THREADS=N` wins: N threads.
2. Another busy process takes a core: `free = cores - others`, at least 1, where `others`
   counts the runnable threads of *other* processes (`/proc/loadavg` minus our own running
   threads; the 1-minute load average where there is no `/proc`).
3. A small product (`work`, the floating-point operations of the model's typical product,
   2 M K N, below `LARGE_PRODUCT`) gets 1 thread: the gain of a second thread there is a few
   percent on an idle machine, the loss on a busy one is up to a hundredfold.
4. Otherwise (a large product, or `work` unknown) every free core.

On an idle machine with `work` unknown this is every core, as OpenBLAS would choose itself,
so nothing is slower than without the policy. Where no OpenBLAS is found (another BLAS, or
an unusual build) every function here does nothing and says so by returning None/False.
The `OPENBLAS_*` variables are never read or changed.

A second fact about OpenBLAS concerns the number of rows of a product, not its threads.
`matmul_rows(x, w)` is `x @ w` for inference's few-row products (checking a few drafted tokens,
a batch of decoding sequences, a prompt of any length), shaped the way OpenBLAS's
single-precision kernel works fastest. That kernel computes rows in groups of 4 (8 with two
threads), and a product whose row count is not such a multiple finishes its last rows in a slow
edge path: on this machine (`benchmarks/bench_rows.py`, x (M, 576) times a 576 x 960 matrix,
two threads) 2 rows take 153 us, as long as 8 (150 us), 7 take 223, 16 take 231 and 14 take
605. So a product of a few rows (up to `STACKED_ROWS`, or `CACHED_ROWS` for a weight small
enough to stay in the core's cache between rows) is made one matrix-vector product per row
instead (2 rows: 63 us), and a longer one gets up to `PAD_ROWS` zero rows appended to reach a
multiple of `ROW_MULTIPLE` times the BLAS threads; each row of a product depends on its own row
of x only, so the real rows' results are the product's, and the appended ones dropped.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["CACHED_BYTES", "CACHED_ROWS", "LARGE_PRODUCT", "OpenBLAS", "PAD_ROWS",
           "ROW_MULTIPLE", "STACKED_ROWS", "apply_thread_policy", "available_cores",
           "busy_elsewhere", "busy_recently", "choose_threads", "free_core_threads",
           "find_openblas", "get_threads", "matmul_rows", "set_threads", "threads"]

ENV = "NUMPYLM_THREADS"
# 2 M K N at which a second core starts to pay on an idle machine: about a 370^3 product
# (measured with benchmarks/bench_threads.py; below it the threads' hand-off costs more).
LARGE_PRODUCT = 1e8
# matmul_rows: up to STACKED_ROWS rows, a matrix-vector product per row (each reads the whole
# weight: from memory, for a large one, so only a few rows pay), up to CACHED_ROWS for a
# weight of at most CACHED_BYTES (read from the core's cache after the first row); more,
# padded with zero rows to a multiple of ROW_MULTIPLE per BLAS thread (4 with one, 8 with two).
STACKED_ROWS = 3
CACHED_ROWS = 7
CACHED_BYTES = 256 * 1024
ROW_MULTIPLE = 4
PAD_ROWS = 3  # at most this many zero rows (two threads: 13 rows become 16, 9 stay 9)
# (set, get) symbol names, newest builds first: NumPy >= 2 wheels bundle scipy-openblas with
# 64-bit integers and a prefix; older wheels and system libraries use the plain names.
_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


@dataclass(frozen=True)
class OpenBLAS:
    """NumPy's OpenBLAS: the file it was loaded from and its two thread functions."""

    path: str
    set_num_threads: ctypes._CFuncPtr
    get_num_threads: ctypes._CFuncPtr


def _candidate_paths() -> list[str]:
    """Files that may be NumPy's OpenBLAS, the one already loaded in this process first."""
    import numpy as np

    paths: list[str] = []
    with contextlib.suppress(OSError):  # Linux: the libraries this process has mapped
        with open("/proc/self/maps") as maps:
            for line in maps:
                name = line.rsplit(" ", 1)[-1].strip()
                if "openblas" in os.path.basename(name).lower() and name not in paths:
                    paths.append(name)
    here = os.path.dirname(np.__file__)
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*", "../numpy/.libs/*openblas*"):
        paths += sorted(glob.glob(os.path.join(here, pattern)))
    system = ctypes.util.find_library("openblas")
    if system:
        paths.append(system)
    return paths


@lru_cache(maxsize=1)
def find_openblas() -> OpenBLAS | None:
    """NumPy's OpenBLAS through ctypes, or None if it cannot be found.

    Opening a library that is already loaded returns the same copy, so setting its thread
    count changes the threads NumPy's own products use.
    """
    for path in _candidate_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            setter = getattr(library, set_name, None)
            getter = getattr(library, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return OpenBLAS(path, setter, getter)
    return None


def get_threads() -> int | None:
    """The number of threads OpenBLAS uses now, or None without OpenBLAS."""
    blas = find_openblas()
    return None if blas is None else int(blas.get_num_threads())


def set_threads(n: int) -> bool:
    """Let OpenBLAS use `n` threads from now on; False (and nothing done) without OpenBLAS."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of BLAS threads must be an integer >= 1, got {n!r}")
    blas = find_openblas()
    if blas is None:
        return False
    blas.set_num_threads(n)
    return True


@contextlib.contextmanager
def threads(n: int) -> Iterator[int | None]:
    """`with threads(1): ...` runs the block with `n` BLAS threads, then restores the count.

    Yields the count in force inside the block (None without OpenBLAS)."""
    before = get_threads()
    set_threads(n)
    try:
        yield get_threads()
    finally:
        if before is not None:
            set_threads(before)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _running_threads_of_this_process() -> int:
    running = 0
    for stat in glob.glob("/proc/self/task/*/stat"):
        with contextlib.suppress(OSError):
            with open(stat) as f:
                # The state follows the command name, which is in parentheses.
                if f.read().rsplit(")", 1)[-1].split()[0] == "R":
                    running += 1
    return running


def busy_elsewhere(samples: int = 5, interval: float = 0.01) -> float:
    """How many cores other processes keep busy right now (an estimate, >= 0).

    On Linux, the runnable count of `/proc/loadavg` minus this process's own running threads
    (so our own spinning BLAS threads do not count), the median of a few samples `interval`
    seconds apart. Elsewhere the 1-minute load average minus one (ourselves), or 0.
    """
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                runnable = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            break
        counts.append(max(0, runnable - max(1, _running_threads_of_this_process())))
        if i + 1 < samples:
            time.sleep(interval)
    if counts:
        return float(statistics.median(counts))
    with contextlib.suppress(AttributeError, OSError):
        return max(0.0, os.getloadavg()[0] - 1.0)
    return 0.0


def _from_environment() -> int | None:
    value = os.environ.get(ENV, "auto").strip().lower()
    if value in ("", "auto"):
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected a number of threads >= 1 or 'auto'")
    return int(value)


def choose_threads(work: float | None = None, *, cores: int | None = None,
                   others: float | None = None) -> int:
    """The number of BLAS threads the policy of the module docstring chooses.

    `work` is the floating-point operations of the typical matrix product (2 M K N), or None
    if unknown; `cores` and `others` default to `available_cores()` and `busy_elsewhere()`.
    `NUMPYLM_THREADS` overrides everything.
    """
    fixed = _from_environment()
    if fixed is not None:
        return fixed
    cores = available_cores() if cores is None else cores
    others = busy_elsewhere() if others is None else others
    free = max(1, cores - int(round(others)))
    if work is not None and work < LARGE_PRODUCT:
        return 1
    return min(cores, free)


_BUSY_CACHE: list[float] = [-1e9, 0.0]  # (when measured, the estimate)


def busy_recently(max_age: float = 1.0) -> float:
    """`busy_elsewhere` from one quick sample, measured at most once per `max_age` seconds:
    cheap enough to ask before every decoding step."""
    now = time.monotonic()
    if now - _BUSY_CACHE[0] > max_age:
        _BUSY_CACHE[:] = [now, busy_elsewhere(samples=1)]
    return _BUSY_CACHE[1]


def free_core_threads() -> int:
    """Threads for the work at hand: every core no other process keeps busy. On an idle
    machine every core helps, even with small products (SmolLM2's decoding on two cores: 30
    against 21 tokens/s with one; example 06's training: 4.9 against 5.9 s); when another
    process is busy, a second spinning OpenBLAS thread makes each product many times slower
    (decoding: 38 against 260 ms per token; example 06's step: 120 against 784 ms), so then
    only the free cores. The load is sampled at most once a second (`busy_recently`), cheap
    enough to ask before every decoding step. `NUMPYLM_THREADS` overrides."""
    fixed = _from_environment()
    if fixed is not None:
        return fixed
    cores = available_cores()
    return max(1, min(cores, cores - int(round(busy_recently()))))


def apply_thread_policy(work: float | None = None) -> int | None:
    """Choose the thread count (`choose_threads`) and set it; return it, None without OpenBLAS."""
    n = choose_threads(work)
    return n if set_threads(n) else None


def matmul_rows(x, w):
    """x @ w for x (M, K) and w (K, N) (a transposed view such as `W.T` is fine), computed
    the way OpenBLAS is fastest for M (see the module's docstring): one row as it is, up to
    `STACKED_ROWS` rows (`CACHED_ROWS` for a weight of at most `CACHED_BYTES`, which stays in
    the cache) as one matrix-vector product each (numpy's stacked product over
    x[:, None, :]), more rows padded with up to `PAD_ROWS` zero rows to a multiple of
    `ROW_MULTIPLE` per BLAS thread (the rows are shared among the threads in groups of that
    size; 9 rows with two threads stay 9, as 16 would cost more than the slow edge). The
    result is an (M, N) array of its own, C-ordered, so it may be updated in place."""
    import numpy as np

    M = x.shape[0]
    if M == 1:
        return x @ w
    if M <= STACKED_ROWS or (M <= CACHED_ROWS and w.nbytes <= CACHED_BYTES):
        return np.matmul(x[:, None, :], w)[:, 0]
    pad = -M % (ROW_MULTIPLE * (get_threads() or 1))
    if not pad or pad > PAD_ROWS:  # more zero rows would cost more than the slow edge
        return x @ w
    padded = np.empty((M + pad, x.shape[1]), dtype=np.result_type(x.dtype, w.dtype))
    padded[:M] = x
    padded[M:] = 0
    return (padded @ w)[:M]
