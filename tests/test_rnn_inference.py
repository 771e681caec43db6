"""The recurrent model's graph-free decoding step (`numpylm.models.rnn_inference`) against the
graph: every cell, one and two layers, a prompt then single tokens, padded rows, and state
snapshots that later steps leave alone."""
import copy

import numpy as np
import pytest

from numpylm import no_grad
from numpylm.models import RNNLM
from numpylm.models import rnn_inference

CELLS = ["rnn", "lstm", "gru"]
IDS = np.array([[3, 1, 4, 1, 5, 6, 2, 6], [5, 3, 5, 0, 6, 2, 6, 4]])


def _states(state):
    return [s.data for s in (state if isinstance(state, tuple) else (state,))]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_steps_give_the_graphs_logits_and_state(cell, num_layers):
    """A prompt of three tokens, then one token at a time: every step's logits and the final
    hidden state equal `forward_with_state` over the whole sequence, in float64 to 1e-12."""
    model = RNNLM(7, 4, 5, cell=cell, num_layers=num_layers, rng=1).to(np.float64)
    with no_grad():
        full, _, final = model.forward_with_state(IDS)
    state = model.init_state(2)
    np.testing.assert_allclose(model.step(state, IDS[:, :3]), full.data[:, 2], rtol=1e-12,
                               atol=1e-12)
    for t in range(3, IDS.shape[1]):
        np.testing.assert_allclose(model.step(state, IDS[:, t:t + 1]), full.data[:, t],
                                   rtol=1e-12, atol=1e-12, err_msg=f"position {t}")
    for ours, theirs in zip(_states(state.hidden), _states(final)):
        assert ours.shape == theirs.shape == (num_layers, 2, 5)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_every_positions_logits_and_float32(cell):
    """`forward_logits` returns the logits after every fed token; in float32 they agree with
    the graph to float32 rounding (the LSTM's fused op halves its weights first)."""
    model = RNNLM(7, 4, 5, cell=cell, num_layers=2, rng=2)
    with no_grad():
        full, _, final = model.forward_with_state(IDS)
    logits, hidden = rnn_inference.forward_logits(model, IDS, None)
    assert logits.shape == (2, 8, 7) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, full.data, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(_states(hidden), _states(final)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_padded_rows_step_from_their_own_state(cell):
    """Left padding: each row goes on from its own tokens only, as if fed alone."""
    model = RNNLM(7, 4, 5, cell=cell, rng=3).to(np.float64)
    mask = np.array([[False, False, True, True], [True, True, True, True]])
    state = model.init_state(2)
    got = model.step(state, IDS[:, :4], mask)
    for row in range(2):
        alone = model.init_state(1)
        want = model.step(alone, IDS[row:row + 1, :4][:, mask[row]])
        np.testing.assert_allclose(got[row], want[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_a_snapshot_is_independent_of_later_steps(cell):
    """`copy.deepcopy` of the state (what `snapshot_state` takes per drafted token) copies the
    arrays: stepping on, or writing into the live state, leaves the snapshot as it was."""
    model = RNNLM(7, 4, 5, cell=cell, rng=4)
    state = model.init_state(1)
    model.step(state, IDS[:1, :3])
    snap = copy.deepcopy(state)
    before = [a.copy() for a in _states(snap.hidden)], snap.last_logits.copy()
    for s in _states(state.hidden):  # written into in place (as select_rows does)
        s[...] = 0.0
    state.last_logits[...] = 0.0
    model.step(state, IDS[:1, 3:4])
    for a, b in zip(_states(snap.hidden), before[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(snap.last_logits, before[1])
    assert snap.batch_size == 1
    twin = copy.deepcopy(snap)
    np.testing.assert_array_equal(model.step(snap, IDS[:1, 3:4]), model.step(twin, IDS[:1, 3:4]))
    empty = copy.deepcopy(model.init_state(2))
    assert empty.hidden is None and empty.last_logits is None and empty.batch_size == 2
