"""Byte-level BPE: a hand-worked example, round trips, special tokens, save/load, bad input."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.corpus import embedded_corpus
from numpylm.tokenizers import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, load_tokenizer, pretokenize
from numpylm.tokenizers import bpe as bpe_module
from numpylm.tokenizers.bpe_merge import replay_merges

EOT = "<|endoftext|>"
PAD = "<|pad|>"
# Prose, code, digits, whitespace runs and several scripts, so every branch of the split
# patterns and multi-byte UTF-8 occur.
VARIED = (
    "Hello, world! It's 2024-06-01; I'LL pay $3.50 (or €4,20).\n\n"
    "def f(x):\n    return x ** 2  # square\n\t\ttabs   and   spaces  \r\n"
    "naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어, emoji 🙂🚀 and 👨‍👩‍👧.\n"
    "  trailing spaces   "
)


@pytest.fixture(scope="module")
def trained() -> BPETokenizer:
    text = embedded_corpus()[:60_000] + VARIED
    return BPETokenizer.train(text, 600, special_tokens=[EOT, PAD])


def test_hand_worked_example():
    """Three merges on "aaabdaaabac" (one chunk: all letters), worked out by hand.

    Bytes: a=97 b=98 c=99 d=100.  a a a b d a a a b a c
    Step 1, pair counts: (a,a)=4, (a,b)=2, (b,d)=1, (d,a)=1, (b,a)=1, (a,c)=1.
        Merge (97, 97) -> 256 "aa", scanning left to right: aa a b d aa a b a c
    Step 2, counts: (256,97)=2, (97,98)=2, others 1. A tie: the smaller pair (97, 98) wins.
        Merge (97, 98) -> 257 "ab":  aa ab d aa ab a c
    Step 3, counts: (256,257)=2, others 1.
        Merge (256, 257) -> 258 "aaab":  aaab d aaab a c
    So the text encodes to [258, 100, 258, 97, 99]. And "aab" encodes to [256, 98]: the pair
    (a, a) has the lower rank, so it merges first, and no merge joins "aa" with "b".
    """
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=259)
    assert tok.merges == [(97, 97, 256), (97, 98, 257), (256, 257, 258)]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.encode("aab") == [256, 98]
    assert tok.token_bytes(258) == b"aaab"
    assert tok.decode([258, 100]) == "aaabd"
    assert tok.vocab_size == 259


@settings(max_examples=30)
@given(st.text())
def test_round_trip_arbitrary_unicode(trained, text):
    assert trained.decode(trained.encode(text)) == text


@settings(max_examples=20)
@given(st.text(alphabet=st.sampled_from("ab ,.\n€é日🙂"), max_size=40))
def test_round_trip_small_alphabet_gpt2_pattern(text):
    tok = BPETokenizer.train("abab, ab. ba ab\n€é日🙂 é€ 🙂🙂", 280, pattern=GPT2_PATTERN)
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=25)
@given(st.text())
def test_fast_encoding_equals_replaying_every_merge(trained, text):
    """The cached, rank-driven encoder against encoding by definition (replay all merges)."""
    expected = []
    for chunk in pretokenize(text, trained.pattern):
        expected += replay_merges(list(chunk.encode("utf-8")), trained.merges)
    assert trained.encode_ordinary(text) == expected


def test_encoding_the_training_text_reproduces_training(trained):
    """On its own training text, a trained tokenizer compresses: fewer tokens than bytes."""
    ids = trained.encode(VARIED)
    assert len(ids) < len(VARIED.encode("utf-8"))
    assert trained.decode(ids) == VARIED


def test_cache_limit_does_not_change_ids(trained, monkeypatch):
    expected = trained.encode(VARIED)
    monkeypatch.setattr(bpe_module, "_CACHE_LIMIT", 3)
    fresh = BPETokenizer.from_string(trained.to_string())  # an empty cache of its own
    assert fresh.encode(VARIED) == expected
    assert len(fresh._cache) <= 3


def test_decode_replaces_invalid_utf8():
    tok = BPETokenizer.train("", 256)
    # Byte 0xE2 alone starts a 3-byte character that never finishes.
    assert tok.decode_bytes([0xE2, 0x82]) == b"\xe2\x82"
    assert tok.decode([104, 0xE2, 0x82, 105]) == "h\ufffdi"
    assert tok.token_bytes(0xE2) == b"\xe2"
    # Byte-level with no merges: ids are the UTF-8 bytes.
    assert tok.encode("é") == [0xC3, 0xA9]


# ---- special tokens (tiktoken's semantics) ------------------------------------------------


def test_special_tokens_get_the_last_ids(trained):
    assert trained.special_tokens == {EOT: 598, PAD: 599}
    assert trained.vocab_size == 600
    assert len(trained.merges) == 600 - 256 - 2


def test_disallowed_special_raises_by_default(trained):
    with pytest.raises(ValueError, match=r"<\|endoftext\|>"):
        trained.encode(f"hi{EOT}there")


def test_allowed_special_becomes_its_id(trained):
    ids = trained.encode(f"hi{EOT}there", allowed_special={EOT})
    assert ids == trained.encode("hi") + [598] + trained.encode("there")
    assert trained.decode(ids) == f"hi{EOT}there"


def test_allowed_all_and_one_allowed_other_disallowed(trained):
    text = f"{PAD}a{EOT}"
    assert trained.encode(text, allowed_special="all") == [599] + trained.encode("a") + [598]
    with pytest.raises(ValueError, match=r"<\|pad\|>"):
        trained.encode(text, allowed_special={EOT})


def test_ordinary_and_unchecked_treat_special_text_as_text(trained):
    text = f"x{EOT}y"
    ordinary = trained.encode_ordinary(text)
    assert 598 not in ordinary and trained.decode(ordinary) == text
    assert trained.encode(text, disallowed_special=()) == ordinary


def test_unknown_allowed_special_raises(trained):
    with pytest.raises(ValueError, match="<nope>"):
        trained.encode("x", allowed_special={"<nope>"})


def test_special_text_is_not_learned_from():
    tok = BPETokenizer.train(f"{EOT}{EOT}{EOT}ab", 258, special_tokens=[EOT])
    assert tok.merges == [(97, 98, 256)]  # "<|" never became a token, though it is most frequent


# ---- save and load -----------------------------------------------------------------------


def test_save_load_identical_encodings(trained, tmp_path):
    path = tmp_path / "tok.txt"
    trained.save(path)
    loaded = BPETokenizer.load(path)
    assert isinstance(load_tokenizer(path), BPETokenizer)
    assert loaded.merges == trained.merges and loaded.special_tokens == trained.special_tokens
    assert loaded.pattern == trained.pattern
    text = VARIED + EOT + embedded_corpus()[60_000:70_000]
    assert loaded.encode(text, allowed_special="all") == trained.encode(text, allowed_special="all")
    # Human-readable: one merge per line with the new token's text shown.
    assert 'merge 97 97 256  # "aa"' in BPETokenizer.train("aa", 257).to_string()


def test_saved_custom_pattern_survives(tmp_path):
    tok = BPETokenizer.train("one two  three\nfour", 262, pattern=r"\w+|\s+|[^\w\s]+")
    tok.save(tmp_path / "t.txt")
    assert BPETokenizer.load(tmp_path / "t.txt").pattern == r"\w+|\s+|[^\w\s]+"
    assert pretokenize("ab  c", r"\w+|\s+") == ["ab", "  ", "c"]


# ---- bad input ---------------------------------------------------------------------------


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("abc", 255)
    with pytest.raises(ValueError, match="special"):
        BPETokenizer.train("abc", 257, special_tokens=["<a>", "<b>"])
    with pytest.raises(TypeError, match="vocab_size"):
        BPETokenizer.train("abc", 300.0)


def test_encode_non_str_raises_type_error(trained):
    for bad in (b"bytes", None, 3, ["a"]):
        with pytest.raises(TypeError):
            trained.encode(bad)
        with pytest.raises(TypeError):
            trained.encode_ordinary(bad)


def test_decode_unknown_id_names_it(trained):
    with pytest.raises(ValueError, match="id 600"):
        trained.decode([1, 600])
    with pytest.raises(ValueError, match="id -1"):
        trained.decode([-1])
    with pytest.raises(ValueError, match="id 1000"):
        trained.token_bytes(1000)


@pytest.mark.parametrize(
    "line, message",
    [
        ("merge 97 999 256", "line 7: id 999"),
        ("merge 97 98 97", "line 7: new id 97"),
        ("merge 97 98", "line 7: a merge is three ids"),
        ("merge a b c", "line 7"),
        ("colour blue", "line 7: unexpected"),
    ],
)
def test_malformed_numpylm_file_names_the_line(line, message):
    good = BPETokenizer.train("ab", 257).to_string().splitlines()
    assert good[6].startswith("merge")  # line 7: the first merge
    good[6] = line
    with pytest.raises(ValueError, match=message):
        BPETokenizer.from_string("\n".join(good))


def test_duplicate_token_in_merges_raises():
    # "abc" made twice, as ab+c and a+bc: a vocabulary must not hold one text twice.
    with pytest.raises(ValueError, match="'abc' duplicates id 258"):
        BPETokenizer([(97, 98, 256), (98, 99, 257), (256, 99, 258), (97, 257, 259)])
    with pytest.raises(ValueError, match="merged twice"):
        BPETokenizer([(97, 98, 256), (97, 98, 257)])
    with pytest.raises(ValueError, match="algorithm"):
        BPETokenizer.train("ab", 257, algorithm="quick")
    with pytest.raises(ValueError, match="pattern"):
        BPETokenizer.train("ab", 257, pattern="(unclosed")


def test_gpt4_pattern_is_the_default():
    assert BPETokenizer.train("a", 256).pattern == GPT4_PATTERN
