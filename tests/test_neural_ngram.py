"""Neural n-grams: BigramLM and MLPLM gradients, the shared interface, convergence to counts."""
import math

import numpy as np
import pytest

import numpylm.functional as F
from numpylm.autograd import gradcheck
from numpylm.models import MLPLM, BigramLM, NGramLM
from numpylm.optim import SGD, Adam

# Ids: 0 is '.', the start and end of every sequence; 1 and 2 are letters.
# Sequences [], [1], [2], [1 1], [1 2], [2 1], [2 2], padded with '.', give the bigrams
#   row '.': (. .) 1, (. 1) 3, (. 2) 3   -> MLE [1/7, 3/7, 3/7]
#   row 1:   (1 .) 3, (1 1) 1, (1 2) 1   -> MLE [3/5, 1/5, 1/5]
#   row 2:   (2 .) 3, (2 1) 1, (2 2) 1   -> MLE [3/5, 1/5, 1/5]
# so every one of the 9 bigrams occurs.
SEQS = [[], [1], [2], [1, 1], [1, 2], [2, 1], [2, 2]]
MLE = np.array([[1 / 7, 3 / 7, 3 / 7], [3 / 5, 1 / 5, 1 / 5], [3 / 5, 1 / 5, 1 / 5]])


def rows(seqs, pad=0):
    """One row per sequence: idx = '.' + seq, targets = seq + '.', right-padded (targets -1)."""
    T = max(len(s) for s in seqs) + 1
    idx = np.full((len(seqs), T), pad)
    targets = np.full((len(seqs), T), -1)
    for i, s in enumerate(seqs):
        idx[i, : len(s) + 1] = [0] + s
        targets[i, : len(s) + 1] = s + [0]
    return idx, targets


def test_context_ids_by_hand():
    """Context 3, pad 0: position t sees idx[t], idx[t-1], idx[t-2], most recent first."""
    m = MLPLM(8, context=3, pad_id=0, n_embd=2, n_hidden=3, rng=0)
    assert m.context_ids(np.array([[5, 6, 7]])).tolist() == [[[5, 0, 0], [6, 5, 0], [7, 6, 5]]]
    m = MLPLM(8, context=2, n_embd=2, n_hidden=3, rng=0)  # default pad: the extra id 8
    assert m.context_ids(np.array([[5, 6]])).tolist() == [[[5, 8], [6, 5]]]
    # forward reads any length (block_size None); each position sees `context` ids
    assert m.wte.weight.shape == (9, 2) and m.block_size is None and m.config.context == 2


def test_interface_shapes_and_loss():
    m = MLPLM(6, context=2, n_embd=3, n_hidden=5, rng=0)
    idx = np.array([[1, 2, 3], [4, 5, 0]])
    logits, loss = m(idx)
    assert logits.shape == (2, 3, 6) and loss is None
    targets = np.array([[2, 3, -1], [5, 0, 1]])
    _, loss = m(idx, targets)
    flat_logits, flat_targets = logits.data.reshape(-1, 6), targets.reshape(-1)
    keep = flat_targets != -1  # the loss is the mean over the 5 counted targets
    logp = flat_logits - np.log(np.exp(flat_logits).sum(-1, keepdims=True))
    assert loss.item() == pytest.approx(-logp[keep, flat_targets[keep]].mean(), rel=1e-5)
    b = BigramLM(6)
    logits, loss = b(idx, targets)
    assert logits.shape == (2, 3, 6)
    assert loss.item() == pytest.approx(math.log(6), rel=1e-6)  # zero logits: uniform


def test_mlp_sees_exactly_its_context():
    m = MLPLM(7, context=2, n_embd=3, n_hidden=4, rng=1)
    idx = np.array([[1, 2, 3, 4, 5]])
    base = m(idx)[0].data
    changed = idx.copy()
    changed[0, 2] = 6  # seen by positions 2 and 3 only
    after = m(changed)[0].data
    np.testing.assert_array_equal(base[:, :2], after[:, :2])  # the past is unchanged
    np.testing.assert_array_equal(base[:, 4:], after[:, 4:])  # beyond the context window
    assert not np.allclose(base[:, 2:4], after[:, 2:4])


