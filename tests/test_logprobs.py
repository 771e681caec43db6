"""Log-probabilities of generated tokens equal those of `forward` run on the finished sequence,
with OpenAI's `top_logprobs` semantics."""
import numpy as np
import pytest

from numpylm.inference import SamplingParams, generate
from numpylm.inference.logprobs import generate_with_logprobs, token_logprobs
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.models.rnn_lm import RNNLM


def gpt():
    m = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16), rng=0)
    rng = np.random.default_rng(1)
    for p in m.parameters():
        p.data[...] = rng.normal(0, 0.4, p.shape)
    return m


def forward_logprobs(model, ids):
    """log p of every next token by running forward once on the whole sequence (float64)."""
    logits, _ = model(np.asarray(ids)[None, :])
    z = np.asarray(logits.data, dtype=np.float64)[0]
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))  # (T, V)


@pytest.mark.parametrize("make", [gpt, lambda: RNNLM(13, 8, 16, cell="lstm", rng=2)])
@pytest.mark.parametrize("temperature", [0.0, 1.3])
def test_logprobs_equal_those_of_forward(make, temperature):
    model = make()
    prompt = [1, 5, 2]
    sampling = SamplingParams(temperature=temperature, seed=4, repetition_penalty=1.2)
    ids, records = generate_with_logprobs(model, prompt, 8, top_logprobs=3, sampling=sampling)
    np.testing.assert_array_equal(ids, generate(model, prompt, 8, sampling=sampling))
    lp = forward_logprobs(model, ids)
    assert len(records) == 8
    for t, record in enumerate(records):
        row = lp[len(prompt) - 1 + t]  # the distribution the token was drawn after
        assert record.token == ids[len(prompt) + t]
        assert record.logprob == pytest.approx(row[record.token], abs=1e-5)
        expected_top = np.argsort(-row)[:3]
        assert [i for i, _ in record.top] == list(expected_top)
        np.testing.assert_allclose([v for _, v in record.top], row[expected_top], atol=1e-5)


def test_a_batch_gets_one_list_per_row_as_long_as_its_new_tokens():
    model = gpt()
    out = generate(model, [4], 6, temperature=0)
    stop = int(out[1])  # the first new token of row 0: it stops at once
    ids, records = generate_with_logprobs(model, [[4], [7, 8]], 6,
                                          sampling=SamplingParams(0, stop_tokens=(stop,)))
    assert len(records[0]) == len(ids[0]) - 1 == 1
    assert len(records[1]) == len(ids[1]) - 2 >= 1
    assert all(r.top == () for r in records[0])


def test_hand_computed_logprobs_and_ties():
    """Logits (0, ln 3, ln 3, 0): probabilities 1/8, 3/8, 3/8, 1/8. The tie between 1 and 2 goes
    to the lower id first."""
    z = np.log(np.array([[1.0, 3.0, 3.0, 1.0]]))
    (record,) = token_logprobs(z, np.array([3]), top_logprobs=2)
    assert record.logprob == pytest.approx(np.log(1 / 8))
    assert [i for i, _ in record.top] == [1, 2]
    assert record.top[0][1] == pytest.approx(np.log(3 / 8))


@pytest.mark.parametrize("bad", [-1, 21, 2.5])
def test_top_logprobs_outside_its_range_is_named(bad):
    with pytest.raises(ValueError, match="top_logprobs"):
        generate_with_logprobs(gpt(), [1], 2, top_logprobs=bad)
