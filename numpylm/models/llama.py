"""The modern decoder, part 2 of the guide: the Llama layout (Touvron et al. 2023) that Llama 2/3,
Mistral, Qwen2, SmolLM2 and TinyLlama share, told as its four differences from GPT-2.

Letters as in `numpylm.models.gpt`: B batch, T time, C hidden_size, H query heads, Hkv key-value
heads (G = H / Hkv query heads share one), D head size, I intermediate size, V vocabulary.

    x = embed_tokens[idx]                            (B, T, C); no position table
    for each layer:                                  pre-norm residual blocks, as GPT-2
        x = x + o_proj(attn(rope(q), rope(k), v))    of input_layernorm(x)
        x = x + down_proj(silu(gate_proj(h)) * up_proj(h)),  h = post_attention_layernorm(x)
    logits = lm_head(norm(x))                        (B, T, V), tied to embed_tokens or not

What changed since GPT-2, and why:
1. **RMSNorm** instead of LayerNorm: x / sqrt(mean(x^2) + eps) * w, no mean subtraction and
   no bias (Zhang & Sennrich 2019): as good in practice, one reduction fewer.
2. **RoPE** instead of a learned position table: q and k of each head are rotated by angles
   proportional to their position, so a score depends only on the distance between the two
   tokens (`numpylm.autograd.ops_rope`, which also explains the two pairing conventions;
   this model uses HF's "rotate half", and GGUF files need their q/k rows permuted).
3. **SwiGLU** instead of GELU: down(silu(gate(x)) * up(x)) (Shazeer 2020), three matrices of
   width I (about 8C/3) instead of two of width 4C, the same parameter count.
4. **Grouped-query attention**: Hkv < H key-value heads (Ainslie et al. 2023). Training
   costs about the same; decoding reads a KV cache G times smaller: for SmolLM2-135M
   (30 layers, 3 KV heads of 64, float32) 2 * 30 * 3 * 64 * 4 B = 46 KB per token, 94 MB
   for 2048 tokens, against 283 MB with 9 heads.
Also: no biases (Qwen2 keeps q/k/v biases: `attention_bias`), and usually an untied head.

Parameter names and shapes are HF transformers' (`LlamaForCausalLM`), Linear weights stored
(out, in), so checkpoints interchange by name alone (`numpylm.models.llama_io`). `forward`
always builds the autograd graph; decoding (`init_state`/`step`) runs the plain-numpy
stepper `numpylm.models.llama_inference`, which the tests prove equal to `forward`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from numpylm import blas
from numpylm import functional as F
from numpylm.autograd.ops_attention import attention_composed
from numpylm.autograd.ops_rope import rope_inv_freq, rope_tables
from numpylm.autograd.tensor import Tensor
from numpylm.models import llama_inference
from numpylm.models.base import IGNORE_INDEX, check_ids, check_step_ids
from numpylm.models.decoding import TransformerState, transformer_step
from numpylm.models.kv_cache import KVCache
from numpylm.nn import Embedding, Linear, Module, ModuleList, RMSNorm, get_rng

__all__ = ["Llama", "LlamaConfig", "gpt_budget_intermediate_size"]

_ACTIVATIONS = ("silu",)


@dataclass
class LlamaConfig:
    """The fields of an HF Llama/Mistral/Qwen2 `config.json`, with small training defaults."""

    vocab_size: int = 32000             # V: number of token ids
    hidden_size: int = 256              # C: width of the residual stream
    intermediate_size: int = 688        # I: width of the SwiGLU MLP (about 8C/3)
    num_hidden_layers: int = 4          # number of decoder layers
    num_attention_heads: int = 4        # H: query heads
    num_key_value_heads: int | None = None  # Hkv: key-value heads, dividing H (None: H)
    head_dim: int | None = None         # D: head size (None: hidden_size // H)
    max_position_embeddings: int = 256  # the longest context (numpylm's block_size)
    rms_norm_eps: float = 1e-5          # eps inside every RMSNorm's square root
    rope_theta: float = 10000.0         # base of RoPE's frequencies theta_i = base^(-2i/D)
    rope_scaling: dict | None = None    # None, or Llama 3's {"rope_type": "llama3", ...}
    tie_word_embeddings: bool = True    # lm_head shares embed_tokens' matrix
    attention_bias: bool = False        # biases on q/k/v_proj (Qwen2: True)
    hidden_act: str = "silu"            # the MLP's gate activation (only SiLU exists here)
    initializer_range: float = 0.02     # std of the normal initialisation of every matrix
    fused_attention: bool = True        # the fused GQA op, or the composed twin (repeats K/V)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "max_position_embeddings"):
            _positive(name, getattr(self, name))
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        _positive("num_key_value_heads", self.num_key_value_heads)
        H, Hkv = self.num_attention_heads, self.num_key_value_heads
        if H % Hkv:
            raise ValueError(f"LlamaConfig: num_attention_heads ({H}) must be a multiple of "
                             f"num_key_value_heads ({Hkv})")
        if self.head_dim is None:
            if self.hidden_size % H:
                raise ValueError(f"LlamaConfig: hidden_size ({self.hidden_size}) is not "
                                 f"divisible by num_attention_heads ({H}); give head_dim")
            self.head_dim = self.hidden_size // H
        _positive("head_dim", self.head_dim)
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig: head_dim must be even (RoPE rotates pairs), "
                             f"got {self.head_dim}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"LlamaConfig: hidden_act {self.hidden_act!r} is not supported "
                             f"(supported: {', '.join(_ACTIVATIONS)})")
        if not (isinstance(self.rms_norm_eps, (int, float)) and 0 < self.rms_norm_eps < 1):
            raise ValueError(f"LlamaConfig: rms_norm_eps must be in (0, 1), "
                             f"got {self.rms_norm_eps!r}")
        try:  # rope_scaling: an unknown rope_type or a missing field, named here
            rope_inv_freq(self.head_dim, self.rope_theta, self.rope_scaling)
        except ValueError as err:
            raise ValueError(f"LlamaConfig: {err}") from None

    @property
    def block_size(self) -> int:
        return self.max_position_embeddings

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (a checkpoint's `model_args`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def gpt_budget_intermediate_size(hidden_size: int, num_layers: int, block_size: int) -> int:
    """The MLP width I that gives a Llama (key-value heads = heads, tied head) the parameter
    count of a GPT-2 of the same width, depth and context.

    Per block GPT-2 has 12 C^2 + 13 C weights (attention 4 C^2 + 4 C, MLP 8 C^2 + 5 C, two
    LayerNorms 4 C), plus T C positions and 2 C for ln_f; Llama has 4 C^2 + 3 C I + 2 C per
    block plus C for its final norm. Equal when 3 C I L = 8 C^2 L + 11 C L + T C + C."""
    C, L, T = hidden_size, num_layers, block_size
    return round((8 * C * L + 11 * L + T + 1) / (3 * L))


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"LlamaConfig: {name} must be a positive integer, got {value!r}")


class LlamaAttention(Module):
    """Causal self-attention with RoPE on q and k and Hkv <= H key-value heads."""

    def __init__(self, c: LlamaConfig, dtype: Any, rng: np.random.Generator) -> None:
        super().__init__()
        C, D = c.hidden_size, c.head_dim
        self.H, self.Hkv, self.D, self.fused = (c.num_attention_heads, c.num_key_value_heads,
                                                D, c.fused_attention)
        self.q_proj = Linear(C, self.H * D, c.attention_bias, dtype, rng)
        self.k_proj = Linear(C, self.Hkv * D, c.attention_bias, dtype, rng)
        self.v_proj = Linear(C, self.Hkv * D, c.attention_bias, dtype, rng)
        self.o_proj = Linear(self.H * D, C, False, dtype, rng)

    def _heads(self, x: Tensor, n: int) -> Tensor:
        B, T, _ = x.shape
        return F.transpose(F.reshape(x, shape=(B, T, n, self.D)), axes=(0, 2, 1, 3))

    def forward(self, x: Tensor, cos: np.ndarray, sin: np.ndarray, attn_mask=None) -> Tensor:
        B, T, _ = x.shape
        q = F.rope(self._heads(self.q_proj(x), self.H), cos, sin)    # (B, H, T, D)
        k = F.rope(self._heads(self.k_proj(x), self.Hkv), cos, sin)  # (B, Hkv, T, D)
        v = self._heads(self.v_proj(x), self.Hkv)                    # (B, Hkv, T, D)
        # The fused op lets G query heads share each K/V head without copying it; the
        # composed twin copies every K/V head G times (repeat_kv), as the textbook does.
        attend = F.scaled_dot_product_attention if self.fused else attention_composed
        y = attend(q, k, v, causal=True, attn_mask=attn_mask)        # (B, H, T, D)
        y = F.reshape(F.transpose(y, axes=(0, 2, 1, 3)), shape=(B, T, self.H * self.D))
        return self.o_proj(y)


class LlamaMLP(Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), (B, T, C) -> (B, T, I) -> (B, T, C)."""

    def __init__(self, c: LlamaConfig, dtype: Any, rng: np.random.Generator) -> None:
        super().__init__()
        C, I = c.hidden_size, c.intermediate_size
        self.gate_proj = Linear(C, I, False, dtype, rng)
        self.up_proj = Linear(C, I, False, dtype, rng)
        self.down_proj = Linear(I, C, False, dtype, rng)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.swiglu(self.gate_proj(x), self.up_proj(x)))


