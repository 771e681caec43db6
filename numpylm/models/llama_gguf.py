"""A Llama-family model from a GGUF file and back, part 3 of the guide: how the files that
llama.cpp runs map onto the model of `numpylm.models.llama`.

A GGUF file (`numpylm.io.gguf`) holds the configuration as `llama.*` metadata, the tokenizer
as `tokenizer.ggml.*` metadata, and the weights under llama.cpp's names, most of them
quantized in blocks (`numpylm.quant`):

    token_embd            model.embed_tokens           blk.{i}.attn_norm   input_layernorm
    blk.{i}.attn_q/k/v    self_attn.q/k/v_proj         blk.{i}.attn_output self_attn.o_proj
    blk.{i}.ffn_norm      post_attention_layernorm     blk.{i}.ffn_gate/up/down  mlp.*_proj
    output_norm           model.norm                   output              lm_head (absent: tied)

One thing is not a renaming. llama.cpp rotates the pairs (2i, 2i + 1) of each head ("interleaved"
RoPE, the original paper's), HF and this model rotate (i, i + D/2) ("rotate half"). The
converter that wrote the file therefore permuted the rows of every head of attn_q and attn_k;
loading permutes them back (`interleaved_to_rotate_half`), writing permutes them again. Skip
it and the model still runs, with every attention score wrong: the most common cause of
garbage from a hand-ported Llama.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from numpylm.autograd.ops_rope import interleaved_to_rotate_half, rotate_half_to_interleaved
from numpylm.io.errors import FileFormatError
from numpylm.io.gguf import read_gguf, write_gguf
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.quant import load_tensor, quantize_blocks

__all__ = ["config_from_gguf", "gguf_names", "load_gguf", "save_gguf"]

ARCHITECTURES = ("llama",)

# numpylm (HF) name of one layer's parameter -> llama.cpp's, without the "blk.{i}." prefix.
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_names(config: LlamaConfig) -> dict[str, str]:
    """numpylm parameter name -> GGUF tensor name, for every parameter of `config`."""
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight"}
    if not config.tie_word_embeddings:
        names["lm_head.weight"] = "output.weight"
    for i in range(config.num_hidden_layers):
        for ours, theirs in _LAYER_NAMES.items():
            if ours.endswith(".bias") and not config.attention_bias:
                continue
            names[f"model.layers.{i}.{ours}"] = f"blk.{i}.{theirs}"
    return names


def _field(meta: dict[str, Any], key: str, where: str, default: Any = None,
           kind: type | tuple[type, ...] = int) -> Any:
    if key not in meta:
        if default is None:
            raise FileFormatError(where, "missing (needed to build the model)", field=key)
        return default
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FileFormatError(where, f"expected {kind}, got {type(value).__name__}", field=key)
    return value


def config_from_gguf(meta: dict[str, Any], tensors: dict[str, Any],
                     where: str = "GGUF file") -> LlamaConfig:
    """A `LlamaConfig` from a GGUF file's `llama.*` metadata (and whether `output.weight`
    exists: without it the head is tied to the embedding)."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise FileFormatError(where, f"{arch!r} is not supported (supported: "
                                     f"{', '.join(ARCHITECTURES)})", field="general.architecture")
    p = f"{arch}."
    H = _field(meta, p + "attention.head_count", where)
    C = _field(meta, p + "embedding_length", where)
    embedding = tensors.get("token_embd.weight")
    vocab = meta.get(p + "vocab_size")
    if vocab is None:
        tokens = meta.get("tokenizer.ggml.tokens")
        vocab = len(tokens) if isinstance(tokens, list) else (
            embedding.shape[0] if embedding is not None else None)
    scaling = None
    if meta.get(p + "rope.scaling.type") not in (None, "none"):
        raise FileFormatError(where, f"{meta[p + 'rope.scaling.type']!r} is not supported",
                              field=p + "rope.scaling.type")
    try:
        return LlamaConfig(
            vocab_size=vocab, hidden_size=C,
            intermediate_size=_field(meta, p + "feed_forward_length", where),
            num_hidden_layers=_field(meta, p + "block_count", where),
            num_attention_heads=H,
            num_key_value_heads=_field(meta, p + "attention.head_count_kv", where, H),
            head_dim=_field(meta, p + "rope.dimension_count", where, C // H if H else 1),
            max_position_embeddings=_field(meta, p + "context_length", where),
            rms_norm_eps=_field(meta, p + "attention.layer_norm_rms_epsilon", where, 1e-5,
                                (int, float)),
            rope_theta=_field(meta, p + "rope.freq_base", where, 10000.0, (int, float)),
            rope_scaling=scaling,
            tie_word_embeddings="output.weight" not in tensors,
            attention_bias="blk.0.attn_q.bias" in tensors)
    except ValueError as err:  # a LlamaConfig range check, named with the file
        raise FileFormatError(where, str(err)) from None


def _check_tensors(file, names: dict[str, str], model: Llama, where: str) -> None:
    """Every expected tensor present with the expected shape, nothing unknown: checked on
    the header before any weight is decoded."""
    shapes = {name: p.shape for name, p in model.named_parameters()}
    missing = [g for g in names.values() if g not in file.tensors]
    wrong = [f"{g}: expected {shapes[n]}, got {tuple(file.tensors[g].shape)}"
             for n, g in names.items() if g in file.tensors
             and tuple(file.tensors[g].shape) != tuple(shapes[n])]
    known = set(names.values()) | {"rope_freqs.weight"}
    unexpected = sorted(set(file.tensors) - known)
    if missing or wrong or unexpected:
        parts = [f"{label}: {', '.join(items[:8])}" + (f" ... ({len(items)} in all)"
                                                       if len(items) > 8 else "")
                 for label, items in (("missing tensors", missing), ("mis-shaped tensors",
                                      wrong), ("unexpected tensors", unexpected)) if items]
        raise FileFormatError(where, "tensors do not fit the llama.* metadata:\n  " +
                              "\n  ".join(parts))


def load_gguf(path: str | os.PathLike[str], dtype: Any = np.float32) -> tuple[Llama, Any]:
    """(model in eval mode, tokenizer) from a GGUF file; every tensor is dequantized to
    `dtype`. The tokenizer carries the file's chat template (`tokenizer.chat_template`); it
    is None for a file without `tokenizer.ggml.*` metadata."""
    from numpylm.tokenizers.gguf_vocab import tokenizer_from_gguf_metadata

    where = os.fspath(path)
    file = read_gguf(where)
    config = config_from_gguf(file.metadata, file.tensors, where)
    model = Llama(config, dtype=dtype, rng=0)
    names = gguf_names(config)
    _check_tensors(file, names, model, where)
    params = dict(model.named_parameters())
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    for ours, theirs in names.items():
        value = load_tensor(file, theirs)
        if not np.isfinite(value).all():
            raise FileFormatError(where, "holds NaN or infinite values", field=theirs)
        projection = ours.split(".")[-2]
        if projection in heads:  # undo the converter's interleaved-RoPE permutation
            value = interleaved_to_rotate_half(value, heads[projection], axis=0)
        params[ours].data[...] = value
    if "tokenizer.ggml.model" not in file.metadata:
        return model.eval(), None  # weights only: the vocabulary lives elsewhere
    tokenizer = tokenizer_from_gguf_metadata(file.metadata, path=where)
    # Kept so that `save_gguf` writes the vocabulary back exactly as it came.
    tokenizer.gguf_metadata = {k: v for k, v in file.metadata.items()
                               if k.startswith("tokenizer.")}
    tokenizer.gguf_metadata_types = {k: v for k, v in file.metadata_types.items()
                                     if k.startswith("tokenizer.")}
    return model.eval(), tokenizer


def save_gguf(model: Llama, path: str | os.PathLike[str], tokenizer: Any = None,
              quantization: str = "f32", name: str = "numpylm llama") -> None:
    """Write `model` as a GGUF file llama.cpp's conventions accept: `llama.*` metadata,
    llama.cpp's tensor names with q/k permuted to interleaved RoPE, matrices quantized as
    `quantization` ("f32", "f16", "q8_0", "q4_0"; norms and vectors stay f32), and, for a
    tokenizer that came from a GGUF file, its `tokenizer.*` metadata as it was read (other
    tokenizers are not written: llama.cpp then needs the vocabulary from elsewhere)."""
    if quantization not in ("f32", "f16", "q8_0", "q4_0"):
        raise ValueError(f"quantization must be f32, f16, q8_0 or q4_0, got {quantization!r}")
    c = model.config
    if c.rope_scaling is not None:
        raise ValueError("save_gguf: rope_scaling is not written (only unscaled RoPE)")
    meta: dict[str, Any] = {
        "general.architecture": "llama", "general.name": name,
        "llama.block_count": c.num_hidden_layers, "llama.context_length":
        c.max_position_embeddings, "llama.embedding_length": c.hidden_size,
        "llama.feed_forward_length": c.intermediate_size,
        "llama.attention.head_count": c.num_attention_heads,
        "llama.attention.head_count_kv": c.num_key_value_heads,
        "llama.rope.freq_base": float(c.rope_theta),
        "llama.rope.dimension_count": c.head_dim,
        "llama.attention.layer_norm_rms_epsilon": float(c.rms_norm_eps),
        "llama.vocab_size": c.vocab_size,
    }
    types = {}
    if getattr(tokenizer, "gguf_metadata", None):
        meta.update(tokenizer.gguf_metadata)
        types.update(getattr(tokenizer, "gguf_metadata_types", {}))
    heads = {"q_proj": c.num_attention_heads, "k_proj": c.num_key_value_heads}
    params = dict(model.named_parameters())
    tensors = {}
    for ours, theirs in gguf_names(c).items():
        value = np.asarray(params[ours].data, dtype=np.float32)
        projection = ours.split(".")[-2]
        if projection in heads:
            value = rotate_half_to_interleaved(value, heads[projection], axis=0)
        # Block formats cut rows into blocks of 32: a matrix whose rows are not a multiple
        # of that (only in toy models) stays f32, as llama.cpp's own converter does.
        blocks = quantization in ("f16",) or value.shape[-1] % 32 == 0
        quantize = value.ndim == 2 and quantization != "f32" and blocks
        tensors[theirs] = quantize_blocks(value, quantization) if quantize else value
    write_gguf(path, meta, tensors, metadata_types=types or None)
