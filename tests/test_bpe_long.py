"""BPE on one long chunk: `merge_long` (whole ranks at a time, O(n log n)) equals the plain
loop `apply_merges` and the definition `replay_merges`, and is fast where the loop was
quadratic (a 100k-letter line used to take seconds; tiktoken takes milliseconds)."""
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.corpus import embedded_corpus
from numpylm.tokenizers import BPETokenizer
from numpylm.tokenizers import bpe as bpe_module
from numpylm.tokenizers.bpe_merge import MergeTable, apply_merges, merge_long, replay_merges


@pytest.fixture(scope="module")
def trained() -> BPETokenizer:
    return BPETokenizer.train(embedded_corpus()[:40_000] + "aaaa aaaaaaa bbbb", 520)


def test_hand_worked_runs_of_one_pair():
    """Merges (a, a) -> 256 and (256, 256) -> 257 on "aaaaa" (5 a's), by hand.
    Rank 0 merges the run left to right without overlaps: aa aa a -> [256, 256, 97];
    rank 1 then joins the two 256s: [257, 97]. Six a's give [257, 256]: aa aa aa, then the
    leftmost 256 256 merges first."""
    table = MergeTable({(97, 97): 0, (256, 256): 1}, [256, 257])
    assert merge_long([97] * 5, table) == [257, 97]
    assert merge_long([97] * 6, table) == [257, 256]
    assert merge_long([97] * 1, table) == [97]
    assert merge_long([], table) == []


def test_a_merge_that_uses_a_new_id_waits_for_its_rank():
    """(a, b) -> 256 rank 0, (256, c) -> 257 rank 1, (c, d) -> 258 rank 2, on "abcd":
    ab first, then 256 c (rank 1) beats c d (rank 2): [257, 100]."""
    table = MergeTable({(97, 98): 0, (256, 99): 1, (99, 100): 2}, [256, 257, 258])
    assert merge_long([97, 98, 99, 100], table) == [257, 100]


@settings(max_examples=60)
@given(st.text(alphabet=st.sampled_from("aabbetohn s\n,é"), max_size=400))
def test_merge_long_equals_replay_and_the_loop(trained, text):
    ids = list(text.encode("utf-8"))
    table = MergeTable(trained._pair_rank, trained._merged_id)
    expected = replay_merges(list(ids), trained.merges)
    assert merge_long(ids, table) == expected
    assert apply_merges(list(ids), trained._pair_rank, trained._merged_id) == expected


@settings(max_examples=30)
@given(st.text(max_size=300))
def test_the_encoder_takes_the_fast_path_for_long_chunks(trained, text):
    """With the threshold at 4 bytes every longer chunk goes through merge_long; the ids are
    still those of replaying every merge over each chunk."""
    expected = [token for chunk in trained._regex.findall(text)
                for token in replay_merges(list(chunk.encode("utf-8")), trained.merges)]
    original = bpe_module._LONG_CHUNK
    bpe_module._LONG_CHUNK = 4
    try:
        trained._cache.clear()  # nothing may come from an earlier encoding
        assert trained.encode(text) == expected
    finally:
        bpe_module._LONG_CHUNK = original
        trained._cache.clear()


def test_ids_equal_tiktoken_on_long_chunks(trained):
    tiktoken = pytest.importorskip("tiktoken")
    encoding = tiktoken.Encoding("numpylm-test", pat_str=trained.pattern,
                                 mergeable_ranks=trained.mergeable_ranks(), special_tokens={})
    letters = (embedded_corpus()[:30_000]).replace(" ", "").replace("\n", "")
    for text in (letters, "a" * 5000, "ab" * 3001 + "a", "9" * 999, "é" * 2000):
        assert trained.encode(text) == encoding.encode_ordinary(text)


def test_a_long_line_without_spaces_encodes_in_linear_time(trained):
    """200k letters: quadratic merging took over a minute; now a fraction of a second."""
    text = ("".join(ch for ch in embedded_corpus()[:400_000] if ch.isalpha()))[:200_000]
    assert len(text) == 200_000
    start = time.perf_counter()
    ids = trained.encode(text)
    elapsed = time.perf_counter() - start
    assert trained.decode(ids) == text
    assert elapsed < 3.0, f"{elapsed:.1f} s for one 200k-letter chunk"
