"""13 - Benchmarks: how people decide that one model is better than another. Multiple choice
scored by log-likelihood (acc and acc_norm), a generative exact-match task, rolling bits per
byte, and the error bars that say whether a difference is real.

    python examples/13_benchmarks.py [--tiny] [--steps N] [--limit N]

Fits a character 5-gram (counts) and trains a small character GPT on the embedded corpus'
first 90%, then scores both, and a uniform guess, on the built-in tasks, whose items come from
the held-out last 10% (`numpylm.evaluation.builtin`):

- next_sentence: a sentence, then its true successor among four sentences (chance 0.25);
- identifier_cloze: prose up to a quoted name, the true name among four (chance 0.25);
- arithmetic: "Question: What is 47 + 85?" with three solved examples before it, exact match;
- corpus_bpb: rolling bits per byte over the held-out text (window 128, stride 64).

Runs in about 40 seconds of CPU on two cores (`--tiny`: under 10, for the tests); 40 items per
task by default (`--limit`), two 4,000-character documents for bits per byte.

What to notice:
1. the uniform guess gives every choice of n characters the same n ln V, so it always picks
   the shortest choice (acc) or, divided by the choice's bytes, the longest (acc_norm): both
   are chance-level numbers, and acc and acc_norm can disagree for any model;
2. the error bars: with 40 items, an accuracy is good to about +- 0.07, so most of the
   differences in the table are noise; the paired difference and its bootstrap interval say
   which are not (an interval that excludes 0);
3. identifier_cloze separates the models more than next_sentence: a character model sees a
   name's spelling in the prose around it, while the true next sentence is barely more
   probable than another sentence of the same manual;
4. nobody here does arithmetic (exact match 0): the models copy the format of the examples
   at best; a capable model scores near 1 on the same items;
5. bits per byte orders the models as the training loss does, and the 5-gram's counts beat a
   GPT trained for 20 seconds;
6. scoring the choices from the context's shared decoding state gives the numbers of scoring
   each from scratch (the largest difference is printed). It is faster when the context is
   long and the choices short (identifier_cloze with five examples), and slower when the
   choices are whole sentences: `step` returns one position's logits, so a choice's tokens
   are fed one call at a time, while from scratch one `forward` scores them all.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from numpylm.corpus import embedded_corpus
from numpylm.evaluation import results_table, run_task
from numpylm.evaluation.builtin import BUILTIN_TASKS, OFFLINE_TASKS, held_out_tail
from numpylm.models import NGramLM
from numpylm.tokenizers.char import CharTokenizer
from numpylm.training import TrainConfig, prepare_data, train
from numpylm.training.families import build_model


class Uniform:
    """Every token equally likely: the floor every model must beat."""

    block_size = None

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def forward(self, idx, targets=None):
        from numpylm.autograd.tensor import Tensor

        return Tensor(np.zeros((*np.shape(idx), self.vocab_size))), None

    __call__ = forward

    def init_state(self, batch_size: int = 1):
        return None

    def step(self, state, ids, mask=None):
        return np.zeros((np.shape(ids)[0], self.vocab_size))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Score a character 5-gram, a small GPT and a uniform "
                                             "guess on the built-in benchmark tasks, with error "
                                             "bars and paired differences.")
    ap.add_argument("--tiny", action="store_true", help="few items and steps, for the tests")
    ap.add_argument("--steps", type=int, default=None, help="GPT training steps (default 150)")
    ap.add_argument("--limit", type=int, default=None, help="items per task (default 40)")
    args = ap.parse_args(argv)
    steps = args.steps or (3 if args.tiny else 150)
    limit = args.limit or (4 if args.tiny else 40)

    text = embedded_corpus()
    tail = held_out_tail(text)
    tokenizer = CharTokenizer.from_text(text)
    V = tokenizer.vocab_size
    start = time.perf_counter()
    ngram = NGramLM(5, vocab_size=V, smoothing="kneser_ney").fit(
        [tokenizer.encode(text[:len(text) - len(tail)])])
    # The GPT needs 192 positions: a next_sentence choice is up to 161 characters.
    gpt_args = {"vocab_size": V, "block_size": 192, "n_layer": 2, "n_head": 4,
                "n_embd": 16 if args.tiny else 32, "dropout": 0.0, "bias": True}
    gpt = build_model("gpt", gpt_args)
    data = prepare_data(tokenizer, text=text)
    train(gpt, data, TrainConfig(steps=steps, batch_size=8, block_size=64, lr=1e-2,
                                 eval_interval=steps, eval_batches=2, log_interval=steps,
                                 warmup_steps=min(20, steps // 5)), log=lambda line: None)
    print(f"fitted a 5-gram and trained a GPT for {steps} steps in "
          f"{time.perf_counter() - start:.1f} s\n")

    models = {"5-gram": ngram, "GPT": gpt, "uniform": Uniform(V)}
    results = []
    for name in OFFLINE_TASKS:  # not mmlu_dev, where installed: no character model's task
        task = BUILTIN_TASKS[name]()
        for label, model in models.items():
            n = min(limit, 2) if task.kind == "perplexity" else limit  # 2 documents of 4,000
            results.append(run_task(model, tokenizer, task, model_name=label, limit=n,
                                    num_fewshot=3 if name == "arithmetic" else 0,
                                    window=128, stride=64))
    print("Three models, value ± standard error:")
    print(results_table(results))
    print("\nThe paired difference 5-gram - GPT, with its bootstrap 95% interval:")
    print(results_table([r for r in results if r.model in ("5-gram", "GPT")]))
    arithmetic = next(r for r in results if r.task == "arithmetic" and r.model == "GPT")
    print(f"\nthe GPT's first answer: {arithmetic.items[0]['generated']!r} "
          f"(extracted {arithmetic.items[0]['extracted']!r}, "
          f"expected {arithmetic.items[0]['answer']!r})")

    print("\nShared context against scoring each choice from scratch (the GPT):")
    for name, shots in (("next_sentence", 0), ("identifier_cloze", 5)):
        task, timings, numbers = BUILTIN_TASKS[name](), {}, {}
        for shared in (True, False):
            t0 = time.perf_counter()
            r = run_task(gpt, tokenizer, task, limit=3 if args.tiny else 10, shared=shared,
                         num_fewshot=shots)
            timings[shared] = time.perf_counter() - t0
            numbers[shared] = np.array([item["logprobs"] for item in r.items])
        print(f"  {name} ({shots}-shot): largest difference "
              f"{np.abs(numbers[True] - numbers[False]).max():.2e} nats; "
              f"{timings[False]:.2f} s from scratch, {timings[True]:.2f} s shared")

if __name__ == "__main__":
    main()
