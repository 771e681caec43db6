"""numpylm's DPO loss against TRL's, on the same log-probabilities (only where trl is installed).

TRL computes the DPO loss inside `DPOTrainer._compute_loss`, from the per-token log-probabilities
a model returns for the chosen and rejected completions (stacked [chosen; rejected]) and the
reference's sequence log-probabilities. The test calls that method with a stand-in trainer
(only the settings the sigmoid loss reads) and a stand-in model that returns given per-token
log-probabilities, so TRL's own arithmetic produces the expected loss, its reward statistics
and, through torch's autograd, the gradient.
"""
from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest

from numpylm.autograd.tensor import Tensor
from numpylm.tuning.dpo import dpo_loss

torch = pytest.importorskip("torch")
trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")


def trl_loss(per_token, mask, ref_chosen, ref_rejected, beta):
    """TRL's loss, reward statistics and d loss / d per-token log-probabilities."""
    rows, S = per_token.shape
    log_probs = torch.tensor(per_token * mask, dtype=torch.float64, requires_grad=True)
    outputs = SimpleNamespace(log_probs=log_probs, entropy=torch.zeros(rows, S, dtype=torch.float64),
                              mean_logits=torch.zeros(rows, S, dtype=torch.float64),
                              is_top1=torch.zeros(rows, S, dtype=torch.bool))

    class Model:
        training = True

        def __call__(self, **kwargs):
            return outputs

    identity = lambda x: x  # noqa: E731  (one process: gathering changes nothing)
    trainer = SimpleNamespace(
        model=Model(), accelerator=SimpleNamespace(device="cpu", gather=identity,
                                                   gather_for_metrics=identity),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=["sigmoid"], loss_weights=[1.0], beta=beta,
        use_weighting=False, label_smoothing=0.0, _total_train_tokens=0, _tp_size=1,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
    completion = torch.tensor(np.concatenate([np.zeros((rows, 1)), mask], axis=1), dtype=torch.long)
    inputs = {"input_ids": torch.zeros(rows, S + 1, dtype=torch.long),
              "attention_mask": torch.ones(rows, S + 1, dtype=torch.long),
              "completion_mask": completion,
              "ref_chosen_logps": torch.tensor(ref_chosen, dtype=torch.float64),
              "ref_rejected_logps": torch.tensor(ref_rejected, dtype=torch.float64)}
    loss = trl_dpo.DPOTrainer._compute_loss(trainer, trainer.model, inputs, return_outputs=False)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return float(loss.detach()), metrics, log_probs.grad.numpy()


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_loss_equals_trls(beta):
    rng = np.random.default_rng(int(beta * 10))
    B, S = 5, 7
    per_token = -rng.exponential(1.0, size=(2 * B, S))      # log-probabilities are <= 0
    mask = (rng.random((2 * B, S)) < 0.7).astype(float)
    mask[:, 0] = 1.0                                         # every completion has a token
    ref = (per_token * mask).sum(1) + rng.normal(0, 2.0, 2 * B)  # a reference that differs
    expected, metrics, grad = trl_loss(per_token, mask, ref[:B], ref[B:], beta)

    logps = Tensor((per_token * mask).sum(1), requires_grad=True)
    chosen = logps[:B]
    rejected = logps[B:]
    loss, stats = dpo_loss(chosen, rejected, ref[:B], ref[B:], beta=beta)
    assert loss.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert stats["reward_margin"] == pytest.approx(metrics["rewards/margins"], rel=1e-12)
    assert stats["reward_accuracy"] == pytest.approx(metrics["rewards/accuracies"])
    assert stats["chosen_reward"] == pytest.approx(metrics["rewards/chosen"], rel=1e-12)
    assert stats["rejected_reward"] == pytest.approx(metrics["rewards/rejected"], rel=1e-12)
    loss.backward()
    # TRL sums every position's log-probability (the model zeroes the masked ones), so each
    # position's gradient is that of its sequence's log-probability
    np.testing.assert_allclose(grad, np.broadcast_to(logps.grad[:, None], grad.shape),
                               rtol=1e-10, atol=1e-15)
