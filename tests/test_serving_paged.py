"""Attention read in place from the paged pool (numpylm.serving.paged_attention), the ragged
batched step (numpylm.serving.forward), and the allocator that keeps a sequence's blocks in
one run: proven equal to the readable gather version and to a contiguous KVCache."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.models import llama_inference
from numpylm.models.kv_cache import KVCache
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.serving import Engine, PagedKVCache
from numpylm.serving.forward import forward_paged
from numpylm.nn import Linear
from numpylm.serving import forward as forward_module
from numpylm.serving.paged_attention import attend_gathered, attend_newest, attend_runs

V = 40


def tiny_llama(heads=4, kv_heads=2):
    return Llama(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48,
                             num_hidden_layers=2, num_attention_heads=heads,
                             num_key_value_heads=kv_heads, max_position_embeddings=96),
                 dtype=np.float64, rng=np.random.default_rng(5))


def plain_attention(q, k, v, start):
    """softmax(q K^T / sqrt(D) + causal mask) V head by head, keys repeated per group:
    q (n, H, D), k and v (Hkv, L, D) -> (n, H D). Written without the module's layout."""
    n, H, D = q.shape
    G = H // k.shape[0]
    out = np.zeros((n, H, D))
    for h in range(H):
        for i in range(n):
            s = k[h // G] @ q[i, h] / np.sqrt(D)
            s[start + i + 1:] = -np.inf
            p = np.exp(s - s.max())
            out[i, h] = (p / p.sum()) @ v[h // G]
    return out.reshape(n, H * D)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 9)), min_size=1, max_size=12),
       st.sampled_from([(4, 2), (4, 4), (6, 1)]), st.integers(1, 5), st.data())
