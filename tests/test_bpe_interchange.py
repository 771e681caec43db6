"""BPE vocabularies in tiktoken's and GPT-2's file formats, and agreement with those libraries."""
import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.corpus import embedded_corpus
from numpylm.tokenizers import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, bytes_to_unicode

EOT = "<|endoftext|>"
VARIED = (
    "Hello, world! It's 2024-06-01; I'LL pay $3.50 (or €4,20).\n\n"
    "def f(x):\n    return x ** 2  # square\n\t\ttabs   and   spaces  \r\n"
    "naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어, emoji 🙂🚀 and 👨‍👩‍👧.\n"
    "  trailing spaces   "
)
# Text whose characters Python's `unicodedata` knows (no unassigned code points, no lone
# surrogates), so every regex engine agrees on their Unicode categories.
ASSIGNED_TEXT = st.text(st.characters(exclude_categories=("Cn", "Cs")), max_size=80)


@pytest.fixture(scope="module", params=[GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
def trained(request) -> BPETokenizer:
    text = embedded_corpus()[:50_000] + VARIED
    return BPETokenizer.train(text, 700, pattern=request.param, special_tokens=[EOT])


def write_tiktoken(path, ranks):
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))


# ---- GPT-2's byte to character map -------------------------------------------------------


def test_bytes_to_unicode():
    mapping = bytes_to_unicode()
    assert list(mapping) == list(range(256))
    assert len(set(mapping.values())) == 256
    assert mapping[ord("!")] == "!" and mapping[ord("~")] == "~" and mapping[0xFF] == "ÿ"
    # Non-printable bytes take chr(256), chr(257), ... in byte order: 0x00 is the first of
    # them, and a space (0x20, the 33rd) is chr(256 + 32) = 'Ġ'; newline (0x0A) is 'Ċ'.
    assert mapping[0] == "Ā" and mapping[0x20] == "Ġ" and mapping[0x0A] == "Ċ"
    assert all(char.isprintable() and not char.isspace() for char in mapping.values())


# ---- tiktoken's rank files ---------------------------------------------------------------


def test_tiktoken_file_written_by_hand(tmp_path):
    """Single bytes rank as their value, then "ab"=256, "cd"=257, "abcd"=258.

    "abcdab" (one chunk): a b c d a b -> (a,b) has the lowest rank and merges twice:
    ab c d ab -> then (c,d): ab cd ab -> then (ab,cd) makes "abcd": [258, 256].
    "cdab": cd ab, and no token is "cdab": [257, 256]. The merges were never in the file;
    they are recovered: "abcd" is BPE of its own bytes with lower ranks, ab + cd."""
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"cd": 257, b"abcd": 258}
    write_tiktoken(tmp_path / "tiny.tiktoken", ranks)
    tok = BPETokenizer.from_tiktoken(tmp_path / "tiny.tiktoken", special_tokens={EOT: 300})
    assert tok.merges == [(97, 98, 256), (99, 100, 257), (256, 257, 258)]
    assert tok.encode("abcdab") == [258, 256]
    assert tok.encode("cdab") == [257, 256]
    assert tok.encode(EOT, allowed_special="all") == [300]
    assert tok.vocab_size == 301
    with pytest.raises(ValueError, match="id 299"):
        tok.decode([299])  # a hole between the ranks and the special token


def test_tiktoken_file_with_bytes_in_another_order(tmp_path):
    """Byte b has rank 255 - b (GPT-2's files also do not rank bytes by value); "ab" is 256.

    "ba" has no merge: [rank of b, rank of a] = [255 - 98, 255 - 97] = [157, 158]."""
    ranks = {bytes([b]): 255 - b for b in range(256)} | {b"ab": 256}
    write_tiktoken(tmp_path / "rev.tiktoken", ranks)
    tok = BPETokenizer.from_tiktoken(tmp_path / "rev.tiktoken")
    assert tok.encode("ba") == [157, 158]
    assert tok.encode("ab") == [256]
    assert tok.decode([157, 158, 256]) == "baab"
    assert tok.byte_ids[97] == 158
    # The non-identity byte order survives numpylm's own format too.
    assert BPETokenizer.from_string(tok.to_string()).encode("abba") == [256, 157, 158]


