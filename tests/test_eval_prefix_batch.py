"""Many contexts at once with shared prefixes run once (`prefix_batch.last_logits`,
`score_batched`): the same logits as each context stepped alone, for every family; the
prefix tree on a hand case; the state surgery it rests on (`prefix_of`,
`start_from_prefixes`)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpylm.evaluation import prefix_batch
from numpylm.evaluation.loglikelihood import score_batched, score_shared
from numpylm.models.decoding import prefix_of, start_from_prefixes
from numpylm.models.llama_inference import _swiglu_
from numpylm.training.families import FAMILIES, build_model, get_family

V = 7


def _tiny(name: str):
    family = get_family(name)
    rng = np.random.default_rng(0)
    args = (family.ladder.args(V, 16, True) if family.ladder is not None
            else {"order": 3, "vocab_size": V, "smoothing": "kneser_ney"})
    model = build_model(name, args)
    if not family.trainable:
        model.fit([rng.integers(0, V, size=300)])
    return model


MODELS = {name: _tiny(name) for name in ("gpt", "llama", "gru")}


def _alone(model, row) -> np.ndarray:
    return np.asarray(model.step(model.init_state(1), np.asarray([row])))[0]


def _rows_with_prefixes(rng, n: int, window: int) -> list[list[int]]:
    """Rows that share a common opening, then one of three sub-openings, then their own
    tail; plus a duplicate and a row that is a prefix of another."""
    opening = rng.integers(0, V, size=5).tolist()
    subs = [rng.integers(0, V, size=k).tolist() for k in (4, 6, 0)]
    rows = []
    for i in range(n):
        tail = rng.integers(0, V, size=int(rng.integers(1, 5))).tolist()
        rows.append((opening + subs[i % 3] + tail)[:window])
    rows.append(list(rows[0]))            # the same context twice
    rows.append(rows[1][:-1] or [1])      # a prefix of another row
    rows.append([int(rng.integers(0, V))])  # one id
    return rows


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch_tokens", [1, 12, 1024])
def test_last_logits_equal_each_row_alone(name, batch_tokens):
    model = MODELS[name]
    rows = _rows_with_prefixes(np.random.default_rng(1), 10, 16)
    want = np.stack([_alone(model, r) for r in rows])
    for share in (True, False):
        got = prefix_batch.last_logits(model, rows, batch_tokens=batch_tokens, share=share)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@given(st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=16), min_size=1, max_size=9),
       st.integers(1, 40))
def test_last_logits_any_rows(rows, batch_tokens):
    """Any rows of a three-letter alphabet (many shared prefixes, rows that are prefixes of
    others, duplicates), any batch size: each row's logits are those of the row alone."""
    model = MODELS["llama"]
    got = prefix_batch.last_logits(model, rows, batch_tokens=batch_tokens)
    want = np.stack([_alone(model, r) for r in rows])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_prefix_tree_by_hand():
    """Rows "a b c d e f g h 1", "a b c d e f g h 2", "a b c d x y z w 3", "q": the first two
    share 8 ids, all three share 4 (a node needs MIN_SHARED = 4 new ids), "q" shares none."""
    a, b, c = [1, 2, 3, 4, 5, 6, 7, 8, 10], [1, 2, 3, 4, 5, 6, 7, 8, 11], [1, 2, 3, 4, 9, 9, 9, 9, 12]
    top = prefix_batch._tree([a, b, c, [13]])
    assert [n.tokens for n in top] == [[1, 2, 3, 4], [13]] and top[1].rows == [3]
    first = top[0].children
    assert [n.tokens for n in first] == [[5, 6, 7, 8], [9, 9, 9, 9, 12]]
    assert first[1].rows == [2] and not first[0].rows
    assert [(n.tokens, n.rows) for n in first[0].children] == [([10], [0]), ([11], [1])]
    assert _paths(top) == {0: a, 1: b, 2: c, 3: [13]}
    # Too little shared: no node, each row whole.
    assert [n.tokens for n in prefix_batch._tree([[1, 2, 3, 5], [1, 2, 3, 6]])] == \
        [[1, 2, 3, 5], [1, 2, 3, 6]]


def _paths(nodes, above=()):
    """{row index: the ids on the path from the root to the leaf that holds it}."""
    out = {}
    for node in nodes:
        ids = (*above, *node.tokens)
        out.update({r: list(ids) for r in node.rows})
        out.update(_paths(node.children, ids))
    return out


