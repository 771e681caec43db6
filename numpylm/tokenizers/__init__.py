"""Tokenizers: text to ids and back, from one id per character to GPT-2's byte-level BPE.

Read in this order: `base.py` (the interface), `char.py`, `patterns.py` (pre-tokenisation),
`bpe_train.py` (learning merges, plain and fast), `bpe.py` (encoding and decoding),
`interchange.py` (tiktoken's and GPT-2's file formats).
"""
from numpylm.tokenizers.base import Tokenizer, load_tokenizer, tokenizer_from_string
from numpylm.tokenizers.bpe import BPETokenizer
from numpylm.tokenizers.bpe_train import merge_pair, train_merges_fast, train_merges_plain
from numpylm.tokenizers.char import CharTokenizer
from numpylm.tokenizers.interchange import bytes_to_unicode
from numpylm.tokenizers.patterns import GPT2_PATTERN, GPT4_PATTERN, pretokenize

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "Tokenizer",
    "bytes_to_unicode",
    "load_tokenizer",
    "merge_pair",
    "pretokenize",
    "tokenizer_from_string",
    "train_merges_fast",
    "train_merges_plain",
]