def test_attention_over_runs_equals_gather_and_plain(pieces, heads, page, data):
    """Three sequences written in interleaved pieces on a small pool (so their blocks are
    fragmented into several runs); for a query chunk at the end of each, reading the runs in
    place equals copying them out equals the plain masked softmax."""
    H, Hkv = heads
    D, n_layer = 4, 2
    rng = np.random.default_rng(len(pieces))
    totals = [sum(n for s, n in pieces if s == seq) for seq in range(3)]
    tight = max(1, sum(-(-t // page) for t in totals))  # no spare block: runs must break
    cache = PagedKVCache(n_layer, Hkv, D, num_blocks=tight, page_size=page, dtype=np.float64)
    for s in range(3):
        cache.add(s)
    for s, n in pieces:
        assert cache.reserve(s, n)
        cache.claim(s, n)
    cache.k[:] = rng.normal(size=cache.k.shape)
    cache.v[:] = rng.normal(size=cache.v.shape)
    for s in range(3):
        L = cache.lengths[s]
        if L == 0:
            continue
        n = data.draw(st.integers(1, L))  # the last n tokens are this step's queries
        q = rng.normal(size=(n, H, D))
        k, v = cache.gather(s)
        layer = data.draw(st.integers(0, n_layer - 1))
        want = plain_attention(q, k[layer], v[layer], L - n)
        np.testing.assert_allclose(attend_gathered(cache, s, layer, q, L - n), want,
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(attend_runs(cache, cache.runs(s), layer, q, L - n), want,
                                   rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6),
       st.sampled_from([(4, 2), (4, 4), (6, 1)]), st.integers(1, 5), st.data())
def test_attention_of_the_newest_token_equals_gather_and_plain(lengths, heads, page, data):
    """The decoding fast path: sequences of random lengths, each in one run, one query each
    (its newest token), the query rows scattered among other rows of q: each row written
    equals the readable gather and the plain softmax, and no other row of `out` is touched."""
    H, Hkv = heads
    D, n_layer = 4, 2
    rng = np.random.default_rng(sum(lengths))
    cache = PagedKVCache(n_layer, Hkv, D, num_blocks=200, page_size=page, dtype=np.float64)
    for s, L in enumerate(lengths):
        cache.add(s, max_tokens=L)
        assert cache.reserve(s, L)
        cache.claim(s, L)
    cache.k[:] = rng.normal(size=cache.k.shape)
    cache.v[:] = rng.normal(size=cache.v.shape)
    N = len(lengths) + 3  # three rows that are nobody's newest token
    rows = data.draw(st.permutations(range(N)))[:len(lengths)]
    q = rng.normal(size=(N, H, D))
    q_before = q.copy()
    out = np.full((N, H * D), 7.0)
    layer = data.draw(st.integers(0, n_layer - 1))
    spans = []
    for s, row in enumerate(rows):
        (first, slot, count), = cache.runs(s)
        spans.append((row, slot, count))
    attend_newest(cache, layer, q, out, spans)
    np.testing.assert_array_equal(q, q_before)  # the queries are not scaled in place
    for s, (row, L) in enumerate(zip(rows, lengths)):
        k, v = cache.gather(s)
        want = plain_attention(q[row:row + 1], k[layer], v[layer], L - 1)[0]
        np.testing.assert_allclose(out[row], want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out[row], attend_gathered(cache, s, layer, q[row:row + 1],
                                                             L - 1)[0], rtol=1e-10, atol=1e-12)
    others = sorted(set(range(N)) - set(rows))
    assert (out[others] == 7.0).all()


def test_attention_of_no_newest_token_writes_nothing():
    cache = PagedKVCache(1, 2, 4, num_blocks=4)
    out = np.zeros((2, 16))
    attend_newest(cache, 0, np.ones((2, 4, 4)), out, [])
    assert not out.any()


def test_runs_cover_the_table_and_fragment_when_forced():
    cache = PagedKVCache(1, 1, 2, num_blocks=8, page_size=2)
    for s in "ab":
        cache.add(s)
    # a takes blocks 0-1; b starts half-way into the free gap after it
    assert cache.reserve("a", 4) and cache.reserve("b", 2)
    assert cache.tables["a"] == [0, 1] and cache.tables["b"] == [5]  # gap 2-7: half of it
    cache.claim("a", 3)
    assert cache.runs("a") == [(0, 0, 3)]
    # a grows into blocks 2-4; block 5 is b's, so it goes on in the free gap 6-7, one block
    # in (b's last block ends just before the gap and may grow there)
    assert cache.reserve("a", 8)
    cache.claim("a", 8)
    assert cache.tables["a"] == [0, 1, 2, 3, 4, 7]
    assert cache.runs("a") == [(0, 0, 10), (10, 14, 1)]
    k, _ = cache.gather("a")
    assert k.shape == (1, 1, 11, 2)
    with pytest.raises(ValueError, match="reserve them first"):
        cache.claim("b", 3)


def test_growing_sequences_keep_one_run_each():
    """Eight sequences grow a token at a time, in turn (a decoding batch): with room in the
    pool each one's blocks stay consecutive, so attention reads one view per sequence."""
    cache = PagedKVCache(1, 1, 1, num_blocks=128, page_size=4)
    for s in range(8):
        cache.add(s)
        assert cache.reserve(s, 5)
        cache.claim(s, 5)
    for _ in range(40):
        for s in range(8):
            assert cache.reserve(s, 1)
            cache.claim(s, 1)
    assert all(len(cache.runs(s)) == 1 for s in range(8))
    assert cache.num_free == 128 - 8 * cache.blocks_for(45)
    for s in range(8):
        cache.free(s)
    assert cache.num_free == 128


def test_announced_lengths_pack_sequences_from_the_start():
    """With each sequence's length announced (as the scheduler does), sequences are placed
    one after another with room to grow: one run each, and no block beyond what their
    announced lengths add up to (the pool's far pages are never touched)."""
    cache = PagedKVCache(1, 1, 1, num_blocks=256, page_size=4)
    lengths = [45, 20, 33, 8, 60, 17, 29, 40]
    for s, n in enumerate(lengths):
        cache.add(s, max_tokens=n)
        assert cache.reserve(s, 5)
        cache.claim(s, 5)
    for _ in range(60):
        for s, n in enumerate(lengths):
            if cache.lengths[s] < n:
                assert cache.reserve(s, 1)
                cache.claim(s, 1)
    assert all(len(cache.runs(s)) == 1 for s in range(8))
    highest = max(b for t in cache.tables.values() for b in t)
    assert highest < sum(cache.blocks_for(n) for n in lengths)
    gap = cache.tables[3]
    cache.free(3)  # a finished sequence's gap is found again by a new one that fits there
    cache.add("new", max_tokens=8)
    assert cache.reserve("new", 8) and cache.tables["new"] == gap


@pytest.mark.parametrize("heads", [(4, 2), (4, 4)])
@pytest.mark.parametrize("attention", ["runs", "gather"])
def test_forward_paged_equals_the_contiguous_stepper(heads, attention):
    """Three prompts read in uneven chunks, interleaved with each other and then decoded a
    token at a time in one ragged batch: every logit row equals the single-sequence stepper's
    over a contiguous KVCache (llama_inference.forward_logits)."""
    model = tiny_llama(*heads)
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(0, V, n)) for n in (11, 4, 17)]
    cache = PagedKVCache(2, heads[1], 32 // heads[0], num_blocks=40, page_size=3,
                         dtype=np.float64)
    contiguous = [KVCache(2, 1, heads[1], 96, 32 // heads[0], dtype=np.float64) for _ in seqs]
    done = [0, 0, 0]
    for s in range(3):
        cache.add(s)

    def want(s, n):
        tokens = np.array(seqs[s][done[s]:done[s] + n])[None]
        positions = np.arange(done[s], done[s] + n)
        out = llama_inference.forward_logits(model, tokens, positions, contiguous[s],
                                             last_only=True)[0, -1]
        done[s] += n
        return out

    for plan in ([(0, 5), (2, 7)], [(1, 4), (0, 6), (2, 3)], [(2, 7)],
                 [(0, 1), (1, 1), (2, 1)], [(2, 1), (0, 1)]):
        feeds = []
        for s, n in plan:
            assert cache.reserve(s, n)
            feeds.append((s, seqs[s][done[s]:done[s] + n]))
            if done[s] + n > len(seqs[s]) - 1:  # decoding: a new token to feed
                seqs[s].append(int(rng.integers(0, V)))
        got = forward_paged(model, cache, feeds, attention=attention)
        expected = np.stack([want(s, n) for s, n in plan])
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="'runs' or 'gather'"):
        forward_paged(model, cache, [(0, [1])], attention="magic")


class _Wrapped(Linear):
    """A Linear of another type: its layer's projections cannot be laid side by side."""


def test_forward_paged_fuses_projections_and_falls_back_when_it_cannot(monkeypatch):
    """Layer 0's q_proj and gate_proj replaced by another Linear type (as an adapter would):
    that layer goes projection by projection, layer 1 stays fused, and the logits still equal
    the contiguous stepper's; the decoding rows (one token, one run) take `attend_newest`."""
    model = tiny_llama()
    for name, parent in (("q_proj", model.model.layers[0].self_attn),
                         ("gate_proj", model.model.layers[0].mlp)):
        old = getattr(parent, name)
        new = _Wrapped(old.weight.data.shape[1], old.weight.data.shape[0], bias=False,
                       dtype=np.float64)
        new.weight.data = old.weight.data.copy()
        setattr(parent, name, new)
    calls = []
    real = forward_module.attend_newest
    monkeypatch.setattr(forward_module, "attend_newest",
                        lambda cache, layer, q, out, spans: (calls.append(len(spans)),
                                                             real(cache, layer, q, out, spans)))
    rng = np.random.default_rng(1)
    prompts = [[int(t) for t in rng.integers(0, V, n)] for n in (6, 9)]
    cache = PagedKVCache(2, 2, 8, num_blocks=20, page_size=4, dtype=np.float64)
    contiguous = [KVCache(2, 1, 2, 96, 8, dtype=np.float64) for _ in prompts]
    for s, p in enumerate(prompts):
        cache.add(s, max_tokens=20)
        assert cache.reserve(s, len(p))
    got = forward_paged(model, cache, list(enumerate(prompts)))
    assert calls == [0, 0]  # prompts: nobody decodes yet
    want = [llama_inference.forward_logits(model, np.array([p]), np.arange(len(p)),
                                           contiguous[s], last_only=True)[0, -1]
            for s, p in enumerate(prompts)]
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-9, atol=1e-11)
    plan = llama_inference._plan(model).groups(model)
    assert plan[0][0].weight is None and plan[0][1].weight is None
    assert plan[1][0].weight is not None and plan[1][1].weight is not None
    for step in range(3):
        calls.clear()
        tokens = [int(t) for t in rng.integers(0, V, 2)]
        for s in range(2):
            assert cache.reserve(s, 1)
        got = forward_paged(model, cache, [(s, [t]) for s, t in enumerate(tokens)])
        assert calls == [2, 2]  # both rows, in each layer
        want = [llama_inference.forward_logits(model, np.array([[t]]),
                                               np.array([len(prompts[s]) + step]),
                                               contiguous[s], last_only=True)[0, -1]
                for s, t in enumerate(tokens)]
        np.testing.assert_allclose(got, np.stack(want), rtol=1e-9, atol=1e-11)


def test_engine_kernels_agree_with_each_other():
    model = tiny_llama()
    rng = np.random.default_rng(3)
    ps = [[int(t) for t in rng.integers(0, V, n)] for n in (3, 19, 8, 30)]
    paged = Engine(model, page_size=4, max_running=3, max_tokens_per_step=10)
    gather = Engine(model, page_size=4, max_running=3, max_tokens_per_step=10, kernel="gather")
    assert paged.kernel == "paged" and gather.kernel == "gather"
    assert paged.generate(ps, 9) == gather.generate(ps, 9)
    with pytest.raises(ValueError, match="kernel"):
        Engine(model, kernel="fast")


# ---- prefix sharing ----

def _greedy(model, prompt, n):
    from numpylm.inference import generate

    return [int(t) for t in generate(model, np.array(prompt), n, temperature=0)[len(prompt):]]


def test_shared_prefix_blocks_give_the_same_tokens_and_are_counted():
    """A 21-token prefix, page 4: the first request names its full blocks; each later request
    with the same prefix takes its 5 pure-prefix blocks (tokens 0-19) instead of computing
    them, after the first has finished (freed blocks keep their names) and while another holds
    them; the tokens are generate's, and every block is free at the end."""
    model = tiny_llama()
    rng = np.random.default_rng(8)
    prefix = [int(t) for t in rng.integers(0, V, 21)]
    ps = [prefix + [int(t) for t in rng.integers(0, V, k)] for k in (4, 6, 2, 9)]
    engine = Engine(model, page_size=4, num_blocks=60, share_prefixes=True)
    assert engine.generate(ps[:1], 5) == [_greedy(model, ps[0], 5)]
    assert engine.cache.prefix_hits == 0
    assert engine.generate(ps[1:2], 5) == [_greedy(model, ps[1], 5)]
    assert engine.cache.prefix_hits == 5
    assert engine.generate(ps[2:], 5) == [_greedy(model, p, 5) for p in ps[2:]]
    assert engine.cache.prefix_hits == 15
    assert engine.cache.num_free == 60 and not engine.cache.refs.any()
    plain = Engine(model, page_size=4, num_blocks=60)  # off by default
    plain.generate(ps[:2], 5)
    assert plain.cache.prefix_hits == 0


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 7), st.integers(1, 6)),
                min_size=2, max_size=6),
       st.integers(8, 16), st.integers(2, 4))
