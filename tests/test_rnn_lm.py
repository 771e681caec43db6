"""RNNLM: the shared interface, the carried state, truncated-BPTT batches, seeded sampling."""
import math

import numpy as np
import pytest

from numpylm.autograd import Tensor, gradcheck
from numpylm.models import RNNLM, detach_state, stream_batches

CELLS = ["rnn", "lstm", "gru"]


@pytest.mark.parametrize("cell", CELLS)
def test_shapes_and_loss_of_a_blank_head(cell):
    """With the head's weight and bias zero every logit is 0, softmax is uniform over V = 7,
    and the cross-entropy is -log(1/7) = log 7 whatever the input."""
    model = RNNLM(7, 4, 5, cell=cell, rng=0)
    model.head.weight.data[...] = 0.0
    model.head.bias.data[...] = 0.0
    idx = np.array([[1, 2, 3], [4, 5, 6]])
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 3, 7) and logits.dtype == np.float32
    assert loss.item() == pytest.approx(math.log(7), rel=1e-6)
    logits, loss = model(idx)
    assert loss is None


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_model_gradcheck(cell, num_layers):
    model = RNNLM(5, 3, 4, cell=cell, num_layers=num_layers, rng=1).to(np.float64)
    idx = np.array([[0, 1, 4, 2], [3, 3, 0, 1]])
    targets = np.array([[1, 4, 2, 0], [3, 0, 1, 2]])
    gradcheck(lambda: model(idx, targets)[1], params=list(model.parameters()))


@pytest.mark.parametrize("cell", CELLS)
def test_carried_state_equals_one_long_pass(cell):
    model = RNNLM(6, 4, 5, cell=cell, num_layers=2, rng=2).to(np.float64)
    idx = np.random.default_rng(0).integers(0, 6, (3, 10))
    whole, _ = model(idx)
    first, _, state = model.forward_with_state(idx[:, :4])
    second, _ = model(idx[:, 4:], state=state)
    np.testing.assert_allclose(np.concatenate([first.data, second.data], axis=1), whole.data,
                               rtol=1e-12, atol=1e-14)
    # forward() leaves the final state of its call in last_state
    _, _, final = model.forward_with_state(idx)
    for a, b in zip(detach_state(final) if cell == "lstm" else (final,),
                    model.last_state if cell == "lstm" else (model.last_state,)):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=1e-14)


def test_detached_state_stops_the_gradient():
    model = RNNLM(6, 4, 5, cell="lstm", rng=3)
    idx = np.zeros((2, 3), dtype=np.int64)
    _, _, state = model.forward_with_state(idx)
    carried = detach_state(state)
    assert all(s.is_leaf and not s.requires_grad for s in carried)
    np.testing.assert_array_equal(carried[0].data, state[0].data)
    _, loss = model(idx, idx, state=carried)
    loss.backward()  # reaches the parameters only through this chunk
    assert model.rnn.weight_hh_l0.grad is not None
    assert detach_state(None) is None


def test_stream_batches_by_hand():
    """The worked example in the docstring: ids 0..12, B = 2, T = 2."""
    chunks = [(x.tolist(), y.tolist()) for x, y in stream_batches(np.arange(13), 2, 2)]
    assert chunks == [([[0, 1], [6, 7]], [[1, 2], [7, 8]]),
                      ([[2, 3], [8, 9]], [[3, 4], [9, 10]]),
                      ([[4, 5], [10, 11]], [[5, 6], [11, 12]])]
    with pytest.raises(ValueError, match="too few"):
        list(stream_batches(np.arange(5), 2, 4))


def test_generate_is_seeded_and_matches_rerunning_the_context():
    """Sampling with the carried state gives the same tokens as rerunning `forward` on the
    whole context for every new token (use_cache=False)."""
    from numpylm.inference import generate

    model = RNNLM(9, 4, 6, cell="gru", rng=4).to(np.float64)
    prompt = np.array([[1, 2, 3]])
    a = generate(model, prompt, 12, seed=7)[0]
    b = generate(model, prompt, 12, seed=7)[0]
    assert a.shape == (15,)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:3], prompt[0])
    assert ((a >= 0) & (a < 9)).all()
    np.testing.assert_array_equal(a, generate(model, prompt[0], 12, seed=7, use_cache=False))
    assert model.training  # restored after sampling
    greedy = generate(model, prompt, 5, temperature=0)[0]
    np.testing.assert_array_equal(greedy, generate(model, prompt[0], 5, temperature=0,
                                                   use_cache=False))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        RNNLM(5, 3, 4, cell="transformer")
    model = RNNLM(5, 3, 4)
    with pytest.raises(ValueError, match=r"shape \(B, T\), got dtype int64 and shape \(4,\)"):
        model(np.arange(4))
    with pytest.raises(ValueError, match="integer"):
        model(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"same shape as idx \(1, 4\).*shape \(1, 3\)"):
        model(np.zeros((1, 4), dtype=int), np.zeros((1, 3), dtype=int))
    with pytest.raises(ValueError, match=r"expected a state of shape \(1, 1, 4\)"):
        model(np.zeros((1, 4), dtype=int), state=(np.zeros((1, 2, 4)), np.zeros((1, 2, 4))))


def test_parameter_names():
    model = RNNLM(5, 3, 4, cell="gru", num_layers=2)
    assert [n for n, _ in model.named_parameters()] == [
        "embedding.weight",
        "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
        "rnn.weight_ih_l1", "rnn.weight_hh_l1", "rnn.bias_ih_l1", "rnn.bias_hh_l1",
        "head.weight", "head.bias"]


def test_a_few_steps_of_training_lower_the_loss():
    from numpylm.optim import Adam, clip_grad_norm_

    ids = np.tile(np.arange(6), 20)   # 0 1 2 3 4 5 0 1 ...: the next token is easy to learn
    model = RNNLM(6, 8, 16, cell="lstm", rng=5)
    opt = Adam(model.parameters(), lr=0.05)
    losses, state = [], None
    for _ in range(3):
        for x, y in stream_batches(ids, 4, 8):
            _, loss, state = model.forward_with_state(x, y, state)
            state = detach_state(state)
            opt.zero_grad()
            loss.backward()
            clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert isinstance(state[0], Tensor)
