"""A PyTorch state dict for nn.RNN / nn.LSTM / nn.GRU (and the cells) loads into numpylm's
layers and gives the same outputs and the same gradients. Skipped without torch."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from numpylm.autograd import Tensor  # noqa: E402
from numpylm.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell  # noqa: E402

OURS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
THEIRS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def _numpy_state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_matches_torch(kind, num_layers, fused, bias):
    torch.manual_seed(num_layers)
    B, T, I, H = 3, 6, 4, 5
    ref = THEIRS[kind](I, H, num_layers=num_layers, bias=bias, batch_first=True).double()
    ours = OURS[kind](I, H, num_layers, bias=bias, fused=fused).to(np.float64)
    ours.load_state_dict(_numpy_state(ref))   # strict: every name and shape must match

    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I))
    states = [rng.standard_normal((num_layers, B, H)) for _ in range(2 if kind == "lstm" else 1)]
    g_out = rng.standard_normal((B, T, H))
    g_states = [rng.standard_normal((num_layers, B, H)) for _ in states]

    # PyTorch
    tx = torch.tensor(x, requires_grad=True)
    ts = [torch.tensor(s, requires_grad=True) for s in states]
    t_out, t_final = ref(tx, tuple(ts) if kind == "lstm" else ts[0])
    t_finals = t_final if kind == "lstm" else (t_final,)
    loss = (t_out * torch.tensor(g_out)).sum()
    for f, g in zip(t_finals, g_states):
        loss = loss + (f * torch.tensor(g)).sum()
    loss.backward()

    # numpylm, the same loss
    nx = Tensor(x, requires_grad=True)
    ns = [Tensor(s, requires_grad=True) for s in states]
    n_out, n_final = ours(nx, tuple(ns) if kind == "lstm" else ns[0])
    n_finals = n_final if kind == "lstm" else (n_final,)
    n_loss = (n_out * g_out).sum()
    for f, g in zip(n_finals, g_states):
        n_loss = n_loss + (f * g).sum()
    n_loss.backward()

    close = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(n_out.data, t_out.detach().numpy(), **close)
    for a, b in zip(n_finals, t_finals):
        np.testing.assert_allclose(a.data, b.detach().numpy(), **close)
    np.testing.assert_allclose(nx.grad, tx.grad.numpy(), **close)
    for a, b in zip(ns, ts):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), **close)
    theirs = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs[name].grad.numpy(), err_msg=name, **close)


@pytest.mark.parametrize("ours_cls,theirs_cls", [(RNNCell, torch.nn.RNNCell),
                                                 (LSTMCell, torch.nn.LSTMCell),
                                                 (GRUCell, torch.nn.GRUCell)])
def test_cell_matches_torch(ours_cls, theirs_cls):
    torch.manual_seed(0)
    ref = theirs_cls(4, 3).double()
    ours = ours_cls(4, 3).to(np.float64)
    ours.load_state_dict(_numpy_state(ref))
    rng = np.random.default_rng(1)
    x, h, c = rng.standard_normal((2, 4)), rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    tx = torch.tensor(x)
    if ours_cls is LSTMCell:
        t_h, t_c = ref(tx, (torch.tensor(h), torch.tensor(c)))
        n_h, n_c = ours(x, (h, c))
        np.testing.assert_allclose(n_c.data, t_c.detach().numpy(), rtol=1e-12)
    else:
        t_h = ref(tx, torch.tensor(h))
        n_h = ours(x, h)
    np.testing.assert_allclose(n_h.data, t_h.detach().numpy(), rtol=1e-12)


def test_float32_state_dict_matches_torch_float32():
    torch.manual_seed(0)
    ref = torch.nn.LSTM(8, 16, batch_first=True)
    ours = LSTM(8, 16)
    ours.load_state_dict(_numpy_state(ref))
    x = np.random.default_rng(0).standard_normal((2, 10, 8)).astype(np.float32)
    t_out, _ = ref(torch.from_numpy(x))
    n_out, _ = ours(x)
    assert n_out.dtype == np.float32
    np.testing.assert_allclose(n_out.data, t_out.detach().numpy(), atol=1e-5)
