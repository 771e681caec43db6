"""The training data pipeline and the training loop: splits and batches, the schedule, weight-decay
groups, gradient accumulation, loss going down, and stopping on a NaN.

The loop is tested with `TinyLM`, a bigram model built here from `numpylm.nn` (an embedding,
a LayerNorm, optional dropout and a Linear head), so these tests do not depend on any model
family; `test_checkpoint.py` imports it too.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm import functional as F
from numpylm import nn
from numpylm.corpus import embedded_corpus
from numpylm.training import estimate_loss
from numpylm.tokenizers.char import CharTokenizer
from numpylm.training import (TrainConfig, get_batch, load_checkpoint, make_optimizer,
                              prepare_data, train, train_val_split)


class TinyLM(nn.Module):
    """logits = Linear(LayerNorm(Dropout(Embedding(idx)))): a bigram model with every kind of
    parameter the loop treats differently (matrices, biases, norm gains) and optional dropout,
    one layer drawing from the shared generator and one with its own."""

    def __init__(self, vocab_size: int, dim: int = 16, dropout: float = 0.0, seed: int = 0,
                 dtype=np.float32) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.emb = nn.Embedding(vocab_size, dim, dtype=dtype, rng=rng)
        self.drop_shared = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(dim, dtype=dtype)
        self.drop_own = nn.Dropout(dropout, rng=seed + 1)
        self.head = nn.Linear(dim, vocab_size, dtype=dtype, rng=rng)

    def forward(self, idx, targets=None):
        h = self.drop_own(self.ln(self.drop_shared(self.emb(idx))))   # (B, T, C)
        logits = self.head(h)                                         # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss


def small_data(n_chars: int = 20_000, val_fraction: float = 0.1):
    text = embedded_corpus()[:n_chars]
    tokenizer = CharTokenizer.from_text(text, unk="<unk>")
    return tokenizer, prepare_data(tokenizer, text=text, val_fraction=val_fraction)


def quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------------------------- data


def test_train_val_split_is_contiguous():
    # 10 ids, 20% held out: round(10 * 0.8) = 8 train ids, then the last 2.
    train_ids, val_ids = train_val_split(np.arange(10), 0.2)
    assert train_ids.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert val_ids.tolist() == [8, 9]
    all_train, none = train_val_split(np.arange(5), 0.0)
    assert all_train.tolist() == [0, 1, 2, 3, 4] and none.size == 0
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(np.arange(5), 1.0)
    with pytest.raises(ValueError, match="1-D"):
        train_val_split(np.zeros((2, 2), dtype=np.int64))


@settings(max_examples=20)
@given(n=st.integers(2, 60), B=st.integers(1, 5), T=st.integers(1, 8), seed=st.integers(0, 99))
def test_get_batch_gives_shifted_windows(n, B, T, seed):
    ids = np.arange(n) * 7 + 3          # distinct values, so a value tells its position
    if n < T + 1:
        with pytest.raises(ValueError, match="block_size"):
            get_batch(ids, B, T, np.random.default_rng(seed))
        return
    x, y = get_batch(ids, B, T, np.random.default_rng(seed))
    assert x.shape == y.shape == (B, T)
    pos = (x - 3) // 7
    # Each row is T consecutive positions, and y is x moved one position on.
    assert (np.diff(pos, axis=1) == 1).all()
    assert (y == x + 7).all()
    assert pos.min() >= 0 and pos.max() + 1 <= n - 1
    x2, _ = get_batch(ids, B, T, np.random.default_rng(seed))
    assert np.array_equal(x, x2)     # the same seed draws the same windows


def test_prepare_data_measures_the_validation_text():
    # "ab" * 10 is 20 characters -> 20 char tokens; 10% held out = the last 2 ids, "ab".
    tokenizer = CharTokenizer.from_text("ab")
    data = prepare_data(tokenizer, text="ab" * 10, val_fraction=0.1)
    assert len(data.train) == 18 and data.val.tolist() == [0, 1]
    assert data.val_chars == 2 and data.val_bytes == 2 and data.tokens_per_char == 1.0
    # "é" is one character but two UTF-8 bytes.
    data = prepare_data(CharTokenizer.from_text("é"), text="é" * 10, val_fraction=0.5)
    assert data.val_chars == 5 and data.val_bytes == 10
    # ln 2 nats per token is 1 bit per token: 5 tokens over 5 characters, over 10 bytes.
    assert data.val_bits_per_char(math.log(2)) == pytest.approx(1.0)
    assert data.val_bits_per_byte(math.log(2)) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------- settings


def test_schedule_warms_up_then_decays_along_a_cosine():
    # lr 1, floor 0.1, 2 warmup steps, 6 steps -> 4 decay steps:
    #   steps 0, 1 (warmup):   1 * 1/2, 1 * 2/2                  = 0.5, 1.0
    #   step 2 + j, j = 0..3:  0.1 + 0.9 * (1 + cos(pi j / 4)) / 2 = 1.0, 0.86820, 0.55, 0.23180
    config = TrainConfig(steps=6, lr=1.0, min_lr=0.1, warmup_steps=2)
    expected = [0.5, 1.0, 1.0, 0.868198, 0.55, 0.231802]
    assert [config.lr_at(s) for s in range(6)] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("field, value", [("steps", -1), ("batch_size", 0), ("lr", float("nan")),
                                          ("grad_clip", -1.0), ("grad_accum", 1.5)])
def test_bad_settings_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_weight_decay_applies_to_matrices_only():
    model = TinyLM(5)
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    # Matrices: emb.weight (5, 16), head.weight (5, 16). Vectors: ln.weight, ln.bias, head.bias.
    assert {id(p) for p in decay["params"]} == {id(model.emb.weight), id(model.head.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model.ln.weight), id(model.ln.bias),
                                                   id(model.head.bias)}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


# ---------------------------------------------------------------------------------- the loop


def test_gradient_accumulation_equals_one_larger_batch():
    """k = 4 micro-batches of 2 windows make the same updates as 1 batch of 8 windows: the
    loss of each micro-batch is scaled by 1/4, so the accumulated gradient is the gradient of
    the mean over all 8 windows. In float64 the two runs agree to rounding."""
    _, data = small_data(5_000)
    runs = {}
    for k, B in ((1, 8), (4, 2)):
        model = TinyLM(data.train.max() + 1, dtype=np.float64)
        config = TrainConfig(steps=3, batch_size=B, grad_accum=k, block_size=8, lr=1e-2,
                             warmup_steps=0, eval_interval=100, log_interval=100)
        result = train(model, data, config, log=quiet)
        runs[k] = (model.state_dict(), result.losses)
    (big, big_losses), (acc, acc_losses) = runs[1], runs[4]
    assert acc_losses == pytest.approx(big_losses, rel=1e-12)
    for name in big:
        np.testing.assert_allclose(acc[name], big[name], rtol=1e-10, atol=1e-12, err_msg=name)
    # And the runs did move the parameters (the comparison is not of two untouched models).
    assert not np.allclose(big["head.weight"], TinyLM(data.train.max() + 1,
                                                      dtype=np.float64).head.weight.data)


def test_a_short_run_on_the_embedded_corpus_lowers_the_loss():
    tokenizer, data = small_data(30_000)
    model = TinyLM(tokenizer.vocab_size, dim=32)
    before = estimate_loss(model, data.val, 16, 32, n_batches=4)
    lines = []
    config = TrainConfig(steps=80, batch_size=16, block_size=32, lr=2e-2, warmup_steps=5,
                         eval_interval=40, eval_batches=4, log_interval=20)
    result = train(model, data, config, log=lines.append)
    after = estimate_loss(model, data.val, 16, 32, n_batches=4)
    assert result.stopped == "completed" and result.step == 80
    assert after < before - 1.0, (before, after)
    # A uniform guess costs ln V nats; a trained bigram model beats it.
    assert after < math.log(tokenizer.vocab_size)
    progress = [line for line in lines if line.startswith("step 20/80")]
    assert progress and all(word in progress[0] for word in ("loss", "lr", "tok/s", "ETA"))
    assert any("val loss" in line and "bits/char" in line for line in lines)
    assert [s for s, _ in result.val_losses] == [40, 80]


class NaNAfter(TinyLM):
    """TinyLM whose loss becomes NaN from its `bad_call`-th forward pass on."""

    def __init__(self, vocab_size: int, bad_call: int) -> None:
        super().__init__(vocab_size)
        self.calls, self.bad_call = 0, bad_call

    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        if targets is not None and self.training:
            self.calls += 1
            if self.calls >= self.bad_call:
                loss = loss * float("nan")
        return logits, loss


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    tokenizer, data = small_data(5_000)
    model = NaNAfter(tokenizer.vocab_size, bad_call=6)   # updates 1..5 fine, the 6th is NaN
    out = tmp_path / "run"
    config = TrainConfig(steps=20, batch_size=4, block_size=8, warmup_steps=0,
                         eval_interval=2, eval_batches=1, log_interval=100, out_dir=str(out))
    lines = []
    result = train(model, data, config, tokenizer=tokenizer, log=lines.append)
    assert result.stopped == "nonfinite" and result.step == 5
    assert "not finite" in result.message and str(out) in result.message
    assert result.message in lines
    # Checkpoints were written at steps 2 and 4; the NaN at step 5 wrote nothing.
    ckpt = load_checkpoint(out, for_resume=True)
    assert ckpt.trainer_state["step"] == 4
    assert all(np.isfinite(a).all() for a in ckpt.model_state.values())


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_a_huge_learning_rate_never_overwrites_the_good_checkpoint(tmp_path):
    tokenizer, data = small_data(5_000)
    out = tmp_path / "run"
    settings_ = dict(batch_size=4, block_size=8, warmup_steps=0, eval_interval=1,
                     eval_batches=1, log_interval=100, out_dir=str(out))
    train(TinyLM(tokenizer.vocab_size), data, TrainConfig(steps=3, **settings_),
          tokenizer=tokenizer, log=quiet)
    good = load_checkpoint(out).model_state
    # Resume with lr 1e39 (beyond float32's range): the weights overflow on the first update.
    result = train(TinyLM(tokenizer.vocab_size), data,
                   TrainConfig(steps=10, lr=1e39, min_lr=1e39, **settings_),
                   tokenizer=tokenizer, resume_from=str(out), log=quiet)
    assert result.stopped == "nonfinite" and "no longer finite" in result.message
    kept = load_checkpoint(out, for_resume=True)
    assert kept.trainer_state["step"] == 3
    for name, array in good.items():
        assert np.array_equal(kept.model_state[name], array), name


def test_saving_needs_a_tokenizer(tmp_path):
    _, data = small_data(2_000)
    with pytest.raises(ValueError, match="tokenizer"):
        train(TinyLM(8), data, TrainConfig(steps=1, out_dir=str(tmp_path)), log=quiet)
