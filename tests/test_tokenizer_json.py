"""tokenizer.json: hand-checked encodings, the heap merge against its plain twin, round trips,
hostile files, and (when `tokenizers` is installed) ids equal to the reference library's."""
import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.io.errors import FileFormatError
from numpylm.tokenizers import hf_pipeline
from numpylm.tokenizers.bpe_merge import merge_heap, merge_plain
from numpylm.tokenizers.hf_json import HFTokenizer
from numpylm.tokenizers.hf_pipeline import BEHAVIORS, compile_pattern, split_at_matches
from numpylm.tokenizers.interchange import bytes_to_unicode
from numpylm.tokenizers.patterns import LLAMA3_PATTERN, QWEN2_PATTERN

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
              "use_regex": True}


def tiny_json(**changes):
    """A vocabulary without most bytes (no 'x', no 'ĉ' (0x09 tab)) and with an added token."""
    tokens = ["h", "e", "l", "o", "Ġ", "he", "ll", "hell", "hello", "<|im_end|>", "Ċ"]
    root = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 9, "content": "<|im_end|>", "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True}],
        "normalizer": None, "pre_tokenizer": BYTE_LEVEL, "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": ["h e", "l l", "he ll", "hell o"]},
    }
    root.update(changes)
    return copy.deepcopy(root)  # tests mutate it; shared pieces must not change


# ---- hand-checked encodings ------------------------------------------------------------------


def test_tiny_vocabulary_by_hand():
    tok = HFTokenizer.from_json(tiny_json())
    assert tok.encode("hello") == [8]
    # " hello": the space is 'Ġ' and stays a token of its own (no merge "Ġ h").
    assert tok.encode(" hello") == [4, 8]
    # 'x' has no symbol: dropped before merging, so its neighbours merge across the gap.
    assert tok.encode("hxello") == [8]
    assert tok.encode("hexlo") == [5, 2, 3]
    # The added token is found before pre-tokenization, in the middle of a word too.
    assert tok.encode("hel<|im_end|>lo\n") == [5, 2, 9, 2, 3, 10]
    # As plain text, "<|im_end|>" keeps only the symbols the vocabulary has: "e" of "end".
    assert tok.encode("hello<|im_end|>", split_special_tokens=True) == [8, 1]
    assert tok.decode([4, 8, 9, 10]) == " hello<|im_end|>\n"
    assert tok.decode([4, 8, 9], skip_special_tokens=True) == " hello"
    assert tok.vocab_size == 11
    assert tok.special_tokens == {"<|im_end|>": 9}
    assert tok.token_to_id("hell") == 7 and tok.id_to_token(7) == "hell"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.decode([11])


def test_unk_token_and_fuse_unk():
    model = dict(tiny_json()["model"], unk_token="<|im_end|>")
    assert HFTokenizer.from_json(tiny_json(model=model)).encode("hxxo") == [0, 9, 9, 3]
    fused = dict(model, fuse_unk=True)
    assert HFTokenizer.from_json(tiny_json(model=fused)).encode("hxxo") == [0, 9, 3]


def test_ignore_merges_takes_a_whole_token_directly():
    # "hl" is in the vocabulary but no merge makes it: only ignore_merges finds it.
    root = tiny_json()
    root["model"]["vocab"]["hl"] = 11
    assert HFTokenizer.from_json(root).encode("hl") == [0, 2]
    root["model"]["ignore_merges"] = True
    assert HFTokenizer.from_json(root).encode("hl") == [11]


def test_template_processing_adds_bos_on_request():
    root = tiny_json(post_processor={
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|im_end|>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [], "special_tokens": {"<|im_end|>": {"id": "<|im_end|>", "ids": [9],
                                                       "tokens": ["<|im_end|>"]}}})
    tok = HFTokenizer.from_json(root)
    assert tok.encode("hello") == [8]
    assert tok.encode("hello", add_special_tokens=True) == [9, 8]
    assert tok.bos_id == 9


