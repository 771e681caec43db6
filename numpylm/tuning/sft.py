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

`finetune` is the loop: sample a batch, loss, backward, clip, AdamW on the parameters that
still require gradients (all of them for full fine-tuning, the adapters alone after
`apply_lora`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from numpylm.blas import choose_threads, threads
from numpylm.chat import render_chat
from numpylm.inference.generate import generate
from numpylm.models.base import IGNORE_INDEX
from numpylm.nn.module import Module, evaluating
from numpylm.optim import AdamW, clip_grad_norm_
from numpylm.tuning.data import Task, check_conversation

__all__ = ["SFTExample", "encode_conversation", "encode_conversations", "pad_batch",
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


@dataclass
class FinetuneResult:
    losses: list[float]
    seconds: float
    trainable: int      # number of trained parameters
    total: int          # number of parameters of the model


def finetune(model: Module, examples: Sequence[SFTExample], steps: int, batch_size: int = 8,
             lr: float = 1e-3, weight_decay: float = 0.0, grad_clip: float = 1.0,
             seed: int = 0, loss_fn: Callable[[Module, np.ndarray, np.ndarray], Any] | None = None,
             log: Callable[[str], None] | None = None, log_interval: int = 10,
             pack_block: int | None = None) -> FinetuneResult:
    """`steps` AdamW updates of the parameters that require gradients, on random batches of
    `examples`; `loss_fn(model, x, y)` defaults to the model's own masked cross-entropy.
    With `pack_block` (Llama models), each batch's examples are packed into rows of that many
    tokens with attention kept inside each example (`numpylm.tuning.packing`) instead of
    padded."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("finetune: no parameter requires a gradient (everything is frozen)")
    if not examples:
        raise ValueError("finetune: no examples")
    optimizer = AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    loss_fn = loss_fn or (lambda m, x, y: m(x, y)[1])
    losses, start = [], time.perf_counter()
    model.train()
    # The typical product: a batch's tokens through the widest matrix (BLAS threads only pay
    # off for large products; small ones run faster on one thread, see numpylm.blas).
    widest = max((p.size for p in model.parameters() if p.ndim == 2), default=0)
    rows = batch_size * max(len(e.ids) for e in examples[:64])
    with threads(choose_threads(2.0 * rows * widest)):
        _steps(model, examples, steps, batch_size, optimizer, params, rng, loss_fn, grad_clip,
               losses, log, log_interval, pack_block)
    model.eval()
    return FinetuneResult(losses, time.perf_counter() - start,
                          sum(p.size for p in params), model.num_parameters())


def _steps(model, examples, steps, batch_size, optimizer, params, rng, loss_fn, grad_clip,
           losses, log, log_interval, pack_block) -> None:
    from numpylm.tuning.packing import pack, packed_forward  # packing builds on this module

    for step in range(steps):
        batch = [examples[i] for i in rng.integers(len(examples), size=batch_size)]
        for p in params:
            p.grad = None
        if pack_block:
            x, y, doc = pack(batch, pack_block)
            loss = packed_forward(model, x, doc, y)[1]
        else:
            x, y = pad_batch(batch)
            loss = loss_fn(model, x, y)
        value = float(loss.item())
        if not np.isfinite(value):
            raise FloatingPointError(f"finetune: the loss is {value} at step {step}")
        loss.backward()
        if grad_clip:
            clip_grad_norm_(params, grad_clip)
        optimizer.step()
        losses.append(value)
        if log and (step % log_interval == 0 or step == steps - 1):
            log(f"step {step:4d}  loss {value:.4f}")


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
