"""Supervised fine-tuning, part 4 of the guide: a document-completer becomes an assistant by
training on conversations, with the loss on the assistant's tokens only.

Each conversation is rendered with the model's chat template (`numpylm.chat.render_chat`),
which also gives the *assistant mask*: 1 on every assistant turn's content and end marker
(every assistant turn of a multi-turn conversation), 0 on the system prompt, the user's turns
and the template's headers. The targets are the ids shifted by one, with every target whose
mask is 0 replaced by `IGNORE_INDEX`:

    ids      <|im_start|>user\\n2+2=<|im_end|>\\n<|im_start|>assistant\\n 4 <|im_end|>
    targets   -1  -1  ...                                    -1      4  <|im_end|>  ...

so `model(x, targets)` (cross-entropy over targets != -1) learns to answer, not to predict
the user's questions; the model still *reads* the whole conversation.

Batching: conversations differ in length, so a batch is by default **right-padded** with a pad id
whose targets are `IGNORE_INDEX`. This is exact, not an approximation: attention is causal,
so a real token never attends to the padding after it, and padded targets add nothing to the
loss (the tests prove a padded row's loss equals the unpadded one's). Padding wastes the padded
positions' compute; `finetune(..., pack_block=N)` packs examples end to end instead, with a
block-diagonal attention mask and positions restarting per example (`numpylm.tuning.packing`,
Llama models), which the tests prove gives every example its own loss.

Training goes through the shared loop (`numpylm.training.loop.train`): `SFTData` is a batch
source for it (random examples, padded or packed, targets already masked), so fine-tuning has
the loop's learning-rate schedule, gradient accumulation and clipping, its NaN guard, and its
checkpoints, and a run stopped after N steps and resumed is bit-identical to one that never
stopped. The optimiser holds the parameters that still require gradients: all of them for full
fine-tuning, the adapters alone after `apply_lora`.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from numpylm.chat import render_chat
from numpylm.inference.generate import generate
from numpylm.models.base import IGNORE_INDEX
from numpylm.nn.module import Module, evaluating
from numpylm.training.checkpoint import Checkpoint
from numpylm.training.loop import TrainConfig, train
from numpylm.tuning.data import Task, check_conversation

__all__ = ["SFTExample", "encode_conversation", "encode_conversations", "pad_batch", "SFTData",
           "FinetuneResult", "finetune", "answer", "exact_match"]


@dataclass(frozen=True)
class SFTExample:
    """Input ids (T,) and their next-token targets (T,), -1 where nothing is learned."""

    ids: np.ndarray
    targets: np.ndarray


def encode_conversation(messages: Any, tokenizer: Any, template: str | None = None,
                        max_length: int | None = None) -> SFTExample:
    """Render, tokenize, and mask one conversation (see the module docstring)."""
    messages = check_conversation(messages)
    rendered = render_chat(messages, tokenizer, template)
    ids = np.asarray(rendered.ids, dtype=np.int64)
    mask = np.asarray(rendered.assistant_mask, dtype=bool)
    targets = np.where(mask[1:], ids[1:], IGNORE_INDEX)  # the target of position t is t+1
    ids = ids[:-1]
    if max_length is not None:
        ids, targets = ids[:max_length], targets[:max_length]
    if (targets == IGNORE_INDEX).all():
        raise ValueError(f"after truncation to {max_length} tokens no assistant token is "
                         f"left to learn from; raise max_length")
    return SFTExample(ids, targets.astype(np.int64))


def encode_conversations(conversations: Sequence[Any], tokenizer: Any,
                         template: str | None = None,
                         max_length: int | None = None) -> list[SFTExample]:
    return [encode_conversation(c, tokenizer, template, max_length) for c in conversations]


def pad_batch(examples: Sequence[SFTExample], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of shape (B, T_max): right-padded with `pad_id`, padded targets ignored."""
    T = max(len(e.ids) for e in examples)
    x = np.full((len(examples), T), pad_id, dtype=np.int64)
    y = np.full((len(examples), T), IGNORE_INDEX, dtype=np.int64)
    for row, e in enumerate(examples):
        x[row, :len(e.ids)] = e.ids
        y[row, :len(e.targets)] = e.targets
    return x, y


