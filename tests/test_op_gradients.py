"""Every core op's backward rule against central finite differences (float64), on shapes
drawn by hypothesis: size-1 axes, missing leading axes, values inside each op's domain."""
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

import numpylm.functional as F
from numpylm import Tensor, gradcheck
from numpylm.testing import array, arrays_for, broadcast_pair, shapes
from op_coverage import covers_op


@covers_op("add", "sub", "mul")
@given(broadcast_pair(), st.sampled_from(["add", "sub", "mul"]))
def test_binary_arithmetic(pair, name):
    a, b = pair
    gradcheck(getattr(F, name), a, b)


@covers_op("div")
@given(broadcast_pair())
def test_div(pair):
    a, b = pair
    b = np.sign(b + 1e-9) * (np.abs(b) + 0.5)  # keep the divisor away from 0
    gradcheck(F.div, a, b)


@covers_op("neg", "exp", "tanh", "sigmoid", "gelu")
@given(array(), st.sampled_from(["neg", "exp", "tanh", "sigmoid", "gelu"]))
def test_smooth_unary(x, name):
    gradcheck(getattr(F, name), x)


@covers_op("log", "sqrt")
@given(array(low=0.2, high=3.0), st.sampled_from(["log", "sqrt"]))
def test_positive_domain(x, name):
    gradcheck(getattr(F, name), x)


@covers_op("pow")
@given(array(low=0.3, high=2.0), st.sampled_from([2.0, 3.0, 0.5, -1.0, 1.5]))
def test_pow(x, p):
    gradcheck(lambda t: F.pow(t, p), x)


@covers_op("relu")
@given(array())
def test_relu(x):
    assume(np.all(np.abs(x) > 1e-3))  # relu has a kink at 0
    gradcheck(F.relu, x)


@st.composite
def matmul_operands(draw):
    """Operands for matmul: 1-D, 2-D and batched, with broadcast batch axes."""
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = draw(shapes(0, 2, max_side=3))
    a_batch = draw(st.sampled_from([batch, batch[1:], tuple(1 for _ in batch)]))
    a_shape = draw(st.sampled_from([(k,), (*a_batch, n, k)]))
    b_shape = draw(st.sampled_from([(k,), (*batch, k, m)]))
    return draw(arrays_for(a_shape)), draw(arrays_for(b_shape))


@covers_op("matmul")
@given(matmul_operands())
def test_matmul(ab):
    a, b = ab
    gradcheck(F.matmul, a, b)


def _axis_for(x, data):
    return data.draw(st.sampled_from([None, *range(-x.ndim, x.ndim)]))


@covers_op("sum", "mean")
@given(array(), st.data(), st.booleans(), st.sampled_from(["sum", "mean"]))
def test_sum_mean(x, data, keepdims, name):
    axis = _axis_for(x, data)
    gradcheck(lambda t: getattr(F, name)(t, axis=axis, keepdims=keepdims), x)


@covers_op("max")
@given(array(min_gap=1e-3), st.data(), st.booleans())
def test_max(x, data, keepdims):
    # Entries are kept apart, so no ties: at a tie max has no derivative (only subgradients).
    axis = _axis_for(x, data)
    gradcheck(lambda t: F.max(t, axis=axis, keepdims=keepdims), x)


def test_max_ties_share_the_gradient():
    x = Tensor(np.array([1.0, 3.0, 3.0, 2.0]), requires_grad=True)
    F.max(x).backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.5, 0.5, 0.0])


@covers_op("logsumexp")
@given(array(low=-5, high=5), st.data(), st.booleans())
def test_logsumexp(x, data, keepdims):
    axis = data.draw(st.sampled_from([None, -1, 0]))
    gradcheck(lambda t: F.logsumexp(t, axis=axis, keepdims=keepdims), x)


@covers_op("reshape")
@given(array())
def test_reshape(x):
    gradcheck(lambda t: F.reshape(t, shape=(-1,)), x)
    gradcheck(lambda t: F.reshape(t, shape=(1, *x.shape[::-1])), x)


@covers_op("transpose")
@given(array(), st.randoms(use_true_random=False))
def test_transpose(x, random):
    axes = list(range(x.ndim))
    random.shuffle(axes)
    gradcheck(lambda t: F.transpose(t, axes=tuple(axes)), x)


