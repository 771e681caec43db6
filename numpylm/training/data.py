"""Training data, part 2 of the guide: text becomes one long array of token ids, split once into
a training part and a validation part, and training reads random windows of it.

A language model learns from (context, next token) pairs. Any window of T + 1 consecutive ids
gives T of them at once: x = ids[s : s + T] is the input and y = ids[s + 1 : s + T + 1] the
target, so y[t] is the token that follows x[0..t]. A batch is B such windows at random starts s
drawn from a seeded `numpy.random.Generator`, which is what makes a run repeatable and lets a
resumed run draw exactly the batches the uninterrupted run would have drawn.

The split is contiguous (the first 90% of the ids train, the last 10% validate), not shuffled:
neighbouring windows overlap, so a shuffled split would let the model see validation text
during training and the validation loss would flatter it.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

import numpy as np

from numpylm.corpus import read_text
from numpylm.tokenizers.base import Tokenizer

__all__ = ["TokenData", "build_tokenizer", "check_data_record", "data_record", "encode_text",
           "get_batch", "prepare_data", "text_fingerprint", "train_val_split"]


def build_tokenizer(kind: str, text: str, vocab_size: int = 512) -> Tokenizer:
    """A tokenizer of `kind` ("char" or "bpe") fitted to `text`.

    "char" takes the sorted characters of the text plus an `<unk>` id (so a prompt may hold a
    character the corpus never had); "bpe" learns `vocab_size - 256` byte-pair merges.
    """
    if kind == "char":
        from numpylm.tokenizers.char import CharTokenizer

        return CharTokenizer.from_text(text, unk="<unk>")
    if kind == "bpe":
        from numpylm.tokenizers.bpe import BPETokenizer

        if vocab_size <= 256:
            raise ValueError(f"a byte-level BPE vocabulary needs more than 256 ids, "
                             f"got vocab_size={vocab_size}")
        return BPETokenizer.train(text, vocab_size)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'char' or 'bpe'")


def encode_text(text: str, tokenizer: Tokenizer) -> np.ndarray:
    """Tokenise `text` once into an int64 id array (1-D)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


def train_val_split(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The first (1 - val_fraction) of `ids` for training, the rest for validation.

    >>> train, val = train_val_split(np.arange(10), 0.2)
    >>> train.tolist(), val.tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D array, got shape {ids.shape}")
    n_train = int(round(len(ids) * (1.0 - val_fraction)))
    return ids[:n_train], ids[n_train:]


def get_batch(ids: np.ndarray, batch_size: int, block_size: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """B random windows of `ids`: inputs x (B, T) and targets y (B, T), y shifted by one.

    >>> x, y = get_batch(np.arange(100), 2, 3, np.random.default_rng(0))
    >>> bool((y == x + 1).all()), x.shape
    (True, (2, 3))
    """
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size}, {block_size}")
    if len(ids) < block_size + 1:
        raise ValueError(f"the data has {len(ids)} tokens, too few for one window of "
                         f"block_size + 1 = {block_size + 1}; use a smaller block_size or "
                         f"more text")
    # A start s needs ids[s + T] for the last target, so s ranges over [0, len - T).
    starts = rng.integers(0, len(ids) - block_size, size=batch_size)
    window = starts[:, None] + np.arange(block_size)   # (B, T) positions
    return ids[window], ids[window + 1]


@dataclass
class TokenData:
    """One tokenised corpus, split for training.

    `val_chars` and `val_bytes` are the length of the validation text in characters and UTF-8
    bytes, so a loss per token can be turned into bits per character or per byte.
    """

    train: np.ndarray
    val: np.ndarray
    val_chars: int
    val_bytes: int
    source: str
    val_fraction: float = 0.1
    source_path: str | None = None  # the file's absolute path; None for the embedded corpus
    text_sha256: str | None = None  # `text_fingerprint` of the text that was tokenised

    @property
    def tokens_per_char(self) -> float:
        return len(self.val) / max(self.val_chars, 1)

    def val_bits_per_char(self, mean_nll: float) -> float:
        """A mean loss per validation token (nats) as bits per character of that text."""
        return mean_nll * self.tokens_per_char / math.log(2)

    def val_bits_per_byte(self, mean_nll: float) -> float:
        """The same per UTF-8 byte."""
        return mean_nll * len(self.val) / max(self.val_bytes, 1) / math.log(2)


def prepare_data(tokenizer: Tokenizer, path: str | os.PathLike[str] | None = None, *, text: str | None = None,
                 val_fraction: float = 0.1) -> TokenData:
    """Read `text` (or the UTF-8 file at `path`, or the embedded corpus), tokenise it once and
    split it; the validation text's length is measured by decoding its ids."""
    source_path = None
    if text is None:
        source = "embedded corpus" if path is None else os.fspath(path)
        source_path = None if path is None else os.path.abspath(path)
        text = read_text(path)
    else:
        source = "given text"
    ids = encode_text(text, tokenizer)
    train, val = train_val_split(ids, val_fraction)
    val_text = tokenizer.decode(val.tolist()) if len(val) else ""
    return TokenData(train, val, len(val_text), len(val_text.encode("utf-8")), source, val_fraction,
                     source_path, text_fingerprint(text))


def text_fingerprint(text: str) -> str:
    """"sha256:" and the hex SHA-256 of the text's UTF-8 bytes: what a checkpoint records so
    that a resumed run or an evaluation can tell whether it reads the same text."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def data_record(data: TokenData) -> dict[str, object]:
    """The checkpoint's record of the training text (trainer_state.json's "data"): where it
    came from (an absolute path, so `eval` from another directory finds the same file), its
    fingerprint and the split."""
    return {"source": data.source, "path": data.source_path, "sha256": data.text_sha256,
            "val_fraction": data.val_fraction}


def check_data_record(record: object, text: str, source: str) -> None:
    """Refuse to resume or evaluate on another text than the checkpoint's.

    `record` is the checkpoint's "data" entry (`data_record`); a record without a
    fingerprint (a checkpoint written before they were kept) is accepted. Raises ValueError
    naming both sources when the fingerprints differ.
    """
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return
    found = text_fingerprint(text)
    if found != record["sha256"]:
        recorded = record.get("path") or record.get("source") or "unknown"
        raise ValueError(
            f"the checkpoint was trained on {recorded} ({record['sha256'][:19]}...), but the text "
            f"given now, {source}, differs ({found[:19]}...); pass the same --data, or say "
            f"explicitly that another text is meant")
