"""The paged KV cache, the continuous-batching scheduler and the engine (numpylm.serving)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.inference import SamplingParams, generate
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.models.kv_cache import KVCache
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.serving import Engine, PagedKVCache, Scheduler, SequenceState

V = 40


def tiny_llama(context=64):
    return Llama(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=context), dtype=np.float64,
                 rng=np.random.default_rng(1))


def tiny_gpt():
    return GPT(GPTConfig(vocab_size=V, n_embd=32, n_layer=2, n_head=4, block_size=64),
               dtype=np.float64, rng=np.random.default_rng(2))


def prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(0, V, n)] for n in lengths]


# ---- the paged cache ----

def test_paged_gather_equals_contiguous_cache():
    """Three sequences written in uneven pieces, interleaved (so their blocks are mixed in the
    pool), read back equal to a contiguous KVCache fed the same keys, both gathers alike."""
    rng = np.random.default_rng(0)
    n_layer, H, D = 2, 3, 4
    paged = PagedKVCache(n_layer, H, D, num_blocks=12, page_size=3)
    contiguous = {s: KVCache(n_layer, 1, H, 20, D, dtype=np.float32) for s in "abc"}
    for s in "abc":
        paged.add(s)
    for piece in [("a", 2), ("b", 5), ("a", 4), ("c", 1), ("b", 1), ("c", 7), ("a", 1)]:
        s, n = piece
        k = rng.normal(size=(n_layer, H, n, D)).astype(np.float32)
        v = rng.normal(size=(n_layer, H, n, D)).astype(np.float32)
        assert paged.reserve(s, n)
        paged.write(s, k, v)
        for layer in range(n_layer):
            contiguous[s].append(layer, k[layer][None], v[layer][None])
        contiguous[s].advance(n)
    tables = [b for s in "abc" for b in paged.tables[s]]
    assert len(set(tables)) == len(tables)  # no block is owned twice
    width = 9
    kb, vb, real = paged.gather_batch(list("abc"), width)
    for i, s in enumerate("abc"):
        L = contiguous[s].length
        want_k = contiguous[s].k[:, 0, :, :L]  # (n_layer, H, L, D)
        want_v = contiguous[s].v[:, 0, :, :L]
        k, v = paged.gather(s)
        np.testing.assert_array_equal(k, want_k)
        np.testing.assert_array_equal(v, want_v)
        np.testing.assert_array_equal(kb[:, i, :, width - L:], want_k)
        np.testing.assert_array_equal(vb[:, i, :, width - L:], want_v)
        assert real[i].sum() == L and real[i, width - L:].all()


def test_paged_cache_refuses_what_does_not_fit():
    cache = PagedKVCache(1, 1, 2, num_blocks=2, page_size=4)
    cache.add("a")
    assert cache.reserve("a", 8) and cache.num_free == 0
    cache.add("b")
    assert not cache.reserve("b", 1)  # nothing taken on failure
    with pytest.raises(ValueError, match="reserve them first"):
        cache.write("b", np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 2)))
    with pytest.raises(ValueError, match="already in the cache"):
        cache.add("a")
    cache.free("a")
    assert cache.num_free == 2


# ---- the scheduler ----

@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(1, 12), st.integers(0, 3)),
                min_size=1, max_size=8),
       st.integers(4, 12), st.integers(1, 4), st.integers(1, 16), st.data())
def test_block_accounting_never_leaks(requests, num_blocks, max_running, budget, data):
    """Random arrivals, decode lengths and cancellations on a small pool (so pre-emption
    happens): blocks are never owned twice, every running sequence has room for its tokens,
    and at the end every block is free."""
    cache = PagedKVCache(1, 1, 1, num_blocks=num_blocks, page_size=4)
    sched = Scheduler(cache, max_running=max_running, max_tokens_per_step=budget)
    pending = list(requests)
    live = []
    for _ in range(500):
        if pending and data.draw(st.booleans()):
            prompt_len, new, _ = pending.pop(0)
            seq = SequenceState(len(live), [0] * prompt_len, new)
            try:
                sched.add(seq)
                live.append(seq)
            except ValueError:  # more than the whole pool: refused at once
                assert cache.blocks_for(prompt_len + new) > num_blocks
        if not sched.has_work() and not pending:
            break
        for seq, n in sched.schedule():
            assert n >= 1
            cache.lengths[seq.request_id] += n  # what the engine's write does
            seq.computed += n
            if seq.pending == 0:
                seq.output.append(1)
                if len(seq.output) >= seq.max_new_tokens:
                    sched.finish(seq, "length")
        owned = [b for t in cache.tables.values() for b in t]
        assert len(owned) == len(set(owned)) and len(owned) + cache.num_free == num_blocks
        for s in sched.running:
            assert cache.blocks_for(cache.lengths[s.request_id]) <= len(cache.tables[s.request_id])
        if live and data.draw(st.integers(0, 9)) == 0:  # a client goes away
            victim = live[data.draw(st.integers(0, len(live) - 1))]
            if not victim.finished:
                sched.finish(victim, "abort")
    assert not sched.has_work()
    assert cache.num_free == num_blocks and not cache.tables


def test_decoding_goes_before_a_long_prefill():
    """A sequence that is decoding gets its token in a step where a long prompt arrives; the
    prompt is read in chunks of what is left of the budget."""
    cache = PagedKVCache(1, 1, 1, num_blocks=64, page_size=4)
    sched = Scheduler(cache, max_running=4, max_tokens_per_step=8)
    short = SequenceState("short", [0, 0], 5)
    sched.add(short)
    (seq, n), = sched.schedule()
    short.computed, cache.lengths["short"] = 2, 2
    short.output.append(1)
    sched.add(SequenceState("long", [0] * 30, 5))
    plan = {s.request_id: n for s, n in sched.schedule()}
    assert plan == {"short": 1, "long": 7}


# ---- the engine ----

@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt])
def test_engine_greedy_equals_generate(make):
    model = make()
    ps = prompts([3, 17, 9, 30, 1])
    want = [list(generate(model, np.array(p), 12, temperature=0)[len(p):]) for p in ps]
    engine = Engine(model, page_size=4, max_running=3, max_tokens_per_step=8, num_blocks=40)
    assert engine.generate(ps, 12) == want
    assert engine.cache.num_free == 40


def test_seeded_output_does_not_depend_on_the_batch():
    model = tiny_llama()
    ps = prompts([5, 21, 2, 13], seed=3)
    params = [SamplingParams(temperature=1.0, top_p=0.9, seed=10 + i) for i in range(4)]
    alone = [Engine(model).generate([p], 10, s)[0] for p, s in zip(ps, params)]
    busy = Engine(model, page_size=4, max_tokens_per_step=6).generate(ps, 10, params)
    assert busy == alone
    # and equal to generate with the same seed (one request at a time)
    assert alone[1] == list(generate(model, np.array(ps[1]), 10, sampling=params[1])[21:])
    # a different seed gives other tokens (the test can fail)
    other = Engine(model).generate([ps[1]], 10, SamplingParams(temperature=1.0, seed=99))[0]
    assert other != alone[1]


def test_preemption_recomputes_the_same_tokens():
    """A pool too small for everyone: newer sequences are pre-empted, read again later, and
    still give generate's greedy tokens; every block is free at the end."""
    model = tiny_llama()
    ps = prompts([10, 12, 9, 11], seed=4)
    want = [list(generate(model, np.array(p), 14, temperature=0)[len(p):]) for p in ps]
    engine = Engine(model, page_size=4, max_running=4, num_blocks=14)
    assert engine.generate(ps, 14) == want
    assert engine.scheduler.preemptions > 0
    assert engine.cache.num_free == 14


