"""The fused recurrent ops and the layers: finite differences, fused equals unrolled, carried
state, and errors for bad shapes."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm import functional as F
from numpylm.autograd import Tensor, gradcheck
from numpylm.nn import GRU, LSTM, RNN
from numpylm.autograd.ops_rnn import gru_fused, lstm_fused, rnn_tanh_fused
from op_coverage import covers_op

LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


@st.composite
def op_inputs(draw, kind):
    T, B, I, H = (draw(st.integers(1, n)) for n in (4, 3, 3, 3))
    bias = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    G = GATES[kind]
    x = rng.standard_normal((T, B, I))
    states = [rng.standard_normal((B, H)) for _ in range(2 if kind == "lstm" else 1)]
    weights = [rng.uniform(-1, 1, (G * H, I)), rng.uniform(-1, 1, (G * H, H))]
    biases = [rng.uniform(-1, 1, G * H), rng.uniform(-1, 1, G * H)] if bias else []
    return [x, *states, *weights, *biases]


@covers_op("rnn_tanh_fused")
@settings(max_examples=15)
@given(op_inputs("rnn"))
def test_rnn_tanh_fused_gradcheck(inputs):
    gradcheck(rnn_tanh_fused, *inputs)


@covers_op("lstm_fused")
@settings(max_examples=15)
@given(op_inputs("lstm"))
def test_lstm_fused_gradcheck(inputs):
    # The output holds h_1 .. h_T and then c_T; the random projection checks all of them.
    gradcheck(lstm_fused, *inputs)


@covers_op("gru_fused")
@settings(max_examples=15)
@given(op_inputs("gru"))
def test_gru_fused_gradcheck(inputs):
    gradcheck(gru_fused, *inputs)


def _loss(kind, out, final):
    """A scalar that depends on every output and every final state, with unequal weights."""
    loss = F.sum(out * out)
    for k, s in enumerate(final if kind == "lstm" else (final,)):
        loss = loss + (k + 2.0) * F.sum(F.tanh(s))
    return loss


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@settings(max_examples=4)
@given(bias=st.booleans(), batch_first=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_layer_gradcheck(kind, num_layers, bias, batch_first, seed):
    """Gradients of the fused layer (one and two layers) w.r.t. the input, the initial state
    and every parameter, against finite differences."""
    rng = np.random.default_rng(seed)
    B, T, I, H = 2, 3, 3, 2
    layer = LAYERS[kind](I, H, num_layers, bias=bias, batch_first=batch_first,
                         rng=seed).to(np.float64)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    states = [rng.standard_normal((num_layers, B, H)) for _ in range(2 if kind == "lstm" else 1)]

    def fn(x, *s):
        out, final = layer(x, tuple(s) if kind == "lstm" else s[0])
        return _loss(kind, out, final)

    gradcheck(fn, x, *states, params=list(layer.parameters()))


def _run(layer, kind, x, states):
    """Outputs, final states and every gradient (input, initial states, parameters)."""
    xt = Tensor(x, requires_grad=True)
    st_ = [Tensor(s, requires_grad=True) for s in states]
    layer.zero_grad()
    out, final = layer(xt, tuple(st_) if kind == "lstm" else st_[0])
    _loss(kind, out, final).backward()
    finals = final if kind == "lstm" else (final,)
    return ([out.data] + [f.data for f in finals],
            [xt.grad] + [s.grad for s in st_] + [p.grad for p in layer.parameters()])


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@settings(max_examples=10)
@given(num_layers=st.integers(1, 3), T=st.integers(1, 6), B=st.integers(1, 3),
       I=st.integers(1, 4), H=st.integers(1, 4), bias=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_fused_equals_unrolled(kind, num_layers, T, B, I, H, bias, seed):
    rng = np.random.default_rng(seed)
    layer = LAYERS[kind](I, H, num_layers, bias=bias, rng=seed).to(np.float64)
    x = rng.standard_normal((B, T, I))
    states = [rng.standard_normal((num_layers, B, H)) for _ in range(2 if kind == "lstm" else 1)]
    layer.fused = True
    fused_values, fused_grads = _run(layer, kind, x, states)
    layer.fused = False
    plain_values, plain_grads = _run(layer, kind, x, states)
    for a, b in zip(fused_values + fused_grads, plain_values + plain_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("fused", [True, False])
@settings(max_examples=5)
@given(num_layers=st.integers(1, 2), T=st.integers(2, 8), seed=st.integers(0, 2**31 - 1))
def test_two_halves_with_carried_state_equal_the_whole(kind, fused, num_layers, T, seed):
    rng = np.random.default_rng(seed)
    B, I, H = 2, 3, 4
    layer = LAYERS[kind](I, H, num_layers, fused=fused, rng=seed).to(np.float64)
    x = rng.standard_normal((B, T, I))
    whole, final = layer(x)
    cut = T // 2
    first, state = layer(x[:, :cut])
    second, final2 = layer(x[:, cut:], state)
    np.testing.assert_allclose(np.concatenate([first.data, second.data], axis=1), whole.data,
                               rtol=1e-12, atol=1e-14)
    for a, b in zip(final if kind == "lstm" else (final,),
                    final2 if kind == "lstm" else (final2,)):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_layer_shapes_and_final_state(kind):
    """Final states are (num_layers, B, H); the top layer's final h is the last output."""
    layer = LAYERS[kind](3, 5, num_layers=2, rng=0)
    out, final = layer(np.zeros((4, 7, 3), dtype=np.float32))
    assert out.shape == (4, 7, 5) and out.dtype == np.float32
    h = final[0] if kind == "lstm" else final
    assert h.shape == (2, 4, 5)
    if kind == "lstm":
        assert final[1].shape == (2, 4, 5)
    np.testing.assert_array_equal(h.data[-1], out.data[:, -1])


