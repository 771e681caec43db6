"""07 - The training loop: warmup and cosine decay, gradient accumulation, checkpoints that
resume exactly, and a guard that stops on NaN.

    python examples/07_training_loop.py [--steps 200] [--tiny]

Trains a small character-level GPT on the embedded corpus (Python's reference manual) with
`numpylm.training.train`, the one loop every neural family uses, then shows three of its
promises at work. Runs in about 6 seconds on two cores (`--tiny`: a second, for the tests).

What to notice:
1. the progress lines: the loss starts near ln V = 4.6 nats (a uniform guess among ~100
   characters) and falls to about 2.5 by step 200; the learning rate climbs during warmup,
   then decays along a cosine; tokens/s and an ETA are printed as it goes;
2. gradient accumulation: 4 micro-batches of 2 windows give the same weights as 1 batch
   of 8 windows (in float64 they agree to about 1e-16; the printed maximum difference is tiny);
3. resuming: training half the steps, saving, and resuming in a fresh model gives weights
   that are *bit-identical* to training without a stop ("bit-identical: True");
4. the NaN guard: resuming with an absurd learning rate (1e39) overflows the weights; the loop
   stops with a message, and the checkpoint on disk is still the last good one.
The exact losses depend on the machine's floating point; the trend and the checks do not.
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

from numpylm.corpus import embedded_corpus
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.tokenizers.char import CharTokenizer
from numpylm.training import TrainConfig, load_checkpoint, prepare_data, train


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train a small GPT with numpylm's training loop and "
                                             "check accumulation, exact resume and the NaN guard.")
    ap.add_argument("--steps", type=int, default=200, help="optimiser steps (default 200)")
    ap.add_argument("--tiny", action="store_true", help="tiny model and data, for the tests")
    args = ap.parse_args(argv)

    text = embedded_corpus()[: 20_000 if args.tiny else None]
    tokenizer = CharTokenizer.from_text(text, unk="<unk>")
    data = prepare_data(tokenizer, text=text, val_fraction=0.1)
    steps = 6 if args.tiny else args.steps
    model_args = dict(vocab_size=tokenizer.vocab_size, block_size=8 if args.tiny else 32,
                      n_layer=1 if args.tiny else 2, n_head=2 if args.tiny else 4,
                      n_embd=16 if args.tiny else 64)
    config = TrainConfig(steps=steps, batch_size=4 if args.tiny else 8,
                         block_size=model_args["block_size"], lr=3e-3, min_lr=3e-4,
                         warmup_steps=max(steps // 10, 1), eval_interval=max(steps // 2, 1),
                         eval_batches=2 if args.tiny else 10, log_interval=max(steps // 10, 1))
    print(f"text: {len(data.train):,} training and {len(data.val):,} validation characters, "
          f"vocabulary {tokenizer.vocab_size}")

    with tempfile.TemporaryDirectory() as tmp:
        straight_dir, stopped_dir = str(Path(tmp, "straight")), str(Path(tmp, "stopped"))

        straight = GPT(GPTConfig(**model_args), rng=0)
        print(f"\n1. {steps} steps of a GPT with {straight.num_parameters():,} parameters:")
        result = train(straight, data, TrainConfig(**{**vars(config), "out_dir": straight_dir}),
                       tokenizer=tokenizer, model_family="gpt", model_args=model_args)
        print(f"   first loss {result.losses[0]:.3f}, last loss {result.losses[-1]:.3f}")

        print("\n2. gradient accumulation, in float64 for a tight comparison:")
        weights = {}
        for k, B in ((1, 8), (4, 2)):
            model = GPT(GPTConfig(**model_args), rng=0, dtype=np.float64)
            small = TrainConfig(**{**vars(config), "steps": 3, "batch_size": B, "grad_accum": k,
                                   "eval_interval": 100, "log_interval": 100})
            train(model, data, small, log=lambda line: None)
            weights[k] = model.state_dict()
        diff = max(float(np.abs(weights[1][n] - weights[4][n]).max()) for n in weights[1])
        print(f"   1 x 8 windows vs 4 x 2 windows, 3 steps: max weight difference {diff:.1e}")

        print(f"\n3. {steps // 2} steps, save, resume in a fresh model, {steps - steps // 2} more:")
        # The schedule depends on the planned length, so the first half is told it (decay_steps).
        half = TrainConfig(**{**vars(config), "steps": steps // 2, "out_dir": stopped_dir,
                              "decay_steps": steps - config.warmup_steps})
        quiet = lambda line: None  # noqa: E731
        train(GPT(GPTConfig(**model_args), rng=0), data, half, tokenizer=tokenizer,
              model_family="gpt", model_args=model_args, log=quiet)
        resumed = GPT(GPTConfig(**model_args), rng=1)  # different initial weights: all restored
        train(resumed, data, TrainConfig(**{**vars(config), "out_dir": stopped_dir}),
              tokenizer=tokenizer, model_family="gpt", model_args=model_args,
              resume_from=stopped_dir, log=quiet)
        same = all(np.array_equal(resumed.state_dict()[n], a)
                   for n, a in straight.state_dict().items())
        print(f"   bit-identical: {same}")

        print("\n4. resume with learning rate 1e39:")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow warnings
            blown = train(GPT(GPTConfig(**model_args), rng=0), data,
                          TrainConfig(**{**vars(config), "steps": steps + 5, "lr": 1e39,
                                         "min_lr": 1e39, "eval_interval": 1,
                                         "out_dir": straight_dir}),
                          tokenizer=tokenizer, model_family="gpt", model_args=model_args,
                          resume_from=straight_dir, log=lambda line: print("   " + line))
        kept = load_checkpoint(straight_dir, for_resume=True)
        print(f"   stopped: {blown.stopped}; the checkpoint on disk is still step "
              f"{kept.trainer_state['step']}")


if __name__ == "__main__":
    main()