@pytest.mark.parametrize("behavior, expected", [
    ("Removed", ["a", "b"]),
    ("Isolated", ["a", "--", "b", "-"]),
    ("MergedWithPrevious", ["a--", "b-"]),
    ("MergedWithNext", ["a", "--b", "-"]),
    ("Contiguous", ["a", "--", "b", "-"]),
])
def test_split_behaviours_by_hand(behavior, expected):
    assert split_at_matches("a--b-", compile_pattern("-+"), behavior) == expected


def test_split_contiguous_joins_adjacent_matches_and_invert_swaps():
    dash = compile_pattern("-")
    assert split_at_matches("a--b", dash, "Isolated") == ["a", "-", "-", "b"]
    assert split_at_matches("a--b", dash, "Contiguous") == ["a", "--", "b"]
    assert split_at_matches("ab--c", compile_pattern("[a-z]"), "Removed", invert=True) == [
        "a", "b", "c"]


def test_digits_step_isolates_each_digit():
    steps = hf_pipeline.parse_pre_tokenizer(
        {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                               BYTE_LEVEL]}, None)
    assert hf_pipeline.pre_tokenize("ab 2024!", steps) == ["ab", "Ġ", "2", "0", "2", "4", "!"]


def test_nfc_normalizer_composes_before_splitting():
    tok = HFTokenizer.from_json(tiny_json(normalizer={"type": "NFC"}))
    composed = "\u00e9"  # é; its decomposed form e + U+0301 has a different first byte
    assert tok.encode("e\u0301") == tok.encode(composed)


# ---- the heap merge and its plain twin -------------------------------------------------------


@st.composite
def merge_tables(draw):
    """Random merges over ids 0..5 (new ids from 6), each (left, right) at most once."""
    n_base = 6
    pairs = draw(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), unique=True,
                          max_size=12))
    merges = {}
    for rank, pair in enumerate(pairs):
        new = draw(st.integers(0, 15))  # may repeat: two pairs can spell one token
        merges[pair] = (rank, n_base + new)
    ids = draw(st.lists(st.integers(0, 11), max_size=40))
    return ids, merges


@given(merge_tables())
def test_heap_merge_equals_plain_merge(case):
    ids, merges = case
    assert merge_heap(ids, merges) == merge_plain(ids, merges)


def test_heap_merge_by_hand():
    merges = {(1, 1): (0, 5), (5, 1): (1, 6)}
    # "1 1 1 1 1": rank 0 leftmost first -> 5 5 1; then (5, 1) -> 5 6.
    assert merge_heap([1, 1, 1, 1, 1], merges) == [5, 6]
    assert merge_plain([1, 1, 1, 1, 1], merges) == [5, 6]


def test_heap_merge_is_fast_on_a_long_chunk():
    import time

    merges = {(0, 0): (0, 1), (1, 1): (1, 2), (2, 2): (2, 3)}
    start = time.perf_counter()
    out = merge_heap([0] * 100_000, merges)
    assert time.perf_counter() - start < 5.0
    assert out == [3] * 12_500


# ---- round trips -----------------------------------------------------------------------------


