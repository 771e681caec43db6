"""`tokenizer.json`, the file every current model ships its byte-level BPE vocabulary in.

The file holds the whole recipe as data: a normaliser, a pre-tokenizer pipeline
(`hf_pipeline.py`), the BPE model (a vocabulary from token text to id and the ranked merges,
both written in the byte alphabet of `bytes_to_unicode`), added tokens such as
`<|im_start|>`, a post-processor that may put a BOS token in front, and a decoder. Encoding
follows the same order as the reference: added tokens are found in the raw text first, so
`<|im_end|>` is one id and never split; the rest is normalised, cut into pieces and merged
piece by piece (`bpe_merge.py`).

A vocabulary may lack some byte characters (SmolLM2's has no symbol for 21 bytes that its
training text never held, such as 0x04 or 0xF5..0xFF). With no `unk_token` the reference
silently drops such a byte before merging, so its neighbours can merge across the gap;
numpylm does the same, and with an `unk_token` it writes that token instead.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import regex

from numpylm.io.config import parse_json
from numpylm.io.errors import FileFormatError
from numpylm.io.text import check_utf8_encodable, read_utf8
from numpylm.tokenizers.base import Tokenizer
from numpylm.tokenizers.bpe_merge import merge_heap
from numpylm.tokenizers.hf_pipeline import (
    CHAR_BYTES, Step, field_of, normalize, normalizer_json, parse_normalizer,
    parse_pre_tokenizer, pre_tokenize, pre_tokenizer_json)

_CACHE_LIMIT = 100_000  # distinct pieces kept; the cache is emptied when it is full


@dataclass(frozen=True)
class AddedToken:
    """One entry of `added_tokens`: matched in the text before anything else.

    `special` tokens are the control tokens (`<|im_start|>`); `decode` can skip them.
    `normalized` tokens are matched in the normalised text, the others in the raw text.
    """

    id: int
    content: str
    special: bool = True
    normalized: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "content": self.content, "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": self.normalized, "special": self.special}


def _fail(path: str | None, field: str, message: str) -> FileFormatError:
    return FileFormatError(path, message, field=field)


class HFTokenizer(Tokenizer):
    """A byte-level BPE tokenizer read from `tokenizer.json` (or from GGUF metadata).

    Built by `from_file`, `from_json` or `from_gguf_metadata`; `to_json`/`save` write the file
    back. `encode(text)` gives the ids of `text` alone; `add_special_tokens=True` also applies
    the post-processor's template (Llama 3's BOS), as the reference's default does.
    The file's `truncation` and `padding` settings are kept for writing back but not applied:
    numpylm's batching pads and crops on its own.
    """

    MAGIC = "{"  # a tokenizer.json is a JSON object

    def __init__(self, tokenizer_json: Mapping[str, Any], *, path: str | None = None,
                 bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None) -> None:
        self.path = path
        if not isinstance(tokenizer_json, Mapping):
            raise _fail(path, "(root)", "expected a JSON object")
        root = dict(tokenizer_json)
        self._extra = {key: root.get(key) for key in ("version", "truncation", "padding")}
        self._extra["version"] = root.get("version", "1.0")
        self._normalizer = parse_normalizer(root.get("normalizer"), path)
        self._steps: list[Step] = parse_pre_tokenizer(root.get("pre_tokenizer"), path)
        self._read_model(field_of(root, "model", dict, "(root)", path))
        self._read_added(field_of(root, "added_tokens", list, "(root)", path, default=[]))
        self._decoder = self._read_decoder(root.get("decoder"))
        self._post_json = root.get("post_processor")
        self._prefix, self._suffix = self._read_post_processor(self._post_json, "post_processor")
        self.bos_id = self._token_id_or_none(bos_token, "bos_token")
        self.eos_id = self._token_id_or_none(eos_token, "eos_token")
        self.pad_id = self._token_id_or_none(pad_token, "pad_token")
        if self.bos_id is None and self._prefix:
            self.bos_id = self._prefix[0]  # the template's leading token is the BOS token
        # The model's chat template (Jinja), when its files give one; `numpylm.chat` renders it.
        self.chat_template: str | None = None
        self._cache: dict[str, tuple[int, ...]] = {}

    # ---- reading the sections --------------------------------------------------------------

    def _read_model(self, model: dict[str, Any]) -> None:
        path = self.path
        kind = field_of(model, "type", str, "model", path, default="BPE")
        if kind != "BPE":
            raise _fail(path, "model.type", f"model {kind!r} is not supported (only byte-level "
                        "BPE is; WordPiece, Unigram and WordLevel are not)")
        if field_of(model, "dropout", (int, float), "model", path, default=0.0) not in (0, 0.0):
            raise _fail(path, "model.dropout", "BPE dropout is not supported for encoding")
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if field_of(model, key, str, "model", path, default=""):
                raise _fail(path, f"model.{key}", "is not supported (byte-level BPE has none)")
        if field_of(model, "byte_fallback", bool, "model", path, default=False):
            raise _fail(path, "model.byte_fallback", "byte fallback (SentencePiece-style BPE) is "
                        "not supported")
        self._fuse_unk = field_of(model, "fuse_unk", bool, "model", path, default=False)
        self._ignore_merges = field_of(model, "ignore_merges", bool, "model", path, default=False)
        vocab = field_of(model, "vocab", dict, "model", path)
        self._vocab: dict[str, int] = {}
        owner: dict[int, str] = {}
        for token, token_id in vocab.items():
            if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
                raise _fail(path, "model.vocab", f"token {token!r} has id {token_id!r}, "
                            "not an integer >= 0")
            if token_id in owner:
                raise _fail(path, "model.vocab", f"id {token_id} is given to both "
                            f"{owner[token_id]!r} and {token!r}")
            owner[token_id] = token
            self._vocab[token] = token_id
        self._unk_token = field_of(model, "unk_token", str, "model", path, default=None)
        if self._unk_token is not None and self._unk_token not in self._vocab:
            raise _fail(path, "model.unk_token", f"{self._unk_token!r} is not in model.vocab")
        self._read_merges(field_of(model, "merges", list, "model", path, default=[]))

    def _read_merges(self, merges: list[Any]) -> None:
        self._merges: list[tuple[str, str]] = []
        self._merge_map: dict[tuple[int, int], tuple[int, int]] = {}
        self._merges_as_pairs = bool(merges) and not isinstance(merges[0], str)
        vocab = self._vocab
        for rank, merge in enumerate(merges):
            where = f"model.merges[{rank}]"
            if isinstance(merge, str) and not self._merges_as_pairs:
                parts = merge.split(" ")
            elif isinstance(merge, list) and self._merges_as_pairs:
                parts = merge
            else:
                raise _fail(self.path, where,
                            "merges must all be 'a b' strings or all [a, b] pairs")
            if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
                raise _fail(self.path, where, f"expected two non-empty tokens, got {merge!r}")
            left, right = parts
            for part in (left, right, left + right):
                if part not in vocab:
                    raise _fail(self.path, where, f"{part!r} is not in model.vocab")
            pair = (vocab[left], vocab[right])
            if pair in self._merge_map:
                raise _fail(self.path, where, f"the pair {merge!r} is merged twice")
            self._merge_map[pair] = (rank, vocab[left + right])
            self._merges.append((left, right))

    def _read_added(self, entries: list[Any]) -> None:
        self._added: list[AddedToken] = []
        by_id: dict[int, str] = {}
        by_content: dict[str, int] = {}
        for i, entry in enumerate(entries):
            where = f"added_tokens[{i}]"
            token_id = field_of(entry, "id", int, where, self.path)
            content = field_of(entry, "content", str, where, self.path)
            special = field_of(entry, "special", bool, where, self.path, default=False)
            normalized = field_of(entry, "normalized", bool, where, self.path, default=not special)
            for flag in ("single_word", "lstrip", "rstrip"):
                if field_of(entry, flag, bool, where, self.path, default=False):
                    raise _fail(self.path, f"{where}.{flag}", "is not supported (must be false)")
            if not content:
                raise _fail(self.path, f"{where}.content", "is empty")
            if token_id < 0 or token_id in by_id or content in by_content:
                raise _fail(self.path, f"{where}.id", f"id {token_id} or content {content!r} "
                            "is negative or repeated")
            known = self._vocab.get(content)
            if known is not None and known != token_id:
                raise _fail(self.path, f"{where}.id", f"{content!r} has id {known} in model.vocab")
            by_id[token_id] = content
            by_content[content] = token_id
            self._added.append(AddedToken(token_id, content, special, normalized))
        # Ids must be dense enough that a table by id is small: a hostile file cannot make
        # `vocab_size` a billion with one entry.
        tokens = dict(zip(self._vocab.values(), self._vocab.keys()))
        clash = [t for t in self._added if tokens.get(t.id, t.content) != t.content]
        if clash:
            raise _fail(self.path, "added_tokens", f"id {clash[0].id} is {tokens[clash[0].id]!r} "
                        f"in model.vocab, not {clash[0].content!r}")
        tokens.update(by_id)
        limit = len(tokens)
        if tokens and max(tokens) >= limit:
            raise _fail(self.path, "model.vocab", f"id {max(tokens)} is out of range: the file "
                        f"has {limit} tokens, so ids must be below {limit}")
        self._id_to_token: list[str | None] = [None] * limit
        for token_id, token in tokens.items():
            self._id_to_token[token_id] = token
        self._special_ids = {t.id for t in self._added if t.special}
        self._raw_matcher = self._matcher([t for t in self._added if not t.normalized])
        self._raw_matcher_ordinary = self._matcher(
            [t for t in self._added if not t.normalized and not t.special])
        self._norm_matcher = self._matcher([t for t in self._added if t.normalized])
        self._norm_matcher_ordinary = self._matcher(
            [t for t in self._added if t.normalized and not t.special])
        self._added_ids = by_content

    @staticmethod
    def _matcher(tokens: list[AddedToken]) -> regex.Pattern[str] | None:
        # Longest first, so the leftmost match is also the longest one there.
        if not tokens:
            return None
        names = sorted((t.content for t in tokens), key=len, reverse=True)
        return regex.compile("(" + "|".join(regex.escape(name) for name in names) + ")")

    def _read_decoder(self, node: Any) -> dict[str, Any] | None:
        if node is None:
            return None
        kind = field_of(node, "type", str, "decoder", self.path)
        if kind != "ByteLevel":
            raise _fail(self.path, "decoder.type", f"decoder {kind!r} is not supported "
                        "(null and ByteLevel are)")
        return dict(node)

    def _read_post_processor(self, node: Any, field: str) -> tuple[list[int], list[int]]:
        """Ids the post-processor puts before and after the text (TemplateProcessing's single)."""
        if node is None:
            return [], []
        kind = field_of(node, "type", str, field, self.path)
        if kind == "ByteLevel":
            return [], []  # it only trims offsets
        if kind == "Sequence":
            prefix: list[int] = []
            suffix: list[int] = []
            items = field_of(node, "processors", list, field, self.path)
            for i, item in enumerate(items):
                before, after = self._read_post_processor(item, f"{field}.processors[{i}]")
                prefix, suffix = prefix + before, after + suffix
            return prefix, suffix
        if kind != "TemplateProcessing":
            raise _fail(self.path, f"{field}.type", f"post-processor {kind!r} is not supported "
                        "(ByteLevel, TemplateProcessing and Sequence are)")
        single = field_of(node, "single", list, field, self.path)
        specials = field_of(node, "special_tokens", dict, field, self.path, default={})
        prefix, suffix, seen_text = [], [], False
        for i, item in enumerate(single):
            where = f"{field}.single[{i}]"
            if isinstance(item, dict) and list(item) == ["Sequence"]:
                seen_text = True
                continue
            name = field_of(field_of(item, "SpecialToken", dict, where, self.path),
                            "id", str, where, self.path)
            ids = field_of(field_of(specials, name, dict, f"{field}.special_tokens", self.path),
                           "ids", list, f"{field}.special_tokens", self.path)
            if not all(isinstance(x, int) and 0 <= x < len(self._id_to_token) for x in ids):
                raise _fail(self.path, f"{field}.special_tokens.{name}.ids", "ids out of range")
            (suffix if seen_text else prefix).extend(ids)
        return prefix, suffix

    def _token_id_or_none(self, token: str | None, what: str) -> int | None:
        if token is None:
            return None
        token_id = self.token_to_id(token)
        if token_id is None:
            raise _fail(self.path, what, f"{token!r} is not a token of this vocabulary")
        return token_id

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_json(cls, tokenizer_json: Mapping[str, Any], **kwargs: Any) -> HFTokenizer:
        """From the parsed JSON object of a `tokenizer.json`."""
        return cls(tokenizer_json, **kwargs)

    @classmethod
    def from_string(cls, text: str, path: str | None = None, **kwargs: Any) -> HFTokenizer:
        root = parse_json(text, path, reject_duplicates=True)
        if not isinstance(root, dict):
            raise FileFormatError(path, "expected a JSON object", field="(root)")
        return cls(root, path=path, **kwargs)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> HFTokenizer:
        """Read a `tokenizer.json`; every problem is a `FileFormatError` naming the field."""
        return cls.from_string(read_utf8(path, "tokenizer.json"), path=os.fspath(path), **kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HFTokenizer:
        return cls.from_file(path)

    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any], path: str | None = None,
                           ) -> HFTokenizer:
        """From the `tokenizer.ggml.*` keys of a GGUF file's metadata (see `gguf_vocab.py`)."""
        from numpylm.tokenizers.gguf_vocab import tokenizer_from_gguf_metadata

        return tokenizer_from_gguf_metadata(metadata, path)

    def to_json(self) -> dict[str, Any]:
        """The `tokenizer.json` object; `from_json(to_json())` is the same tokenizer."""
        vocab = dict(sorted(self._vocab.items(), key=lambda item: item[1]))
        merges: list[Any] = ([list(m) for m in self._merges] if self._merges_as_pairs
                             else [f"{left} {right}" for left, right in self._merges])
        model = {"type": "BPE", "dropout": None, "unk_token": self._unk_token,
                 "continuing_subword_prefix": None, "end_of_word_suffix": None,
                 "fuse_unk": self._fuse_unk, "byte_fallback": False,
                 "ignore_merges": self._ignore_merges, "vocab": vocab, "merges": merges}
        return {**self._extra, "added_tokens": [t.to_json() for t in self._added],
                "normalizer": normalizer_json(self._normalizer),
                "pre_tokenizer": pre_tokenizer_json(self._steps),
                "post_processor": self._post_json, "decoder": self._decoder, "model": model}

    def to_string(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n"

    # ---- the vocabulary --------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Added tokens flagged special (control tokens), text -> id."""
        return {t.content: t.id for t in self._added if t.special}

    @property
    def added_tokens(self) -> list[AddedToken]:
        return list(self._added)

    @property
    def pre_tokenizer_steps(self) -> list[Step]:
        return list(self._steps)

    def token_to_id(self, token: str) -> int | None:
        found = self._added_ids.get(token)
        return self._vocab.get(token) if found is None else found

    def id_to_token(self, token_id: int) -> str | None:
        if isinstance(token_id, int) and 0 <= token_id < len(self._id_to_token):
            return self._id_to_token[token_id]
        return None

    def __repr__(self) -> str:
        return (f"HFTokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
                f"added_tokens={len(self._added)})")

    # ---- encoding --------------------------------------------------------------------------

    def _bpe(self, piece: str) -> tuple[int, ...]:
        vocab = self._vocab
        if self._ignore_merges and piece in vocab:
            ids: tuple[int, ...] = (vocab[piece],)
        else:
            symbols: list[int] = []
            unk = None if self._unk_token is None else vocab[self._unk_token]
            previous_unk = False
            for char in piece:
                found = vocab.get(char)
                if found is not None:
                    symbols.append(found)
                    previous_unk = False
                elif unk is not None and not (self._fuse_unk and previous_unk):
                    symbols.append(unk)
                    previous_unk = True
                # else: no unknown token, so the symbol is dropped, as the reference does
            ids = tuple(merge_heap(symbols, self._merge_map))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def _encode_text(self, text: str, matcher: regex.Pattern[str] | None) -> list[int]:
        """Ids of normalised text without raw added tokens."""
        out: list[int] = []
        cached = self._cache.get
        for i, part in enumerate(matcher.split(text) if matcher else [text]):
            if i % 2:
                out.append(self._added_ids[part])
            elif part:
                pieces = pre_tokenize(part, self._steps)
                out.extend(chain.from_iterable([cached(p) or self._bpe(p) for p in pieces]))
        return out

    def encode(self, text: str, *, add_special_tokens: bool = False,
               split_special_tokens: bool = False) -> list[int]:
        """The ids of `text`. Added tokens in it (`<|im_start|>`) become their ids, unless
        `split_special_tokens` asks for special ones to be encoded as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        check_utf8_encodable(text)
        raw = self._raw_matcher_ordinary if split_special_tokens else self._raw_matcher
        norm = self._norm_matcher_ordinary if split_special_tokens else self._norm_matcher
        ids: list[int] = []
        for i, part in enumerate(raw.split(text) if raw else [text]):
            if i % 2:
                ids.append(self._added_ids[part])
            elif part:
                ids.extend(self._encode_text(normalize(part, self._normalizer), norm))
        if add_special_tokens:
            ids = self._prefix + ids + self._suffix
        return ids

    # ---- decoding --------------------------------------------------------------------------

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 become U+FFFD."""
        tokens = []
        for token_id in ids:
            token = self.id_to_token(token_id)
            if token is None:
                raise ValueError(f"id {token_id!r} is not in the vocabulary")
            if not (skip_special_tokens and token_id in self._special_ids):
                tokens.append(token)
        if self._decoder is None:
            return " ".join(tokens)  # the reference's behaviour with no decoder
        data = b"".join([_token_text_bytes(token) for token in tokens])
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for in decoded text (an added token's are its UTF-8)."""
        token = self.id_to_token(token_id)
        if token is None:
            raise ValueError(f"id {token_id!r} is not in the vocabulary")
        return _token_text_bytes(token) if self._decoder is not None else token.encode("utf-8")


def _token_text_bytes(token: str) -> bytes:
    # A token spelled in the byte alphabet is its bytes; any other (an added token with
    # characters outside the alphabet) is its own UTF-8, as the reference's decoder does.
    try:
        return bytes([CHAR_BYTES[char] for char in token])
    except KeyError:
        return token.encode("utf-8")
