"""GPT, the decoder-only transformer (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners"), with GPT-2's names, shapes and conventions, so that GPT-2 weights load.

Shapes use one set of letters throughout: B batch, T time (sequence length), C channels
(n_embd), H heads, D head size (C // H), V vocabulary size.

    x = wte[idx] + wpe[pos]                         (B, T, C)
    for each block:                                 pre-LayerNorm residual blocks
        x = x + attn(ln_1(x))                       causal multi-head self-attention
        x = x + mlp(ln_2(x))                        c_fc -> GELU (tanh) -> c_proj, width 4C
    logits = ln_f(x) @ wte^T                        (B, T, V), the LM head tied to wte

Linear maps are GPT-2's `Conv1D`: the weight is stored (in, out) and y = x @ W + b (a
PyTorch `Linear` stores (out, in)). Attention uses the fused
`numpylm.functional.scaled_dot_product_attention` kernel by default (in training through
`packed_self_attention`, which also splits and merges the heads); `fused_attention=False`
uses its composed twin `numpylm.autograd.ops_attention.attention_composed`, which reads as
the textbook formula. Under `no_grad()` the forward pass runs as plain numpy
(`numpylm.models.gpt_inference`), the same arithmetic without the graph. Dropout is
applied to the embeddings and to each residual branch; GPT-2's dropout on the attention
weights is left out (the fused op has none), which matters only when training with
dropout > 0.

Reading and writing GPT-2 checkpoint directories is in `numpylm.models.gpt2_io`
(`GPT.from_pretrained`, `GPT.save_pretrained`, `load_pretrained`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from numpylm import functional as F
from numpylm.autograd.ops_attention import attention_composed, packed_self_attention
from numpylm.autograd.op import op
from numpylm.autograd.gradcheck_inputs import gradcheck_inputs
from numpylm.autograd.tensor import Tensor, is_grad_enabled
from numpylm.models.gpt_inference import forward_logits
from numpylm.nn import Dropout, Embedding, LayerNorm, Module, ModuleList, Parameter, get_rng


@dataclass
class GPTConfig:
    vocab_size: int = 50257          # V: number of token ids (GPT-2: 50257)
    block_size: int = 1024           # longest context the model sees (GPT-2: n_positions 1024)
    n_layer: int = 12                # number of transformer blocks
    n_head: int = 12                 # H: attention heads per block; must divide n_embd
    n_embd: int = 768                # C: width of the residual stream
    dropout: float = 0.0             # dropout on embeddings and residual branches (training)
    bias: bool = True                # biases in linear maps and LayerNorms (GPT-2: True)
    layer_norm_epsilon: float = 1e-5  # eps added to the variance in every LayerNorm
    fused_attention: bool = True     # the fused attention op, or its composed twin (slower)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"GPTConfig: {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_head ({self.n_head}) must divide "
                             f"n_embd ({self.n_embd})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout}")


@op
def conv1d(x, weight, bias=None):
    """GPT-2's linear map y = x @ W + b: x (..., in), W (in, out), b (out,) -> (..., out).

    Fused for speed: (B, T) are folded into one axis so that the forward and both gradients
    are each one 2-D GEMM (numpy runs a stacked (B, T, C) @ (C, N) as B separate, slower
    products), and the bias is added in place instead of through a second full-size array.
    """
    x, weight = np.asarray(x), np.asarray(weight)
    n_in, n_out = weight.shape
    if x.shape[-1] != n_in:
        raise ValueError(f"conv1d: expected input (..., {n_in}), got {x.shape}")
    x2 = x.reshape(-1, n_in)  # (N, in) with N = B * T
    y = x2 @ weight
    if bias is not None:
        y += bias

    def backward(g):
        g2 = g.reshape(-1, n_out)
        dx = lambda: (g2 @ weight.T).reshape(x.shape)  # dL/dx = g W^T
        dw = lambda: x2.T @ g2  # dL/dW = x^T g, summed over all N rows in one product
        db = None if bias is None else (lambda: g2.sum(axis=0))  # dL/db = sum of g's rows
        return dx, dw, db

    return y.reshape(*x.shape[:-1], n_out), backward


@gradcheck_inputs("conv1d")
def _conv1d_sample(rng: np.random.Generator):
    return conv1d, (rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)),
                    rng.standard_normal(5))


class Conv1D(Module):
    """GPT-2's linear map: weight (in, out), y = x @ W + b, initialised N(0, std^2)."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True, std: float = 0.02,
                 dtype: Any = np.float32, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.weight = Parameter(get_rng(rng).normal(0.0, std, (n_in, n_out)), dtype)
        self.bias = Parameter(np.zeros(n_out), dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return conv1d(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}, bias={self.bias is not None}"


class CausalSelfAttention(Module):
    def __init__(self, config: GPTConfig, dtype: Any, rng: np.random.Generator) -> None:
        super().__init__()
        C = config.n_embd
        self.n_head = config.n_head
        self.fused = config.fused_attention
        self.c_attn = Conv1D(C, 3 * C, config.bias, dtype=dtype, rng=rng)  # q, k, v at once
        # GPT-2 scales the init of projections into the residual stream by 1/sqrt(2 n_layer):
        # each block adds two of them, and the sum of 2L such terms should keep unit scale.
        self.c_proj = Conv1D(C, C, config.bias, 0.02 / math.sqrt(2 * config.n_layer),
                             dtype=dtype, rng=rng)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x: Tensor, kv_cache=None, layer: int = 0, attn_mask=None) -> Tensor:
        B, T, C = x.shape
        H = self.n_head
        qkv = self.c_attn(x)  # (B, T, 3C): q, k and v side by side
        if self.fused and kv_cache is None:
            # The same computation as below, with the head split and merge done as views
            # inside one op (see packed_self_attention).
            y = packed_self_attention(qkv, H, causal=True, attn_mask=attn_mask)  # (B, T, C)
            return self.resid_dropout(self.c_proj(y))
        # (B, T, 3, H, D) -> (3, B, H, T, D): one transpose for all three, then split.
        qkv = F.transpose(F.reshape(qkv, shape=(B, T, 3, H, C // H)), axes=(2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, H, T, D)
        if kv_cache is not None:
            # Keys and values of earlier tokens come from the cache; the new ones join them.
            k_all, v_all = kv_cache.append(layer, k.data, v.data)  # (B, H, L, D)
            k, v = Tensor(k_all), Tensor(v_all)
        attend = F.scaled_dot_product_attention if self.fused else attention_composed
        y = attend(q, k, v, causal=True, attn_mask=attn_mask)  # (B, H, T, D)
        y = F.reshape(F.transpose(y, axes=(0, 2, 1, 3)), shape=(B, T, C))  # heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(Module):
    def __init__(self, config: GPTConfig, dtype: Any, rng: np.random.Generator) -> None:
        super().__init__()
        C = config.n_embd
        self.c_fc = Conv1D(C, 4 * C, config.bias, dtype=dtype, rng=rng)
        self.c_proj = Conv1D(4 * C, C, config.bias, 0.02 / math.sqrt(2 * config.n_layer),
                             dtype=dtype, rng=rng)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # GELU, tanh approximation


class Block(Module):
    def __init__(self, config: GPTConfig, dtype: Any, rng: np.random.Generator) -> None:
        super().__init__()
        eps, C = config.layer_norm_epsilon, config.n_embd
        self.ln_1 = LayerNorm(C, eps, config.bias, dtype)
        self.attn = CausalSelfAttention(config, dtype, rng)
        self.ln_2 = LayerNorm(C, eps, config.bias, dtype)
        self.mlp = MLP(config, dtype, rng)

    def forward(self, x: Tensor, kv_cache=None, layer: int = 0, attn_mask=None) -> Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, layer, attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(Module):
    """GPT-2: `GPT(GPTConfig(...))` or `GPT(n_layer=..., ...)`; `forward(idx, targets)`."""

    def __init__(self, config: GPTConfig | None = None, *, dtype: Any = np.float32,
                 rng: int | np.random.Generator | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = GPTConfig(**kwargs)
        elif kwargs:
            raise TypeError(f"GPT: pass a GPTConfig or keyword settings, not both "
                            f"(got {sorted(kwargs)})")
        self.config = config
        rng = get_rng(rng)
        V, C = config.vocab_size, config.n_embd
        # Embedding draws N(0, 1) from `rng`; GPT-2 initialises with N(0, 0.02^2).
        self.wte = Embedding(V, C, dtype, rng=rng)
        self.wpe = Embedding(config.block_size, C, dtype, rng=rng)
        self.wte.weight.data *= 0.02
        self.wpe.weight.data *= 0.02
        self.drop = Dropout(config.dropout)
        self.h = ModuleList(Block(config, dtype, rng) for _ in range(config.n_layer))
        self.ln_f = LayerNorm(C, config.layer_norm_epsilon, config.bias, dtype)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def forward(self, idx: Any, targets: Any = None, *, kv_cache=None, attention_mask=None,
                position_ids=None, last_only: bool = False) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) token ids -> (logits (B, T, V), mean cross-entropy or None).

        Targets equal to -1 are ignored by the loss. For inference, `kv_cache` (from
        `init_kv_cache`) holds the keys and values of earlier tokens (inference only: no
        gradient flows through cached keys and values); `attention_mask`
        (B, L) is True at real tokens of the whole cached sequence (False at left padding);
        `position_ids` (B, T) default to the running position; `last_only` computes logits
        for the last position only, (B, 1, V).
        """
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if idx.ndim == 1:
            idx = idx[None, :]
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"GPT: idx must be integer token ids of shape (B, T), "
                             f"got {idx.dtype} of shape {idx.shape}")
        B, T = idx.shape
        start = 0 if kv_cache is None else kv_cache.length
        if start + T > self.config.block_size:
            raise ValueError(f"GPT: a sequence of {start + T} tokens is longer than "
                             f"block_size {self.config.block_size}; crop it to the last "
                             f"{self.config.block_size} tokens")
        if position_ids is None:
            position_ids = np.arange(start, start + T)  # (T,), broadcast over the batch
        position_ids = np.asarray(position_ids)
        if idx.size and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
            bad = idx[(idx < 0) | (idx >= self.config.vocab_size)].flat[0]
            raise ValueError(f"GPT: token id {bad} is outside the vocabulary "
                             f"[0, {self.config.vocab_size})")
        attn_mask = None
        if attention_mask is not None:
            attention_mask = np.asarray(attention_mask, dtype=bool)
            if attention_mask.shape != (B, start + T):
                raise ValueError(f"GPT: attention_mask must have shape {(B, start + T)} "
                                 f"(batch, cached + new tokens), got {attention_mask.shape}")
            attn_mask = attention_mask[:, None, None, :]  # (B, 1, 1, L): which keys are real
        if not is_grad_enabled() and self.fused_inference_ok():
            # Nothing to differentiate: the plain-numpy twin of the code below (much less
            # per-op bookkeeping, which dominates when generating one token at a time).
            logits = Tensor(forward_logits(self, idx, position_ids, kv_cache, attn_mask,
                                           last_only))
        else:
            x = self.wte(idx) + self.wpe(position_ids)  # (B, T, C)
            x = self.drop(x)
            for i, block in enumerate(self.h):
                x = block(x, kv_cache, i, attn_mask)
            if kv_cache is not None:
                kv_cache.advance(T)
            if last_only:
                x = x[:, -1:, :]  # (B, 1, C)
            x = self.ln_f(x)
            logits = F.matmul(x, F.transpose(self.wte.weight))  # (B, T, V), tied LM head
        loss = None
        if targets is not None:
            targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
            loss = F.cross_entropy(logits, targets, ignore_index=-1)
        return logits, loss

    def fused_inference_ok(self) -> bool:
        """Whether the plain-numpy inference path computes what `forward` would: it has
        no dropout and uses the fused attention kernel."""
        return self.config.fused_attention and not (self.training and self.config.dropout > 0)

    def init_kv_cache(self, batch_size: int = 1, max_length: int | None = None):
        """An empty KV cache for `batch_size` sequences of up to `max_length` tokens."""
        from numpylm.inference.kv_cache import KVCache
        c = self.config
        return KVCache(c.n_layer, batch_size, c.n_head, max_length or c.block_size,
                       c.n_embd // c.n_head, dtype=self.wte.weight.dtype)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters, the tied LM head counted once. With `exclude_embeddings`,
        without the position embeddings (the token embedding stays: it is the LM head too)."""
        n = super().num_parameters()
        return n - self.wpe.weight.size if exclude_embeddings else n

    def flops_per_token(self, context: int | None = None, training: bool = True) -> int:
        """Estimated floating-point operations per token, counting 2 per multiply-add.

        Forward: each weight of a matrix multiply costs 2 FLOPs per token, 2 (12 L C^2 + V C)
        for the blocks and the LM head; attention adds 2 * 2 L T C (Q K^T and P V over T
        keys, the full square as computed). Training (forward + backward) is about 3x the
        forward, as the backward multiplies twice per weight. T defaults to block_size.
        """
        c = self.config
        T = context or c.block_size
        forward = 2 * (12 * c.n_layer * c.n_embd ** 2 + c.vocab_size * c.n_embd)
        forward += 4 * c.n_layer * T * c.n_embd
        return 3 * forward if training else forward

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def extra_repr(self) -> str:
        return f"{self.num_parameters():,} parameters"

    # GPT-2 checkpoint directories; the code lives in numpylm.models.gpt2_io.
    @classmethod
    def from_pretrained(cls, directory: str, dtype: Any = np.float32) -> "GPT":
        """Load a GPT-2 directory (`config.json` + `model.safetensors`); see `gpt2_io`."""
        from numpylm.models.gpt2_io import from_pretrained
        return from_pretrained(directory, dtype=dtype)

    def save_pretrained(self, directory: str) -> None:
        """Write `config.json` + `model.safetensors` that GPT-2 implementations load."""
        from numpylm.models.gpt2_io import save_pretrained
        save_pretrained(self, directory)