class LlamaDecoderLayer(Module):
    def __init__(self, c: LlamaConfig, dtype: Any, rng: np.random.Generator) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype)
        self.self_attn = LlamaAttention(c, dtype, rng)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype)
        self.mlp = LlamaMLP(c, dtype, rng)

    def forward(self, x: Tensor, cos: np.ndarray, sin: np.ndarray, attn_mask=None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(Module):
    """The decoder without its head (HF's `model.` prefix): embeddings, layers, final norm."""

    def __init__(self, c: LlamaConfig, dtype: Any, rng: np.random.Generator) -> None:
        super().__init__()
        self.embed_tokens = Embedding(c.vocab_size, c.hidden_size, dtype, rng=rng)
        self.layers = ModuleList(LlamaDecoderLayer(c, dtype, rng)
                                 for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype)


class Llama(Module):
    """`LlamaForCausalLM`: `Llama(LlamaConfig(...))` or `Llama(hidden_size=..., ...)`."""

    def __init__(self, config: LlamaConfig | None = None, *, dtype: Any = np.float32,
                 rng: int | np.random.Generator | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = LlamaConfig(**kwargs)
        elif kwargs:
            raise TypeError(f"Llama: pass a LlamaConfig or keyword settings, not both "
                            f"(got {sorted(kwargs)})")
        self.config = c = config
        rng = get_rng(rng)
        self.model = LlamaModel(c, dtype, rng)
        self.lm_head = (None if c.tie_word_embeddings else
                        Linear(c.hidden_size, c.vocab_size, False, dtype, rng))
        self._initialise(rng)

    def _initialise(self, rng: np.random.Generator) -> None:
        """Every matrix N(0, initializer_range^2) as HF initialises Llama; the two
        projections into the residual stream (o_proj, down_proj) scaled by 1/sqrt(2 L) as
        GPT-2 does, so that the sum of 2L branches keeps unit scale at the start."""
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if p.ndim == 2:
                scale = (1 / math.sqrt(2 * self.config.num_hidden_layers)
                         if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0)
                p.data[...] = rng.normal(0.0, std * scale, p.shape)
            elif name.endswith("_proj.bias"):
                p.data[...] = 0.0

    @property
    def block_size(self) -> int:
        return self.config.max_position_embeddings

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def head_weight(self) -> np.ndarray:
        """The (V, C) matrix of the LM head: lm_head's own, or embed_tokens' when tied."""
        return (self.model.embed_tokens if self.lm_head is None else self.lm_head).weight.data

    def rope_tables(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """cos, sin (..., D/2) of `positions` in the parameters' dtype."""
        c = self.config
        return rope_tables(positions, c.head_dim, c.rope_theta, c.rope_scaling,
                           dtype=self.model.embed_tokens.weight.dtype)

    def forward(self, idx: Any, targets: Any = None, *, attention_mask=None,
                position_ids=None) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) -> (logits (B, T, V), mean cross-entropy over targets != -1, or None).

        `attention_mask` (B, T) is False at left padding; `position_ids` (B, T) default to
        0..T-1 (with padding, count real tokens only, as `step` does).
        """
        if getattr(self, "packed_head", None) is not None:
            raise ValueError("Llama: the weights are packed for decoding "
                             "(numpylm.models.llama_packed); forward needs the float weights")
        idx, targets = check_ids("Llama", idx, targets, self.config.vocab_size, allow_1d=True)
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"Llama: a sequence of {T} tokens is longer than "
                             f"max_position_embeddings {self.block_size}; crop it")
        positions = np.arange(T) if position_ids is None else np.asarray(position_ids)
        cos, sin = self.rope_tables(positions)  # (T, D/2) or (B, T, D/2)
        if cos.ndim == 3:
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D/2): the same for every head
        mask = None
        if attention_mask is not None:
            mask = np.asarray(attention_mask, dtype=bool)[:, None, None, :]  # (B, 1, 1, T)
        x = self.model.embed_tokens(idx)  # (B, T, C)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        x = self.model.norm(x)
        if self.lm_head is None:
            logits = F.matmul(x, F.transpose(self.model.embed_tokens.weight))  # tied head
        else:
            logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    # ---- decoding (the contract of numpylm.models.base) ----

    def init_kv_cache(self, batch_size: int = 1, max_length: int | None = None) -> KVCache:
        """An empty cache of Hkv (not H) heads: 2 * L * Hkv * max_length * D numbers a row."""
        c = self.config
        return KVCache(c.num_hidden_layers, batch_size, c.num_key_value_heads,
                       max_length or c.max_position_embeddings, c.head_dim,
                       dtype=self.model.embed_tokens.weight.dtype)

    def init_state(self, batch_size: int = 1) -> TransformerState:
        """An empty decoding state: a KV cache of `block_size` positions per sequence."""
        return TransformerState(self.init_kv_cache(batch_size), self.block_size)

    def step(self, state: TransformerState, ids: Any, mask: Any = None) -> np.ndarray:
        """Feed ids (B, T) into the decoding state; the logits (B, V) of the next token,
        computed by the inference stepper `llama_inference.forward_logits` (no graph)."""
        ids, mask = check_step_ids("Llama", ids, mask, state.batch_size, self.vocab_size)

        def run(ids, positions, attention):
            attn = None if attention is None else attention[:, None, None, :]
            return llama_inference.forward_logits(self, ids, positions, state.cache, attn,
                                                  last_only=True)[:, -1, :]

        with blas.threads(self._step_threads(ids.size)):
            return transformer_step(state, ids, mask, run)

    def _step_threads(self, n_tokens: int) -> int:
        """BLAS threads for a decoding step (`numpylm.blas.free_core_threads`: every free
        core, one when another process is busy; `NUMPYLM_THREADS` overrides)."""
        return blas.free_core_threads()

    def extra_repr(self) -> str:
        return f"{self.num_parameters():,} parameters"

    # HF checkpoint directories; the code lives in numpylm.models.llama_io.
    @classmethod
    def from_pretrained(cls, directory: str, dtype: Any = np.float32) -> "Llama":
        """Load an HF Llama/Mistral/Qwen2 directory; see `numpylm.models.llama_io`."""
        from numpylm.models.llama_io import from_pretrained
        return from_pretrained(directory, dtype=dtype)

    def save_pretrained(self, directory: str, max_shard_bytes: int | None = None) -> None:
        """Write `config.json` + safetensors weights that HF transformers loads."""
        from numpylm.models.llama_io import save_pretrained
        save_pretrained(self, directory, max_shard_bytes=max_shard_bytes)
