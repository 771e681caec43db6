"""Log-likelihood scoring: lm-evaluation-harness's definitions on cases worked by hand, the
tokenisation boundary, and the shared-context path equal to the from-scratch one for every
family."""
from __future__ import annotations

import math

import numpy as np
import pytest

from numpylm.autograd.tensor import Tensor
from numpylm.evaluation.loglikelihood import (encode_pair, multiple_choice_metrics,
                                              score_from_scratch, score_shared)
from numpylm.models.decoding import WindowState
from numpylm.tokenizers import CharTokenizer
from numpylm.tokenizers.bpe import BPETokenizer
from numpylm.training.families import FAMILIES, build_model, get_family

# The characters " ", "a", "b" get ids 0, 1, 2; P[prev][next] is the model's whole table.
TOKENIZER = CharTokenizer(" ab")
P = np.array([[0.2, 0.6, 0.2],      # after " "
              [0.5, 0.25, 0.25],    # after "a"
              [0.1, 0.1, 0.8]])     # after "b"


class TableBigram:
    """logits of the next token = log P[previous token]: every probability known by hand."""

    block_size = None

    def __init__(self, probs: np.ndarray) -> None:
        self.table = np.log(probs)
        self.vocab_size = probs.shape[0]

    def forward(self, idx, targets=None):
        return Tensor(self.table[np.asarray(idx)]), None

    __call__ = forward

    def init_state(self, batch_size: int = 1) -> WindowState:
        return WindowState(batch_size, 1, fill=0)

    def step(self, state, ids, mask=None) -> np.ndarray:
        state.push(np.asarray(ids), mask)
        return self.table[state.window[:, -1]]


def test_loglikelihood_by_hand():
    """Context "a", choices " a" and " bbbb" (the space is the target delimiter):
    ll(" a")    = ln P(" "|a) + ln P(a|" ")                  = ln(0.5 * 0.6)       = ln 0.3
    ll(" bbbb") = ln P(" "|a) + ln P(b|" ") + 3 ln P(b|b)     = ln(0.5 * 0.2 * 0.8^3) = ln 0.0512
    " a" is greedy (" " is the likeliest after "a", "a" after " "); " bbbb" is not."""
    model = TableBigram(P)
    ctx, a = encode_pair(TOKENIZER, "a", " a")
    _, bbbb = encode_pair(TOKENIZER, "a", " bbbb")
    assert ctx == [1] and a == [0, 1] and bbbb == [0, 2, 2, 2, 2]
    for score in (score_shared, score_from_scratch):
        first, second = score(model, ctx, [a, bbbb])
        assert first.logprob == pytest.approx(math.log(0.3), abs=1e-12) and first.is_greedy
        assert second.logprob == pytest.approx(math.log(0.0512), abs=1e-12)
        assert not second.is_greedy and second.n_tokens == 5


def test_acc_norm_differs_from_acc():
    """acc takes the larger ln 0.3 = -1.204 (choice 0); acc_norm divides by the choices' bytes,
    "a" (1) and "bbbb" (4): -1.204 against ln(0.0512) / 4 = -0.743, so it takes choice 1."""
    lls = [math.log(0.3), math.log(0.0512)]
    assert multiple_choice_metrics(lls, ["a", "bbbb"], gold=0) == {"acc": 1.0, "acc_norm": 0.0}
    assert multiple_choice_metrics(lls, ["a", "bbbb"], gold=1) == {"acc": 0.0, "acc_norm": 1.0}
    # Bytes, not characters: "é" is 2 bytes, so -1.5 / 2 beats -1.0 / 1.
    assert multiple_choice_metrics([-1.0, -1.5], ["x", "é"], gold=1)["acc_norm"] == 1.0
    with pytest.raises(ValueError, match="outside"):
        multiple_choice_metrics(lls, ["a", "bbbb"], gold=2)


def test_continuation_starting_with_a_space_splits_at_the_boundary():
    text = "the cat sat on the mat. the cat ate the rat. " * 30
    bpe = BPETokenizer.train(text, 300)
    ctx, cont = encode_pair(bpe, "the cat", " sat")
    # The whole string is encoded at once; the continuation is what follows the context's ids.
    assert ctx + cont == bpe.encode("the cat sat") and ctx == bpe.encode("the cat")
    assert bpe.decode(cont) == " sat"
    # A trailing space of the context moves to the continuation: the same ids as above.
    assert encode_pair(bpe, "the cat ", "sat") == (ctx, cont)
    assert len(bpe.encode(" sat")) < len(bpe.encode(" ") + bpe.encode("sat"))  # " sat" merged


class WithEos:
    """A character tokenizer with an end-of-text id, for the empty-context rule."""

    eos_id = 3

    def encode(self, text):
        return TOKENIZER.encode(text)

    def decode(self, ids):
        return TOKENIZER.decode(ids)


def test_an_empty_context_is_the_end_of_text_id():
    assert encode_pair(WithEos(), "", "ab") == ([3], [1, 2])
    assert encode_pair(WithEos(), " ", "ab") == ([3], [0, 1, 2])
    with pytest.raises(ValueError, match="end-of-text"):
        encode_pair(TOKENIZER, "", "ab")
    with pytest.raises(ValueError, match="empty"):
        encode_pair(TOKENIZER, "ab", "")


def _tiny(name: str, vocab: int, text_ids: np.ndarray):
    family = get_family(name)
    args = (family.ladder.args(vocab, 16, True) if family.ladder is not None
            else {"order": 3, "vocab_size": vocab, "smoothing": "kneser_ney"})
    model = build_model(name, args)
    if not family.trainable:
        model.fit([text_ids])
    return model


@pytest.mark.parametrize("name", list(FAMILIES))
def test_shared_context_equals_scoring_from_scratch(name):
    """Every family, contexts short and longer than a GPT's 16 positions (choices of
    different lengths then see differently cropped contexts), four choices each."""
    rng = np.random.default_rng(0)
    V = 7
    model = _tiny(name, V, rng.integers(0, V, size=300))
    for n_context in (1, 5, 14, 30):
        context = rng.integers(0, V, size=n_context).tolist()
        choices = [rng.integers(0, V, size=k).tolist() for k in (1, 3, 6, 9)]
        shared = score_shared(model, context, choices)
        scratch = score_from_scratch(model, context, choices)
        np.testing.assert_allclose([s.logprob for s in shared], [s.logprob for s in scratch],
                                   rtol=1e-5, atol=1e-5)
        assert [s.is_greedy for s in shared] == [s.is_greedy for s in scratch]
        # The copies of the state are independent: scoring one choice alone gives its number.
        alone = score_shared(model, context, [choices[2]])[0]
        assert alone.logprob == pytest.approx(shared[2].logprob, rel=1e-6, abs=1e-6)


def test_a_cropped_context_is_the_harness_window():
    """With a window of W, the model reads the last W + 1 ids of context + continuation
    minus the last: for the bigram table only the id before each token matters, so the
    number is the hand one, while a window shorter than the continuation is an error."""
    model = TableBigram(P)
    ctx, cont = [2, 2, 1], [0, 1]
    got = score_from_scratch(model, ctx, [cont], max_length=2)[0].logprob
    assert got == pytest.approx(math.log(0.5 * 0.6))
    assert score_shared(model, ctx, [cont], max_length=2)[0].logprob == pytest.approx(got)
    with pytest.raises(ValueError, match="window of 1"):
        score_shared(model, ctx, [cont], max_length=1)
    with pytest.raises(ValueError, match="no tokens"):
        score_shared(model, ctx, [[]])
