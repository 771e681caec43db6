"""LoRA adapters on disk in PEFT's layout, part 4 of the guide: an adapter is a small directory
that travels without its base model.

    adapter_config.json          {"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                  "target_modules": ["q_proj", "v_proj"], ...}
    adapter_model.safetensors    base_model.model.<module>.lora_A.weight  (r, in)
                                 base_model.model.<module>.lora_B.weight  (out, r)

`base_model.model.` is the prefix PEFT's wrappers (`PeftModel` around `LoraModel`) add to the
base model's own module names; no adapter name appears in the saved keys. So PEFT loads what
`save_adapter` writes onto the same base model, and `load_adapter` reads what PEFT saved.

Everything read is checked: the config's types and ranges, that every tensor belongs to a
module the model has and that PEFT's config targets, and each shape; a failure is a
`FileFormatError` naming the file and the field.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from numpylm.io.atomic import atomic_write
from numpylm.io.errors import FileFormatError
from numpylm.io.safetensors import load_safetensors, save_safetensors
from numpylm.nn.module import Module
from numpylm.tuning.lora import LoRAConfig, apply_lora, lora_layers, lora_state_dict

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "PREFIX", "save_adapter", "load_adapter_config",
           "load_adapter", "is_adapter_dir"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."


def is_adapter_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def save_adapter(model: Module, directory: str | os.PathLike[str],
                 base_model_name_or_path: str | None = None) -> None:
    """Write the model's adapters as `adapter_config.json` + `adapter_model.safetensors`."""
    layers = lora_layers(model)
    config = getattr(model, "lora_config", None)
    if not layers or config is None:
        raise ValueError("save_adapter: the model has no LoRA layers (apply_lora first)")
    if any(layer.merged for layer in layers.values()):
        raise ValueError("save_adapter: unmerge the adapters first (merged weights are in "
                         "the base matrices, not in A and B)")
    d = config.to_dict()
    fan = any(layer.fan_in_fan_out for layer in layers.values())
    peft_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": d["r"],
        "lora_alpha": d["lora_alpha"], "lora_dropout": d["lora_dropout"],
        "target_modules": d["target_modules"], "bias": "none", "fan_in_fan_out": fan,
        "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
        "init_lora_weights": True, "modules_to_save": None, "use_rslora": False,
        "use_dora": False, "rank_pattern": {}, "alpha_pattern": {},
        "layers_to_transform": None, "layers_pattern": None,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {PREFIX + k: np.ascontiguousarray(v) for k, v in lora_state_dict(model).items()}
    save_safetensors(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    with atomic_write(directory / CONFIG_NAME) as f:
        f.write((json.dumps(peft_config, indent=2) + "\n").encode("utf-8"))


def _number(d: dict, key: str, path: Path, kind: type | tuple, default: Any = None) -> Any:
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FileFormatError(path, f"must be {getattr(kind, '__name__', 'a number')}, "
                              f"got {value!r}", field=key)
    return value


def load_adapter_config(directory: str | os.PathLike[str]) -> LoRAConfig:
    """The `LoRAConfig` of a PEFT adapter directory, validated field by field."""
    path = Path(directory) / CONFIG_NAME
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileFormatError(path, "no adapter config here (not a PEFT adapter directory)")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileFormatError(path, f"not valid JSON: {e}")
    if not isinstance(d, dict):
        raise FileFormatError(path, f"must hold a JSON object, got {type(d).__name__}")
    if d.get("peft_type", "LORA") != "LORA":
        raise FileFormatError(path, f"only LORA adapters are supported, got "
                              f"{d.get('peft_type')!r}", field="peft_type")
    r = _number(d, "r", path, int, 8)
    if r < 1:
        raise FileFormatError(path, f"the rank must be >= 1, got {r}", field="r")
    alpha = _number(d, "lora_alpha", path, (int, float), 8)
    if not 0 < alpha < math.inf:
        raise FileFormatError(path, f"must be > 0, got {alpha}", field="lora_alpha")
    dropout = _number(d, "lora_dropout", path, (int, float), 0.0)
    if not 0 <= dropout < 1:
        raise FileFormatError(path, f"must be in [0, 1), got {dropout}", field="lora_dropout")
    targets = d.get("target_modules")
    if isinstance(targets, list):
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise FileFormatError(path, f"must be a non-empty list of module names, "
                                  f"got {targets!r}", field="target_modules")
    elif not (isinstance(targets, str) and targets):
        raise FileFormatError(path, f"must be a list of module names or a regex string, "
                              f"got {targets!r}", field="target_modules")
    for key in ("use_dora", "use_rslora", "use_qalora", "lora_bias"):
        if d.get(key) not in (None, False):
            raise FileFormatError(path, f"{d.get(key)!r} is not supported by numpylm's LoRA",
                                  field=key)
    for key in ("layers_to_transform", "exclude_modules", "modules_to_save",
                "target_parameters", "trainable_token_indices", "layer_replication"):
        if d.get(key) not in (None, [], {}):
            raise FileFormatError(path, f"{d.get(key)!r} is not supported by numpylm's LoRA "
                                  f"(only plain target_modules)", field=key)
    if d.get("bias", "none") != "none":
        raise FileFormatError(path, f"only 'none' is supported, got {d.get('bias')!r}",
                              field="bias")
    for key in ("rank_pattern", "alpha_pattern"):
        if d.get(key):
            raise FileFormatError(path, "per-module ranks are not supported", field=key)
    return LoRAConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout)


def load_adapter(model: Module, directory: str | os.PathLike[str],
                 rng: int | np.random.Generator | None = 0, wrap: Any = None) -> list[str]:
    """Wrap `model` with the adapter's LoRA layers and load its A and B; returns the wrapped
    module names. Every key must name a wrapped module and have the right shape."""
    directory = Path(directory)
    config = load_adapter_config(directory)
    path = directory / WEIGHTS_NAME
    tensors = load_safetensors(path)
    try:
        names = apply_lora(model, config, rng=rng, wrap=wrap)
    except ValueError as e:
        raise FileFormatError(directory / CONFIG_NAME, str(e), field="target_modules")
    layers = lora_layers(model)
    seen = set()
    for key, value in tensors.items():
        if not key.startswith(PREFIX):
            raise FileFormatError(path, f"a key must start with {PREFIX!r}", field=key)
        module, _, leaf = key[len(PREFIX):].rpartition(".lora_")
        # PEFT writes "<module>.lora_A.weight"; older files may add the adapter name.
        part = leaf.split(".")
        if module not in layers or part[0] not in ("A", "B") or part[-1] != "weight":
            raise FileFormatError(path, f"names no LoRA layer of the model (LoRA layers: "
                                  f"{list(layers)[:4]}...)", field=key)
        layer = layers[module]
        target = layer.lora_A.weight if part[0] == "A" else layer.lora_B.weight
        if tuple(value.shape) != target.shape:
            raise FileFormatError(path, f"shape {tuple(value.shape)} does not fit the layer, "
                                  f"which needs {target.shape}", field=key)
        if not np.issubdtype(value.dtype, np.floating) or not np.isfinite(value).all():
            raise FileFormatError(path, "must hold finite floating-point numbers", field=key)
        target.data[...] = value.astype(target.dtype)
        seen.add((module, part[0]))
    missing = [f"{PREFIX}{m}.lora_{ab}.weight" for m in layers for ab in "AB"
               if (m, ab) not in seen]
    if missing:
        raise FileFormatError(path, f"{len(missing)} adapter tensor(s) missing, e.g. "
                              f"{missing[:2]}", field="tensors")
    return names
