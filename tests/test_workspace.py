"""The scratch-array pool: reuse only what nothing refers to any more."""
import numpy as np
import pytest

from numpylm.autograd import Tensor, workspace
from numpylm.nn import GRU, LSTM, RNN

BIG = (512, 1024)  # 2 MiB of float32: pooled


@pytest.fixture(autouse=True)
def empty_pool():
    workspace.clear()
    yield
    workspace.clear()


def test_a_released_array_is_reused():
    a = workspace.empty(BIG, np.float32)
    first = id(a)
    del a
    b = workspace.empty(BIG, np.float32)
    assert id(b) == first


def test_an_array_in_use_is_not_handed_out_again():
    a = workspace.empty(BIG, np.float32)
    a[:] = 1.0
    b = workspace.empty(BIG, np.float32)
    assert b is not a and not np.shares_memory(a, b)
    b[:] = 2.0
    assert (a == 1.0).all()


def test_a_view_keeps_its_base_in_use():
    a = workspace.empty(BIG, np.float32)
    view = a[3:5]
    view[:] = 7.0
    del a
    b = workspace.empty(BIG, np.float32)
    assert not np.shares_memory(b, view)
    b[:] = 0.0
    assert (view == 7.0).all()


def test_shape_and_dtype_are_part_of_the_key():
    a = workspace.empty(BIG, np.float32)
    del a
    b = workspace.empty(BIG, np.float64)
    c = workspace.empty((1024, 512), np.float32)
    assert b.dtype == np.float64 and b.shape == BIG
    assert c.shape == (1024, 512)


def test_small_arrays_are_not_pooled():
    a = workspace.empty((4, 4), np.float32)
    first = id(a)
    kept = a  # hold it so a new object cannot take the same id
    b = workspace.empty((4, 4), np.float32)
    assert id(b) != first and kept is not b
    assert all(not arrays for arrays in workspace._pool.values())


def test_the_pool_keeps_a_bounded_number_per_shape():
    held = [workspace.empty(BIG, np.float32) for _ in range(workspace.PER_SHAPE + 3)]
    assert len({id(a) for a in held}) == len(held)  # all distinct while in use
    assert sum(len(v) for v in workspace._pool.values()) == workspace.PER_SHAPE


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_outputs_kept_from_an_earlier_step_stay_intact(cls):
    """A training loop that keeps earlier outputs (and their graphs) must see them unchanged
    while later steps reuse the pool."""
    rng = np.random.default_rng(0)
    layer = cls(16, 96, rng=0)  # (T + 2, B, H) float32 buffers of ~1 MiB: pooled
    xs = [rng.standard_normal((32, 80, 16)).astype(np.float32) for _ in range(3)]
    kept = []
    for x in xs:
        out, _ = layer(Tensor(x))
        kept.append((out, out.data.copy()))
        out.sum().backward()
    for out, values in kept:
        np.testing.assert_array_equal(out.data, values)
    # and the same numbers as a fresh computation
    for x, (out, _) in zip(xs, kept):
        workspace.clear()
        again, _ = layer(Tensor(x))
        np.testing.assert_allclose(again.data, out.data, rtol=1e-6, atol=1e-6)


def test_backward_after_other_steps_gives_the_same_gradients():
    """A graph kept alive while other steps run still back-propagates its own values."""
    rng = np.random.default_rng(1)
    layer = LSTM(16, 96, rng=0)
    x1, x2 = (rng.standard_normal((32, 80, 16)).astype(np.float32) for _ in range(2))
    out1, _ = layer(Tensor(x1))
    out2, _ = layer(Tensor(x2))          # runs while out1's graph still holds its buffers
    layer.zero_grad()
    out1.sum().backward()
    late = {name: p.grad.copy() for name, p in layer.named_parameters()}
    del out1, out2
    layer.zero_grad()
    fresh, _ = layer(Tensor(x1))
    fresh.sum().backward()
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(late[name], p.grad, rtol=1e-5, atol=1e-5)


