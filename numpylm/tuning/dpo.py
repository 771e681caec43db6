"""Direct preference optimisation, part 4 of the guide: learn from "this answer is better than
that one" without a reward model or reinforcement learning (Rafailov et al. 2023).

The derivation, in five lines. RLHF maximises reward minus a KL penalty to a reference model:

    max_pi  E[r(x, y)] - beta KL(pi(.|x) || pi_ref(.|x))

whose optimum is pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x). Solved for the reward,
r(x, y) = beta log(pi*(y|x) / pi_ref(y|x)) + beta log Z(x). Under the Bradley-Terry model a
person prefers y_w to y_l with probability sigmoid(r(x, y_w) - r(x, y_l)), in which Z(x)
cancels. Substituting the policy for pi* and maximising the likelihood of the preferences:

    loss = -log sigmoid(beta [(log pi(y_w|x) - log pi_ref(y_w|x))
                              - (log pi(y_l|x) - log pi_ref(y_l|x))])

The policy itself is the reward model: beta log(pi / pi_ref) is its *implicit reward*, and
training pushes the chosen answer's up and the rejected one's down, while the reference keeps
it from drifting where no preference was expressed. log pi(y|x) is the sum of the answer's
token log-probabilities (the prompt's tokens are not counted: the same mask as SFT).

The reference is frozen, so its log-probabilities are computed once, before training, and
cached. -log sigmoid(z) is computed as log(1 + exp(-z)) = logsumexp(0, -z), which never
overflows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from numpylm import functional as F
from numpylm.autograd.tensor import Tensor, no_grad
from numpylm.models.base import IGNORE_INDEX
from numpylm.nn.module import Module, evaluating
from numpylm.optim import AdamW, clip_grad_norm_
from numpylm.tuning.data import PreferencePair
from numpylm.tuning.sft import SFTExample, encode_conversation, pad_batch

__all__ = ["EncodedPair", "encode_pairs", "sequence_logprobs", "dpo_loss", "DPOResult",
           "dpo_train", "preference_accuracy"]


@dataclass(frozen=True)
class EncodedPair:
    chosen: SFTExample
    rejected: SFTExample


def encode_pairs(pairs: Sequence[PreferencePair], tokenizer: Any,
                 template: str | None = None) -> list[EncodedPair]:
    """Each pair as two SFT examples: prompt + chosen answer, prompt + rejected answer."""
    out = []
    for pair in pairs:
        chosen, rejected = ([*pair.prompt, {"role": "assistant", "content": a}]
                            for a in (pair.chosen, pair.rejected))
        out.append(EncodedPair(encode_conversation(chosen, tokenizer, template),
                               encode_conversation(rejected, tokenizer, template)))
    return out


def sequence_logprobs(model: Any, x: np.ndarray, y: np.ndarray) -> Tensor:
    """(B,) sum over t of log p(y_t | x_<=t), over the targets that are not IGNORE_INDEX."""
    logits, _ = model(x)
    logp = F.log_softmax(logits, axis=-1)  # (B, T, V)
    B, T = y.shape
    keep = y != IGNORE_INDEX
    rows, cols = np.nonzero(np.ones((B, T), bool))
    picked = F.getitem(logp, (rows, cols, np.where(keep, y, 0).reshape(-1)))  # (B*T,)
    picked = F.reshape(picked, shape=(B, T)) * keep.astype(logp.dtype)
    return F.sum(picked, axis=1)


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Any,
             ref_rejected: Any, beta: float = 0.1) -> tuple[Tensor, dict[str, float]]:
    """The mean DPO loss over a batch of (B,) sequence log-probabilities, and its statistics:
    the implicit rewards' mean margin and the fraction of pairs whose chosen reward is higher."""
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    chosen_reward = (policy_chosen - np.asarray(ref_chosen)) * beta
    rejected_reward = (policy_rejected - np.asarray(ref_rejected)) * beta
    z = chosen_reward - rejected_reward
    zeros = np.zeros(z.shape, dtype=z.dtype)
    loss = F.mean(F.logsumexp(F.stack([zeros, -z], axis=0), axis=0))  # -log sigmoid(z)
    stats = {"reward_margin": float(np.mean(z.data)),
             "reward_accuracy": float(np.mean(z.data > 0)),
             "chosen_reward": float(np.mean(chosen_reward.data)),
             "rejected_reward": float(np.mean(rejected_reward.data))}
    return loss, stats


def _logprobs(model: Any, examples: Sequence[SFTExample], batch_size: int = 16) -> np.ndarray:
    out = []
    with evaluating(model), no_grad():
        for i in range(0, len(examples), batch_size):
            x, y = pad_batch(examples[i:i + batch_size])
            out.append(sequence_logprobs(model, x, y).data)
    return np.concatenate(out)


def preference_accuracy(model: Any, pairs: Sequence[EncodedPair]) -> float:
    """The fraction of pairs where the model gives the chosen answer the higher probability."""
    chosen = _logprobs(model, [p.chosen for p in pairs])
    rejected = _logprobs(model, [p.rejected for p in pairs])
    return float(np.mean(chosen > rejected))


@dataclass
class DPOResult:
    losses: list[float]
    stats: list[dict[str, float]]


def dpo_train(model: Module, pairs: Sequence[EncodedPair], steps: int, batch_size: int = 8,
              beta: float = 0.1, lr: float = 1e-4, grad_clip: float = 1.0, seed: int = 0,
              reference: Any = None, log: Callable[[str], None] | None = None,
              log_interval: int = 10) -> DPOResult:
    """DPO on `pairs`. The reference is `reference`, or the model as it is now (for LoRA,
    the base model, since B = 0); its log-probabilities are computed once here."""
    reference = model if reference is None else reference
    ref_c = _logprobs(reference, [p.chosen for p in pairs])
    ref_r = _logprobs(reference, [p.rejected for p in pairs])
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("dpo_train: no parameter requires a gradient")
    optimizer = AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    result = DPOResult([], [])
    model.train()
    for step in range(steps):
        pick = rng.integers(len(pairs), size=batch_size)
        # chosen and rejected in one batch: one forward, then split
        x, y = pad_batch([pairs[i].chosen for i in pick] + [pairs[i].rejected for i in pick])
        for p in params:
            p.grad = None
        logps = sequence_logprobs(model, x, y)
        loss, stats = dpo_loss(logps[:batch_size], logps[batch_size:], ref_c[pick],
                               ref_r[pick], beta)
        loss.backward()
        if grad_clip:
            clip_grad_norm_(params, grad_clip)
        optimizer.step()
        result.losses.append(float(loss.item()))
        result.stats.append(stats)
        if log and (step % log_interval == 0 or step == steps - 1):
            log(f"step {step:4d}  loss {result.losses[-1]:.4f}  margin "
                f"{stats['reward_margin']:+.3f}  accuracy {stats['reward_accuracy']:.2f}")
    model.eval()
    return result
