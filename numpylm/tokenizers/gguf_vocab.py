"""The tokenizer inside a GGUF file: the byte-level BPE of `tokenizer.json`, stored as metadata.

A GGUF file carries its vocabulary in `tokenizer.ggml.*` keys: the tokens by id, the merges as
"a b" strings, a type per token (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
6 byte) and the ids of BOS, EOS and padding. What it does not carry is the pre-tokenizer: only
its name, `tokenizer.ggml.pre`, which the reader must know. Each name below is written out as
the `tokenizer.json` pre-tokenizer of the model it comes from, so a GGUF model and its
`tokenizer.json` give the same ids, and the GGUF vocabulary can be saved as a `tokenizer.json`.
Control tokens (type 3) are matched in the text as special tokens; user-defined ones (4) as
ordinary added tokens.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from numpylm.io.errors import FileFormatError
from numpylm.tokenizers.hf_json import HFTokenizer
from numpylm.tokenizers.patterns import LLAMA3_PATTERN, LLAMA_CPP_DEFAULT_PATTERNS, QWEN2_PATTERN

# The values of tokenizer.ggml.token_type.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = (
    range(1, 7))


def _byte_level(use_regex: bool) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
            "use_regex": use_regex}


def _split(pattern: str) -> dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
            "invert": False}


def _sequence(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Sequence", "pretokenizers": list(steps)}


# `tokenizer.ggml.pre` -> (normalizer, pre_tokenizer) as the model's own tokenizer.json has them.
PRE_TOKENIZERS: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {
    "gpt-2": (None, _byte_level(True)),
    # SmolLM2 (and StarCoder): every digit alone, then GPT-2's pattern.
    "smollm": (None, _sequence({"type": "Digits", "individual_digits": True}, _byte_level(True))),
    "llama-bpe": (None, _sequence(_split(LLAMA3_PATTERN), _byte_level(False))),
    "qwen2": ({"type": "NFC"}, _sequence(_split(QWEN2_PATTERN), _byte_level(False))),
    # llama.cpp's fallback when a file names no known pre-tokenizer.
    "default": (None, _sequence(*map(_split, LLAMA_CPP_DEFAULT_PATTERNS), _byte_level(False))),
}


def _get(metadata: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str | None,
         default: Any = ...) -> Any:
    if key not in metadata:
        if default is ...:
            raise FileFormatError(path, "is missing", field=key)
        return default
    value = metadata[key]
    if isinstance(kind, type) and kind is not bool and isinstance(value, bool):
        raise FileFormatError(path, f"expected {kind.__name__}, got bool", field=key)
    if hasattr(value, "tolist") and kind is list:  # a numpy array read in one piece
        value = value.tolist()
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise FileFormatError(path, f"expected {name}, got {type(value).__name__}", field=key)
    return value


def _list_of(metadata: Mapping[str, Any], key: str, kind: type, path: str | None,
             default: Any = ...) -> list[Any]:
    values = _get(metadata, key, list, path, default)
    for i, value in enumerate(values):
        if not isinstance(value, kind) or isinstance(value, bool):
            raise FileFormatError(path, f"entry {i} is {type(value).__name__}, not {kind.__name__}",
                                  field=key)
    return values


def tokenizer_json_from_gguf_metadata(metadata: Mapping[str, Any],
                                      path: str | None = None) -> dict[str, Any]:
    """The `tokenizer.json` object equivalent to a GGUF file's `tokenizer.ggml.*` metadata."""
    if not isinstance(metadata, Mapping):
        raise FileFormatError(path, f"metadata must be a mapping, got {type(metadata).__name__}")
    model = _get(metadata, "tokenizer.ggml.model", str, path)
    if model != "gpt2":
        what = " (SentencePiece BPE)" if model == "llama" else ""
        raise FileFormatError(path, f"tokenizer model {model!r}{what} is not supported; only "
                              "'gpt2' (byte-level BPE) is", field="tokenizer.ggml.model")
    pre = _get(metadata, "tokenizer.ggml.pre", str, path, default="default")
    if pre not in PRE_TOKENIZERS:
        raise FileFormatError(path, f"pre-tokenizer {pre!r} is not known; known are "
                              f"{sorted(PRE_TOKENIZERS)}", field="tokenizer.ggml.pre")
    tokens = _list_of(metadata, "tokenizer.ggml.tokens", str, path)
    types = _list_of(metadata, "tokenizer.ggml.token_type", int, path,
                     default=[TOKEN_NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise FileFormatError(path, f"has {len(types)} entries for {len(tokens)} tokens",
                              field="tokenizer.ggml.token_type")
    merges = _list_of(metadata, "tokenizer.ggml.merges", str, path, default=[])
    vocab: dict[str, int] = {}
    added = []
    for token_id, (token, kind) in enumerate(zip(tokens, types)):
        if token in vocab:
            raise FileFormatError(path, f"token {token!r} is both id {vocab[token]} and id "
                                  f"{token_id}", field="tokenizer.ggml.tokens")
        if not TOKEN_NORMAL <= kind <= TOKEN_BYTE:
            raise FileFormatError(path, f"token {token_id} has type {kind}, not 1..6",
                                  field="tokenizer.ggml.token_type")
        vocab[token] = token_id
        if kind in (TOKEN_CONTROL, TOKEN_USER_DEFINED) and token:
            added.append({"id": token_id, "content": token, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": kind == TOKEN_CONTROL})
    normalizer, pre_tokenizer = PRE_TOKENIZERS[pre]
    post_processor = None
    bos = _special_id(metadata, "bos", len(tokens), path)
    if bos is not None and _get(metadata, "tokenizer.ggml.add_bos_token", bool, path, False):
        post_processor = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": tokens[bos], "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": tokens[bos], "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {tokens[bos]: {"id": tokens[bos], "ids": [bos],
                                             "tokens": [tokens[bos]]}},
        }
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def _special_id(metadata: Mapping[str, Any], name: str, n_tokens: int,
                path: str | None) -> int | None:
    key = f"tokenizer.ggml.{name}_token_id"
    token_id = _get(metadata, key, int, path, default=None)
    if token_id is not None and not 0 <= token_id < n_tokens:
        raise FileFormatError(path, f"id {token_id} is outside the {n_tokens} tokens", field=key)
    return token_id


def tokenizer_from_gguf_metadata(metadata: Mapping[str, Any],
                                 path: str | None = None) -> HFTokenizer:
    """The tokenizer of a GGUF file from its metadata dict (key -> value, arrays as lists).

    `bos_id`, `eos_id` and `pad_id` come from `tokenizer.ggml.{bos,eos,padding}_token_id`,
    `chat_template` from `tokenizer.chat_template`.
    """
    tokenizer_json = tokenizer_json_from_gguf_metadata(metadata, path)
    try:
        tokenizer = HFTokenizer(tokenizer_json, path=path)
    except FileFormatError as err:  # name the GGUF key, not the tokenizer.json field
        field = (err.field or "").replace("model.merges", "tokenizer.ggml.merges")
        field = field.replace("model.vocab", "tokenizer.ggml.tokens")
        message = str(err).rsplit(f"{err.field}: ", 1)[-1] if err.field else str(err)
        message = message.replace("model.vocab", "tokenizer.ggml.tokens")
        raise FileFormatError(path, message, field=field or None) from None
    n_tokens = len(metadata["tokenizer.ggml.tokens"])
    tokenizer.bos_id = _special_id(metadata, "bos", n_tokens, path)
    tokenizer.eos_id = _special_id(metadata, "eos", n_tokens, path)
    tokenizer.pad_id = _special_id(metadata, "padding", n_tokens, path)
    tokenizer.chat_template = _get(metadata, "tokenizer.chat_template", str, path, default=None)
    return tokenizer
