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
the textbook formula. Decoding (`init_state`/`step`, the contract of
`numpylm.models.base`) runs the inference stepper `numpylm.models.gpt_inference`, the same
arithmetic as `forward` in plain numpy without the graph; `forward` itself always builds the
graph, so what a reader changes in `Block.forward` is what training computes. Dropout is
applied to the embeddings and to each residual branch; GPT-2's dropout on the attention
weights is left out (the fused op has none), which matters only when training with
dropout > 0.

Reading and writing GPT-2 checkpoint directories is in `numpylm.models.gpt2_io`
(`GPT.from_pretrained`, `GPT.save_pretrained`, `load_pretrained`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from numpylm import blas
from numpylm import functional as F
from numpylm.autograd.ops_attention import attention_composed, packed_self_attention
from numpylm.autograd.ops_linear import conv1d
from numpylm.autograd.tensor import Tensor
from numpylm.models import gpt_inference
from numpylm.models.base import IGNORE_INDEX, check_ids, check_step_ids
from numpylm.models.decoding import TransformerState, transformer_step
from numpylm.models.kv_cache import KVCache
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
        qkv = self.c_attn(x)  # (B, T, 3C): q, k and v side by side
        if self.fused and kv_cache is None:
            y = self._attend_packed(qkv, attn_mask)
        else:
            y = self._attend_heads(qkv, kv_cache, layer, attn_mask)
        return self.resid_dropout(self.c_proj(y))

    def _attend_packed(self, qkv: Tensor, attn_mask) -> Tensor:
        """Training's path: the head split and merge done as views inside one fused op
        (`packed_self_attention`), the same computation as `_attend_heads`."""
        return packed_self_attention(qkv, self.n_head, causal=True, attn_mask=attn_mask)

    def _attend_heads(self, qkv: Tensor, kv_cache, layer: int, attn_mask) -> Tensor:
        """The textbook path, step by step: split q, k, v into heads, join the cached keys
        and values, attend, merge the heads. (B, T, 3C) -> (B, T, C)."""
        B, T, C3 = qkv.shape
        H, C = self.n_head, C3 // 3
        # (B, T, 3, H, D) -> (3, B, H, T, D): one transpose for all three, then split.
        qkv = F.transpose(F.reshape(qkv, shape=(B, T, 3, H, C // H)), axes=(2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, H, T, D)
        if kv_cache is not None:
            # Keys and values of earlier tokens come from the cache; the new ones join them.
            k_all, v_all = kv_cache.append(layer, k.data, v.data)  # (B, H, L, D)
            k, v = Tensor(k_all), Tensor(v_all)
        attend = F.scaled_dot_product_attention if self.fused else attention_composed
        y = attend(q, k, v, causal=True, attn_mask=attn_mask)  # (B, H, T, D)
        return F.reshape(F.transpose(y, axes=(0, 2, 1, 3)), shape=(B, T, C))  # heads side by side


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

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def forward(self, idx: Any, targets: Any = None, *, kv_cache=None, attention_mask=None,
                position_ids=None, last_only: bool = False) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) token ids -> (logits (B, T, V), mean cross-entropy or None).

        Targets equal to -1 are ignored by the loss. The keyword arguments run the graph
        with a KV cache (no gradient flows through cached keys and values): `kv_cache`
        (from `init_kv_cache`) holds the keys and values of earlier tokens;
        `attention_mask` (B, L) is True at real tokens of the whole cached sequence (False
        at left padding); `position_ids` (B, T) default to the running position;
        `last_only` computes logits for the last position only, (B, 1, V). Decoding
        uses `step`, which runs the same arithmetic without the graph.
        """
        idx, targets = check_ids("GPT", idx, targets, self.config.vocab_size, allow_1d=True)
        start = 0 if kv_cache is None else kv_cache.length
        position_ids, attn_mask = self._positions_and_mask(idx.shape, start, position_ids,
                                                           attention_mask)
        x = self.wte(idx) + self.wpe(position_ids)  # (B, T, C)
        x = self.drop(x)
        for i, block in enumerate(self.h):
            x = block(x, kv_cache, i, attn_mask)
        if kv_cache is not None:
            kv_cache.advance(idx.shape[1])
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        x = self.ln_f(x)
        logits = F.matmul(x, F.transpose(self.wte.weight))  # (B, T, V), tied LM head
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    def _positions_and_mask(self, shape: tuple[int, int], start: int, position_ids,
                            attention_mask) -> tuple[np.ndarray, np.ndarray | None]:
        """Check the sequence length against block_size; positions (T,) or (B, T) and the
        attention mask as (B, 1, 1, L) (which keys are real), or None."""
        B, T = shape
        if start + T > self.config.block_size:
            raise ValueError(f"GPT: a sequence of {start + T} tokens is longer than "
                             f"block_size {self.config.block_size}; crop it to the last "
                             f"{self.config.block_size} tokens")
        if position_ids is None:
            position_ids = np.arange(start, start + T)  # (T,), broadcast over the batch
        position_ids = np.asarray(position_ids)
        if position_ids.size and (not np.issubdtype(position_ids.dtype, np.integer)
                                  or position_ids.min() < 0
                                  or position_ids.max() >= self.config.block_size):
            raise ValueError(f"GPT: position_ids must be integers in [0, block_size "
                             f"{self.config.block_size}), got dtype {position_ids.dtype} with "
                             f"values {position_ids.min()}..{position_ids.max()}")
        if attention_mask is None:
            return position_ids, None
        attention_mask = np.asarray(attention_mask, dtype=bool)
        if attention_mask.shape != (B, start + T):
            raise ValueError(f"GPT: attention_mask must have shape {(B, start + T)} "
                             f"(batch, cached + new tokens), got {attention_mask.shape}")
        return position_ids, attention_mask[:, None, None, :]

    # ---- decoding (the contract of numpylm.models.base) ----

    def init_kv_cache(self, batch_size: int = 1, max_length: int | None = None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_length` tokens."""
        c = self.config
        return KVCache(c.n_layer, batch_size, c.n_head, max_length or c.block_size,
                       c.n_embd // c.n_head, dtype=self.wte.weight.dtype)

    def init_state(self, batch_size: int = 1) -> TransformerState:
        """An empty decoding state: a KV cache of `block_size` positions per sequence."""
        return TransformerState(self.init_kv_cache(batch_size), self.config.block_size)

    def step(self, state: TransformerState, ids: Any, mask: Any = None) -> np.ndarray:
        """Feed ids (B, T) into the decoding state; the logits (B, V) of the next token.

        Runs the inference stepper `numpylm.models.gpt_inference.forward_logits`: `forward`'s
        arithmetic in plain numpy, without the graph or dropout (the tests prove the two
        give the same logits).
        """
        ids, mask = check_step_ids("GPT", ids, mask, state.batch_size, self.config.vocab_size)

        def run(ids, positions, attention):
            attn = None if attention is None else attention[:, None, None, :]
            logits = gpt_inference.forward_logits(self, ids, positions, state.cache, attn,
                                                  last_only=True)
            return logits[:, -1, :]

        with blas.threads(blas.free_core_threads()):  # the free cores: see numpylm.blas
            return transformer_step(state, ids, mask, run)

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
