"""Benchmark: byte-level BPE training and encoding, against HF `tokenizers` and `tiktoken`.

    python benchmarks/bench_tokenizers.py

Training: the embedded corpus (Python's reference manual, ~465 KB) to vocab 4096, numpylm's
fast trainer against HF's ByteLevel BPE trainer (both with GPT-2's split pattern), and the
plain trainer, timed for its first merges and extrapolated (it recounts every pair after
every merge, so a full run would take minutes).

Encoding: the embedded corpus with a 50,257-id vocabulary (50,000 merges + <|endoftext|>),
GPT-2's pattern, one thread, the same ranks loaded into all three libraries. GPT-2's own
ranks cannot be downloaded here, so the vocabulary is trained by numpylm on text that does
*not* include the corpus being encoded (tiny Shakespeare from ../shared/data when present,
plus the Python standard library's top-level sources), as GPT-2's ranks were trained on other
text than the user's. Peers that are not installed are skipped.
"""
from __future__ import annotations

import glob
import os
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from _timing import best_of

from numpylm.corpus import embedded_corpus
from numpylm.tokenizers import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, pretokenize
from numpylm.tokenizers.bpe_train import train_merges_fast, train_merges_plain

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
EOT = "<|endoftext|>"


def bench_training(corpus: str) -> None:
    print("== training: embedded corpus to vocab 4096 (best of 3) ==")
    fast = best_of(lambda: BPETokenizer.train(corpus, 4096, pattern=GPT2_PATTERN), 3)
    fast4 = best_of(lambda: BPETokenizer.train(corpus, 4096, pattern=GPT4_PATTERN), 3)
    print(f"numpylm fast trainer, GPT-2 pattern: {fast:.3f} s (pre-tokenisation included)")
    print(f"numpylm fast trainer, GPT-4 pattern: {fast4:.3f} s")

    # The plain trainer costs one full recount per merge; time its first merges on the whole
    # corpus and scale. Later merges recount shorter chunks, so this somewhat overestimates.
    chunks = pretokenize(corpus, GPT2_PATTERN)
    first = 20
    start = time.perf_counter()
    plain_merges = train_merges_plain(chunks, first)
    per_merge = (time.perf_counter() - start) / first
    assert plain_merges == train_merges_fast(chunks, first), "trainers disagree"
    plain = per_merge * (4096 - 256)
    print(
        f"numpylm plain trainer: {per_merge * 1e3:.0f} ms per merge over its first {first} merges, "
        f"extrapolated to 3840 merges: ~{plain:.0f} s; the fast trainer is ~{plain / fast:.0f}x faster"
    )

    try:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    except ImportError:
        print("HF tokenizers: not installed, skipped")
        return

    def hf_train() -> None:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=4096, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tok.train_from_iterator([corpus], trainer=trainer)

    hf = best_of(hf_train, 3)
    print(f"HF tokenizers ByteLevel BPE trainer: {hf:.3f} s (its default threads)")
    print(f"numpylm fast / HF time: {fast / hf:.2f}x (target <= 3x)")


def large_vocabulary_text() -> tuple[str, str]:
    parts, names = [], []
    if SHAKESPEARE.is_file():
        parts.append(SHAKESPEARE.read_text(encoding="utf-8"))
        names.append("tiny Shakespeare")
    lib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(lib, "*.py"))):
        parts.append(Path(path).read_text(encoding="utf-8", errors="replace"))
    names.append("the standard library's top-level .py files")
    text = "".join(parts)
    return text, f"{' + '.join(names)} ({len(text.encode('utf-8')) / 1e6:.1f} MB)"


def mb_per_s(num_bytes: int, seconds: float) -> float:
    return num_bytes / 1e6 / seconds


def bench_encoding(corpus: str) -> None:
    size = len(corpus.encode("utf-8"))
    text, source = large_vocabulary_text()
    print(f"\n== encoding: embedded corpus ({size / 1e6:.3f} MB), GPT-2 pattern, one thread ==")
    start = time.perf_counter()
    trained = BPETokenizer.train(text, 50257, pattern=GPT2_PATTERN, special_tokens=[EOT])
    print(
        f"vocabulary: {trained.vocab_size} ids ({len(trained.merges)} merges + {EOT}) trained by "
        f"numpylm in {time.perf_counter() - start:.1f} s on {source}; the corpus is held out"
    )
    merges, specials = trained.merges, trained.special_tokens

    def fresh() -> BPETokenizer:
        return BPETokenizer(merges, pattern=GPT2_PATTERN, special_tokens=specials)

    tokenizers_ = [fresh() for _ in range(3)]
    cold = min(best_of(lambda tok=tok: tok.encode(corpus), 1) for tok in tokenizers_)
    ours = tokenizers_[0]
    warm = best_of(lambda: ours.encode(corpus), 5)
    ids = ours.encode(corpus)
    print(f"numpylm: {mb_per_s(size, warm):.1f} MB/s (cache warm), {mb_per_s(size, cold):.1f} MB/s "
          f"(first pass, empty cache); {len(ids)} tokens")

    try:
        import tiktoken
    except ImportError:
        print("tiktoken: not installed, skipped")
    else:
        encoding = tiktoken.Encoding("bench", pat_str=GPT2_PATTERN, mergeable_ranks=ours.mergeable_ranks(),
                                     special_tokens=specials)
        assert encoding.encode(corpus) == ids, "tiktoken gives other ids"
        t = best_of(lambda: encoding.encode(corpus), 5)
        print(f"tiktoken: {mb_per_s(size, t):.1f} MB/s, same ids; numpylm (warm) is "
              f"{t / warm:.2f}x its speed")

    try:
        import tokenizers
    except ImportError:
        print("HF tokenizers: not installed, skipped")
        return
    with tempfile.TemporaryDirectory() as directory:
        ours.to_hf(directory)
        model = tokenizers.models.BPE.from_file(f"{directory}/vocab.json", f"{directory}/merges.txt")
    hf = tokenizers.Tokenizer(model)
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert hf.encode(corpus).ids == ids, "HF tokenizers gives other ids"
    t = best_of(lambda: hf.encode(corpus), 5)
    print(f"HF tokenizers: {mb_per_s(size, t):.1f} MB/s, same ids; numpylm (warm) is "
          f"{t / warm:.2f}x its speed")


def main() -> int:
    corpus = embedded_corpus()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; timings depend on machine load")
    bench_training(corpus)
    bench_encoding(corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
