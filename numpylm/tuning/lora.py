"""LoRA, part 4 of the guide: adapt a model by training two thin matrices per layer instead of
the layer itself (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

A linear layer y = W x (W of shape (out, in)) becomes

    y = W x + (alpha / r) B A x,       A (r, in) random, B (out, r) zero,  r << min(in, out)

W is frozen; only A and B are trained. Why it works: the change fine-tuning makes to a
pretrained matrix has low "intrinsic rank", so a rank-r update captures most of it with
r (in + out) numbers instead of in * out (rank 8 on a 576 x 576 projection: 9,216 instead of
331,776). B starts at zero, so at step 0 the adapted model *is* the base model, and the
optimiser only ever moves away from it. alpha / r keeps the update's scale independent of r
when r changes (alpha is fixed while r is tuned). Dropout, when asked, applies to the
adapter's input only.

`merge()` folds the update into W (W' = W + (alpha/r) B A, then the layer costs what it
cost before, nothing at inference); `unmerge()` takes it out again. Both are proven equal
to the adapted forward in the tests.

Names and shapes are PEFT's (`<module>.base_layer.weight`, `<module>.lora_A.weight` (r, in),
`<module>.lora_B.weight` (out, r)), so `numpylm.tuning.peft_io` saves adapters that PEFT loads
and loads adapters that PEFT saves. GPT-2's `Conv1D` stores W as (in, out) ("fan in, fan
out"); its update is (B A)^T, as PEFT's `fan_in_fan_out=True`.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from numpylm import functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.nn.layers import Linear, get_rng
from numpylm.nn.module import Module, Parameter

__all__ = ["LoRAConfig", "LoRALinear", "apply_lora", "lora_layers", "lora_state_dict",
           "merge_lora", "unmerge_lora", "trainable_parameters", "freeze"]


@dataclass
class LoRAConfig:
    """The settings PEFT's `LoraConfig` calls r, lora_alpha, target_modules, lora_dropout."""

    r: int = 8
    lora_alpha: float = 16.0
    target_modules: Sequence[str] | str = ("q_proj", "v_proj")
    lora_dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoRAConfig.r (the rank) must be an integer >= 1, got {self.r!r}")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)) \
                or not 0 < self.lora_alpha < math.inf:
            raise ValueError(f"LoRAConfig.lora_alpha must be a number > 0, got {self.lora_alpha!r}")
        if not isinstance(self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"LoRAConfig.lora_dropout must be in [0, 1), "
                             f"got {self.lora_dropout!r}")
        targets = self.target_modules
        if isinstance(targets, str):
            if not targets:
                raise ValueError("LoRAConfig.target_modules is empty")
        else:
            targets = list(targets)
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ValueError(f"LoRAConfig.target_modules must be a regex string or a "
                                 f"non-empty list of module names, got {self.target_modules!r}")
            self.target_modules = tuple(targets)

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    def matches(self, name: str) -> bool:
        """PEFT's rule: a string is a regex the whole module name must match; a list
        matches a name equal to an entry or ending in "." + entry."""
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, name) is not None
        return any(name == t or name.endswith("." + t) for t in self.target_modules)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not isinstance(self.target_modules, str):
            d["target_modules"] = list(self.target_modules)
        return d


def _fan_in_fan_out(base: Module) -> bool:
    """True for GPT-2's Conv1D (weight (in, out)), False for Linear (weight (out, in))."""
    return type(base).__name__ == "Conv1D"


