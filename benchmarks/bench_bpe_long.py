"""Benchmark: BPE encoding of one very long pre-tokenized chunk (a line with no spaces).

    python benchmarks/bench_bpe_long.py [--megabytes 10] [--vocab 8192]

Minified code, base64 or a DNA string is one chunk for the split pattern, and merging used
to be quadratic in a chunk's length. `merge_long` merges whole ranks at a time (O(n log n)).
This measures, with one vocabulary trained by numpylm on the embedded corpus:

- short text: the embedded corpus encoded with an empty chunk cache (ordinary text: many
  short, repeated chunks), in MB/s;
- one long chunk: the corpus's letters only, repeated to `--megabytes` MB, in MB/s;
- the ratio of the two (the target is within 3x) and, when tiktoken is installed, tiktoken
  on the same long chunk with the same ranks and pattern.
"""
from __future__ import annotations

import argparse
import time

from numpylm.corpus import embedded_corpus
from numpylm.tokenizers import BPETokenizer


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=10.0)
    parser.add_argument("--vocab", type=int, default=8192)
    args = parser.parse_args()

    corpus = embedded_corpus()
    seconds, tok = timed(lambda: BPETokenizer.train(corpus, args.vocab))
    print(f"vocabulary: {tok.vocab_size} ids trained on the embedded corpus in {seconds:.1f} s "
          f"(GPT-4 split pattern)")

    short_bytes = len(corpus.encode("utf-8"))
    tok._cache.clear()
    short_s, _ = timed(lambda: tok.encode_ordinary(corpus))
    short_rate = short_bytes / short_s / 1e6
    print(f"short text: {short_bytes / 1e6:.2f} MB in {short_s:.2f} s = {short_rate:.2f} MB/s "
          f"(cold chunk cache)")

    letters = "".join(ch for ch in corpus if ch.isascii() and ch.isalpha())
    size = int(args.megabytes * 1e6)
    long_text = (letters * (size // len(letters) + 1))[:size]
    assert len(tok._regex.findall(long_text)) == 1, "the long text must be one chunk"
    long_s, ids = timed(lambda: tok.encode_ordinary(long_text))
    long_rate = size / long_s / 1e6
    print(f"one chunk of {size / 1e6:.1f} MB of letters: {long_s:.2f} s = {long_rate:.2f} MB/s, "
          f"{len(ids):,} tokens (target: under 10 s)")
    print(f"short-text throughput / long-chunk throughput = {short_rate / long_rate:.2f} "
          f"(target: at most 3)")
    assert tok.decode(ids) == long_text

    try:
        import tiktoken
    except ImportError:
        print("tiktoken: not installed, skipped")
        return
    encoding = tiktoken.Encoding("bench", pat_str=tok.pattern,
                                 mergeable_ranks=tok.mergeable_ranks(), special_tokens={})
    peer_s, peer_ids = timed(lambda: encoding.encode_ordinary(long_text))
    same = "identical ids" if peer_ids == ids else "DIFFERENT ids"
    print(f"tiktoken on the same chunk: {peer_s:.2f} s ({same}); numpylm / tiktoken = "
          f"{long_s / peer_s:.1f}x")


if __name__ == "__main__":
    main()
