"""The recurrent cells: hand-worked steps, finite-difference gradients, names, shapes, errors."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.autograd import Tensor, gradcheck
from numpylm.nn import GRUCell, LSTMCell, RNNCell


def _zero(cell):
    for p in cell.parameters():
        p.data[...] = 0.0
    return cell


def test_rnn_cell_by_hand():
    """I = H = 1, W_ih = 0.5, W_hh = 2, b_ih = 0.25, b_hh = -0.25, x = 2, h = 0.1:
    h' = tanh(0.5 * 2 + 0.25 + 2 * 0.1 - 0.25) = tanh(1.2)."""
    cell = RNNCell(1, 1, dtype=np.float64)
    cell.weight_ih.data[...] = 0.5
    cell.weight_hh.data[...] = 2.0
    cell.bias_ih.data[...] = 0.25
    cell.bias_hh.data[...] = -0.25
    h = cell(np.array([[2.0]]), np.array([[0.1]]))
    assert h.data[0, 0] == pytest.approx(math.tanh(1.2), abs=1e-15)


def test_lstm_cell_by_hand():
    """All weights and biases zero: every pre-activation is 0, so i = f = o = sigmoid(0) = 1/2
    and g = tanh(0) = 0. Then c' = f c + i g = c / 2 and h' = o tanh(c') = tanh(c / 2) / 2.
    With c = 2: c' = 1, h' = tanh(1) / 2."""
    cell = _zero(LSTMCell(3, 2, dtype=np.float64))
    x = np.ones((1, 3))
    h, c = cell(x, (np.full((1, 2), 5.0), np.full((1, 2), 2.0)))
    np.testing.assert_allclose(c.data, 1.0, atol=1e-15)
    np.testing.assert_allclose(h.data, math.tanh(1.0) / 2, atol=1e-15)


def test_lstm_gate_order_is_i_f_g_o():
    """Only the forget gate's bias (rows H..2H) large: f = 1, i = o = 1/2, g = 0, so
    c' = c exactly, and h' = tanh(c) / 2. Any other gate order would change c'."""
    H = 2
    cell = _zero(LSTMCell(1, H, dtype=np.float64))
    cell.bias_ih.data[H:2 * H] = 50.0   # sigmoid(50) = 1 in float64
    c0 = np.array([[0.3, -0.7]])
    h, c = cell(np.zeros((1, 1)), (np.zeros((1, H)), c0))
    np.testing.assert_allclose(c.data, c0, atol=1e-15)
    np.testing.assert_allclose(h.data, np.tanh(c0) / 2, atol=1e-15)


def test_gru_cell_by_hand():
    """All parameters zero: r = z = 1/2 and n = tanh(0 + r * 0) = 0, so
    h' = (1 - z) n + z h = h / 2."""
    cell = _zero(GRUCell(2, 3, dtype=np.float64))
    h0 = np.array([[1.0, -2.0, 0.5]])
    h = cell(np.ones((1, 2)), h0)
    np.testing.assert_allclose(h.data, h0 / 2, atol=1e-15)


def test_gru_reset_gate_multiplies_the_hidden_bias():
    """H = 1, zero weights, b_hn = 1 (bias_hh row 2), b_ir = -50 so r = 0 and z = 1/2:
    PyTorch's GRU computes n = tanh(b_in + r * (W_hn h + b_hn)) = tanh(0) = 0, so h' = h / 2.
    Had b_hn been outside the reset (n = tanh(r W_hn h + b_hn)), h' would be
    (tanh(1) + h) / 2 instead."""
    cell = _zero(GRUCell(1, 1, dtype=np.float64))
    cell.bias_hh.data[2] = 1.0
    cell.bias_ih.data[0] = -50.0
    h = cell(np.zeros((1, 1)), np.array([[0.6]]))
    assert h.data[0, 0] == pytest.approx(0.3, abs=1e-15)


@pytest.mark.parametrize("cls,gates", [(RNNCell, 1), (LSTMCell, 4), (GRUCell, 3)])
def test_cell_parameter_names_shapes_and_init(cls, gates):
    I, H = 5, 16
    cell = cls(I, H, rng=0)
    shapes = {name: p.shape for name, p in cell.named_parameters()}
    assert shapes == {"weight_ih": (gates * H, I), "weight_hh": (gates * H, H),
                      "bias_ih": (gates * H,), "bias_hh": (gates * H,)}
    bound = 1 / math.sqrt(H)  # U(-1/sqrt(H), 1/sqrt(H)) = U(-0.25, 0.25)
    for p in cell.parameters():
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= bound
    assert [n for n, _ in cls(I, H, bias=False).named_parameters()] == ["weight_ih", "weight_hh"]


def _state(rng, shape, n):
    return tuple(rng.standard_normal(shape) for _ in range(n))


@settings(max_examples=15)
@given(st.sampled_from(["rnn", "lstm", "gru"]), st.integers(1, 3), st.integers(1, 4),
       st.integers(1, 3), st.booleans(), st.integers(0, 2**31 - 1))
def test_cell_gradcheck(kind, B, I, H, bias, seed):
    rng = np.random.default_rng(seed)
    cls = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}[kind]
    cell = cls(I, H, bias=bias, rng=seed).to(np.float64)
    x = rng.standard_normal((B, I))
    if kind == "lstm":
        h0, c0 = _state(rng, (B, H), 2)
        # h' + 2 c' checks both outputs and gives them different weights.
        gradcheck(lambda x, h, c: (lambda hc: hc[0] + 2.0 * hc[1])(cell(x, (h, c))),
                  x, h0, c0, params=list(cell.parameters()))
    else:
        (h0,) = _state(rng, (B, H), 1)
        gradcheck(lambda x, h: cell(x, h), x, h0, params=list(cell.parameters()))


def test_cell_without_state_starts_from_zeros():
    cell = LSTMCell(2, 3, rng=0)
    x = np.ones((4, 2), dtype=np.float32)
    h1, c1 = cell(x)
    h2, c2 = cell(x, (np.zeros((4, 3)), np.zeros((4, 3))))
    np.testing.assert_array_equal(h1.data, h2.data)
    np.testing.assert_array_equal(c1.data, c2.data)
    assert h1.shape == (4, 3) and h1.dtype == np.float32


@pytest.mark.parametrize("cls", [RNNCell, GRUCell])
def test_cell_bad_shapes(cls):
    cell = cls(3, 4)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 3\), got \(2, 5\)"):
        cell(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 3\), got \(2, 4, 3\)"):
        cell(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"expected a state of shape \(2, 4\), got \(2, 3\)"):
        cell(np.zeros((2, 3)), np.zeros((2, 3)))


def test_lstm_cell_bad_state():
    cell = LSTMCell(3, 4)
    with pytest.raises(ValueError, match="pair"):
        cell(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"expected a state of shape \(2, 4\), got \(1, 4\)"):
        cell(np.zeros((2, 3)), (np.zeros((2, 4)), np.zeros((1, 4))))


def test_cell_gradient_reaches_a_tensor_state():
    cell = RNNCell(2, 2, rng=0).to(np.float64)
    h = Tensor(np.zeros((1, 2)), requires_grad=True)
    cell(np.ones((1, 2)), h).sum().backward()
    assert h.grad is not None and np.abs(h.grad).sum() > 0
