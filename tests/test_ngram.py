"""NGramLM: hand-derived probabilities, normalisation, the two scoring paths, bad input.

The hand examples share one corpus over the ids a = 0, b = 1, with the reserved boundary
id 2 written '.':  [a b], [a], [b b]  ->  padded  '. a b .', '. a .', '. b b .'
Bigram counts:  c(. a) = 2, c(. b) = 1;  c(a b) = 1, c(a .) = 1;  c(b .) = 2, c(b b) = 1,
so c(.) = 3, c(a) = 2, c(b) = 3. Unigram counts (predicted positions): a 2, b 3, '.' 3 (N = 8).
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from numpylm.models import NGramLM
from numpylm.models.ngram_counts import check_sequences, count_ngrams_loop

A, B, DOT = 0, 1, 2
CORPUS = [[A, B], [A], [B, B]]


def test_mle_by_hand():
    """P(b|a) = c(a b)/c(a) = 1/2,  P(.|b) = 2/3,  P(a|.) = 2/3,  P(a|a) = 0."""
    lm = NGramLM(2, 2, "mle").fit(CORPUS)
    assert lm.prob(B, [A]) == pytest.approx(1 / 2)
    assert lm.prob(DOT, [B]) == pytest.approx(2 / 3)
    assert lm.prob(A, []) == pytest.approx(2 / 3)
    assert lm.prob(A, [A]) == 0.0
    np.testing.assert_allclose(lm.distribution([B]), [0, 1 / 3, 2 / 3])


def test_mle_unseen_context_backs_off_by_hand():
    """Trigrams, vocab_size 3 (id 2 never used, boundary is 3). Padded '3 3 a b 3', '3 3 a 3',
    '3 3 b b 3'.  Context (3 b): only trigram (3 b b), so P(b | 3 b) = 1.
    Context (a a): never seen, back off to c(a w)/c(a): b 1/2, '3' 1/2.
    Context (a 2): neither (a 2) nor (2) was seen, back off to the unigrams a 2/8, b 3/8, 3 3/8."""
    lm = NGramLM(3, 3, "mle").fit(CORPUS)
    np.testing.assert_allclose(lm.distribution([B]), [0, 1, 0, 0])
    np.testing.assert_allclose(lm.distribution([A, A]), [0, 1 / 2, 0, 1 / 2])
    np.testing.assert_allclose(lm.distribution([A, 2]), [2 / 8, 3 / 8, 0, 3 / 8])


def test_add_k_by_hand():
    """k = 1/2, V = 3 outcomes (a, b, '.'), so P(w|h) = (c(h w) + 1/2) / (c(h) + 3/2):
    P(a|.) = 2.5/4.5 = 5/9,  P(b|.) = 1.5/4.5 = 1/3,  P(.|.) = 0.5/4.5 = 1/9   (sum 1)
    P(b|a) = 1.5/3.5 = 3/7,  P(a|a) = 0.5/3.5 = 1/7,  P(.|a) = 1.5/3.5 = 3/7
    P(.|b) = 2.5/4.5 = 5/9
    log P([a b]) = log P(a|.) + log P(b|a) + log P(.|b) = log(5/9 * 3/7 * 5/9) = log(25/189)."""
    lm = NGramLM(2, 2, "add_k", k=0.5).fit(CORPUS)
    np.testing.assert_allclose(lm.distribution([]), [5 / 9, 1 / 3, 1 / 9])
    np.testing.assert_allclose(lm.distribution([A]), [1 / 7, 3 / 7, 3 / 7])
    assert lm.prob(DOT, [B]) == pytest.approx(5 / 9)
    assert lm.logprob([A, B]) == pytest.approx(math.log(25 / 189))


def test_kneser_ney_by_hand():
    """Interpolated KN, bigrams, D = 1/2 at both orders.
    Unigram continuation counts N1+(. w) (distinct left neighbours): a <- {.}: 1,
    b <- {a, ., b}: 3, '.' <- {b, a}: 2; total 6 bigram types, 3 unigram types.
    P1(w) = (N1+(. w) - 1/2)/6 + (1/2 * 3/6) * 1/3:
      P1(a) = 1/12 + 1/12 = 1/6,  P1(b) = 5/12 + 1/12 = 1/2,  P1(.) = 3/12 + 1/12 = 1/3.
    Context a: c(a) = 2 with 2 follower types, gamma = 1/2 * 2/2 = 1/2:
      P(b|a) = (1 - 1/2)/2 + 1/2 * 1/2 = 1/2,  P(a|a) = 1/2 * 1/6 = 1/12,
      P(.|a) = 1/4 + 1/2 * 1/3 = 5/12.
    Context b: c(b) = 3, 2 types, gamma = 1/3:  P(a|b) = 1/3 * 1/6 = 1/18."""
    lm = NGramLM(2, 2, "kneser_ney", discount=0.5).fit(CORPUS)
    np.testing.assert_allclose(lm.distribution([A]), [1 / 12, 1 / 2, 5 / 12])
    assert lm.prob(A, [B]) == pytest.approx(1 / 18)


def test_kneser_ney_trigram_by_hand():
    """Trigrams, D = 1/2. Distinct trigrams: (. . a) (. a b) (a b .) (. a .) (. . b) (. b b) (b b .).
    Bigram continuation counts, from their suffixes: (a b) 1, (a .) 1, so context a has total 2
    and 2 types, exactly as the raw bigram counts above: P2(.|a) = [1/12, 1/2, 5/12] again.
    Context (b a) was never seen: all weight on P2(w|a) = [1/12, 1/2, 5/12].
    Context (. a): trigrams (. a b) 1, (. a .) 1; total 2, gamma = 1/2:
      P(a|. a) = 1/2 * 1/12 = 1/24,  P(b|. a) = 1/4 + 1/4 = 1/2,  P(.|. a) = 1/4 + 5/24 = 11/24."""
    lm = NGramLM(3, 2, "kneser_ney", discount=0.5).fit(CORPUS)
    np.testing.assert_allclose(lm.distribution([B, A]), [1 / 12, 1 / 2, 5 / 12])
    np.testing.assert_allclose(lm.distribution([A]), [1 / 24, 1 / 2, 11 / 24])


def test_kneser_ney_estimated_discounts_by_hand():
    """D = n1 / (n1 + 2 n2) per order. Bigram counts {2, 1, 2, 1, 1, 1}: n1 = 4, n2 = 2, D = 1/2.
    Unigram continuation counts {1, 3, 2}: n1 = 1, n2 = 1, D = 1/3."""
    lm = NGramLM(2, 2, "kneser_ney").fit(CORPUS)
    np.testing.assert_allclose(lm.discounts_[:, 0], [1 / 3, 1 / 2])
    assert lm.discount_fallback_ == []


def test_modified_kneser_ney_discounts_by_hand():
    """Unigram model of [0 1 2 2 3 3 3 4 4 4 4] plus one EOS: counts 1, 1, 2, 3, 4 and EOS 1,
    so n1 = 3, n2 = n3 = n4 = 1 and Y = 3 / (3 + 2) = 0.6:
    D1 = 1 - 2Y n2/n1 = 1 - 0.4 = 0.6,  D2 = 2 - 3Y n3/n2 = 0.2,  D3+ = 3 - 4Y n4/n3 = 0.6."""
    lm = NGramLM(1, 5, "modified_kneser_ney").fit([[0, 1, 2, 2, 3, 3, 3, 4, 4, 4, 4]])
    np.testing.assert_allclose(lm.discounts_[0], [0.6, 0.2, 0.6])
    # Too sparse for the estimate (no count of 3 or 4 here): KenLM's fallback.
    lm = NGramLM(1, 5, "modified_kneser_ney").fit([[0, 1, 2, 2]])
    np.testing.assert_allclose(lm.discounts_[0], [0.5, 1.0, 1.5])
    assert lm.discount_fallback_ == [1]


def test_stupid_backoff_scores_are_not_probabilities():
    """S(b|a) = 1/2, S(.|a) = 1/2, and a never follows a, so S(a|a) = 0.4 * c(a)/N = 0.4 * 2/8
    = 0.1: the scores of context a sum to 1.1."""
    lm = NGramLM(2, 2, "stupid_backoff").fit(CORPUS)
    np.testing.assert_allclose(lm.distribution([A]), [0.1, 0.5, 0.5])
    with pytest.raises(ValueError, match="scores, not probabilities"):
        lm.perplexity(CORPUS)


def test_distinct_bos_is_never_predicted():
    """vocab 0..4 with BOS 3 and EOS 4: V counts 4 outcomes and P(BOS) = 0. The context EOS was
    never seen, so add-1 gives (0 + 1) / (0 + 4) = 1/4 everywhere except BOS; after 1, seen
    once (followed by EOS), P(EOS|1) = (1 + 1)/(1 + 4) = 2/5 and the others 1/5."""
    lm = NGramLM(2, 5, "add_k", bos_id=3, eos_id=4).fit([[0, 1], [2]])
    np.testing.assert_allclose(lm.distribution([4]), [0.25, 0.25, 0.25, 0, 0.25])
    np.testing.assert_allclose(lm.distribution([1]), [0.2, 0.2, 0.2, 0, 0.4])
    assert lm.prob(3, [0]) == 0.0


# ---------------------------------------------------------------------------------------------
# Properties on random corpora.

PROBABILISTIC = [
    ("mle", {}),
    ("add_k", {"k": 0.3}),
    ("kneser_ney", {}),
    ("kneser_ney", {"unigram_base": "none"}),
    ("modified_kneser_ney", {}),
]
corpora = st.lists(st.lists(st.integers(0, 5), max_size=8), min_size=1, max_size=8).filter(
    lambda c: sum(map(len, c)) > 0
)
boundaries = st.sampled_from([{}, {"bos_id": 6, "eos_id": 7}, {"bos_id": 6}])
contexts = st.lists(st.integers(0, 5), max_size=4)


@pytest.mark.parametrize("smoothing,params", PROBABILISTIC)
@given(corpus=corpora, order=st.integers(1, 4), boundary=boundaries, data=st.data())
def test_distribution_sums_to_one(smoothing, params, corpus, order, boundary, data):
    lm = NGramLM(order, 8, smoothing, **boundary, **params).fit(corpus)
    # a random context (often unseen) or a prefix of a training sequence (seen)
    prefixes = [seq[:t] for seq in corpus for t in range(len(seq) + 1)]
    context = data.draw(st.one_of(contexts, st.sampled_from(prefixes)))
    p = lm.distribution(context)
    assert p.shape == (lm.vocab_size,)
    assert abs(p.sum() - 1) < 1e-9
    outcomes = np.ones(lm.vocab_size, bool)
    if lm.bos_id != lm.eos_id:
        outcomes[lm.bos_id] = False
        assert p[lm.bos_id] == 0
    if smoothing == "add_k" or params.get("unigram_base", "uniform") == "uniform" and smoothing != "mle":
        assert np.all(p[outcomes] > 0)


@pytest.mark.parametrize("smoothing,params", PROBABILISTIC + [("stupid_backoff", {})])
@given(corpus=corpora, order=st.integers(1, 4), boundary=boundaries, data=st.data())
def test_vectorised_scoring_equals_per_token_prob(smoothing, params, corpus, order, boundary, data):
    lm = NGramLM(order, 8, smoothing, **boundary, **params).fit(corpus)
    held_out = data.draw(st.lists(st.lists(st.integers(0, 5), max_size=6), min_size=1, max_size=3))
    fast = lm.token_logprobs(held_out)
    slow = []
    for seq in held_out:
        for t, w in enumerate(list(seq) + [lm.eos_id]):
            slow.append(math.log(p) if (p := lm.prob(w, seq[:t])) > 0 else -math.inf)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=0)
    context = data.draw(contexts)
    np.testing.assert_allclose(
        lm.distribution(context), [lm.prob(w, context) for w in range(lm.vocab_size)], rtol=1e-12, atol=1e-15
    )


@given(corpus=corpora, order=st.integers(1, 3), data=st.data())
def test_mle_equals_count_ratios(corpus, order, data):
    lm = NGramLM(order, 6, "mle").fit(corpus)
    raw, _ = count_ngrams_loop(check_sequences(corpus, 7, 6), order, 6, 6)
    top = raw[order - 1]
    h = data.draw(st.sampled_from(sorted({g[:-1] for g in top})))
    total = sum(c for g, c in top.items() if g[:-1] == h)
    for w in range(7):
        assert lm.prob(w, h) == top.get(h + (w,), 0) / total


@given(corpus=corpora, order=st.integers(1, 3), d=st.floats(0.05, 0.95), context=contexts)
def test_modified_kn_with_equal_discounts_is_kn(corpus, order, d, context):
    kn = NGramLM(order, 6, "kneser_ney", discount=d).fit(corpus)
    mkn = NGramLM(order, 6, "modified_kneser_ney", discounts=(d, d, d)).fit(corpus)
    np.testing.assert_allclose(kn.distribution(context), mkn.distribution(context), rtol=1e-12)


def test_perplexity_and_bits_agree():
    lm = NGramLM(2, 2, "add_k", k=0.5).fit(CORPUS)
    n = 8  # 5 tokens + 3 EOS
    total = sum(lm.logprob(s) for s in CORPUS)
    assert lm.perplexity(CORPUS) == pytest.approx(math.exp(-total / n))
    assert lm.bits_per_token(CORPUS) == pytest.approx(-total / n / math.log(2))


def test_generate_is_reproducible():
    """The n-gram model decodes through the shared `generate` (numpylm.models.base's
    contract): seeded, stopping at its EOS id, greedy taking the most likely id."""
    from numpylm.inference import generate

    rng = np.random.default_rng(0)
    corpus = [rng.integers(0, 6, size=rng.integers(1, 10)) for _ in range(50)]
    lm = NGramLM(3, 6, "kneser_ney").fit(corpus)
    a = generate(lm, [1], 30, seed=7, stop_tokens=[lm.eos_id])
    np.testing.assert_array_equal(a, generate(lm, [1], 30, seed=np.random.default_rng(7),
                                              stop_tokens=[lm.eos_id]))
    assert a[0] == 1 and all(0 <= t < 6 for t in a[1:-1])
    assert len(a) == 31 or a[-1] == lm.eos_id  # ends at the EOS id, or after 30 tokens
    greedy = generate(lm, [], 5, temperature=0)
    history = []
    for t in greedy:  # temperature 0 always takes the most likely id
        assert t == int(np.argmax(lm.distribution(history)))
        history.append(t)


# ---------------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((0, 5), {}, "order must be"),
        ((2, 0), {}, "vocab_size must be"),
        ((2, 5, "witten_bell"), {}, "unknown smoothing"),
        ((2, 5, "add_k"), {"k": 0}, "k > 0"),
        ((2, 5, "add_k"), {"k": -1.0}, "k > 0"),
        ((2, 5, "add_k"), {"discount": 0.5}, "unknown parameter"),
        ((2, 5, "kneser_ney"), {"discount": 0.0}, r"order 1 must lie in \(0, 1\)"),
        ((2, 5, "kneser_ney"), {"discount": [0.5, 1.0]}, r"order 2 must lie in \(0, 1\)"),
        ((2, 5, "kneser_ney"), {"discount": [0.5, 0.5, 0.5]}, "one per order"),
        ((2, 5, "modified_kneser_ney"), {"discounts": (0.5, 2.5, 1.0)}, r"D2 for order 1 .*\(0, 2\)"),
        ((2, 5, "stupid_backoff"), {"alpha": 0}, "alpha"),
        ((2, 5), {"bos_id": 5}, "bos_id"),
        ((20, 100), {}, "does not fit in an int64"),
    ],
)
def test_bad_construction(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        NGramLM(*args, **kwargs)


def test_bad_data():
    lm = NGramLM(2, 3)
    with pytest.raises(ValueError, match="not fitted"):
        lm.prob(0, [])
    with pytest.raises(ValueError, match="empty corpus"):
        lm.fit([])
    with pytest.raises(ValueError, match="empty corpus"):
        lm.fit([[], []])
    with pytest.raises(ValueError, match="token id 7 at position 1"):
        lm.fit([[0, 7]])
    lm.fit([[0, 1, 2]])
    with pytest.raises(ValueError, match="token id 4 is outside"):
        lm.prob(4, [0])
    with pytest.raises(ValueError, match="context has token id 9"):
        lm.distribution([9])
    with pytest.raises(ValueError, match="token id 5 at position 0"):
        lm.perplexity([[5]])
    from numpylm.inference import generate
    with pytest.raises(ValueError, match="temperature"):
        generate(lm, [0], 3, temperature=-1)


def test_nltk_variant_matches_nltk():
    """With one discount for all orders and no uniform base, our KN is NLTK's
    KneserNeyInterpolated, when NLTK is fed the same n-grams (each position's trigram and its
    suffixes; see benchmarks/bench_ngram.py for where the two formulas differ)."""
    pytest.importorskip("nltk")
    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.vocabulary import Vocabulary

    words = ["<s>", "a", "b", "c", "</s>"]  # ids 0 (BOS) .. 4 (EOS)
    corpus = [[1, 2], [1], [2, 2, 3], [3, 1, 2, 1]]
    ours = NGramLM(3, 5, "kneser_ney", bos_id=0, eos_id=4, discount=0.1, unigram_base="none").fit(corpus)
    text = []
    for seq in corpus:
        padded = [0, 0] + seq + [4]
        text.append([tuple(words[i] for i in padded[t - m + 1 : t + 1]) for t in range(2, len(padded)) for m in (3, 2, 1)])
    nltk_lm = KneserNeyInterpolated(3)
    nltk_lm.fit(text, Vocabulary(words, unk_cutoff=1))
    for h in [(0, 0), (0, 1), (1, 2), (2, 2), (3, 3), (2, 1)]:
        for w in (1, 2, 3, 4):
            expected = nltk_lm.score(words[w], tuple(words[i] for i in h))
            assert ours.prob(w, h) == pytest.approx(expected, rel=1e-12, abs=1e-15)
