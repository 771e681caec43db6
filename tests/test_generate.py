"""Sampling semantics and generation: greedy, temperature, top-k, top-p, seeds, stop tokens,
streaming, batches of different lengths, any model family, and bad input."""
import numpy as np
import pytest

from numpylm.inference import (SamplingParams, generate, generate_stream, sample_next, top_k_filter,
                               top_p_filter)
from numpylm.models.gpt import GPT, GPTConfig


def gpt(**overrides) -> GPT:
    config = dict(vocab_size=19, block_size=10, n_layer=2, n_head=2, n_embd=16)
    m = GPT(GPTConfig(**{**config, **overrides}), rng=1)
    rng = np.random.default_rng(2)
    for p in m.parameters():
        p.data[...] = rng.normal(0, 0.5, p.shape)
    return m


class NextIsPlusOne:
    """A model with no context limit that puts almost all mass on (last token + 1) mod V."""

    vocab_size = 7

    def __init__(self):
        self.calls = []

    def __call__(self, idx, targets=None):
        idx = np.asarray(idx)
        self.calls.append(idx.shape)
        logits = np.full(idx.shape + (self.vocab_size,), -10.0)
        np.put_along_axis(logits, ((idx + 1) % self.vocab_size)[..., None], 10.0, axis=-1)
        return logits, None


# ---- sampling ---------------------------------------------------------------------------
def test_top_k_keeps_the_k_largest():
    out = top_k_filter(np.array([[1.0, 3.0, 2.0, 0.0]]), 2)
    np.testing.assert_array_equal(out, [[-np.inf, 3.0, 2.0, -np.inf]])
    np.testing.assert_array_equal(top_k_filter(np.array([[1.0, 2.0]]), 5), [[1.0, 2.0]])


def test_top_p_keeps_the_nucleus():
    """Probabilities 0.5, 0.3, 0.15, 0.05. p = 0.7: 0.5 < 0.7, so the second token joins and
    0.5 + 0.3 = 0.8 reaches p; the rest go. p = 0.5: the first token alone reaches it."""
    logits = np.log(np.array([[0.15, 0.5, 0.05, 0.3]]))
    kept = np.isfinite(top_p_filter(logits, 0.7))
    np.testing.assert_array_equal(kept, [[False, True, False, True]])
    kept = np.isfinite(top_p_filter(logits, 0.5))
    np.testing.assert_array_equal(kept, [[False, True, False, False]])
    assert np.isfinite(top_p_filter(logits, 1.0)).all()


def test_greedy_is_argmax_and_ties_go_to_the_lowest_id():
    logits = np.array([[0.0, 2.0, 2.0], [5.0, 1.0, 0.0]])
    np.testing.assert_array_equal(sample_next(logits, temperature=0), [1, 0])


def test_temperature_sharpens_and_flattens():
    """Probabilities p = (0.5, 0.3, 0.2); temperature t samples from p^(1/t) renormalised:
    t = 0.5 gives (0.25, 0.09, 0.04) / 0.38 = (0.658, 0.237, 0.105); t = 1 gives p."""
    logits = np.tile(np.log([0.5, 0.3, 0.2]), (40000, 1))
    rng = np.random.default_rng(0)
    for t, expected in ((1.0, [0.5, 0.3, 0.2]), (0.5, [0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38])):
        counts = np.bincount(sample_next(logits, temperature=t, rng=rng), minlength=3)
        np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)


def test_filters_restrict_what_can_be_sampled():
    logits = np.tile(np.log([0.4, 0.3, 0.2, 0.1]), (2000, 1))
    rng = np.random.default_rng(1)
    assert set(sample_next(logits, top_k=2, rng=rng)) == {0, 1}
    assert set(sample_next(logits, top_p=0.6, rng=rng)) == {0, 1}
    assert set(sample_next(logits, top_k=3, top_p=0.99, rng=rng)) == {0, 1, 2}


