"""Rolling perplexity: every token scored exactly once with as much context as the window
allows, disjoint windows when the stride is the window, and units worked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpylm.autograd.tensor import Tensor
from numpylm.evaluation.rolling import rolling_loglikelihood, rolling_report, rolling_windows
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.tokenizers import CharTokenizer


@given(n=st.integers(2, 200), window=st.integers(1, 24), data=st.data())
def test_every_token_is_scored_once_with_enough_context(n, window, data):
    stride = data.draw(st.integers(1, window))
    spans = rolling_windows(n, window, stride)
    counted = []
    for a, b, n_new in spans:
        assert 0 <= a < b <= n - 1 and b - a <= window and 1 <= n_new <= b - a
        targets = range(b - n_new + 1, b + 1)   # indices of the ids these inputs predict
        # Each counted target t sees the ids a..t-1: at least W - S + 1, or all before it.
        assert all(t - a >= min(t, window - stride + 1) for t in targets)
        counted.extend(targets)
    assert counted == list(range(1, n))


def test_window_arguments_are_checked():
    with pytest.raises(ValueError, match="stride 5 is larger"):
        rolling_windows(10, 4, 5)
    with pytest.raises(ValueError, match="at least 2"):
        rolling_windows(1, 4, 4)
    with pytest.raises(ValueError, match="window must be"):
        rolling_windows(10, 0, 1)


def _gpt(V: int = 9, T: int = 8) -> GPT:
    return GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=8,
                         dropout=0.0))


def _logp(model, inputs: np.ndarray) -> np.ndarray:
    logits = model(inputs[None])[0].data[0].astype(np.float64)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def test_stride_equal_to_window_is_disjoint_windows():
    """Cut s_0..s_32 into windows of W = 8 inputs s[8k:8k+8] predicting s[8k+1:8k+9]; a
    context-dependent model (a GPT) gives the same numbers through rolling_loglikelihood."""
    rng = np.random.default_rng(0)
    model, W = _gpt(), 8
    ids = rng.integers(0, 9, size=33)
    expected = []
    for k in range(0, 32, W):
        expected.extend(_logp(model, ids[k:k + W])[np.arange(W), ids[k + 1:k + W + 1]])
    got = rolling_loglikelihood(model, ids, window=W, stride=W)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # When the ids do not fill the last window, it reads the W ids before its end (as much
    # context as the window allows) and counts only the new targets: s_25..s_29 of 30 ids.
    short = rolling_loglikelihood(model, ids[:30], window=W, stride=W)
    np.testing.assert_allclose(short[:24], expected[:24], rtol=1e-6, atol=1e-6)
    last = _logp(model, ids[21:29])[np.arange(3, 8), ids[25:30]]  # inputs s_21..s_28
    np.testing.assert_allclose(short[24:], last, rtol=1e-6, atol=1e-6)
    # A stride of 1 gives each token the full window: the last token's score is the one of
    # the last W ids alone.
    full = rolling_loglikelihood(model, ids, window=W, stride=1)
    assert full.shape == (32,)
    assert full[-1] == pytest.approx(_logp(model, ids[-W - 1:-1])[-1, ids[-1]], abs=1e-6)
    with pytest.raises(ValueError, match="block_size 8"):
        rolling_loglikelihood(model, ids, window=9)


class Table:
    block_size = None

    def __init__(self, probs):
        self.table = np.log(np.asarray(probs, dtype=np.float64))

    def forward(self, idx, targets=None):
        return Tensor(self.table[np.asarray(idx)]), None

    __call__ = forward


def test_units_by_hand():
    """Ids of " ", "a", "b" are 0, 1, 2 and P[prev][next] the table below. The text "ab b"
    without a prefix scores b|a, " "|b, b|" ": 0.25 * 0.1 * 0.2 = 0.005, so L = -ln 0.005
    = 5.2983 nats over 3 tokens, the 3 bytes "b b" (2 words):
    bits per byte = 5.2983 / (3 ln 2) = 2.5480; token perplexity = 0.005^(-1/3) = 5.848;
    word perplexity = 0.005^(-1/2) = 14.142."""
    P = [[0.2, 0.6, 0.2], [0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]
    tokenizer = CharTokenizer(" ab")
    ids = tokenizer.encode("ab b")
    logp = rolling_loglikelihood(Table(P), ids, window=2, stride=1)
    np.testing.assert_allclose(logp, np.log([0.25, 0.1, 0.2]))
    report = rolling_report(logp, tokenizer.decode(ids[1:]))
    assert report.total_nll == pytest.approx(-math.log(0.005))
    assert report.bits_per_byte == pytest.approx(2.5480, abs=1e-4)
    assert report.token_perplexity == pytest.approx(5.848, abs=1e-3)
    assert report.word_perplexity == pytest.approx(14.142, abs=1e-3)
    # With an end-of-text prefix (here id 0, the " " row), "a" is scored too: P(a|" ") = 0.6.
    with_prefix = rolling_loglikelihood(Table(P), ids, window=2, prefix_id=0)
    np.testing.assert_allclose(with_prefix, np.log([0.6, 0.25, 0.1, 0.2]))


def test_report_refuses_nothing():
    with pytest.raises(ValueError, match="no scored tokens"):
        rolling_report([], "x")
    with pytest.raises(ValueError, match="empty"):
        rolling_report([-1.0], "")