def test_to_tiktoken_round_trip(trained, tmp_path):
    trained.to_tiktoken(tmp_path / "t.tiktoken")
    loaded = BPETokenizer.from_tiktoken(tmp_path / "t.tiktoken", pattern=trained.pattern, special_tokens=[EOT])
    assert loaded.merges == trained.merges
    assert loaded.special_tokens == trained.special_tokens
    assert loaded.encode(VARIED) == trained.encode(VARIED)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: lines.__setitem__(1, "!!notbase64 1"), "line 2: .* not valid base64"),
        (lambda lines: lines.__setitem__(99, "QQ== 99"), "line 100: token 'A' already has rank 65"),
        (lambda lines: lines.__setitem__(2, "Ag== 1"), "line 3: rank 1 is already used on line 2"),
        (lambda lines: lines.__setitem__(4, "AQ== x"), "line 5: rank 'x'"),
        (lambda lines: lines.__setitem__(4, "AQ=="), "line 5: expected"),
        (lambda lines: lines.pop(7), "no rank for 1 single bytes, e.g. byte 0x07"),
        (lambda lines: lines.append("eHl6 300"), "line 258: token 'xyz' is not the merge"),
    ],
)
def test_malformed_tiktoken_file_names_the_line(tmp_path, edit, message):
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    lines.append(f"{base64.b64encode(b'ab').decode()} 256")
    edit(lines)
    (tmp_path / "bad.tiktoken").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        BPETokenizer.from_tiktoken(tmp_path / "bad.tiktoken")


# ---- GPT-2's vocab.json + merges.txt -----------------------------------------------------


def gpt2_style_files(directory, merges, extra):
    """vocab.json with bytes in GPT-2's order (printable characters first, so '!' is id 0),
    then the merges' tokens and `extra` entries, ids in that order."""
    mapping = bytes_to_unicode()
    printable = [c for b, c in mapping.items() if ord(c) == b]
    others = [c for b, c in mapping.items() if ord(c) != b]
    vocab = {c: i for i, c in enumerate(printable + others)}
    for left, right in merges:
        vocab[left + right] = len(vocab)
    for token in extra:
        vocab[token] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return directory / "vocab.json", directory / "merges.txt"


def test_from_hf_files_written_by_hand(tmp_path):
    """Merges "Ġ t" (id 256) and "Ġt h" (id 257); <|endoftext|> (258) is in no merge.

    " the" is one GPT-2 chunk: bytes ' ' t h e -> Ġt h e -> Ġth e. In GPT-2's byte order the
    printable '!' (0x21) is id 0, so 'e' (0x65) is id 0x65 - 0x21 = 68: [257, 68]."""
    vocab_json, merges_txt = gpt2_style_files(tmp_path, [("Ġ", "t"), ("Ġt", "h")], [EOT])
    tok = BPETokenizer.from_hf(vocab_json, merges_txt)
    assert tok.encode(" the") == [257, 68]
    assert tok.special_tokens == {EOT: 258}
    assert tok.encode(f"!{EOT}", allowed_special="all") == [0, 258]
    assert tok.decode([257, 68, 258]) == f" the{EOT}"


def test_to_hf_round_trip(trained, tmp_path):
    trained.to_hf(tmp_path)
    loaded = BPETokenizer.from_hf(tmp_path / "vocab.json", tmp_path / "merges.txt", pattern=trained.pattern)
    assert loaded.merges == trained.merges
    assert loaded.byte_ids == trained.byte_ids
    assert loaded.special_tokens == trained.special_tokens
    text = VARIED + EOT + embedded_corpus()[50_000:55_000]
    assert loaded.encode(text, allowed_special="all") == trained.encode(text, allowed_special="all")


