"""The character tokenizer, the shared interface, `load_tokenizer` and the corpus helper."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.corpus import embedded_corpus, read_text
from numpylm.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer


def test_alphabet_is_sorted_characters():
    """"hello" has the characters e, h, l, o; sorted, they get ids 0, 1, 2, 3."""
    tok = CharTokenizer.from_text("hello")
    assert tok.chars == ["e", "h", "l", "o"]
    assert tok.vocab_size == 4
    assert tok.encode("hello") == [1, 0, 2, 2, 3]
    assert tok.decode([3, 2, 0]) == "ole"
    assert isinstance(tok, Tokenizer)


@settings(max_examples=30)
@given(st.text())
def test_round_trip_arbitrary_unicode(text):
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(set(text))


def test_unknown_character_raises_by_default():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="'z' at position 2"):
        tok.encode("abz")


def test_unknown_character_maps_to_unk_by_option():
    """Alphabet a, b (ids 0, 1); <unk> takes the next id, 2."""
    tok = CharTokenizer.from_text("ab", unk="<unk>")
    assert tok.vocab_size == 3 and tok.unk_id == 2
    assert tok.encode("axb") == [0, 2, 1]
    assert tok.decode([0, 2, 1]) == "a<unk>b"


def test_bad_input():
    tok = CharTokenizer.from_text("ab")
    with pytest.raises(TypeError):
        tok.encode(b"ab")
    with pytest.raises(TypeError):
        CharTokenizer.from_text(None)
    with pytest.raises(ValueError, match="id 2"):
        tok.decode([0, 2])
    with pytest.raises(ValueError, match="id -1"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="'a' appears twice"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="not a single character"):
        CharTokenizer(["ab"])


def test_save_load(tmp_path):
    tok = CharTokenizer.from_text("tab\there\nnew line, ünï ☃", unk="<unk>")
    tok.save(tmp_path / "char.txt")
    loaded = CharTokenizer.load(tmp_path / "char.txt")
    assert loaded.chars == tok.chars and loaded.unk == "<unk>"
    assert loaded.encode("the ☃?") == tok.encode("the ☃?")
    assert (tmp_path / "char.txt").read_text().startswith("numpylm-char 1\n")


def test_malformed_char_file_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text('numpylm-char 1\nunk null\nchars "ab\n')
    with pytest.raises(ValueError, match="line 3"):
        CharTokenizer.load(path)
    path.write_text('numpylm-char 1\nunk null\nchars "aba"\n')
    with pytest.raises(ValueError, match="line 3: character 'a' appears twice"):
        CharTokenizer.load(path)


def test_load_tokenizer_detects_the_kind(tmp_path):
    CharTokenizer.from_text("abc").save(tmp_path / "c.txt")
    BPETokenizer.train("abcabc", 258).save(tmp_path / "b.txt")
    assert isinstance(load_tokenizer(tmp_path / "c.txt"), CharTokenizer)
    assert isinstance(load_tokenizer(tmp_path / "b.txt"), BPETokenizer)
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="not a numpylm tokenizer"):
        load_tokenizer(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing.txt")


def test_corpus_helpers(tmp_path):
    text = embedded_corpus()
    assert 400_000 < len(text.encode("utf-8")) < 2_000_000
    assert text == read_text(None)
    (tmp_path / "t.txt").write_text("héllo", encoding="utf-8")
    assert read_text(tmp_path / "t.txt") == "héllo"
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_text(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "nope.txt")


def test_a_bad_tokenizer_file_is_named_once(tmp_path):
    bad = tmp_path / "bad.tok"
    bad.write_bytes(b"\xff\xfe")
    for read in (load_tokenizer, CharTokenizer.load):
        with pytest.raises(ValueError, match="not UTF-8") as info:
            read(bad)
        assert str(info.value).count("bad.tok") == 1
    garbled = tmp_path / "garbled.tok"
    garbled.write_text("not a tokenizer\n", encoding="utf-8")
    for read in (load_tokenizer, CharTokenizer.load):
        with pytest.raises(ValueError, match="garbled.tok"):
            read(garbled)
