"""Logit processors: each one on a hand-computed case, their order, their path through
`generate`, the same numbers as HF transformers' processors where installed, and bad input."""
import numpy as np
import pytest

from numpylm.inference import SamplingParams, generate
from numpylm.inference.processors import apply_processors, min_p_filter


def process(logits, context, n_new=0, **settings):
    return apply_processors(np.asarray(logits, dtype=np.float64), context, n_new,
                            SamplingParams(**settings))


def test_defaults_change_nothing():
    z = np.array([0.5, -2.0, 3.0])
    np.testing.assert_array_equal(process(z, [0, 1, 2, 2], 2), z)
    assert not SamplingParams().processes


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    """Seen tokens 0 (logit 2) and 1 (logit -1), r = 2: 2 / 2 = 1 and -1 * 2 = -2; the
    unseen 0.5 and 3 stay."""
    out = process([2.0, -1.0, 0.5, 3.0], [0, 1, 1], repetition_penalty=2.0)
    np.testing.assert_allclose(out, [1.0, -2.0, 0.5, 3.0])


def test_frequency_and_presence_penalties_count_generated_tokens_only():
    """Prompt 3 3, generated 1 1 2; a_f = 0.5, a_p = 0.25: token 1 loses 2 * 0.5 + 0.25 = 1.25,
    token 2 loses 0.5 + 0.25 = 0.75, token 3 (prompt only) and 0 lose nothing."""
    out = process(np.zeros(4), [3, 3, 1, 1, 2], 3, frequency_penalty=0.5, presence_penalty=0.25)
    np.testing.assert_allclose(out, [0.0, -1.25, -0.75, 0.0])
    # Negative values encourage repetition instead.
    out = process(np.zeros(4), [1], 1, presence_penalty=-1.0)
    np.testing.assert_allclose(out, [0.0, 1.0, 0.0, 0.0])


def test_logit_bias_adds_before_the_repetition_penalty():
    """Token 1: 1 + 1 = 2, then seen, so / 2 = 1; token 2: 0 - 100 = -100."""
    out = process([0.0, 1.0, 0.0], [1], logit_bias={1: 1.0, 2: -100.0}, repetition_penalty=2.0)
    np.testing.assert_allclose(out, [0.0, 1.0, -100.0])


def test_no_repeat_ngram_bans_completing_a_seen_ngram():
    """Context 1 2 3 1 2: with n = 3 the tail (1, 2) was followed by 3, so 3 is banned; with
    n = 2 the tail (2,) was followed by 3 too; with n = 1 every seen token is banned."""
    ctx = [1, 2, 3, 1, 2]
    for n, banned in ((3, [3]), (2, [3]), (1, [1, 2, 3])):
        out = process(np.zeros(5), ctx, no_repeat_ngram_size=n)
        assert list(np.flatnonzero(np.isneginf(out))) == banned, n
    assert np.isfinite(process(np.zeros(5), [1, 2], no_repeat_ngram_size=3)).all()


def test_bad_words_ban_the_last_id_after_the_rest():
    out = process(np.zeros(5), [0, 1], bad_words=[[4], [1, 2], [0, 3]])
    assert list(np.flatnonzero(np.isneginf(out))) == [2, 4]  # 0 3 needs the context to end in 0


def test_min_new_tokens_bans_the_stop_tokens_until_reached():
    settings = dict(stop_tokens=(0, 2), min_new_tokens=2)
    assert list(np.flatnonzero(np.isneginf(process(np.zeros(3), [1], 1, **settings)))) == [0, 2]
    assert np.isfinite(process(np.zeros(3), [1], 2, **settings)).all()


def test_min_p_keeps_tokens_within_a_factor_of_the_most_likely():
    """Probabilities 0.5, 0.3, 0.15, 0.05; min_p 0.2 keeps p >= 0.1: the first three."""
    logits = np.log([[0.5, 0.3, 0.15, 0.05]])
    np.testing.assert_array_equal(np.isfinite(min_p_filter(logits, 0.2)),
                                  [[True, True, True, False]])
    assert np.isfinite(min_p_filter(logits, 0.0)).all()
    assert np.isfinite(min_p_filter(logits, 1.0)).sum() == 1