def _fingerprint(examples: Sequence[SFTExample]) -> str:
    """sha256 over every example's ids and targets: a resumed run checks it trains on the
    same examples."""
    h = hashlib.sha256()
    for e in examples:
        h.update(np.asarray(e.ids, np.int64).tobytes())
        h.update(np.asarray(e.targets, np.int64).tobytes())
        h.update(b"|")
    return "sha256:" + h.hexdigest()


@dataclass
class SFTData:
    """Encoded conversations as a batch source of the training loop (`numpylm.training.loop`).

    A batch of n rows is n examples drawn at random, right-padded (`pad_batch`), or, with
    `pack_block`, n rows of `pack_block` tokens filled with examples drawn at random and kept
    apart by the packed mask (`numpylm.tuning.packing`, Llama models). `val` examples, if any,
    give the validation loss: the mean over their assistant tokens, in a fixed order.
    """

    train: Sequence[SFTExample]
    val: Sequence[SFTExample] = ()
    pack_block: int | None = None
    pad_id: int = 0
    source: str = "conversations"
    loss_fn: Callable[[Module, np.ndarray, np.ndarray], Any] | None = None

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("SFTData: no training examples")
        if self.pack_block is not None:
            longest = max(len(e.ids) for e in self.train)
            if longest > self.pack_block:
                raise ValueError(f"SFTData: an example of {longest} tokens does not fit a packed "
                                 f"row of {self.pack_block}; crop it (max_length) first")

    def sample_batch(self, n: int, block_size: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        if self.pack_block:
            from numpylm.tuning.packing import pack_random
            return pack_random(self.train, n, self.pack_block, rng, self.pad_id)
        return pad_batch([self.train[i] for i in rng.integers(len(self.train), size=n)],
                         self.pad_id)

    def batch_loss(self, model: Module, x: np.ndarray, y: np.ndarray,
                   doc: np.ndarray | None = None) -> Any:
        if doc is not None:
            from numpylm.tuning.packing import packed_forward
            return packed_forward(model, x, doc, y)[1]
        return self.loss_fn(model, x, y) if self.loss_fn else model(x, y)[1]

    def validation_loss(self, model: Module, config: TrainConfig) -> float | None:
        """Mean loss per assistant token over up to eval_batches * batch_size held-out
        examples (each batch's mean weighted by its number of targets)."""
        if not self.val:
            return None
        examples = list(self.val)[:config.eval_batches * config.batch_size]
        total = count = 0.0
        for i in range(0, len(examples), config.batch_size):
            x, y = pad_batch(examples[i:i + config.batch_size], self.pad_id)
            n = float((y != IGNORE_INDEX).sum())
            total += float(self.batch_loss(model, x, y).item()) * n
            count += n
        return total / count

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "examples": len(self.train),
                "val_examples": len(self.val), "pack_block": self.pack_block,
                "sha256": _fingerprint(self.train)}


@dataclass
class FinetuneResult:
    losses: list[float]
    seconds: float
    trainable: int      # number of trained parameters
    total: int          # number of parameters of the model
    step: int = 0       # the step the run ended at (after a resume: counted from the start)
    stopped: str = "completed"  # or "time", "interrupted" (see numpylm.training.loop)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    checkpoint: str | None = None


