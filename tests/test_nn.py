"""Modules: registration, names, state dicts, modes, and the layers' PyTorch conventions."""
import numpy as np
import pytest

import numpylm.functional as F
from numpylm import Tensor, gradcheck, nn


class TwoLayer(nn.Module):
    def __init__(self, rng=0):
        super().__init__()
        self.fc = nn.Linear(4, 8, rng=rng)
        self.blocks = nn.ModuleList([nn.LayerNorm(8), nn.Dropout(0.5)])
        self.head = nn.Linear(8, 3, bias=False, rng=rng)

    def forward(self, x):
        h = self.blocks[1](self.blocks[0](self.fc(x).tanh()))
        return self.head(h)


def test_named_parameters_are_dotted_and_ordered():
    names = [n for n, _ in TwoLayer().named_parameters()]
    assert names == ["fc.weight", "fc.bias", "blocks.0.weight", "blocks.0.bias", "head.weight"]
    m = TwoLayer()
    assert m.num_parameters() == 4 * 8 + 8 + 8 + 8 + 8 * 3


def test_shapes_and_initialisation_follow_pytorch():
    lin = nn.Linear(100, 7, rng=0)
    assert lin.weight.shape == (7, 100) and lin.bias.shape == (7,)
    assert lin.weight.dtype == np.float32
    assert np.abs(lin.weight.data).max() <= 0.1  # U(-1/sqrt(in), 1/sqrt(in))
    emb = nn.Embedding(50, 6, rng=0)
    assert emb.weight.shape == (50, 6) and 0.7 < emb.weight.data.std() < 1.3  # N(0, 1)
    ln = nn.LayerNorm(5)
    np.testing.assert_array_equal(ln.weight.data, 1.0)
    np.testing.assert_array_equal(ln.bias.data, 0.0)


def test_state_dict_round_trip_and_strict_errors():
    a, b = TwoLayer(rng=1), TwoLayer(rng=2)
    x = Tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    a.eval(); b.eval()
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    np.testing.assert_array_equal(a(x).data, b(x).data)
    bad = dict(a.state_dict())
    bad.pop("fc.bias")
    bad["extra.weight"] = np.zeros(3)
    bad["head.weight"] = np.zeros((2, 2))
    with pytest.raises(ValueError) as err:
        b.load_state_dict(bad)
    text = str(err.value)
    assert "missing keys: fc.bias" in text and "unexpected keys: extra.weight" in text
    assert "head.weight: expected (3, 8), got (2, 2)" in text
    report = b.load_state_dict(bad, strict=False)
    assert report["missing"] == ["fc.bias"]


def test_train_eval_switches_dropout():
    m = TwoLayer()
    x = Tensor(np.ones((3, 4), np.float32))
    m.eval()
    np.testing.assert_array_equal(m(x).data, m(x).data)
    assert not m.blocks[1].training
    m.train()
    assert m.blocks[1].training


def test_zero_grad_and_tied_parameters_listed_once():
    m = TwoLayer()
    m.tied = m.fc  # the same module under a second name: its parameters are not repeated
    assert len(list(m.parameters())) == 5
    F.cross_entropy(m(Tensor(np.ones((2, 4), np.float32))), np.array([0, 1])).backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_linear_rejects_a_wrong_feature_size():
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\).*\(2, 5\)"):
        nn.Linear(4, 3)(Tensor(np.ones((2, 5), np.float32)))


def test_modules_gradcheck_in_float64():
    m = TwoLayer().to(np.float64).eval()
    x = np.random.default_rng(1).standard_normal((3, 4))
    gradcheck(lambda: F.cross_entropy(m(Tensor(x)), np.array([0, 2, 1])), params=m.parameters())
