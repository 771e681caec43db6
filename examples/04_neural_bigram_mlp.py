"""04 - From counting to learning: a neural bigram trained by gradient descent lands on the
count bigram, and the MLP of Bengio et al. (2003) goes past it.

    python examples/04_neural_bigram_mlp.py [--steps 300] [--mlp-steps 800] [--tiny]

On the characters of the embedded corpus (Python's reference manual; first 90% to train,
last 10% held out), fits a count bigram (add-k), trains `BigramLM` (a V x V table of logits)
and then `MLPLM` (3 previous characters, embedded, one tanh layer) with the shared training
loop. Runs in about 10 seconds on two cores (`--tiny`: 30k characters, 100 steps each,
a few seconds, for the tests).

What to notice:
1. the neural bigram starts at log V = 4.63 nats (all logits zero: uniform) and its loss
   falls to within about 0.01 nats of the count bigram's, on training and held-out text:
   minimising cross-entropy over a table of logits is estimating the same table
   P(next | previous) that counting gives;
2. the learned row for 'q' is the counted one, c(q w) / c(q): 'u' with probability 0.92;
3. the MLP, seeing three characters instead of one, beats both bigrams on held-out text by
   about 0.75 nats per character; its samples hold syllables and short words, the bigram's
   barely pairs of letters;
4. a count 4-gram with Kneser-Ney (the same three characters of context) is still better at
   this training budget: the MLP's advantage is that its size grows linearly with the
   context, not as V^n, and that similar contexts share their embeddings.
"""
from __future__ import annotations

import argparse
import math

import numpy as np

from numpylm.corpus import read_text
from numpylm.evaluation import evaluate_ids
from numpylm.inference import generate
from numpylm.inference.sampling import softmax
from numpylm.models import MLPLM, BigramLM, NGramLM
from numpylm.tokenizers import CharTokenizer
from numpylm.training import TrainConfig, prepare_data, train

COUNT_K = 0.1  # add-k for the count bigram: enough to keep unseen pairs finite, no more


def nll(model, ids: np.ndarray) -> float:
    """Mean negative log-likelihood (nats per character) of every character of `ids`."""
    return evaluate_ids(model, ids, block_size=64)[0]


def _progress(name: str):
    """Print the training loop's progress lines (so a long run is never silent)."""
    def log(line: str) -> None:
        if "ETA" in line:
            print(f"   ({name} {line.split(' | ')[0]}, {line.split(' | ')[-1]})", flush=True)
    return log


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A neural bigram against the count bigram, then "
                                             "an MLP language model (Bengio et al. 2003).")
    ap.add_argument("--steps", type=int, default=300, help="bigram steps (default 300)")
    ap.add_argument("--mlp-steps", type=int, default=800, help="MLP steps (default 800)")
    ap.add_argument("--hidden", type=int, default=200, help="MLP tanh units (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="initialisation and samples")
    ap.add_argument("--text", metavar="FILE", help="a UTF-8 text file instead of the corpus")
    ap.add_argument("--tiny", action="store_true", help="30k characters, 100 steps (for tests)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.mlp_steps < 1:
        ap.error("--steps and --mlp-steps must be >= 1")
    text = read_text(args.text)
    B, T = 32, 64  # windows per batch, characters per window
    if args.tiny:
        text, args.steps, args.mlp_steps, args.hidden, B, T = text[:30_000], 100, 100, 64, 16, 32

    tok = CharTokenizer.from_text(text)
    data = prepare_data(tok, text=text)  # contiguous split: first 90% train, last 10% held out
    V = tok.vocab_size
    count = NGramLM(2, V, "add_k", k=COUNT_K).fit([data.train])
    count_train, count_val = nll(count, data.train), nll(count, data.val)
    print(f"{len(data.train):,} training and {len(data.val):,} held-out characters, V = {V}, "
          f"log V = {math.log(V):.3f} nats")
    print(f"1. count bigram (add-{COUNT_K}): train {count_train:.3f}, held-out "
          f"{count_val:.3f} nats per character")

    bigram = BigramLM(V)
    print(f"   neural bigram ({bigram.num_parameters():,} logits) before training: train "
          f"{nll(bigram, data.train):.3f}")
    # No weight decay: an L2 pull towards uniform would stop it short of the count table.
    # A large learning rate is safe: the loss is convex in the logits.
    config = TrainConfig(steps=args.steps, batch_size=B, block_size=T, lr=0.3, min_lr=0.03,
                         warmup_steps=5, weight_decay=0.0, eval_interval=args.steps,
                         eval_batches=2, log_interval=max(args.steps // 4, 1), seed=args.seed)
    result = train(bigram, data, config, log=_progress("neural bigram"))
    shown = sorted({1, max(args.steps // 10, 1), max(args.steps // 3, 1), args.steps})
    print("   training batch loss: " + ", ".join(f"step {s}: {result.losses[s - 1]:.3f}"
                                                 for s in shown))
    bigram_train, bigram_val = nll(bigram, data.train), nll(bigram, data.val)
    print(f"   after {args.steps} steps: train {bigram_train:.3f} "
          f"({bigram_train - count_train:+.3f} from the count bigram), held-out "
          f"{bigram_val:.3f} ({bigram_val - count_val:+.3f})")

    # Gradient descent heads for the unsmoothed table c(q w) / c(q) (see models/bigram.py).
    q = tok.encode("q")[0]
    mle = NGramLM(2, V, "mle").fit([data.train])
    counted = mle.distribution([q])[:V]  # the last id is the count model's end marker
    logits, _ = bigram(np.array([[q]]))
    learned = softmax(logits.data[0, -1])
    top = np.argsort(-counted)[:3]
    print("2. P(next | 'q'), counted vs learned: " + ", ".join(
        f"{tok.decode([i])!r} {counted[i]:.3f} vs {learned[i]:.3f}" for i in top))

    mlp = MLPLM(V, context=3, n_embd=16, n_hidden=args.hidden, rng=args.seed)
    config = TrainConfig(steps=args.mlp_steps, batch_size=B, block_size=T, lr=1e-2,
                         min_lr=1e-3, warmup_steps=20, weight_decay=0.0,
                         eval_interval=args.mlp_steps, eval_batches=2,
                         log_interval=max(args.mlp_steps // 4, 1), seed=args.seed)
    result = train(mlp, data, config, log=_progress("MLP"))
    mlp_val = nll(mlp, data.val)
    print(f"3. MLP ({mlp.num_parameters():,} parameters), {args.mlp_steps} steps: training "
          f"batch loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; held-out "
          f"{mlp_val:.3f} nats per character ({count_val - mlp_val:.3f} below the count "
          f"bigram, {bigram_val - mlp_val:.3f} below the neural one)")

    kn4 = NGramLM(4, V, "kneser_ney").fit([data.train])
    print(f"4. count 4-gram, Kneser-Ney, for reference: held-out {nll(kn4, data.val):.3f}")

    prompt = tok.encode("The ")
    n_new = 80 if args.tiny else 200
    for name, model in (("bigram", bigram), ("MLP", mlp)):
        # Each model reads only the last character (bigram) or last `context` characters.
        sample = generate(model, prompt, n_new, seed=args.seed)
        written = tok.decode(sample.tolist())
        print(f"\n{name} sample (seed {args.seed}):\n{written}")


if __name__ == "__main__":
    main()
