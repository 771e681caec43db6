"""The ladder: every model family of the guide on one corpus, one tokenizer, one split.

Count n-grams of orders 1 to 5 (interpolated Kneser-Ney), then the neural families (bigram,
MLP, RNN, GRU, LSTM, GPT) trained by the one shared training loop for the same wall-clock
budget each, all measured the same way: validation bits per character on the held-out last
10% of the text. Each rung adds one idea (longer context, learned representations,
recurrence, gates, attention), and the table shows what each idea buys for the time spent.

Each rung is also scored on the built-in benchmark tasks (`numpylm.evaluation.builtin`), made
from the same held-out tail: next_sentence (acc_norm, as HellaSwag is reported),
identifier_cloze (acc) and arithmetic (exact match, three solved examples first), on the
first `eval_items` items of each, with the binomial standard error. Bits per byte is left
out: it is the validation bits/char column again, in other units.

`numpylm ladder` prints the table; `--format csv`, `--output FILE` and `--plot FILE.png`
(needs the `plot` extra) save it.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from numpylm.io.text import write_utf8
from numpylm.training.families import FAMILIES, Family

NGRAM_ORDERS = (1, 2, 3, 4, 5)


def ladder_families() -> tuple[str, ...]:
    """The neural rungs: every registered family whose record says how the ladder sizes it."""
    return tuple(name for name, f in FAMILIES.items() if f.ladder is not None)


def all_models() -> tuple[str, ...]:
    """Every rung, in order: the count n-grams, then the registered neural families."""
    return tuple(f"ngram{n}" for n in NGRAM_ORDERS) + ladder_families()


ALL_MODELS = all_models()  # the built-in rungs (all_models() also sees families added later)


@dataclass
class LadderConfig:
    """Settings of one ladder run; the defaults finish in about 4 minutes on two cores."""

    models: tuple[str, ...] = field(default_factory=all_models)  # which rungs, in this order
    budget_seconds: float = 30.0   # training time for each neural model
    data: str | None = None        # a UTF-8 text file; None = the embedded corpus
    block_size: int = 64           # T: context window of the neural models
    batch_size: int = 16           # B: windows per training step
    sample_chars: int = 60         # length of each model's sample
    seed: int = 1337
    tiny: bool = False             # tiny models (for tests and a quick look)
    max_chars: int | None = None   # use only the first max_chars characters of the text
    eval_items: int = 40           # items of each built-in task per rung; 0 = no task columns


@dataclass
class Rung:
    model: str
    parameters: int
    train_seconds: float
    val_bpc: float
    sample: str
    steps: int | None = None  # optimiser steps (neural models)
    cut_short: bool = False   # stopped by the time cap before its schedule ended
    # task column -> (value, standard error); NaN when the task could not be scored
    tasks: dict[str, tuple[float, float]] = field(default_factory=dict)


def _printable(text: str) -> str:
    """One table cell: newlines shown as ⏎, other control characters as ·."""
    return "".join("⏎" if c == "\n" else ("·" if not c.isprintable() else c) for c in text)


# (column, task maker, metric, few-shot examples)
TASK_COLUMNS = (("next_sentence acc_norm", "next_sentence", "acc_norm", 0),
                ("identifier_cloze acc", "identifier_cloze", "acc", 0),
                ("arithmetic exact", "arithmetic", "exact_match", 3))


def ladder_tasks(text: str, tokenizer: Any, config: LadderConfig,
                 log: Callable[[str], None]) -> dict:
    """column -> Task, built from the ladder's own text (its held-out tail); a task the text
    is too short for, or whose characters the tokenizer lacks (a `--data` text without "?"),
    is left out with a line in the log."""
    from numpylm.evaluation.builtin import arithmetic, identifier_cloze, next_sentence

    if config.eval_items <= 0:
        return {}
    # A choice must fit the neural models' window: " " + sentence, at most block_size tokens.
    makers = {"next_sentence": lambda: next_sentence(text, longest=config.block_size - 1),
              "identifier_cloze": lambda: identifier_cloze(text), "arithmetic": arithmetic}
    tasks = {}
    for column, name, _, shots in TASK_COLUMNS:
        try:
            task = makers[name]()
            for i in range(min(config.eval_items, len(task.split(task.eval_split)))):
                item = task.split(task.eval_split)[i]
                tokenizer.encode(task.context(i, shots, config.seed)
                                 + "".join(item.get("choices", [item.get("answer", "")])))
            tasks[column] = task
        except ValueError as err:
            log(f"  (no {name} column: {err})")
    return tasks


def score_tasks(model: Any, tokenizer: Any, tasks: dict, config: LadderConfig,
                crop: bool = True) -> dict:
    """"column (n=items)" -> (value, stderr) of one model on the ladder's tasks; contexts are
    cropped to the ladder's block size (`crop=False`: to the model's own window, for a
    pretrained model set beside the rungs)."""
    from numpylm.evaluation.harness import run_task

    scores = {}
    specs = {column: (metric, shots) for column, _, metric, shots in TASK_COLUMNS}
    for column, task in tasks.items():
        metric, shots = specs[column]
        result = run_task(model, tokenizer, task, limit=config.eval_items, num_fewshot=shots,
                          max_length=config.block_size if crop else None,
                          seed=config.seed)
        scores[f"{column} (n={len(result.items)})"] = result.metrics[metric]
    return scores


def _ngram_rung(order: int, data, tokenizer, config: LadderConfig) -> tuple[Rung, Any]:
    from numpylm.evaluation.evaluate import evaluate_ids
    from numpylm.inference import generate
    from numpylm.models.ngram import NGramLM

    t0 = time.perf_counter()
    model = NGramLM(order, tokenizer.vocab_size, smoothing="kneser_ney").fit([data.train])
    seconds = time.perf_counter() - t0
    nll, _ = evaluate_ids(model, data.val, config.block_size)
    bpc = data.val_bits_per_char(nll)
    ids = generate(model, [], config.sample_chars, seed=config.seed)  # from the start context
    text = tokenizer.decode([int(i) for i in ids if i != model.eos_id])  # boundaries unshown
    # A count model's "parameters" are its stored counts: one per distinct m-gram.
    params = sum(len(table.keys) for table in model.tables_)
    return Rung(f"ngram{order} (KN)", params, seconds, bpc, text), model


def _neural_rung(family: Family, data, tokenizer, config: LadderConfig,
                 log: Callable[[str], None]) -> tuple[Rung, Any]:
    from numpylm.evaluation.evaluate import evaluate_ids
    from numpylm.inference import generate
    from numpylm.nn import manual_seed
    from numpylm.training import TrainConfig, train
    from numpylm.training.families import build_model

    spec = family.ladder
    args = spec.args(tokenizer.vocab_size, config.block_size, config.tiny)

    def fresh_model():
        manual_seed(config.seed)
        return build_model(family.name, dict(args))

    def settings(steps: int) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=config.batch_size, block_size=config.block_size,
                           lr=spec.lr, min_lr=spec.lr / 10, warmup_steps=min(20, steps // 5),
                           weight_decay=spec.weight_decay,
                           eval_interval=max(steps, 1), eval_batches=1,
                           log_interval=max(steps // 4, 1), seed=config.seed)

    # Measure the step time on a throwaway copy, so that the real run knows its step count
    # in advance and its cosine schedule ends exactly when the budget does. The median gap
    # between per-step log lines ignores the slow first step (buffers, caches).
    stamps: list[float] = []
    probe = settings(8)
    probe.log_interval = 1
    train(fresh_model(), data, probe, log=lambda line: stamps.append(time.perf_counter()))
    per_step = float(np.median(np.diff(stamps[:8])))
    steps = max(1, int(config.budget_seconds / per_step))

    model = fresh_model()
    run = settings(steps)
    run.max_seconds = config.budget_seconds * 1.05  # a hard stop, should the estimate be off
    t0 = time.perf_counter()
    # The loop's own validation estimate is left out of the log: the table's number is the
    # exact one below, and one model should show one validation figure.
    result = train(model, data, run, log=lambda line: None if ": val loss" in line
                   else log(f"    {family.name}: {line}"))
    seconds = time.perf_counter() - t0
    nll, _ = evaluate_ids(model, data.val, config.block_size)
    bpc = data.val_bits_per_char(nll)
    prompt = [int(data.val[0])]  # one token of context to start from
    ids = generate(model, prompt, config.sample_chars - 1, temperature=0.8, seed=config.seed)
    sample = tokenizer.decode([int(i) for i in ids])
    return Rung(family.name, model.num_parameters(), seconds, bpc, sample, result.step,
                cut_short=result.stopped == "time"), model


def run_ladder(config: LadderConfig, log: Callable[[str], None] = print) -> list[Rung]:
    """Run every rung in `config.models`; return one `Rung` per model, in order."""
    from numpylm.corpus import read_text
    from numpylm.tokenizers import CharTokenizer
    from numpylm.training import prepare_data

    known = all_models()
    unknown = [m for m in config.models if m not in known]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(known)}")
    text = read_text(config.data)
    if config.max_chars is not None:
        text = text[: config.max_chars]
    tokenizer = CharTokenizer.from_text(text)
    data = prepare_data(tokenizer, text=text)
    log(f"ladder: {len(text):,} characters, vocabulary {tokenizer.vocab_size}, "
        f"{len(data.train):,} train / {len(data.val):,} validation tokens, "
        f"{config.budget_seconds:g} s per neural model")
    tasks = ladder_tasks(text, tokenizer, config, log)
    rungs = []
    for name in config.models:
        log(f"  {name} ...")
        if name.startswith("ngram"):
            rung, model = _ngram_rung(int(name[5:]), data, tokenizer, config)
        else:
            rung, model = _neural_rung(FAMILIES[name], data, tokenizer, config, log)
        log(f"  {rung.model}: {rung.val_bpc:.3f} bits/char after {rung.train_seconds:.1f} s")
        if tasks:
            t0 = time.perf_counter()
            rung.tasks = score_tasks(model, tokenizer, tasks, config)
            scored = ", ".join(f"{c} {v:.2f}" for c, (v, _) in rung.tasks.items())
            log(f"  {rung.model}: {scored} ({time.perf_counter() - t0:.1f} s)")
        rungs.append(rung)
    return rungs


COLUMNS = ("model", "parameters", "training seconds", "validation bits/char", "sample")


CUT_SHORT = "†"  # marks a run the time cap stopped before the end of its schedule


def _task_columns(rungs: list[Rung]) -> list[str]:
    return list(dict.fromkeys(c for r in rungs for c in r.tasks))


def _score(value: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    return f"{value[0]:.2f} ± {value[1]:.2f}"


def _row(r: Rung, tasks: list[str]) -> list[str]:
    return [r.model + (f" {CUT_SHORT}" if r.cut_short else ""), f"{r.parameters:,}",
            f"{r.train_seconds:.2f}", f"{r.val_bpc:.3f}",
            *(_score(r.tasks.get(c)) for c in tasks), _printable(r.sample)]


def format_markdown(rungs: list[Rung]) -> str:
    tasks = _task_columns(rungs)
    columns = (*COLUMNS[:-1], *tasks, COLUMNS[-1])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rungs:
        cells = [c.replace("|", "\\|") for c in _row(r, tasks)]
        cells[-1] = f"`{cells[-1]}`"
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.cut_short for r in rungs):
        lines.append(f"\n{CUT_SHORT} stopped by the time cap before its learning-rate schedule "
                     f"ended (the step-time estimate was too low)")
    if tasks:
        lines.append("\nTask columns: value ± standard error over the first n items of each "
                     "built-in task (`numpylm.evaluation.builtin`, made from the held-out "
                     "tail; contexts cropped to the models' window); chance is 0.25 for the "
                     "two four-choice tasks.")
    return "\n".join(lines) + "\n"


def format_csv(rungs: list[Rung]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    tasks = _task_columns(rungs)
    writer.writerow([*COLUMNS[:-1], *(x for c in tasks for x in (c, f"{c} stderr")),
                     COLUMNS[-1], "cut short"])
    for r in rungs:
        scores = [f"{x:.4f}" for c in tasks for x in r.tasks.get(c, (math.nan, math.nan))]
        writer.writerow([r.model, r.parameters, f"{r.train_seconds:.2f}", f"{r.val_bpc:.4f}",
                         *scores, r.sample, int(r.cut_short)])
    return buf.getvalue()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ladder", help="train every model family on one corpus and compare them",
        description="Trains count n-grams (orders 1-5, Kneser-Ney) and the neural families "
                    "(bigram, MLP, RNN, GRU, LSTM, GPT) on one character-level split of a corpus "
                    "and prints: model | parameters | training seconds | validation bits per "
                    "character | the built-in tasks' accuracies ± standard error | a "
                    "60-character sample. The defaults take about 4 minutes on two cores.")
    p.add_argument("--budget-seconds", type=float, default=LadderConfig.budget_seconds,
                   help="training time per neural model (default %(default)s)")
    p.add_argument("--models", default=",".join(all_models()),
                   help="comma-separated rungs to run (default: all: %(default)s)")
    p.add_argument("--data", metavar="FILE", help="a UTF-8 text file (default: the embedded "
                   "corpus, Python's reference manual)")
    p.add_argument("--format", choices=("markdown", "csv"), default="markdown",
                   help="table format (default markdown)")
    p.add_argument("--output", metavar="FILE", help="also write the table to FILE")
    p.add_argument("--plot", metavar="PNG", help="write a plot of bits/char against training "
                   "time (needs matplotlib: pip install 'numpylm[plot]')")
    p.add_argument("--seed", type=int, default=LadderConfig.seed)
    p.add_argument("--max-chars", type=int, help="use only the first N characters of the text")
    p.add_argument("--tiny", action="store_true", help="tiny models, for a quick smoke test")
    p.add_argument("--eval-items", type=int, default=LadderConfig.eval_items,
                   help="items of each built-in task each rung is scored on (0: no task "
                        "columns; default %(default)s)")
    p.set_defaults(func=_run_command)


def _run_command(args: argparse.Namespace) -> int:
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    config = LadderConfig(models=models, budget_seconds=args.budget_seconds, data=args.data,
                          seed=args.seed, tiny=args.tiny, max_chars=args.max_chars,
                          eval_items=args.eval_items)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib: pip install 'numpylm[plot]'")
            return 2
    try:
        rungs = run_ladder(config, log=lambda line: print(line, flush=True))
    except ValueError as err:
        print(f"numpylm ladder: {err}")
        return 2
    table = format_csv(rungs) if args.format == "csv" else format_markdown(rungs)
    print()
    print(table, end="")
    if args.output:
        write_utf8(args.output, table)
    if args.plot:
        from numpylm.plots import plot_ladder
        plot_ladder(rungs, args.plot)
        print(f"plot written to {args.plot}")
    return 0
