"""Reading and writing HF checkpoint directories of the Llama layout (`LlamaForCausalLM`,
`MistralForCausalLM`, `Qwen2ForCausalLM`), part 3 of the guide: running a pre-existing model.

A directory holds `config.json` and the weights, either in one `model.safetensors` or in
shards `model-00001-of-0000N.safetensors` listed by `model.safetensors.index.json`
(`{"weight_map": {tensor name: shard file}}`). `Llama` uses HF's names and (out, in) shapes,
so loading is reading by name; bf16 and f16 tensors are widened to float32.

The three architectures are one model here, with their differences read from the config:
Qwen2 has biases on q/k/v_proj (`attention_bias`); Mistral and Qwen2 may use sliding-window
attention (each token sees only the last `sliding_window` tokens), which this model does not
implement: a config where the window is shorter than the context is refused, since loading
it would silently compute another model's attention for long inputs.

transformers 5 writes RoPE's settings as `rope_parameters` (`rope_theta` and `rope_type`
inside), earlier versions as `rope_theta` + `rope_scaling`; both are read, the older form
(which every version reads) is written.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from numpylm.io import load_json, load_safetensors, save_json, save_safetensors
from numpylm.io.config import require_float, require_int
from numpylm.io.errors import FileFormatError
from numpylm.io.safetensors import (TensorInfo, check_finite, read_safetensors_header,
                                    shape_mismatch)
from numpylm.models.llama import Llama, LlamaConfig

__all__ = ["config_from_hf", "config_to_hf", "expected_shapes", "from_pretrained",
           "load_pretrained", "save_pretrained"]

CONFIG, WEIGHTS, INDEX = "config.json", "model.safetensors", "model.safetensors.index.json"
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM"}
# Far above any released model, so that a lying config is refused instead of allocating.
_LIMITS = {"vocab_size": 1 << 22, "hidden_size": 1 << 16, "intermediate_size": 1 << 18,
           "num_hidden_layers": 1024, "num_attention_heads": 1024, "num_key_value_heads": 1024,
           "head_dim": 4096, "max_position_embeddings": 1 << 24}
_IGNORED = ("rotary_emb.inv_freq",)  # a constant buffer older checkpoints stored


def _model_type(hf: dict[str, Any], where: str) -> str:
    kind = hf.get("model_type")
    if kind is None:  # infer it from the architecture name
        archs = hf.get("architectures") or []
        kind = next((k for k, a in ARCHITECTURES.items() if a in archs), None)
    if kind not in ARCHITECTURES:
        raise FileFormatError(where, f"{kind!r} is not a Llama-layout model (supported: "
                                     f"{', '.join(ARCHITECTURES)})", field="model_type")
    return kind


def _rope(hf: dict[str, Any], where: str) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from either the older or the transformers 5 fields."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict):
        theta = require_float(params, "rope_theta", where, low=0.0, low_open=True,
                              default=10000.0)
        kind = params.get("rope_type", params.get("type", "default"))
        return theta, (None if kind == "default" else
                       {k: v for k, v in params.items() if k != "rope_theta"})
    theta = require_float(hf, "rope_theta", where, low=0.0, low_open=True, default=10000.0)
    scaling = hf.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise FileFormatError(where, f"must be null or an object, got {scaling!r}",
                              field="rope_scaling")
    return theta, scaling


def _check_sliding_window(hf: dict[str, Any], kind: str, context: int, where: str) -> None:
    window = hf.get("sliding_window")
    uses = kind == "mistral" or hf.get("use_sliding_window", False)
    if "sliding_attention" in (hf.get("layer_types") or []):
        uses = True
    if uses and window is not None and (not isinstance(window, int) or window < context):
        raise FileFormatError(where, f"sliding_window {window!r} is shorter than the context "
                                     f"(max_position_embeddings {context}); sliding-window "
                                     f"attention is not implemented, so this model would be "
                                     f"computed wrongly beyond {window} tokens",
                              field="sliding_window")


def config_from_hf(hf: dict[str, Any], where: str = CONFIG) -> LlamaConfig:
    """A `LlamaConfig` from an HF `config.json` (llama, mistral or qwen2), every used field
    checked for type and range (a `FileFormatError` naming the file and the field)."""
    if not isinstance(hf, dict):
        raise FileFormatError(where, f"expected a JSON object, got {type(hf).__name__}")
    kind = _model_type(hf, where)
    ints = {name: require_int(hf, name, where, low=1, high=_LIMITS[name])
            for name in ("vocab_size", "hidden_size", "intermediate_size",
                         "num_hidden_layers", "num_attention_heads")}
    for name in ("num_key_value_heads", "head_dim"):
        if hf.get(name) is not None:
            ints[name] = require_int(hf, name, where, low=1, high=_LIMITS[name])
    ints["max_position_embeddings"] = require_int(
        hf, "max_position_embeddings", where, low=1, high=_LIMITS["max_position_embeddings"],
        default=2048)
    _check_sliding_window(hf, kind, ints["max_position_embeddings"], where)
    if hf.get("mlp_bias"):
        raise FileFormatError(where, "biases in the MLP are not supported", field="mlp_bias")
    theta, scaling = _rope(hf, where)
    eps = require_float(hf, "rms_norm_eps", where, low=0.0, high=0.1, low_open=True,
                        default=1e-6)
    bias = True if kind == "qwen2" else bool(hf.get("attention_bias", False))
    try:
        return LlamaConfig(**ints, rms_norm_eps=eps, rope_theta=theta, rope_scaling=scaling,
                           tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                           attention_bias=bias, hidden_act=hf.get("hidden_act", "silu"),
                           initializer_range=float(hf.get("initializer_range", 0.02)))
    except ValueError as err:
        raise FileFormatError(where, str(err)) from None


def config_to_hf(config: LlamaConfig, model_type: str | None = None) -> dict[str, Any]:
    """`config.json` fields describing `config`: a Qwen2 config when it has q/k/v biases
    (transformers' Llama reads `attention_bias` too, but Qwen2 is what such models are)."""
    kind = model_type or ("qwen2" if config.attention_bias else "llama")
    out = {"model_type": kind, "architectures": [ARCHITECTURES[kind]]}
    out.update({k: v for k, v in config.to_dict().items() if k != "fused_attention"})
    out.update({"torch_dtype": "float32", "mlp_bias": False, "pretraining_tp": 1})
    if kind == "qwen2":
        out.update({"use_sliding_window": False, "sliding_window": None})
    if kind == "mistral":
        out["sliding_window"] = None
    return out


def expected_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every weight `config` describes, from the config alone."""
    c = config
    C, I, V, D = c.hidden_size, c.intermediate_size, c.vocab_size, c.head_dim
    H, Hkv = c.num_attention_heads, c.num_key_value_heads
    layer = {"input_layernorm.weight": (C,), "post_attention_layernorm.weight": (C,),
             "self_attn.q_proj.weight": (H * D, C), "self_attn.k_proj.weight": (Hkv * D, C),
             "self_attn.v_proj.weight": (Hkv * D, C), "self_attn.o_proj.weight": (C, H * D),
             "mlp.gate_proj.weight": (I, C), "mlp.up_proj.weight": (I, C),
             "mlp.down_proj.weight": (C, I)}
    if c.attention_bias:
        layer.update({"self_attn.q_proj.bias": (H * D,), "self_attn.k_proj.bias": (Hkv * D,),
                      "self_attn.v_proj.bias": (Hkv * D,)})
    shapes = {"model.embed_tokens.weight": (V, C)}
    for i in range(c.num_hidden_layers):
        shapes.update((f"model.layers.{i}.{k}", s) for k, s in layer.items())
    shapes["model.norm.weight"] = (C,)
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def _shards(directory: Path) -> list[Path]:
    """The weight files: `model.safetensors`, or every shard the index names (each must
    exist: a missing one is named)."""
    index = directory / INDEX
    if not index.is_file():
        if not (directory / WEIGHTS).is_file():
            raise FileNotFoundError(f"{str(directory)!r} has neither {WEIGHTS} nor {INDEX}")
        return [directory / WEIGHTS]
    data = load_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in
                                                   weight_map.values()):
        raise FileFormatError(index, "must map tensor names to shard file names",
                              field="weight_map")
    names = sorted(set(weight_map.values()))
    for name in names:
        if Path(name).name != name:
            raise FileFormatError(index, f"shard {name!r} is not a plain file name",
                                  field="weight_map")
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{str(directory)!r}: shard {name!r}, named in {INDEX}, "
                                    f"is missing")
    return [directory / name for name in names]


def _header_entries(shards: list[Path]) -> dict[str, tuple[TensorInfo, str]]:
    entries: dict[str, tuple[TensorInfo, str]] = {}
    for shard in shards:
        for name, info in read_safetensors_header(shard)[0].items():
            if name in entries:
                raise FileFormatError(shard, f"is also in {entries[name][1]}", field=name)
            if not name.endswith(_IGNORED):
                entries[name] = (info, str(shard))
    return entries


def check_header_fits(entries: dict[str, tuple[TensorInfo, str]], config: LlamaConfig,
                      where: str) -> None:
    """Compare the safetensors headers' shapes with those `config` implies, before any
    weight is read: one error listing missing, unexpected and mis-shaped keys."""
    want = expected_shapes(config)
    have = {k: tuple(info.shape) for k, (info, _) in entries.items()}
    for key, (info, shard) in entries.items():
        if info.dtype not in ("F64", "F32", "F16", "BF16"):
            raise FileFormatError(shard, f"dtype {info.dtype} is not a float dtype", field=key)
    if config.tie_word_embeddings and "lm_head.weight" in have:
        have.pop("lm_head.weight")  # the tied copy; compared with embed_tokens once read
    problems = shape_mismatch(want, have)
    if problems:
        raise FileFormatError(where, "do not fit config.json:\n  " + problems)


def from_pretrained(directory: str | os.PathLike[str], dtype: Any = np.float32) -> Llama:
    """Load an HF Llama/Mistral/Qwen2 directory as a `Llama` in eval mode.

    `FileNotFoundError` names a missing config, weights file or shard; `FileFormatError`
    (a ValueError) a bad config field, weights that do not fit the config (from the
    headers, before anything is allocated), an untied `lm_head` in a tied model, NaN or inf.
    """
    directory = Path(directory)
    if not (directory / CONFIG).is_file():
        raise FileNotFoundError(f"{str(directory)!r} has no {CONFIG}")
    config = config_from_hf(load_json(directory / CONFIG), str(directory / CONFIG))
    shards = _shards(directory)
    entries = _header_entries(shards)
    where = str(directory / (INDEX if len(shards) > 1 or shards[0].name != WEIGHTS
                             else WEIGHTS))
    check_header_fits(entries, config, where)
    model = Llama(config, dtype=dtype, rng=0)
    params = dict(model.named_parameters())
    head = None
    for shard in shards:  # one shard in memory at a time
        tensors = {k: v for k, v in load_safetensors(shard).items() if k in entries}
        check_finite(tensors, shard)
        for name, value in tensors.items():
            if name == "lm_head.weight" and config.tie_word_embeddings:
                head = value
            else:
                params[name].data[...] = value  # widened to the parameter's dtype
    if head is not None and not np.array_equal(head.astype(dtype), params[
            "model.embed_tokens.weight"].data):
        raise FileFormatError(where, "lm_head.weight differs from model.embed_tokens.weight "
                                     "but config.json says tie_word_embeddings", field="lm_head")
    return model.eval()


def save_pretrained(model: Llama, directory: str | os.PathLike[str],
                    max_shard_bytes: int | None = None, model_type: str | None = None) -> None:
    """Write `config.json` and float32 weights in HF's layout into `directory`: one
    `model.safetensors`, or shards of at most `max_shard_bytes` (a tensor larger than that
    gets a shard of its own) with `model.safetensors.index.json`. A tied head is not
    written (HF ties it on load)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32)
               for k, v in model.state_dict().items()}
    save_json(config_to_hf(model.config, model_type), directory / CONFIG)
    if max_shard_bytes is None:
        save_safetensors(tensors, directory / WEIGHTS, metadata={"format": "pt"})
        return
    groups: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, value in tensors.items():
        if groups[-1] and size + value.nbytes > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = value
        size += value.nbytes
    weight_map = {}
    for i, group in enumerate(groups):
        shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_safetensors(group, directory / shard, metadata={"format": "pt"})
        weight_map.update((name, shard) for name in group)
    total = sum(v.nbytes for v in tensors.values())
    save_json({"metadata": {"total_size": total}, "weight_map": weight_map}, directory / INDEX)


def load_pretrained(directory: str | os.PathLike[str], dtype: Any = np.float32):
    """(model, tokenizer) from an HF Llama/Mistral/Qwen2 directory; the tokenizer is read from
    `tokenizer.json` (with `tokenizer_config.json`'s special tokens and chat template) and is
    None when the directory has none."""
    directory = Path(directory)
    model = from_pretrained(directory, dtype=dtype)
    if not (directory / "tokenizer.json").is_file():
        return model, None
    from numpylm.tokenizers.hf_directory import load_hf_tokenizer
    tokenizer = load_hf_tokenizer(directory)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise FileFormatError(directory / "tokenizer.json",
                              f"the tokenizer has {tokenizer.vocab_size} tokens but the model "
                              f"only {model.config.vocab_size}")
    return model, tokenizer
