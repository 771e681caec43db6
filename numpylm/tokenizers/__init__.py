"""Tokenizers: text to ids and back, from one id per character to GPT-2's byte-level BPE.

Read in this order: `base.py` (the interface), `char.py`, `patterns.py` (pre-tokenisation),
`bpe_train.py` (learning merges, plain and fast), `bpe.py` (encoding and decoding),
`interchange.py` (tiktoken's and GPT-2's file formats), then the files of current models:
`hf_pipeline.py` and `bpe_merge.py` (a `tokenizer.json`'s pre-tokenizers and merge loop),
`hf_json.py` (`tokenizer.json` itself), `hf_directory.py` (with `tokenizer_config.json`) and
`gguf_vocab.py` (the same vocabulary in GGUF metadata).
"""
from numpylm.tokenizers.base import Tokenizer, load_tokenizer, tokenizer_from_string
from numpylm.tokenizers.bpe import BPETokenizer
from numpylm.tokenizers.bpe_merge import merge_heap, merge_plain
from numpylm.tokenizers.bpe_train import merge_pair, train_merges_fast, train_merges_plain
from numpylm.tokenizers.char import CharTokenizer
from numpylm.tokenizers.gguf_vocab import (
    tokenizer_from_gguf_metadata,
    tokenizer_json_from_gguf_metadata,
)
from numpylm.tokenizers.hf_directory import load_hf_tokenizer
from numpylm.tokenizers.hf_json import AddedToken, HFTokenizer
from numpylm.tokenizers.interchange import bytes_to_unicode
from numpylm.tokenizers.patterns import (
    GPT2_PATTERN,
    GPT4_PATTERN,
    LLAMA3_PATTERN,
    QWEN2_PATTERN,
    pretokenize,
)

__all__ = [
    "AddedToken",
    "BPETokenizer",
    "CharTokenizer",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "HFTokenizer",
    "LLAMA3_PATTERN",
    "QWEN2_PATTERN",
    "Tokenizer",
    "bytes_to_unicode",
    "load_hf_tokenizer",
    "load_tokenizer",
    "merge_heap",
    "merge_pair",
    "merge_plain",
    "pretokenize",
    "tokenizer_from_gguf_metadata",
    "tokenizer_from_string",
    "tokenizer_json_from_gguf_metadata",
    "train_merges_fast",
    "train_merges_plain",
]