def test_bad_sampling_settings_are_named():
    with pytest.raises(ValueError, match="temperature"):
        sample_next(np.zeros((1, 3)), temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(np.zeros((1, 3)), top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(np.zeros((1, 3)), top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(NextIsPlusOne(), [1], -1)
    with pytest.raises(ValueError, match="empty"):
        generate(NextIsPlusOne(), [], 3)


# ---- generation -------------------------------------------------------------------------
def test_any_model_family_greedy():
    """From token 5 with V = 7: 6, 0, 1, 2."""
    out = generate(NextIsPlusOne(), [5], 4, temperature=0)
    np.testing.assert_array_equal(out, [5, 6, 0, 1, 2])


def test_stop_tokens_end_a_row_and_are_kept():
    np.testing.assert_array_equal(generate(NextIsPlusOne(), [4], 10, temperature=0,
                                           stop_tokens=[0]), [4, 5, 6, 0])
    rows = generate(NextIsPlusOne(), [[4], [1, 5]], 10, temperature=0, stop_tokens=[0])
    np.testing.assert_array_equal(rows[0], [4, 5, 6, 0])
    np.testing.assert_array_equal(rows[1], [1, 5, 6, 0])


def test_streaming_yields_the_same_tokens_one_by_one():
    m = gpt()
    stream = generate_stream(m, [1, 2, 3], 6, seed=11)
    first = next(stream)
    assert isinstance(first, int)
    tokens = [first, *stream]
    np.testing.assert_array_equal(generate(m, [1, 2, 3], 6, seed=11)[3:], tokens)


def test_a_seed_repeats_and_different_seeds_differ():
    m = gpt()
    a = generate(m, [1, 2], 8, temperature=1.5, seed=3)
    np.testing.assert_array_equal(a, generate(m, [1, 2], 8, temperature=1.5, seed=3))
    others = [generate(m, [1, 2], 8, temperature=1.5, seed=s) for s in range(4, 8)]
    assert any(not np.array_equal(a, o) for o in others)


def test_batched_prompts_of_different_lengths_match_one_at_a_time():
    m = gpt()
    prompts = [[3], [4, 8, 15, 16, 2], [9, 9, 1]]
    batched = generate(m, prompts, 12, temperature=0)  # passes block_size 10: window slides
    for prompt, row in zip(prompts, batched):
        np.testing.assert_array_equal(row, generate(m, prompt, 12, temperature=0))
        np.testing.assert_array_equal(row, generate(m, prompt, 12, temperature=0,
                                                    use_cache=False))


def test_an_equal_length_batch_as_a_2d_array():
    m = gpt()
    idx = np.array([[1, 2, 3], [4, 5, 6]])
    rows = generate(m, idx, 5, temperature=0)
    assert [len(r) for r in rows] == [8, 8]
    np.testing.assert_array_equal(rows[1], generate(m, idx[1], 5, temperature=0))


def test_a_long_prompt_is_cropped_with_a_warning():
    m = gpt()
    long = list(np.arange(14) % 19)
    with pytest.warns(UserWarning, match="keeping its last 10 tokens"):
        out = generate(m, long, 3, temperature=0)
    # The whole prompt comes back, continued as if only its last 10 tokens had been given.
    np.testing.assert_array_equal(out[:14], long)
    np.testing.assert_array_equal(out[14:], generate(m, long[-10:], 3, temperature=0)[10:])


def test_generation_restores_training_mode_and_runs_without_dropout():
    m = gpt(dropout=0.2)
    in_training = generate(m, [1, 2, 3], 6, temperature=0)  # prompt and steps in eval mode
    assert m.training
    np.testing.assert_array_equal(in_training, generate(m, [1, 2, 3], 6, temperature=0))
    m.eval()
    generate(m, [1], 2)
    assert not m.training


def test_between_streamed_tokens_the_caller_keeps_its_modes():
    from numpylm.autograd import is_grad_enabled
    m = gpt(dropout=0.2)
    stream = generate_stream(m, [1, 2], 3, temperature=0)
    next(stream)
    assert is_grad_enabled() and m.training  # nothing leaks out of the generator
    assert len([*stream]) == 2


def test_broken_logits_and_out_of_range_stop_tokens_are_refused():
    with pytest.raises(ValueError, match="row 1 are NaN"):
        sample_next(np.array([[0.0, 1.0], [np.nan, 1.0]]), temperature=0)
    with pytest.raises(ValueError, match="row 0 are NaN, \\+inf or all -inf"):
        sample_next(np.full((1, 3), -np.inf))
    model = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=1, n_embd=4), rng=0)
    with pytest.raises(ValueError, match="stop token 9 is outside the model's vocabulary"):
        generate(model, [1, 2], 3, stop_tokens=[9])
    with pytest.raises(ValueError, match="position_ids must be integers in"):
        model(np.array([[1, 2]]), position_ids=np.array([[-1, 0]]))
    with pytest.raises(ValueError, match="position_ids must be integers in"):
        model(np.array([[1, 2]]), position_ids=np.array([[7, 8]]))


# ---- stop strings, truncation and reordering of states ------------------------------------
class Letters:
    """Token i is the i-th of `pieces` (possibly several characters)."""

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)

    def encode(self, text):
        return [self.pieces.index(c) for c in text]


