"""The two BPE trainers: the tie-break, early stopping, and merge-for-merge agreement."""
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.corpus import embedded_corpus
from numpylm.tokenizers import (
    GPT2_PATTERN,
    GPT4_PATTERN,
    BPETokenizer,
    merge_pair,
    pretokenize,
    train_merges_fast,
    train_merges_plain,
)

TRAINERS = (train_merges_plain, train_merges_fast)


def test_merge_pair_left_to_right():
    """[a, a, a] with pair (a, a): the leftmost two merge, the third is left alone."""
    assert merge_pair([5, 5, 5], (5, 5), 9) == [9, 5]
    assert merge_pair([5, 5, 5, 5], (5, 5), 9) == [9, 9]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 7) == [7, 3, 7]
    assert merge_pair([2, 1], (1, 2), 7) == [2, 1]


def test_tie_break_smallest_pair_of_ids():
    """"dcba" has three pairs, each once: (100,99), (99,98), (98,97). The first one seen is
    (100, 99), but the rule takes the smallest pair of ids, (98, 97) = "ba"."""
    for trainer in TRAINERS:
        assert trainer(["dcba"], 1) == [(98, 97)]


def test_most_frequent_pair_wins():
    """Chunks "ab", "ab", "cd": (97,98) occurs twice, (99,100) once; then (99,100) is left."""
    for trainer in TRAINERS:
        assert trainer(["ab", "cd", "ab"], 5) == [(97, 98), (99, 100)]  # then nothing to merge


def test_pairs_never_cross_chunks():
    """GPT-2 splits "aa aa" into "aa", " aa": the pair (a, space) is never counted.

    Counts: (97,97)=2, (32,97)=1. Merge 256 = (97,97); then " aa" is [32, 256]: merge 257 =
    (32, 256). Every chunk is then one token, so training stops at two merges."""
    chunks = pretokenize("aa aa", GPT2_PATTERN)
    assert chunks == ["aa", " aa"]
    for trainer in TRAINERS:
        assert trainer(chunks, 10) == [(97, 97), (32, 256)]


def test_merges_count_multibyte_characters_as_bytes():
    """ "é" is two bytes, C3 A9; "éé" has pairs (C3,A9) twice and (A9,C3) once."""
    for trainer in TRAINERS:
        assert trainer(["éé"], 1) == [(0xC3, 0xA9)]


@settings(max_examples=30)
@given(
    text=st.text(alphabet=st.characters(max_codepoint=127), max_size=200),
    extra=st.integers(0, 40),
    pattern=st.sampled_from([GPT2_PATTERN, GPT4_PATTERN]),
)
def test_trainers_agree_ascii(text, extra, pattern):
    chunks = pretokenize(text, pattern)
    assert train_merges_fast(chunks, extra) == train_merges_plain(chunks, extra)


@settings(max_examples=30)
@given(
    text=st.text(max_size=120),
    extra=st.integers(0, 40),
    pattern=st.sampled_from([GPT2_PATTERN, GPT4_PATTERN]),
)
def test_trainers_agree_unicode(text, extra, pattern):
    chunks = pretokenize(text, pattern)
    assert train_merges_fast(chunks, extra) == train_merges_plain(chunks, extra)


@settings(max_examples=15)
@given(
    words=st.lists(st.sampled_from(["ab", "ba", "aab", "abab", "b", " a", "aaaa"]), max_size=30),
    extra=st.integers(0, 20),
)
def test_trainers_agree_on_many_ties(words, extra):
    """A tiny alphabet makes equal counts and overlapping pairs (a, a) common."""
    assert train_merges_fast(words, extra) == train_merges_plain(words, extra)


def test_trainers_agree_on_real_text():
    chunks = pretokenize(embedded_corpus()[:4000], GPT4_PATTERN)
    assert train_merges_fast(chunks, 60) == train_merges_plain(chunks, 60)


def test_tokenizer_train_with_either_algorithm():
    text = embedded_corpus()[:3000]
    fast = BPETokenizer.train(text, 300, algorithm="fast")
    plain = BPETokenizer.train(text, 300, algorithm="plain")
    assert fast.merges == plain.merges
    assert fast.encode(text) == plain.encode(text)


def test_training_stops_when_every_chunk_is_one_token():
    tok = BPETokenizer.train("ab ab", 1000, special_tokens=["<s>"])
    # "ab", " ab": merges (97,98)->256 then (32,256)->257; the special token follows them.
    assert tok.merges == [(97, 98, 256), (32, 256, 257)]
    assert tok.special_tokens == {"<s>": 258}
    assert tok.vocab_size == 259
