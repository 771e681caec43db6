"""Evaluation: the unit conversions by hand, and whole-text scoring checked against models whose
probabilities are known in closed form."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm import functional as F
from numpylm import nn
from numpylm.evaluation import (bits_per_byte, bits_per_char, bits_per_token, evaluate_ids,
                                evaluate_text, perplexity, report_from_nll)
from numpylm.models.ngram import NGramLM
from numpylm.tokenizers.char import CharTokenizer
from numpylm.training import estimate_loss


# ---------------------------------------------------------------------------------- metrics


def test_metrics_by_hand():
    # A uniform guess among 4 tokens: L = ln 4, perplexity 4, 2 bits per token.
    assert perplexity(math.log(4)) == pytest.approx(4.0)
    assert bits_per_token(math.log(4)) == pytest.approx(2.0)
    # 10 tokens of 1 bit each (L = ln 2) spread over 40 characters: 10 / 40 = 0.25 bits/char;
    # over 50 bytes (some characters take two): 10 / 50 = 0.2 bits/byte.
    assert bits_per_char(math.log(2), n_tokens=10, n_chars=40) == pytest.approx(0.25)
    assert bits_per_byte(math.log(2), n_tokens=10, n_bytes=50) == pytest.approx(0.2)
    assert perplexity(0.0) == 1.0 and perplexity(1e6) == math.inf


@pytest.mark.parametrize("call", [lambda: perplexity(-1.0),
                                  lambda: bits_per_token(float("nan")),
                                  lambda: bits_per_char(1.0, 5, 0),
                                  lambda: bits_per_byte(1.0, -1, 4)])
def test_metrics_refuse_impossible_input(call):
    with pytest.raises(ValueError):
        call()


def test_report_gathers_every_unit():
    # L = ln 2 over 6 tokens of a 12-character, 15-byte text: 6 bits in all.
    report = report_from_nll(math.log(2), 6, 12, 15)
    assert report.perplexity == pytest.approx(2.0) and report.bits_per_token == pytest.approx(1.0)
    assert report.bits_per_char == pytest.approx(0.5) and report.bits_per_byte == pytest.approx(0.4)
    assert "bits/char" in str(report) and report.as_dict()["n_bytes"] == 15


# ---------------------------------------------------------------------------------- scoring


class TableBigram(nn.Module):
    """logits of the next token = a fixed table row of the previous token, so the loss of
    any window is known without running the model: -log softmax(table[prev])[next]."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = nn.Parameter(table, np.float64)

    def forward(self, idx, targets=None):
        logits = F.embedding(np.asarray(idx), self.table)          # (B, T, V)
        return logits, None if targets is None else F.cross_entropy(logits, targets)


def direct_nll(table: np.ndarray, ids: np.ndarray) -> float:
    logp = table - np.log(np.exp(table).sum(axis=1, keepdims=True))
    return float(-logp[ids[:-1], ids[1:]].mean())


@settings(max_examples=20)
@given(n=st.integers(2, 80), T=st.integers(1, 12), batch=st.integers(1, 5),
       seed=st.integers(0, 1000))
def test_evaluate_ids_scores_every_token_once(n, T, batch, seed):
    """However the text is cut into windows and batches, each of the n - 1 tokens after the
    first is predicted exactly once, so a bigram model's mean NLL is the plain average."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(5, 5))
    ids = rng.integers(0, 5, size=n)
    mean_nll, count = evaluate_ids(TableBigram(table), ids, block_size=T, batch_size=batch)
    assert count == n - 1
    assert mean_nll == pytest.approx(direct_nll(table, ids), rel=1e-12)


def test_a_uniform_model_costs_log_v():
    # Equal logits: every token costs ln V nats, so the text costs log2(V) bits per token.
    V = 8
    text = "abcdefgh" * 5
    tokenizer = CharTokenizer.from_text(text)
    report = evaluate_text(TableBigram(np.zeros((V, V))), tokenizer, text, block_size=7)
    assert report.loss == pytest.approx(math.log(V)) and report.bits_per_token == pytest.approx(3.0)
    # One character per token: bits per char = bits per token, counted over 39 predicted chars.
    assert report.n_tokens == report.n_chars == 39 and report.bits_per_char == pytest.approx(3.0)


def test_bits_per_byte_counts_utf8_bytes():
    # "é" is 2 bytes: the same 3 bits per character become 1.5 bits per byte.
    text = "éabcdefg" * 3
    tokenizer = CharTokenizer.from_text(text)
    report = evaluate_text(TableBigram(np.zeros((8, 8))), tokenizer, text, block_size=4)
    # 23 predicted characters, of which "é" appears twice: 25 bytes.
    assert report.n_chars == 23 and report.n_bytes == 25
    assert report.bits_per_byte == pytest.approx(3.0 * 23 / 25)


def test_an_ngram_model_is_scored_from_its_counts():
    rng = np.random.default_rng(1)
    seq = rng.integers(0, 4, size=300)
    lm = NGramLM(2, vocab_size=4, smoothing="add_k", k=1.0).fit([seq[:200]])
    held_out = seq[200:]
    mean_nll, count = evaluate_ids(lm, held_out, block_size=16)
    # The count model predicts all 99 tokens after the first, from the same contexts.
    expected = -np.log([lm.prob(int(w), [int(h)]) for h, w in zip(held_out[:-1], held_out[1:])])
    assert count == 99 and mean_nll == pytest.approx(expected.mean(), rel=1e-12)


def test_estimate_loss_is_repeatable_and_leaves_the_model_as_it_was():
    rng = np.random.default_rng(0)
    model = TableBigram(rng.normal(size=(6, 6)))
    model.train()
    ids = rng.integers(0, 6, size=200)
    a = estimate_loss(model, ids, 4, 8, n_batches=3, seed=7)
    b = estimate_loss(model, ids, 4, 8, n_batches=3, seed=7)
    assert a == b and model.training
    assert estimate_loss(model, ids, 4, 8, n_batches=3, seed=8) != a
    with pytest.raises(ValueError, match="n_batches"):
        estimate_loss(model, ids, 4, 8, n_batches=0)


def test_evaluate_refuses_too_little_text():
    with pytest.raises(ValueError, match="at least 2"):
        evaluate_ids(TableBigram(np.zeros((3, 3))), np.array([1]), block_size=4)
    with pytest.raises(ValueError, match="at least 2"):
        evaluate_text(TableBigram(np.zeros((3, 3))), CharTokenizer.from_text("abc"), "a", 4)