def test_round_trip_through_a_file(tmp_path):
    root = tiny_json(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated",
         "invert": False},
        {"type": "Digits", "individual_digits": False},
        dict(BYTE_LEVEL, use_regex=False)]}, normalizer={"type": "NFC"})
    root["model"]["merges"] = [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"]]
    tok = HFTokenizer.from_json(root)
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    again = HFTokenizer.load(path)
    assert again.to_json() == tok.to_json()
    assert again.to_json()["model"]["merges"] == root["model"]["merges"]  # pairs stay pairs
    assert again.to_json()["pre_tokenizer"] == root["pre_tokenizer"]
    assert again.to_json()["added_tokens"] == root["added_tokens"]
    text = "hello hxello<|im_end|> 123\n"
    assert again.encode(text) == tok.encode(text)


# ---- hostile files ---------------------------------------------------------------------------


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["model"].update(type="WordPiece"), "model.type"),
    (lambda r: r["model"].update(type="Unigram"), "model.type"),
    (lambda r: r["model"].update(byte_fallback=True), "model.byte_fallback"),
    (lambda r: r.update(normalizer={"type": "Lowercase"}), "normalizer.type"),
    (lambda r: r.update(pre_tokenizer={"type": "Metaspace"}), "pre_tokenizer.type"),
    (lambda r: r.update(decoder={"type": "WordPiece"}), "decoder.type"),
    (lambda r: r["model"]["merges"].append("h zz"), "model.merges[4]"),
    (lambda r: r["model"]["merges"].append("h"), "model.merges[4]"),
    (lambda r: r["model"]["merges"].append(["h", "e"]), "model.merges[4]"),
    (lambda r: r["model"]["merges"].append("h e"), "model.merges[4]"),
    (lambda r: r["model"]["vocab"].update(zz=99), "model.vocab"),
    (lambda r: r["model"]["vocab"].update(zz=3), "model.vocab"),
    (lambda r: r["model"]["vocab"].update(zz=-1), "model.vocab"),
    (lambda r: r["model"]["vocab"].update(zz="7"), "model.vocab"),
    (lambda r: r["model"].update(vocab=[]), "model.vocab"),
    (lambda r: r["model"].update(unk_token="nope"), "model.unk_token"),
    (lambda r: r["added_tokens"][0].update(id=3), "added_tokens[0].id"),
    (lambda r: r["added_tokens"][0].update(id=True), "added_tokens[0].id"),
    (lambda r: r["added_tokens"][0].update(lstrip=True), "added_tokens[0].lstrip"),
    (lambda r: r["added_tokens"].append(dict(r["added_tokens"][0])), "added_tokens[1].id"),
    (lambda r: r.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "("},
                                       "behavior": "Isolated"}), "pre_tokenizer.pattern"),
    (lambda r: r.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "a"},
                                       "behavior": "Sideways"}), "pre_tokenizer.behavior"),
    (lambda r: r.update(pre_tokenizer={"type": "ByteLevel", "use_regex": "yes"}),
     "pre_tokenizer.use_regex"),
    (lambda r: r.update(model=None), "model"),
])
def test_bad_files_name_the_field(mutate, field):
    root = tiny_json()
    mutate(root)
    with pytest.raises(FileFormatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        HFTokenizer.from_json(root)


def test_bad_json_text_names_the_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"vocab": {"a": 0, "a": 1}}}')
    with pytest.raises(FileFormatError, match="tokenizer.json"):
        HFTokenizer.from_file(path)
    path.write_text("[1, 2")
    with pytest.raises(FileFormatError, match="tokenizer.json"):
        HFTokenizer.from_file(path)


def test_a_pattern_that_backtracks_forever_times_out(monkeypatch):
    monkeypatch.setattr(hf_pipeline, "PATTERN_TIMEOUT", 0.2)
    root = tiny_json(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(x+x+)+y"},
                                    "behavior": "Isolated", "invert": False})
    tok = HFTokenizer.from_json(root)
    with pytest.raises(ValueError, match="ran longer than"):
        tok.encode("x" * 5000)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 20) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                  max_size=3),
    max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


