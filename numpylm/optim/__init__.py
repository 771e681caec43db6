"""Optimisers: SGD, Adam and AdamW with torch.optim's update rules, learning-rate schedules,
gradient clipping, and optimiser state that saves to safetensors.

Part of the engine under everything: how gradients become parameter updates.
"""
from numpylm.optim.adam import Adam, AdamW
from numpylm.optim.clip import clip_grad_norm_, grad_norm
from numpylm.optim.optimizer import Optimizer
from numpylm.optim.schedules import (
    ConstantSchedule,
    LinearWarmupSchedule,
    WarmupCosineSchedule,
    constant_lr,
    linear_warmup_lr,
    set_lr,
    warmup_cosine_lr,
)
from numpylm.optim.serialize import optimizer_state_from_tensors, optimizer_state_to_tensors
from numpylm.optim.sgd import SGD

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "ConstantSchedule",
    "LinearWarmupSchedule",
    "Optimizer",
    "WarmupCosineSchedule",
    "clip_grad_norm_",
    "constant_lr",
    "grad_norm",
    "linear_warmup_lr",
    "optimizer_state_from_tensors",
    "optimizer_state_to_tensors",
    "set_lr",
    "warmup_cosine_lr",
]