def test_threads_never_share_an_array():
    import threading

    held: list[list[np.ndarray]] = [[], []]

    def take(store):
        for n in range(60):
            a = workspace.empty(BIG, np.float32)
            store.append(a)
            if n % 3 == 2:
                store.pop(0)  # release some, so arrays go back into the pool
    threads = [threading.Thread(target=take, args=(store,)) for store in held]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alive = held[0] + held[1]
    assert len({a.ctypes.data for a in alive}) == len(alive)


@pytest.mark.parametrize("n, align, threads", [(10, 1, "4"), (300_001, 1, "2"),
                                               (300_001, 1 << 15, "3"), (200_000, 7, "1")])
def test_split_covers_every_index_once_in_aligned_parts(monkeypatch, n, align, threads):
    monkeypatch.setenv("NUMPYLM_THREADS", threads)
    seen = np.zeros(n, dtype=np.int64)
    parts = []

    def fn(a, b):
        parts.append((a, b))
        seen[a:b] += 1

    workspace.split(n, fn, align)
    assert (seen == 1).all()
    assert all(a % align == 0 for a, _ in parts)
    expected = min(int(threads), max(1, n // workspace.SPLIT_MIN))
    assert len(parts) == expected  # small passes inline, big ones one part per thread


def test_split_runs_parts_in_other_threads_and_reraises_their_errors(monkeypatch):
    import threading

    monkeypatch.setenv("NUMPYLM_THREADS", "2")
    names = set()

    def fn(a, b):
        names.add(threading.current_thread().name)
        if a > 0:
            raise ValueError("the second part failed")

    with pytest.raises(ValueError, match="second part"):
        workspace.split(4 * workspace.SPLIT_MIN, fn)
    assert len(names) == 2


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_fused_swiglu_over_threads_equals_its_composed_twin(monkeypatch, threads):
    """Pieces and thread parts end inside rows (5 x 40_001 elements): the same values and
    gradients as the readable SwiGLU made of primitive ops, whatever the split."""
    import numpylm.functional as F
    from numpylm.autograd import composed

    monkeypatch.setenv("NUMPYLM_THREADS", threads)
    rng = np.random.default_rng(0)
    gate, up = (rng.standard_normal((5, 40_001)).astype(np.float32) * 4 for _ in range(2))
    g = rng.standard_normal(gate.shape).astype(np.float32)
    results = []
    for fn in (F.swiglu, composed.swiglu):
        a, b = Tensor(gate, requires_grad=True), Tensor(up, requires_grad=True)
        out = fn(a, b)
        out.backward(g)
        results.append((out.data, a.grad, b.grad))
    for mine, readable in zip(*results):
        assert mine.dtype == np.float32
        np.testing.assert_allclose(mine, readable, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize("with_weight", [True, False])
def test_fused_rms_norm_over_threads_equals_its_composed_twin(monkeypatch, threads,
                                                             with_weight):
    """Rows in pieces of PIECE // C and in one part per thread (700 rows of 383): the same
    values and gradients as the readable RMSNorm made of primitive ops."""
    import numpylm.functional as F
    from numpylm.autograd import composed

    monkeypatch.setenv("NUMPYLM_THREADS", threads)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 350, 383)).astype(np.float32) * 3
    w = (1 + rng.standard_normal(383) * 0.3).astype(np.float32) if with_weight else None
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for fn in (F.rms_norm, composed.rms_norm):
        tx = Tensor(x, requires_grad=True)
        tw = None if w is None else Tensor(w, requires_grad=True)
        out = fn(tx, tw, 1e-5)
        out.backward(g)
        results.append((out.data, tx.grad) + (() if tw is None else (tw.grad,)))
    for mine, readable in zip(*results):
        assert mine.dtype == np.float32
        np.testing.assert_allclose(mine, readable, rtol=1e-4, atol=1e-4)
