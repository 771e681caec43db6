"""`numpylm finetune`: supervised fine-tuning (full or LoRA/QLoRA) and DPO from the command line.

    numpylm finetune --method lora --model SmolLM2.gguf --task reverse --steps 60 --out adapter/
    numpylm finetune --method sft --model model.gguf --data chats.jsonl --out tuned/
    numpylm finetune --method dpo --model model.gguf --data pairs.jsonl --out adapter/

LoRA, QLoRA and DPO (which trains LoRA adapters, against the model as loaded as its reference)
write a PEFT adapter directory; full SFT of a Llama-family model writes `model.gguf` (float32,
with the tokenizer when it came from a GGUF file). With `--task`, held-out exact-match
accuracy (or, for DPO, preference accuracy) is measured before and after.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

METHODS = ("sft", "lora", "qlora", "dpo")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run(args: argparse.Namespace) -> int:
    from numpylm.training.families import load_model
    from numpylm.tuning import data as D
    from numpylm.tuning.dpo import dpo_train, encode_pairs, preference_accuracy
    from numpylm.tuning.lora import LoRAConfig, apply_lora, merge_lora, unmerge_lora
    from numpylm.tuning.peft_io import save_adapter
    from numpylm.tuning.qlora import apply_qlora
    from numpylm.tuning.sft import encode_conversations, exact_match, finetune

    if (args.data is None) == (args.task is None):
        raise ValueError("give exactly one of --data FILE and --task NAME")
    task = D.get_task(args.task) if args.task else None
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    lora = LoRAConfig(r=args.rank, lora_alpha=args.alpha, target_modules=targets,
                      lora_dropout=args.dropout)  # checked before the model loads
    loaded = load_model(args.model)
    model, tok = loaded.model, loaded.tokenizer
    held_out = [q for q, _ in task.examples(args.eval, seed=args.seed + 10_000)] if task else []

    def accuracy() -> float:
        merge = args.method == "lora"
        if merge:
            merge_lora(model)  # decoding then costs what the base costs
        try:
            return exact_match(model, tok, task, held_out, args.template, args.max_new_tokens)
        finally:
            if merge:
                unmerge_lora(model)

    if args.method in ("lora", "dpo"):
        apply_lora(model, lora, rng=args.seed)
    elif args.method == "qlora":
        apply_qlora(model, lora, args.quant, rng=args.seed)
    if args.method == "dpo":
        pairs = (D.task_preferences(task, args.examples, args.seed) if task
                 else D.load_preferences(args.data))
        encoded = encode_pairs(pairs, tok, args.template)
        test = encode_pairs(D.task_preferences(task, args.eval, args.seed + 10_000), tok,
                            args.template) if task else []
        if test:
            print(f"held-out preference accuracy before: {preference_accuracy(model, test):.3f}")
        start = time.perf_counter()
        dpo_train(model, encoded, args.steps, args.batch_size, args.beta, args.lr,
                  seed=args.seed, log=print)
        print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s")
        if test:
            print(f"held-out preference accuracy after: {preference_accuracy(model, test):.3f}")
    else:
        conversations = (D.task_conversations(task, args.examples, args.seed) if task
                         else D.load_conversations(args.data))
        examples = encode_conversations(conversations, tok, args.template, args.max_length)
        if task:
            print(f"held-out exact match before: {accuracy():.3f}")
        result = finetune(model, examples, args.steps, args.batch_size, args.lr,
                          seed=args.seed, log=print)
        print(f"{args.steps} steps in {result.seconds:.1f} s, {result.trainable:,} of "
              f"{result.total:,} parameters trained")
        if task:
            print(f"held-out exact match after: {accuracy():.3f}")
    out = Path(args.out)
    if args.method == "sft":
        from numpylm.models.llama import Llama
        from numpylm.models.llama_gguf import save_gguf
        if not isinstance(model, Llama):
            raise ValueError("full fine-tuning writes a GGUF file; it supports Llama-family "
                             "models (use --method lora for others)")
        out.mkdir(parents=True, exist_ok=True)
        save_gguf(model, out / "model.gguf", tok)
        print(f"wrote {out / 'model.gguf'}")
    else:
        save_adapter(model, out, base_model_name_or_path=str(args.model))
        print(f"wrote the adapter to {out}/ (adapter_config.json, adapter_model.safetensors)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from numpylm.cli import HelpFormatter, guarded
    from numpylm.tuning.data import TASKS

    p = subparsers.add_parser(
        "finetune", help="supervised fine-tuning (full, LoRA, QLoRA) or DPO",
        description="Fine-tune a model on conversations (JSONL with 'messages'), preference "
                    "pairs (JSONL with 'prompt', 'chosen', 'rejected') or a built-in task ("
                    + ", ".join(sorted(TASKS)) + "); the loss counts assistant tokens only.",
        formatter_class=HelpFormatter)
    p.add_argument("--method", choices=METHODS, default="lora", help="what to train")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a numpylm checkpoint, an HF model directory or a GGUF file")
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
    p.add_argument("--beta", type=float, default=0.1, help="DPO's beta")
    p.add_argument("--template", help="chat template (chatml, smollm2, llama3; default: the "
                   "tokenizer's own, else chatml)")
    p.add_argument("--max-length", type=_positive, help="crop conversations to this many tokens")
    p.add_argument("--max-new-tokens", type=_positive, default=24,
                   help="reply length when measuring exact match")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=guarded(_run, (ValueError, FileNotFoundError)))
