"""The evaluation harness, part 4 of the guide: run tasks on models and put every number, with
its error bar, in one table.

`run_task(model, tokenizer, task)` scores each eval item by the task's kind:

- `multiple_choice`: `encode_pair` each (context, target_delimiter + choice), score the
  choices by log-likelihood (shared context, many questions batched by `score_batched`,
  or from scratch), and record acc and acc_norm;
- `generate`: write until a stop string, extract the answer, exact match;
- `perplexity`: rolling log-likelihood of each document (window = the model's block_size,
  or `window`; stride = the window unless given); the task's bits per byte, token and word
  perplexity pool the documents (total NLL over total bytes, tokens, words).

A `TaskResult` keeps every per-item score, so a number can be audited item by item, and
each accuracy's standard error (`stats.stderr_of_mean`). `results_table` lays results out
as task x metric rows and one column per model; with two models it adds their paired
difference with a bootstrap 95% interval (`stats.paired_bootstrap`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from numpylm.evaluation.generative import exact_match, extract_answer, generate_until
from numpylm.evaluation.loglikelihood import (check_request, encode_pair, end_of_text_id,
                                              multiple_choice_metrics, score_batched,
                                              score_from_scratch, score_shared)
from numpylm.evaluation.rolling import rolling_loglikelihood, rolling_report
from numpylm.evaluation.stats import paired_bootstrap, stderr_of_mean
from numpylm.evaluation.tasks import Task

__all__ = ["TaskResult", "results_json", "results_table", "run_task"]

Progress = Callable[[int, int, float], None]  # (items done, items in all, seconds so far)
_CHUNK = 64  # multiple-choice questions scored together (see `score_batched`)


@dataclass
class TaskResult:
    """One task on one model: the metrics (name -> (value, stderr or NaN)) and every item."""

    task: str
    model: str
    kind: str
    metrics: dict[str, tuple[float, float]]
    items: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    num_fewshot: int = 0

    def per_item(self, metric: str) -> list[float]:
        return [float(item[metric]) for item in self.items]

    def as_dict(self) -> dict:
        return {"task": self.task, "model": self.model, "kind": self.kind,
                "num_fewshot": self.num_fewshot, "seconds": self.seconds,
                "metrics": {k: {"value": v, "stderr": None if math.isnan(s) else s}
                            for k, (v, s) in self.metrics.items()},
                "items": self.items}


def _mean_with_stderr(items: list[dict], metric: str) -> tuple[float, float]:
    values = [float(item[metric]) for item in items]
    return sum(values) / len(values), stderr_of_mean(values)


def _choice_requests(tokenizer, task: Task, context: str, item: dict) -> list[tuple]:
    """The (context ids, continuations) requests of one question: one request when every
    choice sees the same context ids (the usual case), else one per choice (a context whose
    last token merges with some choices)."""
    pairs = [encode_pair(tokenizer, context, task.target_delimiter + c) for c in item["choices"]]
    if len({tuple(ctx) for ctx, _ in pairs}) == 1:
        return [(pairs[0][0], [cont for _, cont in pairs])]
    return [(ctx, [cont]) for ctx, cont in pairs]


def _choice_record(item: dict, scores: list) -> dict:
    metrics = multiple_choice_metrics([s.logprob for s in scores], item["choices"], item["gold"])
    return {"gold": item["gold"], "logprobs": [s.logprob for s in scores],
            "is_greedy": [s.is_greedy for s in scores],
            "n_tokens": [s.n_tokens for s in scores], **metrics}


def _multiple_choice(model, tokenizer, task: Task, context: str, item: dict,
                     shared: bool, max_length: int | None) -> dict:
    score = score_shared if shared else score_from_scratch
    scores = [s for ctx, conts in _choice_requests(tokenizer, task, context, item)
              for s in score(model, ctx, conts, max_length)]
    return _choice_record(item, scores)


def _multiple_choice_batched(model, tokenizer, task: Task, indices: range, num_fewshot: int,
                             seed: int, max_length: int | None) -> list[dict]:
    """`_multiple_choice` (shared) of many questions, their requests scored together by
    `score_batched`."""
    split = task.split(task.eval_split)
    requests, owners = [], []
    for i in indices:
        try:
            mine = _choice_requests(tokenizer, task, task.context(i, num_fewshot, seed), split[i])
            for ctx, conts in mine:
                check_request(model, ctx, conts, max_length)
        except ValueError as err:
            raise ValueError(f"task {task.name!r}, item {i}: {err}") from None
        requests += mine
        owners += [i] * len(mine)
    by_item: dict[int, list] = {i: [] for i in indices}
    for owner, scores in zip(owners, score_batched(model, requests, max_length)):
        by_item[owner] += scores
    return [{"index": i, **_choice_record(split[i], by_item[i])} for i in indices]


def _generate(model, tokenizer, task: Task, context: str, item: dict,
              temperature: float, seed: int) -> dict:
    stops = item.get("stop", task.stop)
    stops = [stops] if isinstance(stops, str) else stops
    text = generate_until(model, tokenizer, tokenizer.encode(context), stops,
                          task.max_new_tokens, end_of_text_id(tokenizer), temperature, seed)
    answer = extract_answer(text, task.extract)
    return {"generated": text, "extracted": answer, "answer": item["answer"],
            "exact_match": exact_match(answer, item["answer"])}


def _perplexity(model, tokenizer, item: dict, window: int, stride: int | None) -> dict:
    ids = tokenizer.encode(item["text"])
    prefix = end_of_text_id(tokenizer)
    logprobs = rolling_loglikelihood(model, ids, window, stride, prefix)
    # Without an end-of-text id to start from, the first token is context only.
    scored = item["text"] if prefix is not None else tokenizer.decode(list(ids[1:]))
    report = rolling_report(logprobs, scored)
    return {"total_nll": report.total_nll, "n_tokens": report.n_tokens,
            "n_bytes": report.n_bytes, "n_words": report.n_words,
            "bits_per_byte": report.bits_per_byte}


def _pooled(items: list[dict]) -> dict[str, tuple[float, float]]:
    nll = sum(i["total_nll"] for i in items)
    tokens, nbytes = sum(i["n_tokens"] for i in items), sum(i["n_bytes"] for i in items)
    words = sum(i["n_words"] for i in items)
    big = lambda x: math.exp(x) if x < 709.0 else math.inf  # noqa: E731
    return {"bits_per_byte": (nll / (nbytes * math.log(2)), math.nan),
            "token_perplexity": (big(nll / tokens), math.nan),
            "word_perplexity": (big(nll / words) if words else math.inf, math.nan)}


def _window(model, window: int | None) -> int:
    if window is not None:
        return int(window)
    limit = getattr(model, "block_size", None)
    if limit is None:
        raise ValueError("this model has no block_size; give the rolling window (window=...)")
    return int(limit)


def _score_item(model, tokenizer, task: Task, i: int, num_fewshot: int, seed: int,
                shared: bool, max_length: int | None, window: int | None, stride: int | None,
                temperature: float) -> dict:
    item = task.split(task.eval_split)[i]
    context = task.context(i, num_fewshot, seed)
    if task.kind == "multiple_choice":
        return _multiple_choice(model, tokenizer, task, context, item, shared, max_length)
    if task.kind == "generate":
        return _generate(model, tokenizer, task, context, item, temperature, seed + i)
    return _perplexity(model, tokenizer, item, _window(model, window), stride)


def run_task(model: Any, tokenizer: Any, task: Task, *, model_name: str = "model",
             num_fewshot: int = 0, limit: int | None = None, seed: int = 1234,
             shared: bool = True, max_length: int | None = None, window: int | None = None,
             stride: int | None = None, temperature: float = 0.0,
             progress: Progress | None = None) -> TaskResult:
    """Score `task`'s eval items (the first `limit`) with `model` and `tokenizer`.

    `num_fewshot` examples are drawn from the task's few-shot split with `seed`;
    `shared=False` scores each choice from scratch (the readable path); `max_length` caps
    the model's window for log-likelihoods; `window`/`stride` set the rolling window of a
    perplexity task; `temperature` > 0 samples generations (seeded per item).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    n = len(task.split(task.eval_split))
    n = n if limit is None else min(n, limit)
    start = time.perf_counter()
    items = []
    if task.kind == "multiple_choice" and shared:
        # Questions in chunks (a progress report per chunk), each chunk scored together.
        for first in range(0, n, _CHUNK):
            items += _multiple_choice_batched(model, tokenizer, task,
                                              range(first, min(n, first + _CHUNK)),
                                              num_fewshot, seed, max_length)
            if progress is not None:
                progress(len(items), n, time.perf_counter() - start)
    for i in range(len(items), n):
        try:
            record = _score_item(model, tokenizer, task, i, num_fewshot, seed, shared,
                                 max_length, window, stride, temperature)
        except ValueError as err:
            raise ValueError(f"task {task.name!r}, item {i}: {err}") from None
        items.append({"index": i, **record})
        if progress is not None:
            progress(i + 1, n, time.perf_counter() - start)
    if task.kind == "multiple_choice":
        metrics = {m: _mean_with_stderr(items, m) for m in ("acc", "acc_norm")}
    elif task.kind == "generate":
        metrics = {"exact_match": _mean_with_stderr(items, "exact_match")}
    else:
        metrics = _pooled(items)
    return TaskResult(task.name, model_name, task.kind, metrics, items,
                      time.perf_counter() - start, num_fewshot)


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"