def finetune(model: Module, examples: Sequence[SFTExample] | SFTData, steps: int,
             batch_size: int = 8, lr: float = 1e-3, weight_decay: float = 0.0,
             grad_clip: float = 1.0, seed: int = 0,
             loss_fn: Callable[[Module, np.ndarray, np.ndarray], Any] | None = None,
             log: Callable[[str], None] | None = None, log_interval: int = 10,
             pack_block: int | None = None, *, out_dir: str | None = None,
             resume_from: str | Checkpoint | None = None, tokenizer: Any = None,
             run_info: dict[str, Any] | None = None, eval_interval: int | None = None,
             max_seconds: float | None = None, grad_accum: int = 1) -> FinetuneResult:
    """`steps` AdamW updates (constant `lr`) of the parameters that require gradients, on
    random batches of `examples`, through `numpylm.training.loop.train`; `loss_fn(model, x, y)`
    defaults to the model's own masked cross-entropy. With `pack_block` (Llama models), rows
    of that many tokens are packed with attention kept inside each example
    (`numpylm.tuning.packing`) instead of padded.

    With `out_dir`, the loop checkpoints there every `eval_interval` steps (default: at the
    end) and on Ctrl-C, keeping only the parameters that train (plus the optimiser and every
    random state); `tokenizer` and `run_info` (the run's settings, config.json's model_args)
    go with them. `resume_from` continues such a checkpoint on a model rebuilt as before: the
    result is the run that would have happened without the stop.
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("finetune: no parameter requires a gradient (everything is frozen)")
    data = examples if isinstance(examples, SFTData) else SFTData(
        list(examples), pack_block=pack_block, loss_fn=loss_fn)
    longest = data.pack_block or max(len(e.ids) for e in data.train)
    config = TrainConfig(steps=steps, batch_size=batch_size, block_size=longest,
                         grad_accum=grad_accum, lr=lr, min_lr=lr, warmup_steps=0,
                         weight_decay=weight_decay, beta2=0.999, grad_clip=grad_clip,
                         eval_interval=eval_interval or max(steps, 1), eval_batches=4,
                         log_interval=log_interval, seed=seed, out_dir=out_dir,
                         max_seconds=max_seconds)
    start = time.perf_counter()
    result = train(model, data, config, tokenizer=tokenizer, model_family="finetune",
                   model_args=run_info or {}, resume_from=resume_from,
                   log=log or (lambda _: None), save_frozen=False)
    model.eval()
    if result.stopped == "nonfinite":
        raise FloatingPointError(f"finetune: {result.message}")
    trained = [p for p in model.parameters() if p.requires_grad]
    return FinetuneResult(result.losses, time.perf_counter() - start,
                          sum(p.size for p in trained), model.num_parameters(), result.step,
                          result.stopped, result.val_losses, result.checkpoint)


def answer(model: Any, tokenizer: Any, questions: Sequence[str], template: str | None = None,
           max_new_tokens: int = 24, end: str = "<|im_end|>", batch_size: int = 4) -> list[str]:
    """Greedy replies to each question asked as a user turn, cut at the template's end mark."""
    prompts = [render_chat([{"role": "user", "content": q}], tokenizer, template,
                           add_generation_prompt=True).ids for q in questions]
    try:  # tiktoken-style tokenizers refuse special text unless allowed
        end_ids = tokenizer.encode(end, allowed_special="all")
    except TypeError:
        end_ids = tokenizer.encode(end)
    stop = end_ids if len(end_ids) == 1 else []  # a char tokenizer spells it out: cut after
    outputs = []
    with evaluating(model):  # a few rows at a time: each row's KV cache spans the whole context
        for i in range(0, len(prompts), batch_size):
            outputs += generate(model, [np.asarray(p) for p in prompts[i:i + batch_size]],
                                max_new_tokens, temperature=0.0, stop_tokens=stop or None)
    replies = []
    for p, out in zip(prompts, outputs):
        text = tokenizer.decode([int(i) for i in out[len(p):]])
        replies.append(text.split(end)[0])
    return replies


def exact_match(model: Any, tokenizer: Any, task: Task, questions: Sequence[str],
                template: str | None = None, max_new_tokens: int = 24) -> float:
    """The fraction of `questions` whose greedy reply the task's checker accepts."""
    replies = answer(model, tokenizer, questions, template, max_new_tokens)
    return float(np.mean([task.check(q, r) for q, r in zip(questions, replies)]))
