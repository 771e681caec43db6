"""Reinforcement learning from verifiable rewards, part 4 of the guide: a GRPO-style loop (Shao
et al. 2024, "DeepSeekMath"), small enough to read in one sitting.

No preference data and no reward model: a task with a checker says whether an answer is right.
For each prompt, sample a *group* of G answers from the current policy, reward each (1 if the
checker accepts it, else 0), and compare every answer with its own group:

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps)          (the group-normalised advantage)

An answer better than its siblings gets a positive advantage, a worse one a negative one, and
a group whose answers all score the same teaches nothing (all A_i = 0): the group mean is the
baseline that PPO would need a learned value network for. The update raises the
log-probability of each answer in proportion to its advantage, averaged over its tokens:

    loss = -mean_i [ A_i * (1/|o_i|) sum_t log pi(o_i,t | prompt, o_i,<t) ]  +  beta * KL

With one gradient step per batch of samples the policy ratio of PPO's clipped objective is
exactly 1, so the clipping never acts and is left out. The KL term keeps the policy near a
frozen reference, per token with the unbiased, always-positive estimator
k3 = exp(q - p) - (q - p) - 1 (p = log pi, q = log pi_ref); `beta = 0` drops it (several later
recipes do). The std is the sample standard deviation (ddof = 1), as TRL computes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from numpylm import functional as F
from numpylm.autograd.tensor import Tensor, no_grad
from numpylm.chat import render_chat
from numpylm.inference.generate import generate
from numpylm.models.base import IGNORE_INDEX
from numpylm.nn.module import Module, evaluating
from numpylm.optim import AdamW, clip_grad_norm_
from numpylm.tuning.data import Task

__all__ = ["group_advantages", "token_logprobs", "grpo_loss", "GRPOResult", "grpo_train"]


def group_advantages(rewards: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """(P, G) rewards of G answers to each of P prompts -> their advantages (P, G)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (prompts, group of >= 2 answers), got {rewards.shape}")
    mean = rewards.mean(axis=1, keepdims=True)
    std = rewards.std(axis=1, ddof=1, keepdims=True)
    return (rewards - mean) / (std + eps)


def token_logprobs(model: Any, x: np.ndarray, y: np.ndarray) -> Tensor:
    """(B, T): log p(y_t | x_<=t), 0 where y is IGNORE_INDEX."""
    logits, _ = model(x)
    logp = F.log_softmax(logits, axis=-1)
    B, T = y.shape
    keep = y != IGNORE_INDEX
    rows, cols = np.nonzero(np.ones((B, T), bool))
    picked = F.getitem(logp, (rows, cols, np.where(keep, y, 0).reshape(-1)))
    return F.reshape(picked, shape=(B, T)) * keep.astype(logp.dtype)


def grpo_loss(model: Any, x: np.ndarray, y: np.ndarray, advantages: np.ndarray,
              ref_logps: np.ndarray | None = None, beta: float = 0.0) -> Tensor:
    """The GRPO loss of the module docstring for B sampled answers (x, y masked to the answer)."""
    keep = (y != IGNORE_INDEX).astype(np.float64)
    lengths = np.maximum(keep.sum(axis=1), 1.0)
    logp = token_logprobs(model, x, y)  # (B, T)
    per_answer = F.sum(logp, axis=1) * (1.0 / lengths).astype(logp.dtype)
    loss = -F.mean(per_answer * np.asarray(advantages, dtype=logp.dtype))
    if beta and ref_logps is not None:
        d = np.asarray(ref_logps, dtype=logp.dtype) - logp        # q - p per token
        k3 = (F.exp(d) - d - 1.0) * keep.astype(logp.dtype)
        loss = loss + F.mean(F.sum(k3, axis=1) * (1.0 / lengths).astype(logp.dtype)) * beta
    return loss


@dataclass
class GRPOResult:
    rewards: list[float]   # mean reward of each step's samples
    losses: list[float]


def grpo_train(model: Module, tokenizer: Any, task: Task, steps: int, prompts_per_step: int = 4,
               group_size: int = 8, max_new_tokens: int = 16, temperature: float = 1.0,
               lr: float = 1e-4, beta: float = 0.0, reference: Any = None,
               template: str | None = None, seed: int = 0, end: str = "<|im_end|>",
               log: Callable[[str], None] | None = None) -> GRPOResult:
    """GRPO on `task`: each step samples `group_size` answers to `prompts_per_step` fresh
    questions, rewards them with the task's checker, and takes one AdamW step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    result = GRPOResult([], [])
    for step in range(steps):
        questions = [task.make(rng)[0] for _ in range(prompts_per_step)]
        prompts = [render_chat([{"role": "user", "content": q}], tokenizer, template,
                               add_generation_prompt=True).ids for q in questions]
        batch = [np.asarray(p) for p in prompts for _ in range(group_size)]
        with evaluating(model):
            outputs = generate(model, batch, max_new_tokens, temperature=temperature,
                               seed=int(rng.integers(2**31)))
        rewards = np.zeros((prompts_per_step, group_size))
        for k, (prompt, out) in enumerate(zip(batch, outputs)):
            reply = tokenizer.decode([int(i) for i in out[len(prompt):]]).split(end)[0]
            p, g = divmod(k, group_size)
            rewards[p, g] = float(task.check(questions[p], reply))
        adv = group_advantages(rewards).reshape(-1)
        T = max(len(o) for o in outputs) - 1
        x = np.zeros((len(outputs), T), dtype=np.int64)
        y = np.full((len(outputs), T), IGNORE_INDEX, dtype=np.int64)
        for k, (prompt, out) in enumerate(zip(batch, outputs)):
            x[k, :len(out) - 1] = out[:-1]
            y[k, len(prompt) - 1:len(out) - 1] = out[len(prompt):]  # the answer's tokens
        ref = None
        if beta:
            with no_grad(), evaluating(reference if reference is not None else model):
                ref = token_logprobs(reference if reference is not None else model, x, y).data
        model.train()
        for p in params:
            p.grad = None
        loss = grpo_loss(model, x, y, adv, ref, beta)
        loss.backward()
        clip_grad_norm_(params, 1.0)
        optimizer.step()
        result.rewards.append(float(rewards.mean()))
        result.losses.append(float(loss.item()))
        if log:
            log(f"step {step:4d}  reward {rewards.mean():.3f}  loss {loss.item():+.4f}")
    model.eval()
    return result