@covers_op("getitem")
@given(array(min_dims=2, max_dims=3), st.data())
def test_getitem(x, data):
    rows = data.draw(st.lists(st.integers(0, x.shape[0] - 1), min_size=1, max_size=5))
    gradcheck(lambda t: F.getitem(t, np.array(rows)), x)          # repeated rows add up
    gradcheck(lambda t: F.getitem(t, (slice(None), slice(0, 1))), x)
    gradcheck(lambda t: F.getitem(t, (..., -1)), x)
    gradcheck(lambda t: F.getitem(t, x > 0), x)                  # a boolean mask


@covers_op("concatenate", "stack")
@given(array(max_dims=2), st.integers(1, 3), st.data())
def test_concatenate_and_stack(x, extra, data):
    axis = data.draw(st.integers(0, x.ndim - 1))
    other_shape = list(x.shape)
    other_shape[axis] = extra
    y = data.draw(arrays_for(tuple(other_shape)))
    gradcheck(lambda a, b: F.concatenate([a, b], axis=axis), x, y)
    z = data.draw(arrays_for(x.shape))
    gradcheck(lambda a, b: F.stack([a, b, a], axis=axis), x, z)


@covers_op("where")
@given(broadcast_pair(), st.data())
def test_where(pair, data):
    a, b = pair
    shape = np.broadcast_shapes(a.shape, b.shape)
    cond = np.asarray(data.draw(st.lists(st.booleans(), min_size=int(np.prod(shape)),
                                         max_size=int(np.prod(shape))))).reshape(shape)
    gradcheck(lambda s, t: F.where(cond, s, t), a, b)
    gradcheck(lambda s: F.masked_fill(s, cond, -3.0), np.broadcast_to(a, shape).copy())


@covers_op("embedding")
@given(st.integers(1, 6), st.integers(1, 4), st.data())
def test_embedding(V, C, data):
    ids = np.asarray(data.draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=8)))
    ids = ids.reshape(1, -1) if data.draw(st.booleans()) else ids
    w = data.draw(arrays_for((V, C)))
    gradcheck(lambda t: F.embedding(ids, t), w)


@covers_op("astype")
@given(array())
def test_astype(x):
    gradcheck(lambda t: F.astype(t, dtype=np.float64) * 2.0, x)


@covers_op("softmax", "log_softmax")
@given(array(low=-5, high=5), st.data(), st.sampled_from(["softmax", "log_softmax"]))
def test_softmax_family(x, data, name):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    gradcheck(lambda t: getattr(F, name)(t, axis=axis), x)


@covers_op("cross_entropy")
@given(array(min_dims=1, max_dims=3, low=-4, high=4), st.data(), st.booleans())
def test_cross_entropy(logits, data, use_ignore):
    V = logits.shape[-1]
    n = int(np.prod(logits.shape[:-1]))
    targets = np.asarray(data.draw(st.lists(st.integers(0, V - 1), min_size=n, max_size=n)),
                         dtype=np.int64).reshape(logits.shape[:-1])
    ignore = None
    if use_ignore and n > 1:
        ignore = -100
        targets.reshape(-1)[0] = ignore
    gradcheck(lambda t: F.cross_entropy(t, targets, ignore_index=ignore), logits)


@covers_op("layer_norm")
@given(array(low=-3, high=3), st.data(), st.booleans())
def test_layer_norm(x, data, affine):
    C = x.shape[-1]
    assume(C > 1 and np.all(np.std(x, axis=-1) > 0.1))  # flat rows make 1/std ill-conditioned
    w, b = (data.draw(arrays_for((C,))), data.draw(arrays_for((C,)))) if affine else (None, None)
    inputs = (x, w, b) if affine else (x,)
    gradcheck(lambda t, *wb: F.layer_norm(t, *(wb or (None, None))), *inputs)


@covers_op("rms_norm")
@given(array(low=-3, high=3), st.data())
def test_rms_norm(x, data):
    assume(np.all(np.sqrt(np.mean(x * x, axis=-1)) > 0.2))
    w = data.draw(arrays_for((x.shape[-1],)))
    gradcheck(lambda t, s: F.rms_norm(t, s), x, w)


@covers_op("dropout")
@given(array(), st.floats(0.0, 0.9), st.integers(0, 2**16))
def test_dropout(x, p, seed):
    # The same seed each call, so the finite differences see the same mask.
    gradcheck(lambda t: F.dropout(t, p, True, np.random.default_rng(seed)), x)