def test_the_prefix_tree_of_deeply_nested_contexts():
    """1,500 contexts, each the previous one with a 1 put in front of its last id: a tree
    deeper than Python's recursion limit is still built (and walking it gives every row
    back)."""
    rows = [[1] * i + [2] for i in range(1500)]
    top = prefix_batch._tree(rows)
    paths = {}
    stack = [((), top)]
    while stack:  # the same walk as _paths, without recursion
        above, nodes = stack.pop()
        for node in nodes:
            ids = (*above, *node.tokens)
            paths.update({r: list(ids) for r in node.rows})
            stack.append((ids, node.children))
    assert paths == dict(enumerate(rows))


def test_last_logits_rejects_bad_input():
    model = MODELS["gpt"]
    with pytest.raises(ValueError, match="at least one id"):
        prefix_batch.last_logits(model, [[1], []])
    with pytest.raises(ValueError, match="batch_tokens"):
        prefix_batch.last_logits(model, [[1]], batch_tokens=0)
    with pytest.raises(ValueError, match="longer than the model's window of 16"):
        prefix_batch.last_logits(model, [[1] * 17])


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_a_state_started_from_prefixes_continues_like_the_whole_rows(name):
    """Rows 0 and 2 start from prefixes of different lengths taken from a padded batch
    (`prefix_of` keeps the real tokens only), row 1 from nothing; one step of the rest gives
    each row the logits of the whole row fed at once."""
    model = MODELS[name]
    rng = np.random.default_rng(3)
    heads = [rng.integers(0, V, size=n).tolist() for n in (5, 2)]
    source = model.init_state(2)
    ids = np.array([heads[0], [0, 0, 0] + heads[1]])
    model.step(source, ids, np.array([[True] * 5, [False] * 3 + [True] * 2]))
    prefixes = [prefix_of(source, 0), None, prefix_of(source, 1)]
    assert prefixes[0][0] == heads[0] and prefixes[2][1].shape[2] == 2
    tails = [[1, 2], [3, 4], [5, 6]]
    state = model.init_state(3)
    start_from_prefixes(state, prefixes)
    got = model.step(state, np.array(tails))
    whole = [heads[0] + tails[0], tails[1], heads[1] + tails[2]]
    np.testing.assert_allclose(got, np.stack([_alone(model, r) for r in whole]),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        start_from_prefixes(state, prefixes)
    with pytest.raises(ValueError, match="3 prefixes for a batch of 2"):
        start_from_prefixes(model.init_state(2), prefixes)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_score_batched_equals_score_shared(name):
    """Every family; one-token choices (batched) and longer ones (one by one), contexts
    shorter and longer than the window."""
    model = MODELS.get(name) or _tiny(name)
    rng = np.random.default_rng(2)
    opening = rng.integers(0, V, size=6).tolist()
    requests = []
    for n in (1, 3, 9, 14, 30):
        context = opening + rng.integers(0, V, size=n).tolist()
        k = 1 if n != 9 else 3
        requests.append((context, [rng.integers(0, V, size=k).tolist() for _ in range(4)]))
    got = score_batched(model, requests, batch_tokens=16)
    for (context, choices), scores in zip(requests, got):
        want = score_shared(model, context, choices)
        np.testing.assert_allclose([s.logprob for s in scores], [s.logprob for s in want],
                                   rtol=1e-5, atol=1e-5)
        assert [s.n_tokens for s in scores] == [s.n_tokens for s in want]
    with pytest.raises(ValueError, match="no tokens"):
        score_batched(model, [([1, 2], [[1], []])])


def test_swiglu_many_rows_equals_one_row():
    """The prompt form (exp) and the decoding form (tanh) of silu(gate) * up both give the
    float64 value, also where exp(-gate) overflows. (The tanh form loses digits where
    sigmoid is small, 1 + tanh cancelling: an absolute error, not a relative one.)"""
    rng = np.random.default_rng(0)
    gate = np.concatenate([rng.standard_normal((3, 64)) * 4,
                           [[-1000.0, -100.0, -88.0, 88.0, 1000.0] * 12 + [0.0] * 4]])
    gate = gate.astype(np.float32)
    up = rng.standard_normal(gate.shape).astype(np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no warning leaks
        many = _swiglu_(gate.copy(), up.copy())
    ones = np.concatenate([_swiglu_(gate[i:i + 1].copy(), up[i:i + 1].copy())
                           for i in range(len(gate))])
    with np.errstate(over="ignore"):  # exp(1000) is inf in float64 too; gate / inf = -0.0
        exact = gate.astype(np.float64) / (1 + np.exp(-gate.astype(np.float64))) * up
    np.testing.assert_allclose(many, exact, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(ones, exact, rtol=1e-5, atol=1e-6)