@pytest.mark.parametrize(
    "merges_text, message",
    [
        ("#version: 0.2\nĠ t\nĠ zz\n", "merges.txt line 3: 'zz' is not in vocab.json"),
        ("#version: 0.2\nĠ t\nĠt\n", "merges.txt line 3: expected two tokens and one space"),
        ("#version: 0.2\nĠ t\nh e\n", "merges.txt line 3: 'he' is not in vocab.json"),
    ],
)
def test_malformed_hf_merges_name_the_line(tmp_path, merges_text, message):
    vocab_json, merges_txt = gpt2_style_files(tmp_path, [("Ġ", "t")], [])
    merges_txt.write_text(merges_text)
    with pytest.raises(ValueError, match=message):
        BPETokenizer.from_hf(vocab_json, merges_txt)


def test_malformed_hf_vocab(tmp_path):
    vocab_json, merges_txt = gpt2_style_files(tmp_path, [], [])
    vocab = json.loads(vocab_json.read_text())
    vocab_json.write_text(json.dumps(vocab | {"extra": 5}))
    with pytest.raises(ValueError, match="id 5 is given to both"):
        BPETokenizer.from_hf(vocab_json, merges_txt)
    del vocab["Ġ"]
    vocab_json.write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match="byte 0x20"):
        BPETokenizer.from_hf(vocab_json, merges_txt)
    # A token listed twice: json.loads would keep the second silently; the reader refuses.
    text = json.dumps(vocab)
    vocab_json.write_text(text[:-1] + ', "a": 7}')
    with pytest.raises(ValueError, match=r"vocab\.json: key 'a' appears twice"):
        BPETokenizer.from_hf(vocab_json, merges_txt)


# ---- agreement with the libraries themselves (skipped when they are not installed) -------


def tiktoken_encoding(tok: BPETokenizer):
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding(
        "numpylm-trained",
        pat_str=tok.pattern,
        mergeable_ranks=tok.mergeable_ranks(),
        special_tokens=tok.special_tokens,
    )


def test_same_ids_as_tiktoken_on_varied_text(trained):
    encoding = tiktoken_encoding(trained)
    for text in (VARIED, embedded_corpus()[50_000:80_000], "   \n\n  x", "1234567 89"):
        assert trained.encode(text) == encoding.encode(text)
    text = f"a{EOT}b"
    assert trained.encode(text, allowed_special="all") == encoding.encode(text, allowed_special="all")
    assert trained.encode_ordinary(text) == encoding.encode_ordinary(text)


@settings(max_examples=25)
@given(text=ASSIGNED_TEXT)
def test_same_ids_as_tiktoken_on_random_text(trained, text):
    encoding = tiktoken_encoding(trained)
    assert trained.encode_ordinary(text) == encoding.encode_ordinary(text)


def test_same_ids_as_hf_tokenizers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tok = BPETokenizer.train(embedded_corpus()[:50_000] + VARIED, 700, pattern=GPT2_PATTERN)
    tok.to_hf(tmp_path)
    model = tokenizers.models.BPE.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    hf = tokenizers.Tokenizer(model)
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    for text in (VARIED, embedded_corpus()[50_000:60_000]):
        assert tok.encode(text) == hf.encode(text).ids


@pytest.mark.parametrize("which", ["vocab.json", "merges.txt"])
def test_hf_files_that_are_missing_or_not_utf8_are_named(tmp_path, which):
    vocab_json, merges_txt = gpt2_style_files(tmp_path, [("Ġ", "t")], [])
    path = vocab_json if which == "vocab.json" else merges_txt
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ValueError, match=rf"{which} '.*{which}' is not UTF-8 text"):
        BPETokenizer.from_hf(vocab_json, merges_txt)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=rf"no {which} at '.*{which}'"):
        BPETokenizer.from_hf(vocab_json, merges_txt)


def test_tiktoken_file_missing_or_not_utf8_is_named(tmp_path):
    path = tmp_path / "bad.tiktoken"
    with pytest.raises(FileNotFoundError, match="no tiktoken file at '.*bad.tiktoken'"):
        BPETokenizer.from_tiktoken(path)
    path.write_bytes(b"\xff\xfe 0\n")
    with pytest.raises(ValueError, match="tiktoken file '.*bad.tiktoken' is not UTF-8 text"):
        BPETokenizer.from_tiktoken(path)
