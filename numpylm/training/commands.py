"""The `train` and `eval` sub-commands: parts 2 and 4 of the guide from a terminal.

    numpylm train --model gpt --steps 200 --out checkpoints/gpt
    numpylm eval --checkpoint checkpoints/gpt

`train` reads the embedded corpus (or `--data FILE`), fits a tokenizer, builds a model of the
chosen family (any family in `numpylm.training.families.FAMILIES`) with CPU-sized defaults
and runs `numpylm.training.train` (or, for the count n-gram, counts). `eval` reports loss,
perplexity and bits per token, character and byte on held-out text; it also takes an HF model
directory or a GGUF file. (`generate` is in `numpylm.inference.commands`.)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from numpylm.training.families import FAMILIES, cli_model_args, get_family


# ---------------------------------------------------------------------------------- train


def _key_value(text: str) -> tuple[str, Any]:
    """`--model-arg key=value`: the value as JSON (numbers, true/false, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _train_config(args: argparse.Namespace, out_dir: str):
    from numpylm.training.loop import TrainConfig

    return TrainConfig(steps=args.steps, batch_size=args.batch_size, block_size=args.block_size,
                       grad_accum=args.grad_accum, lr=args.lr, min_lr=args.min_lr,
                       warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
                       grad_clip=args.grad_clip, eval_interval=args.eval_interval,
                       eval_batches=args.eval_batches, log_interval=args.log_interval,
                       seed=args.seed, out_dir=out_dir, max_seconds=args.max_seconds)


def _fit_counts(args, family: str, tokenizer, data, out_dir: str) -> int:
    """A family fitted by counting (the n-gram): one pass over the training ids, then save."""
    from numpylm.evaluation.evaluate import evaluate_tokens
    from numpylm.training.checkpoint import save_checkpoint
    from numpylm.training.data import data_record
    from numpylm.training.families import build_model

    lm = build_model(family, cli_model_args(family, args, tokenizer.vocab_size))
    lm = lm.fit([data.train])
    model_args = getattr(lm, "config", None) or cli_model_args(family, args, tokenizer.vocab_size)
    print(f"fitted {family} on {len(data.train):,} tokens: {lm!r}")
    if len(data.val) > 1:
        report = evaluate_tokens(lm, tokenizer, data.val, args.block_size)
        print(f"validation: {report}")
    save_checkpoint(out_dir, model_family=family, model_args=model_args,
                    model_state=lm.state_dict(), tokenizer=tokenizer,
                    trainer_state={"step": 0, "train_config": {"block_size": args.block_size},
                                   "data": data_record(data)})
    print(f"saved {out_dir}")
    return 0


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _recorded_text(recorded: dict[str, Any], given: str | None, allow_different: bool,
                   what: str) -> str | None:
    """The text file to use for a checkpoint whose trainer state recorded `recorded`: the
    one given, else the recorded one (an absolute path); refuse, unless allowed, a text whose
    fingerprint differs from the recorded one."""
    from numpylm.corpus import read_text
    from numpylm.training.data import check_data_record

    path = given if given is not None else recorded.get("path")
    if given is None and "sha256" not in recorded and recorded.get("source") not in (
            None, "embedded corpus"):
        path = recorded["source"]  # a checkpoint from before the path was recorded
    if path is not None and not Path(path).is_file():
        raise ValueError(f"the checkpoint was trained on {path}, which is not there; give "
                         f"the text with --data")
    if not allow_different:
        try:
            check_data_record(recorded, read_text(path), path or "the embedded corpus")
        except ValueError as err:
            raise ValueError(f"{err}: {what} it anyway with --allow-different-data") from None
    return path


def _given(args: argparse.Namespace) -> set[str]:
    """The flags set to something other than their default (what the user asked for)."""
    defaults = getattr(args, "_defaults", {})
    return {k for k, v in vars(args).items() if k in defaults and v != defaults[k]}


def _resume_conflicts(args: argparse.Namespace, ckpt, vocab_size: int) -> list[str]:
    """Flags that ask for something other than the run saved in the checkpoint."""
    from numpylm.training.loop import TrainConfig

    given, conflicts = _given(args), []
    if "model" in given and args.model != ckpt.model_family:
        conflicts.append(f"--model {args.model} (checkpoint: {ckpt.model_family})")
    for flag in ("tokenizer", "vocab_size", "val_fraction"):
        if flag in given:
            conflicts.append(f"--{flag.replace('_', '-')} (the checkpoint has its own)")
    saved = ckpt.trainer_state.get("train_config", {})
    for f in fields(TrainConfig):
        if f.name in given and f.name not in ("steps", "max_seconds", "out_dir") \
                and f.name in saved and saved[f.name] != getattr(args, f.name):
            conflicts.append(f"--{f.name.replace('_', '-')} {getattr(args, f.name)} "
                             f"(checkpoint: {saved[f.name]})")
    size_flags = {"n_layer", "n_head", "n_embd", "dropout", "embedding_dim", "hidden_size",
                  "context", "order", "smoothing", "model_arg", "n_kv_head", "intermediate_size"}
    if given & size_flags and get_family(ckpt.model_family).cli_args is not None:
        wanted = cli_model_args(ckpt.model_family, args, vocab_size)
        differ = sorted(k for k, v in wanted.items()
                        if k in ckpt.model_args and ckpt.model_args[k] != v)
        conflicts += [f"model size {k}={wanted[k]} (checkpoint: {ckpt.model_args[k]})"
                      for k in differ]
    return conflicts


def _resume_config(args: argparse.Namespace, ckpt, out_dir: str):
    """The saved run's settings with the new total `--steps`; the learning-rate schedule of
    the saved run is kept (its cosine decay, then min_lr)."""
    from numpylm.training.loop import TrainConfig

    saved = dict(ckpt.trainer_state.get("train_config", {}))
    known = {f.name for f in fields(TrainConfig)}
    settings = {k: v for k, v in saved.items() if k in known}
    if settings.get("decay_steps") is None and "steps" in settings:
        settings["decay_steps"] = max(settings["steps"] - settings.get("warmup_steps", 0), 0)
    config = TrainConfig(**{**settings, "steps": args.steps, "out_dir": out_dir,
                            "max_seconds": args.max_seconds})
    if args.steps != saved.get("steps"):
        end = config.warmup_steps + config.decay_steps
        print(f"note: the first run was planned for {saved.get('steps')} steps; its learning-rate "
              f"schedule is kept (cosine decay until step {end}, then min_lr {config.min_lr:g})")
    return config


def _run_train(args: argparse.Namespace) -> int:
    from numpylm.corpus import read_text
    from numpylm.nn import manual_seed
    from numpylm.training.checkpoint import load_checkpoint
    from numpylm.training.data import build_tokenizer, prepare_data
    from numpylm.training.families import build_model
    from numpylm.training.loop import train

    out_dir = args.out or f"checkpoints/{args.model}"
    if args.plot_loss and not _have_matplotlib():
        print("note: --plot-loss needs matplotlib (pip install 'numpylm[plot]'); training "
              "without the picture", file=sys.stderr)
        args.plot_loss = None
    if args.resume:
        ckpt = load_checkpoint(out_dir, for_resume=True)
        tokenizer, family, model_args = ckpt.tokenizer, ckpt.model_family, ckpt.model_args
        if not get_family(family).trainable:
            raise ValueError(f"a {family} model is fitted in one pass; there is nothing to resume")
        conflicts = _resume_conflicts(args, ckpt, tokenizer.vocab_size)
        if conflicts:
            raise ValueError(f"--resume continues the run saved in {out_dir} as it was, but "
                             f"these flags ask for something else: {'; '.join(conflicts)}. "
                             f"Leave them out, or train a new run in another --out")
        step = int(ckpt.trainer_state["step"])
        if args.steps <= step:
            print(f"nothing to train: the checkpoint in {out_dir} is at step {step} and "
                  f"--steps is {args.steps}; give a larger --steps to continue")
            return 0
        data_path = _recorded_text(ckpt.trainer_state.get("data", {}), args.data,
                                   args.allow_different_data, "train on")
        config = _resume_config(args, ckpt, out_dir)
    else:
        if Path(out_dir, "config.json").exists() and not args.overwrite:
            raise ValueError(f"{out_dir} already holds a checkpoint; continue it with --resume, "
                             f"replace it with --overwrite, or choose another --out")
        data_path = args.data
        tokenizer = build_tokenizer(args.tokenizer, read_text(data_path), args.vocab_size)
        family, model_args = args.model, None
        config = ckpt = None
    data = prepare_data(tokenizer, data_path, val_fraction=args.val_fraction
                        if ckpt is None else ckpt.trainer_state.get("data", {}).get(
                            "val_fraction", args.val_fraction))
    print(f"data: {data.source}: {len(data.train):,} train + {len(data.val):,} validation "
          f"tokens ({type(tokenizer).__name__}, vocabulary {tokenizer.vocab_size})")
    if not get_family(family).trainable:
        return _fit_counts(args, family, tokenizer, data, out_dir)
    if model_args is None:
        model_args = cli_model_args(family, args, tokenizer.vocab_size)
        config = _train_config(args, out_dir)
    manual_seed(args.seed)  # layers draw their initial weights from this generator
    model = build_model(family, model_args)
    print(f"model: {family} with {model.num_parameters():,} parameters; "
          f"{config.steps} steps of {config.grad_accum} x {config.batch_size} x "
          f"{config.block_size} tokens")
    result = train(model, data, config, tokenizer=tokenizer, model_family=family,
                   model_args=model_args, resume_from=ckpt)
    if args.plot_loss and result.losses:
        from numpylm.plots import plot_loss_curves
        first = result.step - len(result.losses)  # after a resume, losses start mid-run
        plot_loss_curves(result.losses, args.plot_loss, start_step=first + 1,
                         val_losses=result.val_losses, title=f"{family}: training loss")
        print(f"loss curves written to {args.plot_loss}")
    if result.stopped == "interrupted":
        return 130  # the shell's code for a command ended by Ctrl-C
    if result.stopped not in ("completed", "time"):
        return 1
    print(f"saved {out_dir}")
    return 0


# ---------------------------------------------------------------------------------- eval


def _run_eval(args: argparse.Namespace) -> int:
    from numpylm.corpus import read_text
    from numpylm.evaluation.evaluate import evaluate_text
    from numpylm.training.data import train_val_split
    from numpylm.tuning.loading import load_adapted_model

    loaded = load_adapted_model(args.checkpoint, args.adapter)
    block_size = args.block_size or loaded.block_size
    if args.data is not None:
        text, what = read_text(args.data), f"all of {args.data}"
    else:
        # The held-out tail of the text the model was trained on, split as training split it.
        recorded = (loaded.trainer_state or {}).get("data", {})
        path = _recorded_text(recorded, None, args.allow_different_data, "score")
        fraction = float(recorded.get("val_fraction", args.val_fraction))
        full = read_text(path)
        _, val = train_val_split(loaded.tokenizer.encode(full), fraction)
        text = loaded.tokenizer.decode(val.tolist())
        what = f"the last {fraction:.0%} of {path or 'the embedded corpus'}"
    report = evaluate_text(loaded.model, loaded.tokenizer, text, block_size, args.batch_size)
    if args.json:
        print(json.dumps({"data": what, "block_size": block_size, **report.as_dict()},
                         allow_nan=True))
    else:
        print(f"{loaded.family} model from {loaded.source}, on {what} (context {block_size}):")
        print(f"  loss            {report.loss:.4f} nats/token")
        print(f"  perplexity      {report.perplexity:.3f}")
        print(f"  bits per token  {report.bits_per_token:.4f}")
        print(f"  bits per char   {report.bits_per_char:.4f}")
        print(f"  bits per byte   {report.bits_per_byte:.4f}")
        print(f"  tokens scored   {report.n_tokens:,} ({report.n_chars:,} chars)")
    return 0 if math.isfinite(report.loss) else 1


# ---------------------------------------------------------------------------------- parsers


def register(subparsers: argparse._SubParsersAction) -> None:
    from numpylm.cli import HelpFormatter, guarded
    from numpylm.models.ngram import SMOOTHINGS
    from numpylm.training.loop import TrainConfig

    d = TrainConfig()
    p = subparsers.add_parser(
        "train", help="train a language model and save a checkpoint",
        description="Train a model on the embedded corpus (Python's reference manual) or a UTF-8 "
                    "file, saving a checkpoint directory every --eval-interval steps.",
        formatter_class=HelpFormatter)
    p.add_argument("--model", choices=tuple(FAMILIES), default="gpt",
                   help="model family: " + "; ".join(f"{n}: {f.help}" for n, f in FAMILIES.items()
                                                       if f.help))
    p.add_argument("--data", metavar="FILE", help="UTF-8 text file (default: embedded corpus)")
    p.add_argument("--tokenizer", choices=("char", "bpe"), default="char")
    p.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary size")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out tail of the text")
    p.add_argument("--out", metavar="DIR", help="checkpoint directory (default: checkpoints/MODEL)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out (its settings and text; --steps is the "
                        "new total)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a checkpoint already in --out instead of refusing")
    p.add_argument("--allow-different-data", action="store_true",
                   help="with --resume: train on a text other than the recorded one")
    p.add_argument("--plot-loss", metavar="PNG", help="write the loss curves as a PNG "
                   "(needs matplotlib: pip install 'numpylm[plot]')")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=d.steps, help="optimiser updates")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--block-size", type=int, default=d.block_size, help="context length T")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per step")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    g.add_argument("--min-lr", type=float, default=d.min_lr, help="end of the cosine decay")
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--grad-clip", type=float, default=d.grad_clip, help="0 turns clipping off")
    g.add_argument("--eval-interval", type=int, default=d.eval_interval)
    g.add_argument("--eval-batches", type=int, default=d.eval_batches)
    g.add_argument("--log-interval", type=int, default=d.log_interval)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--max-seconds", type=float, default=None,
                   help="stop (and save) once training has taken this long")
    m = p.add_argument_group("model size")
    m.add_argument("--n-layer", type=int, default=4, help="gpt, llama: transformer blocks")
    m.add_argument("--n-head", type=int, default=4, help="gpt, llama: attention heads")
    m.add_argument("--n-embd", type=int, default=128, help="gpt, llama: width")
    m.add_argument("--dropout", type=float, default=0.0, help="gpt: dropout")
    m.add_argument("--n-kv-head", type=int, default=None,
                   help="llama: key-value heads, dividing --n-head (default: --n-head)")
    m.add_argument("--intermediate-size", type=int, default=None,
                   help="llama: SwiGLU width (default: the width that matches a GPT's size)")
    m.add_argument("--embedding-dim", type=int, default=64, help="mlp, rnn, gru, lstm")
    m.add_argument("--hidden-size", type=int, default=128, help="mlp, rnn, gru, lstm")
    m.add_argument("--context", type=int, default=3, help="mlp: tokens of context")
    m.add_argument("--order", type=int, default=3, help="ngram: n")
    m.add_argument("--smoothing", default="kneser_ney", choices=tuple(SMOOTHINGS),
                   help="ngram: smoothing method")
    m.add_argument("--model-arg", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="a constructor argument of the model, overriding the flags above "
                        "(repeatable; the value is read as JSON, else as a string)")
    p.set_defaults(func=guarded(_run_train),
                   _defaults={a.dest: a.default for a in p._actions if a.dest != "help"})

    p = subparsers.add_parser(
        "eval", help="loss, perplexity and bits per token/char/byte on held-out text",
        description="Score a numpylm checkpoint or a GPT-2-format directory on the validation tail "
                    "of its training text, or on all of --data FILE.",
        formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="a checkpoint, a model directory, a GGUF file or a PEFT adapter directory")
    p.add_argument("--adapter", metavar="DIR", help="a PEFT adapter to merge into the model")
    p.add_argument("--data", metavar="FILE", help="score this whole file instead")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="held-out fraction, when the checkpoint does not record it")
    p.add_argument("--block-size", type=int, default=None,
                   help="context length (default: the training context)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--allow-different-data", action="store_true",
                   help="score the recorded training file even if its text has changed")
    p.set_defaults(func=guarded(_run_eval))