class NextIsPlusOne:
    """Puts almost all mass on (last token + 1) mod 7."""

    vocab_size = 7

    def __call__(self, idx, targets=None):
        idx = np.asarray(idx)
        logits = np.full(idx.shape + (7,), -10.0)
        np.put_along_axis(logits, ((idx + 1) % 7)[..., None], 10.0, axis=-1)
        return logits, None


def test_processors_reach_generate():
    """From 4, the model wants 5 6 0 ...; stop token 0 is banned for the first 5 new tokens,
    so after 5 6 the best allowed is 1 (all others tie at -10, the lowest id wins), then
    2 3 4 (5 new tokens), then 5 6 0 and the stop."""
    out = generate(NextIsPlusOne(), [4], 20,
                   sampling=SamplingParams(0, stop_tokens=(0,), min_new_tokens=5))
    np.testing.assert_array_equal(out, [4, 5, 6, 1, 2, 3, 4, 5, 6, 0])
    # A bias of -100 on 6 sends 5 to the lowest other id, 0.
    out = generate(NextIsPlusOne(), [4], 2, sampling=SamplingParams(0, logit_bias={6: -100}))
    np.testing.assert_array_equal(out, [4, 5, 0])


def test_the_same_numbers_as_hf_processors():
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, size=9)
    z = rng.normal(0, 2, size=12)
    t_ids, t_z = torch.tensor(ids[None, :]), torch.tensor(z[None, :])
    hf = [(lp.RepetitionPenaltyLogitsProcessor(1.7), dict(repetition_penalty=1.7)),
          (lp.NoRepeatNGramLogitsProcessor(2), dict(no_repeat_ngram_size=2)),
          (lp.NoBadWordsLogitsProcessor([[int(ids[-1]), 5], [7]], eos_token_id=None),
           dict(bad_words=[[int(ids[-1]), 5], [7]]))]
    for processor, settings in hf:
        expected = processor(t_ids, t_z.clone()).numpy()[0]
        np.testing.assert_allclose(process(z, ids, **settings), expected, rtol=1e-12)
    expected = lp.MinPLogitsWarper(0.3)(t_ids, t_z.clone()).numpy()[0]
    np.testing.assert_array_equal(np.isfinite(min_p_filter(z[None, :], 0.3))[0],
                                  np.isfinite(expected))


@pytest.mark.parametrize("settings, name", [
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(presence_penalty=2.5), "presence_penalty"),
    (dict(frequency_penalty=float("nan")), "frequency_penalty"),
    (dict(min_p=1.5), "min_p"),
    (dict(logit_bias={3: 101.0}), "logit_bias"),
    (dict(logit_bias={-1: 1.0}), "logit_bias"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    (dict(min_new_tokens=1.5), "min_new_tokens"),
    (dict(bad_words=[[]]), "bad_words"),
])
def test_bad_settings_are_named(settings, name):
    with pytest.raises(ValueError, match=name):
        SamplingParams(**settings)


def test_the_flags_of_numpylm_generate_build_the_processors():
    import argparse

    from numpylm.inference.sampling import add_sampling_arguments, sampling_from_args
    parser = argparse.ArgumentParser()
    add_sampling_arguments(parser)
    args = parser.parse_args(["--repetition-penalty", "1.2", "--presence-penalty", "0.5",
                              "--frequency-penalty", "-0.5", "--min-p", "0.1",
                              "--no-repeat-ngram-size", "3", "--min-new-tokens", "4",
                              "--logit-bias", "5=-100", "--logit-bias", "2=1.5"])
    params = sampling_from_args(args, stop_tokens=[0])
    assert (params.repetition_penalty, params.presence_penalty, params.frequency_penalty,
            params.min_p, params.no_repeat_ngram_size, params.min_new_tokens) == (
        1.2, 0.5, -0.5, 0.1, 3, 4)
    assert params.logit_bias == ((2, 1.5), (5, -100.0)) and params.stop_tokens == (0,)
    assert sampling_from_args(parser.parse_args([])) == SamplingParams(seed=0)
    with pytest.raises(ValueError, match="--logit-bias takes ID=BIAS"):
        sampling_from_args(parser.parse_args(["--logit-bias", "x=1"]))
    with pytest.raises(ValueError, match="presence_penalty"):
        sampling_from_args(parser.parse_args(["--presence-penalty", "3"]))