@settings(max_examples=150)
@given(st.data())
def test_mutated_files_load_or_raise_file_format_error(data):
    root = tiny_json(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, BYTE_LEVEL]})
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(root) if p]
        target = data.draw(st.sampled_from(paths))
        parent = root
        for key in target[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[target[-1]]
        else:
            parent[target[-1]] = data.draw(JSON_VALUES)
    try:
        tok = HFTokenizer.from_json(root)
    except FileFormatError:
        return
    tok.encode("hello hxello<|im_end|> 12")  # what loads must also encode


# ---- against the reference library -----------------------------------------------------------

BYTE_CHARS = list(bytes_to_unicode().values())
ALPHABET = "helo HELO123 \n\t.,'!éü日本😀" + "\x04"


@st.composite
def random_tokenizers(draw):
    """A random small byte-level BPE file: merges learned on the fly, a random pipeline."""
    missing = set(draw(st.lists(st.sampled_from(["Ą", "ĉ", "o", "Ġ"]), max_size=2)))
    vocab = {c: i for i, c in enumerate(c for c in BYTE_CHARS if c not in missing)}
    pool = ["h", "e", "l", "o", "Ġ", "Ċ", "1", "2", "H", "E", "L"]
    pool = [p for p in pool if p in vocab]
    merges = []
    for _ in range(draw(st.integers(0, 25))):
        left, right = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        if (left, right) in {tuple(m) for m in merges}:
            continue
        merges.append([left, right])
        if left + right not in vocab:
            vocab[left + right] = len(vocab)
            pool.append(left + right)
    added = []
    for content, special, normalized in draw(st.lists(st.tuples(
            st.sampled_from(["<|x|>", "<s>", "lo", "日本"]), st.booleans(), st.booleans()),
            unique_by=lambda t: t[0], max_size=3)):
        token_id = vocab.get(content, len(vocab) + sum(a["content"] not in vocab for a in added))
        added.append({"id": token_id, "content": content, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": normalized,
                      "special": special})
    byte_level = dict(BYTE_LEVEL, add_prefix_space=draw(st.booleans()),
                      use_regex=draw(st.booleans()))
    first = draw(st.sampled_from(["none", "digits", "split"]))
    steps = []
    if first == "digits":
        steps.append({"type": "Digits", "individual_digits": draw(st.booleans())})
    elif first == "split":
        steps.append({"type": "Split", "behavior": draw(st.sampled_from(BEHAVIORS)),
                      "invert": draw(st.booleans()),
                      "pattern": {"Regex": draw(st.sampled_from([LLAMA3_PATTERN, QWEN2_PATTERN,
                                                                  r"\s+", r"\p{N}"]))}})
    steps.append(byte_level)
    as_pairs = draw(st.booleans())
    root = tiny_json(
        added_tokens=added, normalizer=draw(st.sampled_from([None, {"type": "NFC"}])),
        pre_tokenizer={"type": "Sequence", "pretokenizers": steps})
    root["model"].update(vocab=vocab, ignore_merges=draw(st.booleans()),
                         merges=merges if as_pairs else [" ".join(m) for m in merges])
    return root


@settings(max_examples=60)
@given(random_tokenizers(), st.lists(st.sampled_from(
    list(ALPHABET) + ["<|x|>", "<s>", "e\u0301"]), max_size=30).map("".join))
def test_ids_equal_the_reference_library(root, text):
    tokenizers = pytest.importorskip("tokenizers")
    reference = tokenizers.Tokenizer.from_str(json.dumps(root))
    ours = HFTokenizer.from_json(copy.deepcopy(root))
    ids = ours.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False).ids
    assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=False)
    # What numpylm writes, the reference reads as the same tokenizer.
    written = tokenizers.Tokenizer.from_str(ours.to_string())
    assert written.encode(text, add_special_tokens=False).ids == ids


# ---- a model directory -----------------------------------------------------------------------


def test_model_directory_gives_bos_eos_and_chat_template(tmp_path):
    from numpylm.tokenizers import load_hf_tokenizer

    (tmp_path / "tokenizer.json").write_text(json.dumps(tiny_json()), encoding="utf-8")
    config = {"bos_token": {"__type": "AddedToken", "content": "h"}, "eos_token": "<|im_end|>",
              "chat_template": [{"name": "default", "template": "{{ 1 }}"}]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = load_hf_tokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 9, None)
    assert tok.chat_template == "{{ 1 }}"
    (tmp_path / "chat_template.jinja").write_text("{{ 2 }}", encoding="utf-8")
    assert load_hf_tokenizer(tmp_path).chat_template == "{{ 2 }}"
    config["eos_token"] = "<|nowhere|>"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(FileFormatError, match="eos_token"):
        load_hf_tokenizer(tmp_path)
    config["eos_token"] = 5
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(FileFormatError, match="eos_token"):
        load_hf_tokenizer(tmp_path)


def test_llama3_style_post_processor_equals_the_reference():
    tokenizers = pytest.importorskip("tokenizers")
    template = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<|im_end|>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<|im_end|>": {"id": "<|im_end|>", "ids": [9],
                                                   "tokens": ["<|im_end|>"]}}}
    root = tiny_json(post_processor={"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
         "use_regex": True}, template]})
    reference = tokenizers.Tokenizer.from_str(json.dumps(root))
    ours = HFTokenizer.from_json(root)
    for text in ("hello", "", " hel lo<|im_end|>"):
        assert ours.encode(text, add_special_tokens=True) == reference.encode(text).ids
    assert ours.to_json()["post_processor"] == root["post_processor"]
