"""GRPO: group-normalised advantages by hand, the loss's gradient, the direction of an update,
and one sampling step end to end."""
import math

import numpy as np
import pytest

from numpylm.autograd.gradcheck import gradcheck
from numpylm.models.base import IGNORE_INDEX
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.optim import SGD
from numpylm.tuning.data import TaskTokenizer, get_task
from numpylm.tuning.grpo import group_advantages, grpo_loss, grpo_train, token_logprobs

TOK = TaskTokenizer()


def tiny(dtype=np.float32):
    return Llama(LlamaConfig(vocab_size=TOK.vocab_size, hidden_size=16, intermediate_size=32,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                             max_position_embeddings=128), rng=0, dtype=dtype)


def test_group_advantages_by_hand():
    adv = group_advantages(np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1]]))
    # group 1: mean 1/2, sample std sqrt((4 * 1/4) / 3) = 1/sqrt(3): +-(1/2) sqrt(3)
    s = 0.5 * math.sqrt(3) / (1 + 1e-4 * math.sqrt(3))
    np.testing.assert_allclose(adv[0], [s, -s, -s, s], rtol=1e-12)
    np.testing.assert_array_equal(adv[1], 0.0)  # all right: nothing to learn
    # group 3: mean 1/4, sample std sqrt((3/16 * 3 + 9/16) / 3) = 1/2
    np.testing.assert_allclose(adv[2], np.array([-0.25, -0.25, -0.25, 0.75]) / (0.5 + 1e-4))
    with pytest.raises(ValueError, match="group"):
        group_advantages(np.ones((3, 1)))


def _batch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, TOK.vocab_size, (2, 6))
    y = np.full((2, 6), IGNORE_INDEX)
    y[0, 3:] = rng.integers(0, TOK.vocab_size, 3)
    y[1, 2:5] = rng.integers(0, TOK.vocab_size, 3)
    return x, y


def test_grpo_loss_gradcheck_with_kl():
    model = tiny(np.float64)
    x, y = _batch()
    ref = token_logprobs(model, x, y).data + 0.1 * (y != IGNORE_INDEX)
    w = model.model.layers[0].mlp.up_proj.weight
    gradcheck(lambda: grpo_loss(model, x, y, np.array([1.0, -0.5]), ref, beta=0.3),
              params=[w], max_elements=16)


def test_an_update_raises_the_better_answer():
    model = tiny(np.float64)
    x, y = _batch()
    before = token_logprobs(model, x, y).data.sum(axis=1)
    loss = grpo_loss(model, x, y, np.array([1.0, -1.0]))
    loss.backward()
    SGD(list(model.parameters()), lr=0.05).step()
    after = token_logprobs(model, x, y).data.sum(axis=1)
    assert after[0] > before[0] and after[1] < before[1]


def test_one_grpo_step_samples_rewards_and_updates():
    model = tiny()
    head = model.model.embed_tokens.weight.data.copy()
    result = grpo_train(model, TOK, get_task("addition"), steps=1, prompts_per_step=2,
                        group_size=3, max_new_tokens=4, lr=1e-2, beta=0.1)
    assert len(result.rewards) == 1 and 0 <= result.rewards[0] <= 1
    assert np.isfinite(result.losses[0])
    # untrained: every reward is 0, so every advantage is 0 and only the KL term (0 at the
    # reference) acts: the weights do not move
    np.testing.assert_array_equal(model.model.embed_tokens.weight.data, head)