def test_prefix_sharing_with_preemption_never_leaks(requests, num_blocks, max_running):
    """Prompts that start with one of three prefixes, on a pool small enough to pre-empt:
    greedy tokens stay generate's, and at the end every block is free and owned by no one."""
    model = tiny_llama()
    rng = np.random.default_rng(0)
    prefixes = [[int(t) for t in rng.integers(0, V, n)] for n in (9, 13, 4)]
    ps = [prefixes[i] + [int(t) for t in rng.integers(0, V, k)] for i, k, _ in requests]
    news = [n for _, _, n in requests]
    engine = Engine(model, page_size=3, num_blocks=num_blocks, max_running=max_running,
                    max_tokens_per_step=7, share_prefixes=True)
    fits = [engine.cache.blocks_for(len(p) + n) <= num_blocks for p, n in zip(ps, news)]
    ids = [engine.add_request(p, n) for p, n, ok in zip(ps, news, fits) if ok]
    out = {i: [] for i in ids}
    while engine.has_work():
        for event in engine.step():
            out[event.request_id].append(event.token)
    kept = [(p, n) for p, n, ok in zip(ps, news, fits) if ok]
    assert [out[i] for i in ids] == [_greedy(model, p, n) for p, n in kept]
    assert engine.cache.num_free == num_blocks and not engine.cache.refs.any()
