"""numpylm.blas: NumPy's OpenBLAS found through ctypes, its thread count set at run time, and
the policy that chooses the count (see the module docstring)."""
from __future__ import annotations

import numpy as np
import pytest

from numpylm import blas


@pytest.fixture
def openblas():
    found = blas.find_openblas()
    if found is None:
        pytest.skip("this NumPy does not use an OpenBLAS that exports its thread functions")
    before = blas.get_threads()
    yield found
    blas.set_threads(before)


def test_set_and_get_threads_round_trip(openblas):
    assert blas.set_threads(1) is True
    assert blas.get_threads() == 1
    a = np.ones((64, 64))
    assert (a @ a == 64).all()  # products still run with the count changed
    assert blas.set_threads(2) is True
    assert blas.get_threads() == min(2, openblas.get_num_threads())


def test_the_context_manager_restores_the_count(openblas):
    blas.set_threads(2)
    before = blas.get_threads()
    with blas.threads(1) as inside:
        assert inside == 1 == blas.get_threads()
    assert blas.get_threads() == before
    with pytest.raises(RuntimeError):
        with blas.threads(1):
            raise RuntimeError("the count is restored on the way out of an error too")
    assert blas.get_threads() == before


def test_the_library_is_the_one_numpy_loaded(openblas):
    import os
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("no /proc: the loaded libraries cannot be listed")
    with open("/proc/self/maps") as maps:
        assert openblas.path in maps.read()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_a_thread_count_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="BLAS threads"):
        blas.set_threads(bad)


def test_without_openblas_everything_does_nothing(monkeypatch):
    monkeypatch.setattr(blas, "find_openblas", lambda: None)
    assert blas.get_threads() is None
    assert blas.set_threads(2) is False
    with blas.threads(1) as inside:
        assert inside is None
    monkeypatch.setenv("NUMPYLM_THREADS", "1")
    assert blas.apply_thread_policy() is None


@pytest.mark.parametrize("work, cores, others, expected", [
    (None, 2, 0, 2),      # idle, workload unknown: every core, as OpenBLAS itself would
    (None, 2, 1, 1),      # one busy neighbour on two cores: one thread
    (1e9, 8, 3, 5),       # a large product takes the free cores
    (1e9, 2, 5, 1),       # never fewer than one
    (1e6, 8, 0, 1),       # a small product: one thread even on an idle machine
    (2 * 64**3, 2, 0, 1), # a small model's product (B*T x 64 @ 64 x 64)
])
def test_the_policy(monkeypatch, work, cores, others, expected):
    monkeypatch.delenv("NUMPYLM_THREADS", raising=False)
    assert blas.choose_threads(work, cores=cores, others=others) == expected


def test_the_environment_setting_wins(monkeypatch):
    monkeypatch.setenv("NUMPYLM_THREADS", "3")
    assert blas.choose_threads(1e3, cores=2, others=2) == 3
    monkeypatch.setenv("NUMPYLM_THREADS", "auto")
    assert blas.choose_threads(1e3, cores=2, others=0) == 1
    monkeypatch.setenv("NUMPYLM_THREADS", "many")
    with pytest.raises(ValueError, match="NUMPYLM_THREADS='many'"):
        blas.choose_threads()


def test_apply_sets_what_the_policy_chose(openblas, monkeypatch):
    monkeypatch.setenv("NUMPYLM_THREADS", "1")
    assert blas.apply_thread_policy() == 1 == blas.get_threads()


def test_busy_elsewhere_does_not_count_our_own_threads():
    # This process is running (it reads the count), so it must not see itself as a neighbour;
    # other sessions may be busy, so only the bound by the machine's size is certain.
    others = blas.busy_elsewhere(samples=3, interval=0.001)
    assert 0 <= others <= 4 * blas.available_cores() + 64


# matmul_rows: x @ w by whichever path suits the row count; the same numbers every way.

@pytest.mark.parametrize("rows", [1, 2, 3, 5, 6, 7, 8, 9, 15, 16, 17, 33])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("width", [40, 2000])  # 7.5 KB, in the cache; 375 KB, beyond it
def test_matmul_rows_equals_the_plain_product(rows, transposed, width):
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 48)).astype(np.float32)
    w = rng.standard_normal((width, 48) if transposed else (48, width)).astype(np.float32)
    w = w.T if transposed else w  # (48, 40) either way: a transposed view like `W.T`
    y = blas.matmul_rows(x, w)
    assert y.shape == (rows, width) and y.dtype == np.float32 and y.flags.c_contiguous
    want = x.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    y += 1.0  # a result of its own: updating it in place leaves the inputs alone
    np.testing.assert_allclose(x @ w, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_rows_pads_for_the_thread_count_and_drops_the_padding(openblas, threads):
    """Rows beyond STACKED_ROWS are padded (by at most PAD_ROWS) to ROW_MULTIPLE per thread:
    the products of the padding (zero rows) never show, at either count."""
    rng = np.random.default_rng(threads)
    w = rng.standard_normal((24, 16))
    with blas.threads(threads):
        for rows in range(blas.STACKED_ROWS + 1, 4 * blas.ROW_MULTIPLE * threads + 2):
            x = rng.standard_normal((rows, 24))
            y = blas.matmul_rows(x, w)
            assert y.shape == (rows, 16) and y.dtype == np.float64
            np.testing.assert_allclose(y, x @ w, rtol=1e-12, atol=1e-12)


def test_matmul_rows_of_nonfinite_rows_stays_in_those_rows():
    """Each row's result depends on its own row only: an inf in one row reaches no other
    (the zero padding rows are never multiplied into a real one)."""
    x = np.ones((7, 8), dtype=np.float32)
    x[3, 2] = np.inf
    y = blas.matmul_rows(x, np.ones((8, 5), dtype=np.float32))
    assert np.isinf(y[3]).all() and np.isfinite(np.delete(y, 3, axis=0)).all()
