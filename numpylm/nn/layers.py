"""The basic layers, with PyTorch's parameter names, shapes and default initialisations, so
that their state dicts interchange:

| layer | parameters | default initialisation |
|---|---|---|
| Linear(in, out) | weight (out, in), bias (out,) | both U(-1/sqrt(in), 1/sqrt(in)) |
| Embedding(V, C) | weight (V, C) | N(0, 1) |
| LayerNorm(C) | weight (C,), bias (C,) | ones, zeros |
| RMSNorm(C) | weight (C,) | ones |

Randomness comes from `rng` (a seed or a `numpy.random.Generator`); without one, from the
generator that `numpylm.nn.manual_seed` resets. Parameters are float32 unless `dtype` says.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

import numpy as np

from numpylm import functional as F
from numpylm.autograd.tensor import Tensor
from numpylm.nn.module import Module, Parameter

_default = {"rng": np.random.default_rng(0)}


def manual_seed(seed: int) -> None:
    """Reset the generator that layers use when no `rng` is given."""
    _default["rng"] = np.random.default_rng(seed)


def get_rng(rng: int | np.random.Generator | None = None) -> np.random.Generator:
    """A generator from a seed, a generator (returned as is) or None (the default one)."""
    if rng is None:
        return _default["rng"]
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def init_uniform(rng: np.random.Generator, fan: int, shape: tuple[int, ...],
                 dtype: Any) -> Parameter:
    """PyTorch's default initialisation of linear and recurrent layers: U(-1/sqrt(fan),
    1/sqrt(fan)), with fan the input width (Linear) or the hidden size (RNN, LSTM, GRU)."""
    bound = 1.0 / math.sqrt(fan) if fan else 0.0
    return Parameter(rng.uniform(-bound, bound, shape), dtype)


def affine(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """x W^T + b: (..., in) @ (in, out) -> (..., out), W stored (out, in) as in PyTorch."""
    y = F.matmul(x, F.transpose(w))
    return y if b is None else y + b


class Linear(Module):
    """y = x W^T + b, x (..., in) -> y (..., out)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = np.float32, rng: int | np.random.Generator | None = None) -> None:
        super().__init__()
        rng = get_rng(rng)
        self.in_features, self.out_features = in_features, out_features
        self.weight = init_uniform(rng, in_features, (out_features, in_features), dtype)
        self.bias = init_uniform(rng, in_features, (out_features,), dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: expected input (..., {self.in_features}), "
                             f"got {x.shape}")
        return affine(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A table of vectors: ids (...) -> (..., C)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: Any = np.float32,
                 rng: int | np.random.Generator | None = None) -> None:
        super().__init__()
        rng = get_rng(rng)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(rng.standard_normal((num_embeddings, embedding_dim)), dtype)

    def forward(self, ids: Any) -> Tensor:
        return F.embedding(ids.data if isinstance(ids, Tensor) else ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise the last axis, then scale and shift (Ba et al. 2016)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5, bias: bool = True,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(normalized_shape), dtype)
        self.bias = Parameter(np.zeros(normalized_shape), dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"LayerNorm: expected input (..., {self.weight.shape[0]}), "
                             f"got {x.shape}")
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class RMSNorm(Module):
    """Scale the last axis by its root mean square (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6, dtype: Any = np.float32) -> None:
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(dim), dtype)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.weight, eps=self.eps)


class Dropout(Module):
    """Inverted dropout in training mode, identity in eval mode."""

    def __init__(self, p: float = 0.5, rng: int | np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = get_rng(rng) if rng is not None else None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        return F.dropout(x, self.p, True, self.rng if self.rng is not None else get_rng())

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ModuleList(Module):
    """A list of modules, registered as `0`, `1`, ... (GPT-2's `h.0`, `h.1`, ...)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))


class Sequential(ModuleList):
    """Modules applied one after another."""

    def __init__(self, *modules: Module) -> None:
        super().__init__(modules)

    def forward(self, x: Any) -> Any:
        for m in self:
            x = m(x)
        return x