def test_short_request_finishes_before_a_long_one():
    model = tiny_llama()
    engine = Engine(model, max_tokens_per_step=16)
    long_id = engine.add_request(prompts([20])[0], 40)
    short_id = engine.add_request(prompts([3], seed=1)[0], 3)
    finished = []
    while engine.has_work():
        finished += [e.request_id for e in engine.step() if e.finish_reason]
    assert finished == [short_id, long_id]


def test_stop_tokens_and_abort():
    model = tiny_llama()
    p = prompts([6])[0]
    free = Engine(model).generate([p], 8)[0]
    stop = free[2]
    engine = Engine(model)
    rid = engine.add_request(p, 8, SamplingParams(temperature=0, stop_tokens=(stop,)))
    events = []
    while engine.has_work():
        events += engine.step()
    assert [e.token for e in events] == free[:free.index(stop) + 1]
    assert events[-1].finish_reason == "stop"
    rid = engine.add_request(p, 8)
    engine.step()
    engine.abort(rid)
    assert not engine.has_work() and engine.cache.num_free == engine.cache.num_blocks


def test_engine_rejects_bad_requests():
    engine = Engine(tiny_llama(context=16))
    with pytest.raises(ValueError, match="empty"):
        engine.add_request([], 4)
    with pytest.raises(ValueError, match=r"context is 16"):
        engine.add_request([1] * 16, 4)
    with pytest.raises(ValueError, match=r"\[0, 40\)"):
        engine.add_request([1, 40], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.add_request([1], 0)
    with pytest.raises(ValueError, match="GPT or Llama"):
        Engine(object())


def test_logprobs_in_a_busy_batch_equal_generate_with_logprobs():
    from numpylm.inference.logprobs import generate_with_logprobs

    model = tiny_llama()
    ps = prompts([7, 15, 3], seed=6)
    engine = Engine(model, page_size=4, max_tokens_per_step=9)
    ids = [engine.add_request(p, 6, logprobs=k) for p, k in zip(ps, (2, None, 0))]
    events = []
    while engine.has_work():
        events += engine.step()
    for rid, p, k in zip(ids, ps, (2, None, 0)):
        mine = [e for e in events if e.request_id == rid]
        if k is None:
            assert all(e.logprob is None for e in mine)
            continue
        _, want = generate_with_logprobs(model, np.array(p), 6, k,
                                         sampling=SamplingParams(temperature=0.0))
        assert [e.logprob.token for e in mine] == [r.token for r in want]
        np.testing.assert_allclose([e.logprob.logprob for e in mine],
                                   [r.logprob for r in want], rtol=1e-9)
        assert [[t for t, _ in e.logprob.top] for e in mine] == [[t for t, _ in r.top]
                                                                 for r in want]
    with pytest.raises(ValueError, match="logprobs"):
        engine.add_request([1], 2, logprobs=21)