def test_time_major_layout():
    layer = LSTM(3, 2, batch_first=False, rng=0).to(np.float64)
    x = np.random.default_rng(0).standard_normal((5, 4, 3))   # (T, B, I)
    out, _ = layer(x)
    layer.batch_first = True
    out_bf, _ = layer(x.transpose(1, 0, 2))
    assert out.shape == (5, 4, 2)
    np.testing.assert_allclose(out.data, out_bf.data.transpose(1, 0, 2), rtol=1e-14)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_parameter_names_follow_pytorch(kind, num_layers):
    G, I, H = GATES[kind], 3, 4
    layer = LAYERS[kind](I, H, num_layers)
    expected = {}
    for k in range(num_layers):
        expected.update({f"weight_ih_l{k}": (G * H, I if k == 0 else H),
                         f"weight_hh_l{k}": (G * H, H),
                         f"bias_ih_l{k}": (G * H,), f"bias_hh_l{k}": (G * H,)})
    assert {n: p.shape for n, p in layer.named_parameters()} == expected
    assert all(np.abs(p.data).max() <= 0.5 for p in layer.parameters())  # 1/sqrt(4)


@pytest.mark.parametrize("fused", [True, False])
def test_bad_input_shapes(fused):
    layer = GRU(3, 4, num_layers=2, fused=fused)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, T, 3\), got \(5, 3\)"):
        layer(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, T, 3\), "
                                         r"got \(2, 5, 4\)"):
        layer(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"expected a state of shape \(2, 2, 4\) "
                                         r"\(num_layers, B, H\), got \(1, 2, 4\)"):
        layer(np.zeros((2, 5, 3)), np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"\(T, B, 3\)"):
        GRU(3, 4, batch_first=False)(np.zeros((2, 5, 4)))


def test_bad_lstm_state():
    layer = LSTM(3, 4)
    with pytest.raises(ValueError, match="pair"):
        layer(np.zeros((2, 5, 3)), np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"expected a state of shape \(1, 2, 4\) "
                                         r"\(num_layers, B, H\), got \(1, 3, 4\)"):
        layer(np.zeros((2, 5, 3)), (np.zeros((1, 2, 4)), np.zeros((1, 3, 4))))


def test_fused_op_checks_shapes():
    x, h = np.zeros((2, 3, 4)), np.zeros((3, 5))
    w_hh = np.zeros((20, 5))
    with pytest.raises(ValueError, match=r"w_ih of shape \(20, 4\), got \(20, 3\)"):
        lstm_fused(x, h, h, np.zeros((20, 3)), w_hh)
    with pytest.raises(ValueError, match=r"initial state of shape \(3, 5\), got \(2, 5\)"):
        lstm_fused(x, h, np.zeros((2, 5)), np.zeros((20, 4)), w_hh)
    with pytest.raises(ValueError, match=r"w_hh of shape \(3 H, H\), got \(20, 5\)"):
        gru_fused(x, h, np.zeros((20, 4)), w_hh)


def test_float32_in_float32_out():
    layer = LSTM(3, 4, rng=0)
    x = Tensor(np.ones((2, 5, 3), dtype=np.float32), requires_grad=True)
    out, (h, c) = layer(x)
    F.sum(out).backward()
    assert out.dtype == h.dtype == c.dtype == np.float32
    assert x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())