def test_stop_strings_cut_the_text_before_them_across_tokens():
    from numpylm.inference.stop_strings import generate_text, stream_text
    letters = Letters(list("abcdefg"))
    greedy = SamplingParams(temperature=0)
    # From 'a' the model writes b c d e f g a ...; 'de' spans two tokens: the text stops at bc.
    assert generate_text(NextIsPlusOne(), letters, "a", 10, ["de"], sampling=greedy) == "bc"
    assert generate_text(NextIsPlusOne(), letters, "a", 4, ["xy"], sampling=greedy) == "bcde"
    # The earliest of several wins; streaming holds 'd' back until 'e' shows it is a stop.
    pieces = list(stream_text(NextIsPlusOne(), letters, [0], 10, ["fa", "de"], sampling=greedy))
    assert "".join(pieces) == "bc" and "d" not in pieces
    # A token that carries text past the stop string: 'c\n' + '\nX' holds '\n\n'.
    chunks = Letters(["ab", "c\n", "\nX", "Y", "Z", "W", "V"])
    assert "".join(stream_text(NextIsPlusOne(), chunks, [0], 6, ["\n\n"], sampling=greedy)) == "c"
    with pytest.raises(ValueError, match="stop_strings"):
        generate_text(NextIsPlusOne(), letters, "a", 3, [""])


def test_kv_cache_and_transformer_state_truncate():
    m = gpt()
    state = m.init_state(1)
    m.step(state, np.array([[1, 2, 3, 4, 5]]))
    state.truncate(3)
    fresh = m.init_state(1)
    expected = m.step(fresh, np.array([[1, 2, 3, 6]]))
    np.testing.assert_allclose(m.step(state, np.array([[6]])), expected, rtol=1e-5, atol=1e-6)
    assert state.history == fresh.history == [[1, 2, 3, 6]]
    with pytest.raises(ValueError, match="length must be an integer in \\[0, 4\\]"):
        state.truncate(5)
    with pytest.raises(ValueError, match="KVCache.truncate"):
        state.cache.truncate(-1)


def test_select_rows_copies_whole_sequences():
    from numpylm.models.decoding import select_rows
    m = gpt()
    state = m.init_state(2)
    m.step(state, np.array([[1, 2, 3], [4, 5, 6]]))
    select_rows(state, [1, 1])
    logits = m.step(state, np.array([[7], [8]]))
    alone = m.init_state(1)
    m.step(alone, np.array([[4, 5, 6]]))
    np.testing.assert_allclose(logits[1], m.step(alone, np.array([[8]]))[0], rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="cannot reorder a dict"):
        select_rows({}, [0])


def test_min_p_and_new_settings_reach_sample_next():
    """Probabilities 0.6, 0.3, 0.1; min_p 0.4 keeps p >= 0.24: tokens 0 and 1."""
    logits = np.tile(np.log([0.6, 0.3, 0.1]), (3000, 1))
    drawn = sample_next(logits, min_p=0.4, rng=np.random.default_rng(0))
    assert set(drawn) == {0, 1}
    with pytest.raises(ValueError, match="min_p"):
        sample_next(logits[:1], min_p=2.0)
    # Every new setting defaults to changing nothing: the same sample as before.
    from numpylm.inference import SamplingParams as SP
    np.testing.assert_array_equal(SP(seed=1).sample(logits[:5], np.random.default_rng(1)),
                                  sample_next(logits[:5], rng=np.random.default_rng(1)))