def _cell(value: float, stderr: float) -> str:
    if math.isnan(stderr):
        return _number(value)
    return f"{_number(value)} ± {stderr:.4f}"


def _rows(results: Sequence[TaskResult], seed: int) -> tuple[list[str], list[list[str]]]:
    models = list(dict.fromkeys(r.model for r in results))
    by_key = {(r.task, r.model): r for r in results}
    tasks = list(dict.fromkeys(r.task for r in results))
    header = ["task", "metric", *models]
    paired = len(models) == 2
    if paired:
        header.append(f"{models[0]} - {models[1]} [95% CI]")
    rows = []
    for task in tasks:
        present = [by_key.get((task, m)) for m in models]
        first = next(r for r in present if r is not None)
        for metric in first.metrics:
            row = [task, metric]
            row += ["" if r is None else _cell(*r.metrics[metric]) for r in present]
            if paired:
                a, b = present
                if a is not None and b is not None and not math.isnan(a.metrics[metric][1]) \
                        and len(a.items) == len(b.items):
                    d = paired_bootstrap(a.per_item(metric), b.per_item(metric), seed=seed)
                    row.append(f"{d.difference:+.4f} [{d.low:+.4f}, {d.high:+.4f}]")
                else:
                    row.append("")
            rows.append(row)
    return header, rows


def results_table(results: Sequence[TaskResult], fmt: str = "markdown", seed: int = 0) -> str:
    """Task x metric rows, one column per model (value ± stderr), as markdown, csv or json."""
    if not results:
        raise ValueError("results_table: no results to show")
    if fmt == "json":
        return json.dumps(results_json(results, seed), indent=2)
    header, rows = _rows(results, seed)
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([header, *rows])
        return out.getvalue()
    if fmt != "markdown":
        raise ValueError(f"unknown table format {fmt!r}; known: markdown, csv, json")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])


def results_json(results: Sequence[TaskResult], seed: int = 0) -> dict:
    """Every result with its per-item scores, and the table's rows, as one JSON object."""
    header, rows = _rows(results, seed)
    return {"table": {"header": header, "rows": rows},
            "results": [r.as_dict() for r in results]}