def test_bigram_gradcheck():
    m = BigramLM(4).to(np.float64)
    m.logits.data[...] = np.random.default_rng(0).standard_normal((4, 4))
    idx = np.array([[0, 1, 2], [3, 3, 1]])
    targets = np.array([[1, 2, -1], [3, 1, 0]])
    gradcheck(lambda: m(idx, targets)[1], params=m.parameters())


@pytest.mark.parametrize("pad_id", [None, 0])
def test_mlp_gradcheck(pad_id):
    m = MLPLM(5, context=3, n_embd=2, n_hidden=4, pad_id=pad_id, rng=0).to(np.float64)
    idx = np.array([[0, 1, 2, 3], [4, 4, 0, 1]])
    targets = np.array([[1, 2, 3, -1], [4, 0, 1, 2]])
    gradcheck(lambda: m(idx, targets)[1], params=m.parameters())


def test_bigram_converges_to_the_count_mle():
    """Where every bigram occurs, the zero-gradient point of the mean cross-entropy is
    softmax(W[h]) = c(h w) / c(h) (see bigram.py): gradient descent reaches the MLE table
    above, which is also what the count model gives."""
    counts = NGramLM(2, 3, "mle", bos_id=0, eos_id=0).fit(SEQS)
    np.testing.assert_allclose([counts.distribution([h]) for h in range(3)], MLE, rtol=1e-12)
    m = BigramLM(3).to(np.float64)
    idx, targets = rows(SEQS)
    opt = SGD(m.parameters(), lr=5.0)  # full batch, plain gradient descent
    for _ in range(300):
        m.zero_grad()
        loss = m(idx, targets)[1]
        loss.backward()
        opt.step()
    probs = F.softmax(m.logits, axis=-1).data
    np.testing.assert_allclose(probs, MLE, atol=1e-6)
    # and the loss is the count model's mean NLL
    assert loss.item() == pytest.approx(counts.mean_nll(SEQS), abs=1e-9)


def test_mlp_training_lowers_the_loss():
    rng = np.random.default_rng(0)
    stream = np.tile([1, 2, 3, 1, 4], 40)  # a periodic text: the context predicts it well
    m = MLPLM(5, context=2, n_embd=4, n_hidden=16, rng=0)
    opt = Adam(m.parameters(), lr=0.02)
    losses = []
    for _ in range(60):
        starts = rng.integers(0, len(stream) - 9, size=8)
        x = stream[starts[:, None] + np.arange(8)]
        y = stream[starts[:, None] + np.arange(1, 9)]
        m.zero_grad()
        loss = m(x, y)[1]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 1.4  # about log 5 at the start
    assert np.mean(losses[-10:]) < 0.5 * losses[0]


def test_bad_input():
    with pytest.raises(ValueError, match="vocab_size"):
        BigramLM(0)
    with pytest.raises(ValueError, match="context"):
        MLPLM(5, context=0)
    with pytest.raises(ValueError, match="pad_id"):
        MLPLM(5, pad_id=5)
    m = MLPLM(5, n_embd=2, n_hidden=3, rng=0)
    with pytest.raises(ValueError, match=r"integer token ids of shape \(B, T\)"):
        m(np.array([1, 2]))
    with pytest.raises(ValueError, match="id 7"):
        m(np.array([[1, 7]]))
    with pytest.raises(ValueError, match="same shape"):
        m(np.array([[1, 2]]), np.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match="target 9 is outside"):
        BigramLM(5)(np.array([[1, 2]]), np.array([[9, -1]]))


def test_configs_rebuild_the_models():
    m = MLPLM(7, context=4, n_embd=3, n_hidden=5, pad_id=0)
    from dataclasses import asdict

    assert MLPLM(**asdict(m.config)).config == m.config
    lm = NGramLM(3, 5, "kneser_ney", discount=0.3)
    assert NGramLM(**lm.config).config == lm.config and NGramLM(**lm.config).vocab_size == 6
