"""02 - Tokenization: one id per character versus byte-level BPE, on the embedded corpus.

    python examples/02_tokenization_bpe.py [--vocab-size 512] [--png tokens.png] [--tiny]

Learns a byte-level BPE vocabulary (GPT-2's scheme) from the first 90% of the embedded corpus
(Python's reference manual) with the fast trainer, and compares it with a character tokenizer
on the last 10%. Runs in about 3 seconds on two cores (`--tiny`: under a second).

What to notice:
1. the character vocabulary is the ~100 characters the manual uses; a character it never
   had (the 'ü' of "Grüße") has no id at all;
2. BPE's first merges are the commonest adjacent pairs: runs of spaces (the manual indents
   its code), ' t', 'in', 'he' ...; later merges build whole words (' statement');
3. with 512 ids BPE needs about 0.44 tokens per character of held-out text, characters
   exactly 1: a context of T tokens sees more than twice as much text;
4. any text round-trips exactly through byte-level BPE, even characters the corpus never
   had: they fall back to their UTF-8 bytes ('é' is 2 byte tokens, the snake emoji 4);
5. a special token such as '<|endoftext|>' becomes its single id only where allowed; by
   default its text raises ValueError, so it never slips in from user text;
6. the plain trainer (recount every pair after every merge) learns exactly the same merges
   as the fast one, and is many times slower;
7. numpylm's own file and GPT-2's vocab.json + merges.txt both read back to the same ids.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from numpylm.corpus import read_text
from numpylm.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer
from numpylm.tokenizers.bpe import show_bytes

SENTENCE = 'The "for" statement is used to iterate over the elements of a sequence.'
FOREIGN = "Grüße aus dem Café — 日本語 🐍"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Characters versus byte-level BPE on the "
                                             "embedded corpus.")
    ap.add_argument("--vocab-size", type=int, default=512, help="BPE ids (default 512)")
    ap.add_argument("--text", metavar="FILE", help="a UTF-8 text file instead of the corpus")
    ap.add_argument("--png", metavar="FILE", help="draw the sentence's BPE tokens (matplotlib)")
    ap.add_argument("--tiny", action="store_true", help="30k characters, 300 ids (for tests)")
    args = ap.parse_args(argv)
    text = read_text(args.text)
    if args.tiny:
        text, args.vocab_size = text[:30_000], 300
    split = int(0.9 * len(text))
    train_text, held_out = text[:split], text[split:]

    chars = CharTokenizer.from_text(train_text)
    print(f"1. characters: {len(text):,} in the text, {chars.vocab_size} distinct in the "
          f"training part")
    try:
        chars.encode(FOREIGN)
    except ValueError as err:
        print(f"   the char tokenizer on {FOREIGN!r}: ValueError: {err}")

    start = time.perf_counter()
    bpe = BPETokenizer.train(train_text, args.vocab_size)
    print(f"2. BPE: {len(bpe.merges)} merges learned (fast trainer) in "
          f"{time.perf_counter() - start:.2f} s; the first ten:")
    for left, right, new in bpe.merges[:10]:
        print(f"   {show_bytes(bpe.token_bytes(left))!r:>7} + "
              f"{show_bytes(bpe.token_bytes(right))!r:<7} -> {new}")
    learned = [show_bytes(bpe.token_bytes(new)) for _, _, new in bpe.merges]
    words = sorted((t for t in learned if t.strip().isalpha()), key=len, reverse=True)
    print(f"   the longest tokens that are words: {words[:6]}")

    # Held-out text: a tokenizer is judged on text it was not trained on.
    n_char, n_bpe = len(held_out), len(bpe.encode(held_out))
    print(f"3. held-out text, {n_char:,} characters: chars {n_char / n_char:.2f} tokens per "
          f"character, BPE {n_bpe / n_char:.2f}")
    ids = bpe.encode(SENTENCE)
    pieces = [show_bytes(bpe.token_bytes(i)) for i in ids]
    print(f"   {len(SENTENCE)} characters -> {len(ids)} BPE tokens: {'|'.join(pieces)}")
    if args.png:
        try:
            from numpylm.plots import plot_tokens

            plot_tokens(pieces, args.png, ids=ids, title="byte-level BPE")
            print(f"   token picture written to {args.png}")
        except ImportError as err:
            print(f"   no picture: {err}")

    ids = bpe.encode(FOREIGN)
    back = bpe.decode(ids)
    print(f"4. {FOREIGN!r}: {len(FOREIGN)} characters, {len(FOREIGN.encode('utf-8'))} UTF-8 "
          f"bytes, {len(ids)} BPE tokens")
    print(f"   round trip exact: {back == FOREIGN}; 'é' -> {bpe.encode('é')}, "
          f"'🐍' -> {bpe.encode('🐍')}")

    eot = "<|endoftext|>"
    # Special ids come after the learned ones; the merges stay as they are.
    special = BPETokenizer(bpe.merges, pattern=bpe.pattern,
                           special_tokens={eot: bpe.vocab_size})
    doc = f"first document{eot}second document"
    print(f"5. special token {eot!r} = id {special.special_tokens[eot]}")
    allowed = special.encode(doc, allowed_special={eot})
    print(f"   allowed: {len(allowed)} tokens, containing id {special.special_tokens[eot]}: "
          f"{special.special_tokens[eot] in allowed}")
    try:
        special.encode(doc)
    except ValueError as err:
        print(f"   disallowed (the default) raises ValueError: {err}")
    as_text = special.encode(doc, disallowed_special=())
    print(f"   as ordinary text: {len(as_text)} tokens, the marker alone is "
          f"{len(special.encode(eot, disallowed_special=()))} tokens")

    short, n_merges = (train_text[:3_000], 20) if args.tiny else (train_text[:20_000], 100)
    timings, merges = {}, {}
    for algorithm in ("plain", "fast"):
        start = time.perf_counter()
        merges[algorithm] = BPETokenizer.train(short, 256 + n_merges,
                                               algorithm=algorithm).merges
        timings[algorithm] = time.perf_counter() - start
    print(f"6. {n_merges} merges on {len(short):,} characters: plain {timings['plain']:.3f} s, "
          f"fast {timings['fast']:.3f} s ({timings['plain'] / timings['fast']:.0f}x faster); "
          f"same merges: {merges['plain'] == merges['fast']}")

    with tempfile.TemporaryDirectory() as tmp:
        bpe.save(Path(tmp) / "bpe.txt")
        mine = load_tokenizer(Path(tmp) / "bpe.txt")
        bpe.to_hf(tmp)
        hf = BPETokenizer.from_hf(Path(tmp) / "vocab.json", Path(tmp) / "merges.txt",
                                  pattern=bpe.pattern)
    reference = bpe.encode(held_out)
    print(f"7. reloaded from numpylm's file: same ids {mine.encode(held_out) == reference}; "
          f"from vocab.json + merges.txt: same ids {hf.encode(held_out) == reference}")


if __name__ == "__main__":
    main()
