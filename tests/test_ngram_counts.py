"""Counting n-grams: hand-counted examples, and the vectorised counter equals the loop counter."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpylm.models.ngram_counts import (
    OrderTable,
    check_sequences,
    count_ngrams,
    count_ngrams_loop,
    pack,
    padded_windows,
    unpack,
)


def as_dicts(pairs, order, V):
    return [
        {tuple(int(t) for t in g): int(c) for g, c in zip(unpack(keys, m, V), counts)}
        for m, (keys, counts) in enumerate(pairs[:order], 1)
    ]


def test_padded_windows_by_hand():
    """Order 3, BOS = 0, EOS = 9. [5, 6] pads to 0 0 5 6 9: three predicted positions
    (5, 6 and EOS), each with its two-id context. [] pads to 0 0 9: one position. [7]: two."""
    seqs = [np.array([5, 6]), np.array([], dtype=np.int64), np.array([7])]
    expected = [[0, 0, 5], [0, 5, 6], [5, 6, 9], [0, 0, 9], [0, 0, 7], [0, 7, 9]]
    assert padded_windows(seqs, 3, 0, 9).tolist() == expected


def test_loop_counts_by_hand():
    """Bigrams, BOS = EOS = 2, corpus [0 1], [0], [1 1]:
    padded '2 0 1 2', '2 0 2', '2 1 1 2' give the bigrams
    (2,0) x2, (0,1), (1,2) x2, (0,2), (2,1), (1,1) and the unigrams 0 x2, 1 x3, 2 x3.
    Continuation counts of the unigrams (distinct left neighbours):
    0 <- {2}: 1;  1 <- {0, 2, 1}: 3;  2 <- {1, 0}: 2."""
    raw, cont = count_ngrams_loop([np.array([0, 1]), np.array([0]), np.array([1, 1])], 2, 2, 2)
    assert raw[1] == {(2, 0): 2, (0, 1): 1, (1, 2): 2, (0, 2): 1, (2, 1): 1, (1, 1): 1}
    assert raw[0] == {(0,): 2, (1,): 3, (2,): 3}
    assert cont[0] == {(0,): 1, (1,): 3, (2,): 2}
    assert cont[1] == {}


def test_pack_orders_by_context():
    """In base 10: (3, 1, 4) -> 314 and (0, 0, 7) -> 7; the suffix of length 2 is key % 100."""
    keys = pack(np.array([[3, 1, 4], [0, 0, 7]]), 10)
    assert keys.tolist() == [314, 7]
    assert unpack(keys, 3, 10).tolist() == [[3, 1, 4], [0, 0, 7]]
    assert (keys % 100).tolist() == [14, 7]


def test_order_table_summaries_by_hand():
    """Bigram counts of the hand example above, grouped by context (V = 3):
    context 0: {1: 1, 2: 1} -> total 2, types 2, n1 2, n2 0
    context 1: {1: 1, 2: 2} -> total 3, types 2, n1 1, n2 1
    context 2: {0: 2, 1: 1} -> total 3, types 2, n1 1, n2 1"""
    raw, _ = count_ngrams(padded_windows([np.array([0, 1]), np.array([0]), np.array([1, 1])], 2, 2, 2), 3)
    t = OrderTable.build(2, raw[1][0], raw[1][1], 3)
    assert t.ctx_keys.tolist() == [0, 1, 2]
    assert t.ctx_total.tolist() == [2, 3, 3]
    assert t.ctx_types.tolist() == [2, 2, 2]
    assert t.ctx_n1.tolist() == [2, 1, 1]
    assert t.ctx_n2.tolist() == [0, 1, 1]
    assert t.count_of_counts(1) == 4 and t.count_of_counts(2) == 2


corpora = st.lists(st.lists(st.integers(0, 5), max_size=9), min_size=0, max_size=8)


@given(corpus=corpora, order=st.integers(1, 4), boundary=st.sampled_from([(6, 6), (6, 7)]))
def test_vectorised_counts_equal_loop_counts(corpus, order, boundary):
    bos, eos = boundary
    V = 8
    seqs = check_sequences(corpus, V, bos)
    raw, cont = count_ngrams(padded_windows(seqs, order, bos, eos), V)
    raw_loop, cont_loop = count_ngrams_loop(seqs, order, bos, eos)
    assert as_dicts(raw, order, V) == [dict(c) for c in raw_loop]
    assert as_dicts(cont, order, V) == [dict(c) for c in cont_loop]
    # every order sees one m-gram per predicted position
    assert all(sum(c.values()) == sum(len(s) + 1 for s in corpus) for c in raw_loop)


def test_check_sequences_errors():
    with pytest.raises(ValueError, match="token id 9 at position 1"):
        check_sequences([[1, 9]], 5, 4)
    with pytest.raises(ValueError, match="BOS id 4"):
        check_sequences([[1, 4]], 5, 4)
    with pytest.raises(ValueError, match="token id -1"):
        check_sequences([[-1]], 5, 4)
    with pytest.raises(TypeError, match="item 0 is the int"):
        check_sequences([1, 2], 5, 4)
    with pytest.raises(TypeError, match="integer ids"):
        check_sequences([[1.5]], 5, 4)
    with pytest.raises(TypeError, match="iterable"):
        check_sequences("abc", 5, 4)
