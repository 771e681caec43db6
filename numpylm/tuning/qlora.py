"""QLoRA-style tuning, part 4 of the guide: LoRA over a base whose matrices stay quantized
(Dettmers et al. 2023), so the frozen model takes a quarter (Q8_0: 8.5 bits a weight) or an
eighth (Q4_0: 4.5 bits) of its float32 memory while the adapters train in float32.

Nothing changes in the maths of `numpylm.tuning.lora`: y = W x + (alpha/r) B A x. W is frozen
anyway, so it may as well be stored in the fewest bits that keep it accurate; only A and B
need float32 and optimiser moments. The gradient still flows *through* W to the adapters of
earlier layers (dL/dx = dL/dy W), so W is dequantized in each forward, used, and dropped with
the graph after backward.

What this buys, and what not: the weights at rest (and everything outside the current step's
graph) are quantized; during one forward/backward each layer's float32 W lives until the
backward pass has used it, so the peak of a step is not lower than with a float base. The
real QLoRA dequantizes inside the matrix product kernel; this version keeps the reading
simple and says so. The adapters cannot be merged into quantized W (that would re-quantize
it); merge a float copy of the base instead.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from numpylm import functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.nn.layers import Linear
from numpylm.nn.module import Module
from numpylm.quant import QuantizedLinear
from numpylm.tuning.lora import LoRAConfig, _set_child, apply_lora

__all__ = ["FrozenQuantizedLinear", "quantize_linears", "apply_qlora", "model_bytes"]


class FrozenQuantizedLinear(Module):
    """A frozen linear layer kept as a `QuantizedLinear`: y = x W^T + b, W decoded on use."""

    mergeable = False

    def __init__(self, quantized: QuantizedLinear) -> None:
        super().__init__()
        self.quantized = quantized  # not a Parameter: it never trains and is not saved

    @classmethod
    def from_linear(cls, linear: Linear, ggml_type: str = "q8_0") -> "FrozenQuantizedLinear":
        bias = None if linear.bias is None else linear.bias.data
        return cls(QuantizedLinear.from_float(np.asarray(linear.weight.data, np.float32),
                                              ggml_type, bias))

    @property
    def weight(self) -> Tensor:
        """The dequantized (out, in) weight, float32 (what the inference steppers read)."""
        return Tensor(self.quantized.dequantized())

    @property
    def bias(self) -> Tensor | None:
        b = self.quantized.bias
        return None if b is None else Tensor(b)

    @property
    def nbytes(self) -> int:
        return self.quantized.nbytes

    def forward(self, x: Tensor) -> Tensor:
        w = Tensor(self.quantized.dequantized().astype(x.dtype, copy=False))  # no gradient
        y = F.matmul(x, F.transpose(w))
        return y if self.quantized.bias is None else y + self.quantized.bias.astype(x.dtype)

    def extra_repr(self) -> str:
        q = self.quantized
        return f"{q.in_features}, {q.out_features}, {q.ggml_type.name}"


def quantize_linears(model: Module, ggml_type: str = "q8_0",
                     under: str = "model.layers") -> list[str]:
    """Replace every `Linear` whose name starts with `under` by a frozen quantized copy
    (the embeddings, the head and the norms stay float, as in QLoRA)."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, Linear) and n.startswith(under)]
    if not names:
        raise ValueError(f"quantize_linears: no Linear layer under {under!r}")
    modules = dict(model.named_modules())
    for name in names:
        _set_child(model, name, FrozenQuantizedLinear.from_linear(modules[name], ggml_type))
    return names


def apply_qlora(model: Module, config: LoRAConfig, ggml_type: str = "q8_0",
                rng: Any = 0) -> list[str]:
    """Quantize the decoder's linear layers to `ggml_type`, freeze everything, add adapters."""
    quantize_linears(model, ggml_type)
    return apply_lora(model, config, rng=rng)


def model_bytes(model: Module) -> dict[str, int]:
    """Bytes of float parameters, of quantized weights, and of the trainable parameters."""
    floats = sum(p.data.nbytes for p in model.parameters())
    quantized = sum(m.nbytes for m in model.modules() if isinstance(m, FrozenQuantizedLinear))
    trainable = sum(p.data.nbytes for p in model.parameters() if p.requires_grad)
    return {"float_parameters": floats, "quantized": quantized, "trainable": trainable,
            "total": floats + quantized}
