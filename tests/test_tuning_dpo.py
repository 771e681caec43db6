"""DPO: the loss on a hand-computed case, its gradient, sequence log-probabilities against a
direct computation, and a short run that raises preference accuracy."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpylm.autograd import Tensor
from numpylm.autograd.gradcheck import gradcheck
from numpylm.models.base import IGNORE_INDEX
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.tuning.data import TaskTokenizer, task_preferences
from numpylm.tuning.dpo import (dpo_loss, dpo_train, encode_pairs, preference_accuracy,
                                sequence_logprobs)

TOK = TaskTokenizer()


def tiny(seed=0, dtype=np.float32):
    return Llama(LlamaConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                             max_position_embeddings=160), rng=seed, dtype=dtype)


def test_dpo_loss_by_hand():
    # z = beta ((pc - rc) - (pr - rr)) = 0.5 ((-1 + 1.5) - (-2 + 1.5)) = 0.5
    # loss = -log sigmoid(0.5) = log(1 + e^-0.5)
    loss, stats = dpo_loss(Tensor(np.array([-1.0])), Tensor(np.array([-2.0])),
                           np.array([-1.5]), np.array([-1.5]), beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.5)), rel=1e-12)
    assert stats["reward_margin"] == pytest.approx(0.5)
    assert stats["chosen_reward"] == pytest.approx(0.25)
    assert stats["rejected_reward"] == pytest.approx(-0.25)
    assert stats["reward_accuracy"] == 1.0
    # equal policy and reference: z = 0, loss = log 2, whatever beta
    loss, _ = dpo_loss(Tensor(np.array([-3.0, -1.0])), Tensor(np.array([-2.0, -4.0])),
                       np.array([-3.0, -1.0]), np.array([-2.0, -4.0]), beta=2.0)
    assert loss.item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(Tensor(np.zeros(1)), Tensor(np.zeros(1)), np.zeros(1), np.zeros(1), beta=0)


def test_dpo_loss_never_overflows():
    loss, _ = dpo_loss(Tensor(np.array([-1000.0])), Tensor(np.array([0.0])),
                       np.zeros(1), np.zeros(1), beta=1.0)
    assert loss.item() == pytest.approx(1000.0)


@given(st.integers(1, 5), st.floats(0.05, 3.0))
def test_dpo_loss_gradcheck(n, beta):
    rng = np.random.default_rng(n)
    pc, pr, rc, rr = (rng.normal(size=n) * 3 for _ in range(4))
    gradcheck(lambda a, b: dpo_loss(a, b, rc, rr, beta)[0],
              Tensor(pc, requires_grad=True), Tensor(pr, requires_grad=True))


def test_sequence_logprobs_sum_the_answer_tokens():
    model = tiny(dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.integers(0, TOK.vocab_size, (2, 6))
    y = rng.integers(0, TOK.vocab_size, (2, 6))
    y[0, :3] = IGNORE_INDEX
    y[1, [0, 5]] = IGNORE_INDEX
    logits = model(x)[0].data
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = [sum(logp[b, t, y[b, t]] for t in range(6) if y[b, t] != IGNORE_INDEX)
                for b in range(2)]
    np.testing.assert_allclose(sequence_logprobs(model, x, y).data, expected, rtol=1e-10)


def test_sequence_logprobs_gradcheck():
    model = tiny(dtype=np.float64)
    x = np.array([[3, 4, 5, 6]])
    y = np.array([[IGNORE_INDEX, 5, 6, 7]])
    w = model.model.layers[0].self_attn.v_proj.weight
    gradcheck(lambda: sequence_logprobs(model, x, y).sum(), params=[w], max_elements=32)


def test_dpo_raises_preference_accuracy():
    model = tiny()
    train = encode_pairs(task_preferences("sort", 32, seed=0), TOK)
    before = preference_accuracy(model, train)
    result = dpo_train(model, train, steps=30, batch_size=8, beta=0.5, lr=1e-2)
    after = preference_accuracy(model, train)
    assert after > before + 0.2 and after >= 0.8
    assert result.stats[-1]["reward_margin"] > 0