class LoRALinear(Module):
    """`base_layer(x) + (alpha/r) lora_B(lora_A(dropout(x)))`, base frozen.

    `base_layer` is a `Linear` or GPT-2's `Conv1D` (or any module with a 2-D `weight` and an
    optional `bias`; `numpylm.tuning.qlora` passes a frozen quantized one).
    """

    def __init__(self, base_layer: Module, r: int = 8, lora_alpha: float = 16.0,
                 lora_dropout: float = 0.0, rng: int | np.random.Generator | None = None) -> None:
        super().__init__()
        LoRAConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout)  # validates
        rng = get_rng(rng)
        self.fan_in_fan_out = _fan_in_fan_out(base_layer)
        shape = tuple(base_layer.weight.shape)
        self.out_features, self.in_features = shape[::-1] if self.fan_in_fan_out else shape
        self.r, self.lora_alpha, self.lora_dropout = r, float(lora_alpha), float(lora_dropout)
        self.scaling = self.lora_alpha / r
        self.merged = False
        dtype = base_layer.weight.dtype
        self.base_layer = base_layer
        # A: PEFT's default, Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)),
        # which is also numpylm's Linear default. B: zeros, so the update starts at 0.
        self.lora_A = Linear(self.in_features, r, bias=False, dtype=dtype, rng=rng)
        self.lora_B = Linear(r, self.out_features, bias=False, dtype=dtype, rng=rng)
        self.lora_B.weight.data[...] = 0.0
        # `rng` by name: the training loop saves and restores every module's `rng` on resume.
        self.rng = np.random.default_rng(rng.integers(2**63))
        freeze(base_layer)

    # The inference steppers read `layer.weight.data` and `layer.bias`: give them the
    # effective weight, so decoding an unmerged adapter is right (merge() makes it cheap).
    @property
    def weight(self) -> Tensor:
        w = self.base_layer.weight.data
        if self.merged:
            return Tensor(w)
        return Tensor(w + self.delta_weight().astype(w.dtype))

    @property
    def bias(self) -> Tensor | None:
        return self.base_layer.bias

    def delta_weight(self) -> np.ndarray:
        """(alpha/r) B A in the base weight's layout ((out, in), or (in, out) for Conv1D)."""
        delta = self.scaling * (self.lora_B.weight.data @ self.lora_A.weight.data)
        return delta.T if self.fan_in_fan_out else delta

    def forward(self, x: Tensor) -> Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        h = x
        if self.lora_dropout and self.training:
            h = F.dropout(x, p=self.lora_dropout, training=True, rng=self.rng)
        # x A^T B^T: two thin products, (.., in) -> (.., r) -> (.., out), never an (out, in)
        return y + self.lora_B(self.lora_A(h)) * self.scaling

    def merge(self) -> None:
        """W <- W + (alpha/r) B A: the layer now costs what the base layer cost."""
        if not getattr(self.base_layer, "mergeable", True):
            raise ValueError("LoRALinear.merge: the base layer is quantized; merging would "
                             "re-quantize it (merge into a float copy of the base instead)")
        if not self.merged:
            w = self.base_layer.weight.data
            w += self.delta_weight().astype(w.dtype)
            self.merged = True

    def unmerge(self) -> None:
        """W <- W - (alpha/r) B A: back to the frozen base plus a separate adapter."""
        if self.merged:
            w = self.base_layer.weight.data
            w -= self.delta_weight().astype(w.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return (f"{self.in_features} -> {self.out_features}, r={self.r}, "
                f"alpha={self.lora_alpha:g}, dropout={self.lora_dropout:g}")


def freeze(module: Module) -> Module:
    """Stop gradients to every parameter of `module` (they stay in its state dict)."""
    for p in module.parameters():
        p.requires_grad = False
        p.grad = None
    return module


def _linear_like(module: Module) -> bool:
    w = getattr(module, "weight", None)
    return isinstance(module, Module) and not isinstance(module, LoRALinear) \
        and w is not None and getattr(w, "ndim", 0) == 2 \
        and type(module).__name__ in ("Linear", "Conv1D", "FrozenQuantizedLinear")


def _set_child(model: Module, name: str, child: Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model
    for part in parent_name.split(".") if parent_name else ():
        parent = parent._modules[part]
    setattr(parent, attr, child)


def apply_lora(model: Module, config: LoRAConfig,
               rng: int | np.random.Generator | None = 0,
               wrap: Any = None) -> list[str]:
    """Freeze `model` and wrap each linear layer whose name `config` matches in a
    `LoRALinear`; return the wrapped names. A pattern that matches nothing is an error listing
    the linear layers that exist. `wrap(module) -> Module` may transform each base first
    (QLoRA quantizes it)."""
    rng = get_rng(rng)
    candidates = [name for name, m in model.named_modules() if name and _linear_like(m)]
    chosen = [name for name in candidates if config.matches(name)]
    if not chosen:
        suffixes = sorted({n.rsplit(".", 1)[-1] for n in candidates})
        raise ValueError(f"LoRA: target_modules {config.to_dict()['target_modules']!r} "
                         f"match no linear layer; the model's are named {suffixes} "
                         f"(e.g. {candidates[:3]})")
    if isinstance(config.target_modules, (tuple, list)):
        unused = [t for t in config.target_modules
                  if not any(n == t or n.endswith("." + t) for n in chosen)]
        if unused:
            suffixes = sorted({n.rsplit(".", 1)[-1] for n in candidates})
            raise ValueError(f"LoRA: target module(s) {unused} match no linear layer; "
                             f"the model's are named {suffixes}")
    freeze(model)
    modules = dict(model.named_modules())
    for name in chosen:
        base = modules[name] if wrap is None else wrap(modules[name])
        _set_child(model, name, LoRALinear(base, config.r, config.lora_alpha,
                                           config.lora_dropout, rng))
    model.lora_config = config  # a plain attribute: not a parameter, not a module
    return chosen


def lora_layers(model: Module) -> dict[str, LoRALinear]:
    """Module name -> LoRALinear, in model order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_state_dict(model: Module) -> dict[str, np.ndarray]:
    """The adapters only: `<module>.lora_A.weight` and `<module>.lora_B.weight`."""
    out = {}
    for name, layer in lora_layers(model).items():
        out[f"{name}.lora_A.weight"] = layer.lora_A.weight.data
        out[f"{name}.lora_B.weight"] = layer.lora_B.weight.data
    return out


def merge_lora(model: Module) -> None:
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()


def trainable_parameters(model: Module) -> list[tuple[str, Parameter]]:
    """(name, parameter) of every parameter still requiring a gradient: after `apply_lora`,
    the adapters alone. This is what goes into the optimiser."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]
