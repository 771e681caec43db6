"""`numpylm finetune`: supervised fine-tuning (full or LoRA/QLoRA) and DPO from the command line.

    numpylm finetune --method lora --model SmolLM2.gguf --task reverse --steps 60 --out adapter/
    numpylm finetune --method lora ... --out adapter/ --resume --steps 120   # continue the run
    numpylm finetune --method sft --model model.gguf --data chats.jsonl --out tuned/
    numpylm finetune --method dpo --model model.gguf --data pairs.jsonl --out adapter/
    numpylm finetune --method grpo --model model.gguf --task addition --out adapter/

LoRA, QLoRA and DPO (which trains LoRA adapters, against the model as loaded as its reference)
write a PEFT adapter directory (`adapter_config.json`, `adapter_model.safetensors`, its base
named by absolute path); full SFT writes `OUT/model/`, a numpylm checkpoint, when the base was
one, else `OUT/model.gguf` (a Llama-family model, float32, with the tokenizer). `generate`,
`chat`, `eval`, `evaluate` and `serve` take OUT in place of a model. With `--task`, held-out exact-match accuracy (or, for DPO, preference accuracy) is
measured before and after.

SFT, LoRA and QLoRA train through the shared loop (`numpylm.training.loop`): `OUT/run/` is
its checkpoint (the trained parameters, the optimiser, every random state, and the run's
settings in config.json), written every `--eval-interval` steps, at the end and on Ctrl-C;
`--resume` continues it with a new total `--steps`, exactly as if it had not stopped.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("sft", "lora", "qlora", "dpo", "grpo")
RUN_DIR = "run"  # the loop's checkpoint, inside --out
# The flags that define a run: saved in OUT/run/config.json and taken from there by --resume.
RUN_FLAGS = ("method", "model", "data", "task", "examples", "eval", "batch_size", "grad_accum",
             "lr", "rank", "alpha", "dropout", "targets", "quant", "template", "max_length",
             "pack", "seed")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = {k: getattr(args, k) for k in RUN_FLAGS}
    for k in ("model", "data"):  # absolute, so --resume works from another directory
        if settings[k] is not None:
            settings[k] = str(Path(settings[k]).resolve())
    return settings


def _resume_settings(args: argparse.Namespace, run_dir: Path):
    """The saved run (checkpoint) with its settings put into `args`; flags that ask for
    something else are refused."""
    from numpylm.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir, for_resume=True)
    saved = ckpt.model_args
    defaults = getattr(args, "_defaults", {})
    mine = _run_settings(args)
    conflicts = [f"--{k.replace('_', '-')} {getattr(args, k)} (the run: {saved.get(k)})"
                 for k in RUN_FLAGS if getattr(args, k) != defaults.get(k)
                 and mine[k] != saved.get(k)]
    if conflicts:
        raise ValueError(f"--resume continues the run saved in {run_dir} as it was, but these "
                         f"flags ask for something else: {'; '.join(conflicts)}")
    for k in RUN_FLAGS:
        setattr(args, k, saved.get(k))
    return ckpt


def _run(args: argparse.Namespace) -> int:
    from numpylm.models.pretrained import pretrained_kind
    from numpylm.training.families import load_model
    from numpylm.tuning import data as D
    from numpylm.tuning.lora import LoRAConfig, apply_lora, merge_lora, unmerge_lora

    out = Path(args.out)
    run_dir = out / RUN_DIR
    ckpt = None
    if args.resume:
        if args.method in ("dpo", "grpo"):
            raise ValueError(f"--resume continues SFT, LoRA and QLoRA runs; "
                             f"{args.method.upper()} keeps no checkpoint")
        ckpt = _resume_settings(args, run_dir)
        step = int(ckpt.trainer_state["step"])
        if args.steps <= step:
            print(f"nothing to train: the run in {run_dir} is at step {step} and --steps is "
                  f"{args.steps}; give a larger --steps to continue")
            return 0
    elif (run_dir / "config.json").exists() and not args.overwrite:
        raise ValueError(f"{out} already holds a fine-tuning run; continue it with --resume, "
                         f"replace it with --overwrite, or choose another --out")
    if args.model is None:
        raise ValueError("give the model to fine-tune: --model PATH")
    if (args.data is None) == (args.task is None):
        raise ValueError("give exactly one of --data FILE and --task NAME")
    if args.method == "grpo" and args.task is None:
        raise ValueError("--method grpo learns from a task's checker of right answers: give "
                         "--task NAME (a --data file holds no rewards)")
    if args.group_size < 2:
        raise ValueError(f"--group-size must be >= 2 (advantages compare the answers of one "
                         f"group), got {args.group_size}")
    task = D.get_task(args.task) if args.task else None
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    lora = LoRAConfig(r=args.rank, lora_alpha=args.alpha, target_modules=targets,
                      lora_dropout=args.dropout)  # checked before the model loads
    loaded = load_model(args.model)
    model, tok = loaded.model, D.chat_tokenizer(loaded.tokenizer)
    checkpoint_base = pretrained_kind(args.model) is None  # a numpylm checkpoint
    if args.method == "sft" and not checkpoint_base:
        from numpylm.models.llama import Llama
        if not isinstance(model, Llama):
            raise ValueError("full fine-tuning of a pretrained model writes a GGUF file; it "
                             "supports Llama-family models (use --method lora for others)")
    held_out = [q for q, _ in task.examples(args.eval, seed=args.seed + 10_000)] if task else []

    def accuracy() -> float:
        from numpylm.tuning.sft import exact_match
        merge = args.method in ("lora", "grpo")
        if merge:
            merge_lora(model)  # decoding then costs what the base costs
        try:
            return exact_match(model, tok, task, held_out, args.template, args.max_new_tokens)
        finally:
            if merge:
                unmerge_lora(model)

    if args.method in ("lora", "dpo", "grpo"):
        apply_lora(model, lora, rng=args.seed)
    elif args.method == "qlora":
        from numpylm.tuning.qlora import apply_qlora
        apply_qlora(model, lora, args.quant, rng=args.seed)
    if args.method == "dpo":
        _dpo(args, model, tok, task)
        code = 0
    elif args.method == "grpo":
        _grpo(args, model, tok, task, accuracy)
        code = 0
    else:
        code = _sft(args, model, tok, task, ckpt, run_dir, accuracy)
    if args.method == "sft" and checkpoint_base:  # the same kind of checkpoint it came from
        from numpylm.io import load_json
        from numpylm.training.checkpoint import save_checkpoint
        base = load_json(Path(args.model) / "config.json")
        save_checkpoint(out / "model", model_family=base["model_family"],
                        model_args=base["model_args"], model_state=model.state_dict(),
                        tokenizer=tok)
        print(f"wrote {out / 'model'}/ (a numpylm checkpoint)")
    elif args.method == "sft":
        from numpylm.models.llama_gguf import save_gguf
        out.mkdir(parents=True, exist_ok=True)
        save_gguf(model, out / "model.gguf", tok)
        print(f"wrote {out / 'model.gguf'}")
    else:
        from numpylm.tuning.peft_io import save_adapter
        save_adapter(model, out, base_model_name_or_path=str(Path(args.model).resolve()))
        print(f"wrote the adapter to {out}/ (adapter_config.json, adapter_model.safetensors)")
    return code


def _sft(args, model, tok, task, ckpt, run_dir: Path, accuracy) -> int:
    from numpylm.tokenizers.bpe import BPETokenizer
    from numpylm.tokenizers.char import CharTokenizer
    from numpylm.tuning import data as D
    from numpylm.tuning.sft import SFTData, encode_conversations, finetune

    conversations = (D.task_conversations(task, args.examples, args.seed) if task
                     else D.load_conversations(args.data))
    train = encode_conversations(conversations, tok, args.template, args.max_length)
    val = (encode_conversations(D.task_conversations(task, min(args.eval, 16),
                                                     args.seed + 20_000),
                                tok, args.template, args.max_length) if task else [])
    data = SFTData(train, val, pack_block=args.pack,
                   source=f"task {args.task}" if task else str(args.data))
    if task and ckpt is None:
        print(f"held-out exact match before: {accuracy():.3f}")
    # A checkpoint keeps its tokenizer in numpylm's own format; the run is rebuilt from its
    # base model (and its tokenizer) on --resume, so a tokenizer that format cannot hold
    # (an HF tokenizer.json) is stood in for by an empty one.
    run_tok = tok if isinstance(tok, (CharTokenizer, BPETokenizer)) \
        else CharTokenizer.from_text("", unk="<unk>")
    try:
        result = finetune(model, data, args.steps, args.batch_size, args.lr, seed=args.seed,
                          log=print, out_dir=str(run_dir), resume_from=ckpt, tokenizer=run_tok,
                          run_info=_run_settings(args), eval_interval=args.eval_interval,
                          max_seconds=args.max_seconds, grad_accum=args.grad_accum)
    except FloatingPointError as err:
        print(f"numpylm finetune: {err}")
        return 1
    print(f"{len(result.losses)} steps in {result.seconds:.1f} s, {result.trainable:,} of "
          f"{result.total:,} parameters trained; the run is saved in {run_dir}")
    if task:
        print(f"held-out exact match after: {accuracy():.3f}")
    return 130 if result.stopped == "interrupted" else 0


def _dpo(args, model, tok, task) -> None:
    import time

    from numpylm.tuning import data as D
    from numpylm.tuning.dpo import dpo_train, encode_pairs, preference_accuracy

    pairs = (D.task_preferences(task, args.examples, args.seed) if task
             else D.load_preferences(args.data))
    encoded = encode_pairs(pairs, tok, args.template)
    test = encode_pairs(D.task_preferences(task, args.eval, args.seed + 10_000), tok,
                        args.template) if task else []
    if test:
        print(f"held-out preference accuracy before: {preference_accuracy(model, test):.3f}")
    start = time.perf_counter()
    dpo_train(model, encoded, args.steps, args.batch_size,
              0.1 if args.beta is None else args.beta, args.lr,
              seed=args.seed, log=print)
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s")
    if test:
        print(f"held-out preference accuracy after: {preference_accuracy(model, test):.3f}")


def _grpo(args, model, tok, task, accuracy) -> None:
    import time

    from numpylm.tuning.grpo import grpo_train

    print(f"held-out exact match before: {accuracy():.3f}")
    start = time.perf_counter()
    result = grpo_train(model, tok, task, args.steps, prompts_per_step=args.batch_size,
                        group_size=args.group_size, max_new_tokens=args.max_new_tokens,
                        lr=args.lr, beta=0.0 if args.beta is None else args.beta,
                        template=args.template, seed=args.seed, log=print)
    quarter = max(1, len(result.rewards) // 4)
    first, last = np.mean(result.rewards[:quarter]), np.mean(result.rewards[-quarter:])
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s; mean reward of the "
          f"sampled answers: {first:.3f} over the first {quarter} step(s), {last:.3f} over the "
          f"last {quarter}")
    print(f"held-out exact match after: {accuracy():.3f}")


def register(subparsers: argparse._SubParsersAction) -> None:
    from numpylm.cli import HelpFormatter, guarded
    from numpylm.tuning.data import TASKS

    p = subparsers.add_parser(
        "finetune", help="supervised fine-tuning (full, LoRA, QLoRA), DPO or GRPO",
        description="Fine-tune a model on conversations (JSONL with 'messages'), preference "
                    "pairs (JSONL with 'prompt', 'chosen', 'rejected') or a built-in task ("
                    + ", ".join(sorted(TASKS)) + "); the loss counts assistant tokens only. GRPO "
                    "instead samples answers to a built-in task and learns from its checker.",
        formatter_class=HelpFormatter)
    p.add_argument("--method", choices=METHODS, default="lora", help="what to train")
    p.add_argument("--model", metavar="PATH",
                   help="a numpylm checkpoint, an HF model directory or a GGUF file "
                        "(required, except with --resume)")
    p.add_argument("--data", metavar="FILE", help="a JSONL file of conversations or pairs")
    p.add_argument("--task", help="a built-in task instead of --data")
    p.add_argument("--examples", type=_positive, default=512,
                   help="training examples drawn from --task")
    p.add_argument("--eval", type=_positive, default=50,
                   help="held-out examples to measure with --task")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write the result")
    p.add_argument("--steps", type=_positive, default=50)
    p.add_argument("--batch-size", type=_positive, default=4)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r")
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (scale alpha/r)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout on the adapters' input")
    p.add_argument("--targets", default="q_proj,v_proj",
                   help="comma-separated module names to adapt")
    p.add_argument("--quant", choices=("q8_0", "q4_0"), default="q8_0",
                   help="storage of the frozen base with --method qlora")
    p.add_argument("--beta", type=float, default=None,
                   help="DPO's beta (default 0.1), or the weight of GRPO's KL term to the "
                        "policy before each step (default 0)")
    p.add_argument("--group-size", type=int, default=8,
                   help="GRPO: answers sampled per question (--batch-size questions a step)")
    p.add_argument("--template", help="chat template (chatml, smollm2, llama3; default: the "
                   "tokenizer's own, else chatml)")
    p.add_argument("--max-length", type=_positive, help="crop conversations to this many tokens")
    p.add_argument("--max-new-tokens", type=_positive, default=24,
                   help="reply length when measuring exact match")
    p.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("the run (sft, lora, qlora: through the training loop)")
    r.add_argument("--resume", action="store_true",
                   help="continue the run saved in OUT/run (its settings; --steps is the new "
                        "total)")
    r.add_argument("--overwrite", action="store_true",
                   help="start afresh even though OUT already holds a run")
    r.add_argument("--eval-interval", type=_positive, default=None,
                   help="checkpoint (and, with --task, a validation loss) every N steps "
                        "(default: at the end)")
    r.add_argument("--max-seconds", type=float, default=None,
                   help="stop (and save) once training has taken this long")
    r.add_argument("--grad-accum", type=_positive, default=1, help="micro-batches per step")
    r.add_argument("--pack", type=_positive, default=None, metavar="N",
                   help="pack examples into rows of N tokens instead of padding (Llama)")
    p.set_defaults(func=guarded(_run, (ValueError, FileNotFoundError)),
                   _defaults={a.dest: a.default for a in p._actions if a.dest != "help"})
