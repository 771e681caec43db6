"""The KV cache: the same logits and greedy tokens as running the whole context each time."""
import numpy as np
import pytest

from numpylm import no_grad
from numpylm.inference import KVCache, generate
from numpylm.models.gpt import GPT, GPTConfig


def model(**overrides) -> GPT:
    config = dict(vocab_size=23, block_size=12, n_layer=2, n_head=2, n_embd=16)
    m = GPT(GPTConfig(**{**config, **overrides}), rng=5)
    rng = np.random.default_rng(6)
    for p in m.parameters():  # larger weights than GPT-2's init: less repetitive greedy text
        p.data[...] = rng.normal(0, 0.5, p.shape)
    return m.eval()


def test_prompt_then_one_token_at_a_time_matches_full_logits():
    m = model()
    idx = np.random.default_rng(0).integers(0, 23, (2, 10))
    with no_grad():
        full = m(idx)[0].data
        cache = m.init_kv_cache(batch_size=2)
        pieces = [m(idx[:, :4], kv_cache=cache)[0].data]  # the prompt, once
        for t in range(4, 10):
            pieces.append(m(idx[:, t:t + 1], kv_cache=cache)[0].data)  # then one token each
    assert cache.length == 10
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunks", [(4, 3, 2, 1), (1, 5, 4), (2, 2, 2, 2, 2), (3, 7)])
def test_a_few_tokens_at_a_time_over_the_cache_match_full_logits(chunks):
    """Several new tokens over a filled cache (speculative decoding checks k + 1 at once) see
    the cache and each other causally, never a later token."""
    from numpylm.models.gpt_inference import forward_logits  # the stepper behind GPT.step

    m = model()
    idx = np.random.default_rng(1).integers(0, 23, (2, sum(chunks)))
    with no_grad():
        full = m(idx)[0].data
        cache = m.init_kv_cache(batch_size=2)
        pieces, at = [], 0
        for n in chunks:
            positions = np.broadcast_to(np.arange(at, at + n), (2, n))
            pieces.append(forward_logits(m, idx[:, at:at + n], positions, cache))
            at += n
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-5, atol=1e-5)


def test_greedy_tokens_identical_with_and_without_cache():
    m = model()
    prompt = [3, 1, 4, 1, 5]
    # 20 new tokens pass block_size 12, so the sliding window is exercised too.
    with_cache = generate(m, prompt, 20, temperature=0)
    without = generate(m, prompt, 20, temperature=0, use_cache=False)
    assert len(with_cache) == 25
    np.testing.assert_array_equal(with_cache, without)


def test_cache_buffers_and_bounds():
    cache = KVCache(n_layer=1, batch_size=1, n_head=2, max_length=3, head_size=4)
    k = np.ones((1, 2, 2, 4), np.float32)
    keys, values = cache.append(0, k, 2 * k)
    assert keys.shape == (1, 2, 2, 4) and (values == 2).all()
    cache.advance(2)
    keys, _ = cache.append(0, 3 * k[:, :, :1], k[:, :, :1])
    assert keys.shape == (1, 2, 3, 4) and (keys[:, :, 2] == 3).all() and (keys[:, :, 0] == 1).all()
    cache.advance(1)
    with pytest.raises(ValueError, match="exceed its max_length 3"):
        cache.append(0, k[:, :, :1], k[:, :, :1])
    cache.reset()
    assert cache.length == 0
    with pytest.raises(ValueError, match="do not fit"):
        cache.append(0, np.ones((1, 3, 1, 4)), np.ones((1, 3, 1, 4)))


def test_cache_keeps_the_model_dtype():
    m = model().to(np.float64)
    assert m.init_kv_cache().k.dtype == np.float64
    with no_grad():
        cache = m.init_kv_cache()
        m(np.array([[1, 2, 3]]), kv_cache=cache)
    assert cache.length == 3


def test_overflowing_the_context_is_an_error():
    m = model()
    with no_grad():
        cache = m.init_kv_cache()
        m(np.zeros((1, 12), dtype=np.int64), kv_cache=cache)
        with pytest.raises(ValueError, match="longer than block_size 12"):
            m(np.zeros((1, 1), dtype=np.int64), kv_cache=cache)


def test_the_cache_grows_as_tokens_come_and_copies_only_what_it_holds():
    import copy

    from numpylm.models.kv_cache import KVCache

    cache = KVCache(2, 1, 3, 8192, 4)
    assert cache.capacity == KVCache.INITIAL  # not the whole context up front
    rng = np.random.default_rng(0)
    stored = []
    for _ in range(3):  # 3 x 200 tokens: grows twice, keeping what it held
        k = rng.standard_normal((1, 3, 200, 4)).astype(np.float32)
        for layer in range(2):
            cache.append(layer, k, k + 1)
        cache.advance(200)
        stored.append(k)
    assert cache.length == 600 and 600 <= cache.capacity < 8192
    np.testing.assert_array_equal(cache.k[1, :, :, :600], np.concatenate(stored, axis=2))
    np.testing.assert_array_equal(cache.v[0, :, :, :600], np.concatenate(stored, axis=2) + 1)
    assert copy.deepcopy(cache).k.nbytes == cache.k.nbytes < 8192 * 2 * 3 * 4 * 4
    with pytest.raises(ValueError, match="exceed its max_length 8192"):
        cache.reserve(8192 - 600 + 1)
