"""03 - Counting n-grams, and why every practical count model smooths.

    python examples/03_ngram_smoothing.py [--max-order 5] [--seed 0] [--tiny]

Counts the characters of the first 90% of the embedded corpus (Python's reference manual)
with `NGramLM` for orders 1 to 5 and four estimators: maximum likelihood (MLE), add-k,
interpolated Kneser-Ney and modified Kneser-Ney, then scores the last 10%. Runs in about
2 seconds on two cores (`--tiny`: 30k characters, under a second).

What to notice:
1. at order 1 the estimators nearly agree (some 400k counts of ~100 characters leave little
   to smooth); from order 2 on, MLE's held-out perplexity is infinite: some held-out
   character follows its context in a way the counts never saw, gets probability 0 and costs
   -log 0 = infinitely many bits (about 9% of held-out characters at order 5);
2. MLE does back off when a whole context was never seen: P('u' | 'zzzq') is P('u' | 'q');
   it is an unseen *continuation* of a seen context that gets 0;
3. add-1 (Laplace) helps at order 2 but stops improving after order 3 and is worse at 5:
   each of the ~100 characters gets one imaginary count in every context, which swamps
   sparse contexts; add-0.01 is better, Kneser-Ney better still, modified KN best (about
   1.74 bits per character at order 5, against 4.67 for the unigram and log2 V = 6.7 for a
   uniform guess);
4. after 'yie' (as in "yield") MLE puts all its mass on 'l' and 0 elsewhere; add-1 gives
   'l' only about a third; Kneser-Ney keeps nearly all on 'l' and a little for the rest;
5. samples from the best model look like the manual's prose and code, locally.
"""
from __future__ import annotations

import argparse
import math

import numpy as np

from numpylm.corpus import read_text
from numpylm.inference import generate
from numpylm.models import NGramLM
from numpylm.tokenizers import CharTokenizer

# (column label, NGramLM smoothing, its parameters)
ESTIMATORS = [("MLE", "mle", {}), ("add-1", "add_k", {"k": 1.0}),
              ("add-0.01", "add_k", {"k": 0.01}), ("KN", "kneser_ney", {}),
              ("modified KN", "modified_kneser_ney", {})]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Count n-gram models with MLE, add-k and "
                                             "Kneser-Ney smoothing, scored on held-out text.")
    ap.add_argument("--max-order", type=int, default=5, help="highest order n (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    ap.add_argument("--text", metavar="FILE", help="a UTF-8 text file instead of the corpus")
    ap.add_argument("--tiny", action="store_true", help="30k characters (for the tests)")
    args = ap.parse_args(argv)
    if args.max_order < 2:  # orders 1 and 2 at least: a unigram has no context to show
        ap.error(f"--max-order must be >= 2, got {args.max_order}")
    text = read_text(args.text)[: 30_000 if args.tiny else None]

    # The alphabet of the whole text, so every held-out character has an id; whether the
    # model gives it any probability is then up to the estimator.
    tok = CharTokenizer.from_text(text)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    split = int(0.9 * len(ids))
    train, val = ids[:split], ids[split:]
    V = tok.vocab_size
    print(f"{len(train):,} training and {len(val):,} held-out characters, V = {V}; "
          f"a uniform guess costs log2 V = {math.log2(V):.2f} bits per character\n")

    print("1. held-out bits per character (perplexity)")
    print("order " + "".join(f"{label:>17}" for label, _, _ in ESTIMATORS))
    models, best, zeros = {}, None, {}
    for order in range(1, args.max_order + 1):
        cells = []
        for label, smoothing, params in ESTIMATORS:
            lm = NGramLM(order, V, smoothing, **params).fit([train])
            # Drop the last prediction: it is the end-of-sequence marker, not a character.
            logp = lm.token_logprobs([val])[:-1]
            nll = float(-logp.mean())  # inf as soon as one character has probability 0
            cells.append(f"{nll / math.log(2):8.3f} ({math.exp(nll):6.2f})")
            models[label, order] = lm
            if label == "MLE":
                zeros[order] = float(np.mean(np.isneginf(logp)))
            elif best is None or nll < best[0]:
                best = (nll, label, order)
        print(f"{order:>5} " + "".join(f"{c:>17}" for c in cells))

    print("\n2. MLE: share of held-out characters with probability 0, by order: "
          + ", ".join(f"{n}: {z:.2%}" for n, z in zeros.items()))
    high = models["MLE", args.max_order]
    u = tok.encode("u")[0]
    print(f"   an unseen context backs off: P('u' | 'zzzq') = "
          f"{high.prob(u, tok.encode('zzzq')):.4f} at order {args.max_order}, "
          f"P('u' | 'q') = {models['MLE', 2].prob(u, tok.encode('q')):.4f} at order 2")

    order = min(4, args.max_order)
    context = "yie"[-(order - 1):]
    print(f"\n3. P(next | {context!r}) at order {order}: the three likeliest, and the "
          f"total for characters never seen after {context!r}")
    seen = models["MLE", order].distribution(tok.encode(context)) > 0
    for label, _, _ in ESTIMATORS:
        p = models[label, order].distribution(tok.encode(context))
        top = np.argsort(-p)[:3]
        # The boundary id V marks the end of text; show it as <end>.
        shown = ", ".join(f"{tok.decode([i]) if i < V else '<end>'!r}: {p[i]:.3f}" for i in top)
        print(f"   {label:>11}: {shown}; unseen: {p[~seen].sum():.4f}; sum {p.sum():.3f}")

    _, label, order = best
    prompt = "The "
    lm = models[label, order]
    ids = generate(lm, tok.encode(prompt), 120 if args.tiny else 400, seed=args.seed,
                   stop_tokens=[lm.eos_id])  # the boundary id ends the text
    sample = [int(i) for i in ids[len(tok.encode(prompt)):] if i != lm.eos_id]
    print(f"\n4. the best held-out model, {label} of order {order}, continuing {prompt!r} "
          f"(seed {args.seed}):\n")
    print(prompt + tok.decode(sample))


if __name__ == "__main__":
    main()
