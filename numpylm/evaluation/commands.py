"""The `evaluate` sub-command: part 4 of the guide from a terminal, benchmark tasks on one or two
models in one table with error bars.

    numpylm evaluate --model checkpoints/gpt --tasks next_sentence,arithmetic
    numpylm evaluate --model a --model b --tasks my_task.jsonl --limit 50 --output results.json

`--model` is a numpylm checkpoint or a model directory that
`numpylm.training.families.load_model` reads; `--tasks` names built-in tasks
(`numpylm.evaluation.builtin`; `mmlu_dev` where lm_eval is installed) or JSONL task files
(`numpylm.evaluation.tasks`). The table has one row per task and metric, one column per
model (value ± standard error), and with two models their paired difference with a bootstrap
95% interval. `--output` writes every per-item score as JSON, so each number can be audited.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from numpylm.evaluation.builtin import BUILTIN_TASKS, get_task


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _progress(label: str):
    """A one-line progress report with the ETA on stderr, rewritten in place."""
    def report(done: int, total: int, seconds: float) -> None:
        eta = seconds / done * (total - done)
        end = "\n" if done == total else ""
        print(f"\r{label}: {done}/{total} items, {seconds:.1f} s, ETA {eta:.0f} s",
              end=end, file=sys.stderr, flush=True)
    return report


def _names(models: list[str]) -> list[str]:
    """Column names: the directories' names, made unique by their paths if needed."""
    short = [Path(m).name or m for m in models]
    return short if len(set(short)) == len(short) else list(models)


def _run(args: argparse.Namespace) -> int:
    from numpylm.evaluation.harness import results_json, results_table, run_task
    from numpylm.tuning.loading import load_adapted_model

    if len(args.model) > 2:
        raise ValueError(f"give one or two --model, got {len(args.model)}")
    if args.adapter and len(args.model) != 1:
        raise ValueError("--adapter goes with one --model (to compare a base with its "
                         "adapter, give the base and the adapter directory as two --model)")
    task_names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not task_names:
        raise ValueError("--tasks is empty; built-in tasks: " + ", ".join(BUILTIN_TASKS))
    tasks = [get_task(name) for name in task_names]  # fail before loading
    results = []
    for path, name in zip(args.model, _names(args.model)):
        loaded = load_adapted_model(path, args.adapter)
        for task in tasks:
            results.append(run_task(
                loaded.model, loaded.tokenizer, task, model_name=name,
                num_fewshot=args.num_fewshot, limit=args.limit, seed=args.seed,
                shared=not args.from_scratch, window=args.window or loaded.block_size,
                stride=args.stride, progress=_progress(f"{task.name} on {name}")))
    print(results_table(results, args.format, seed=args.seed))
    if args.output:
        Path(args.output).write_text(json.dumps(results_json(results, args.seed), indent=2),
                                     encoding="utf-8")
        print(f"wrote every item's scores to {args.output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from numpylm.cli import HelpFormatter, guarded

    p = subparsers.add_parser(
        "evaluate", help="benchmark tasks on one or two models, with error bars",
        description="Score models on built-in tasks (" + ", ".join(BUILTIN_TASKS) + ") or "
                    "JSONL task files by log-likelihood, generation or rolling bits per byte; "
                    "print one table of tasks x models with standard errors.",
        formatter_class=HelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="PATH",
                   help="a checkpoint or model directory, or a PEFT adapter directory (give "
                        "it twice to compare two models)")
    p.add_argument("--adapter", metavar="DIR", help="a PEFT adapter to merge into the model")
    p.add_argument("--tasks", required=True,
                   help="comma-separated built-in task names or .jsonl task files")
    p.add_argument("--limit", type=_positive, help="score only the first N items of each task")
    p.add_argument("--num-fewshot", type=_non_negative, default=0,
                   help="few-shot examples before each item")
    p.add_argument("--seed", type=int, default=1234, help="seed of the few-shot draws and "
                   "the bootstrap")
    p.add_argument("--window", type=_positive,
                   help="rolling window of perplexity tasks (default: the model's context)")
    p.add_argument("--stride", type=_positive,
                   help="rolling stride of perplexity tasks (default: the window)")
    p.add_argument("--from-scratch", action="store_true",
                   help="score each choice with its own forward pass (the readable path) "
                        "instead of sharing the context's decoding state")
    p.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown",
                   help="the table's format")
    p.add_argument("--output", metavar="FILE", help="write every per-item score as JSON")
    p.set_defaults(func=guarded(_run, (ValueError, FileNotFoundError)))
