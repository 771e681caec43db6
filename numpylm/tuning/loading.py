"""Loading a fine-tuned model, part 4 of the guide: an adapter is not a model, it names one.

A PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`) holds only A and
B; its config's `base_model_name_or_path` says which model they adapt. To use it, load that
base, wrap the adapted layers, load A and B, and merge: W' = W + (alpha/r) B A in every adapted
matrix, after which the wrappers are dropped and the model is an ordinary one, as fast as the
base (PEFT's `merge_and_unload`). So every command that reads a model (`generate`, `chat`,
`eval`, `evaluate`, `serve`) also reads an adapter directory in its place, or a base with
`--adapter DIR` beside it.

The base path is tried as written (absolute, or relative to the working directory), then
relative to the adapter directory; `numpylm finetune` writes it absolute. An adapter trained
over a quantized base (QLoRA) is merged into the float base here, as QLoRA's authors do.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from numpylm.io.errors import FileFormatError
from numpylm.nn.module import Module
from numpylm.training.families import LoadedModel, load_model
from numpylm.tuning.data import chat_tokenizer
from numpylm.tuning.lora import _set_child, lora_layers
from numpylm.tuning.peft_io import CONFIG_NAME, is_adapter_dir, load_adapter

__all__ = ["adapter_base", "apply_adapter", "merge_and_unload", "load_adapted_model"]


def adapter_base(directory: str | os.PathLike[str]) -> Path:
    """The base model an adapter directory names (`base_model_name_or_path`), found on disk."""
    directory = Path(directory)
    config = directory / CONFIG_NAME
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise FileFormatError(config, f"cannot read the adapter config: {e}")
    if not isinstance(base, str) or not base:
        raise FileFormatError(config, f"names no base model ({base!r}); give the base as the "
                              f"model and this directory with --adapter",
                              field="base_model_name_or_path")
    for candidate in (Path(base), directory / base):
        if candidate.exists():
            return candidate
    raise FileFormatError(config, f"the base model {base!r} is not on this machine (tried it "
                          f"as written and relative to {str(directory)!r}); give the base as "
                          f"the model and this directory with --adapter",
                          field="base_model_name_or_path")


def merge_and_unload(model: Module) -> list[str]:
    """Fold every LoRA layer into its base matrix and put the base layer back in its place;
    returns the names of the layers merged."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        layer.merge()
        _set_child(model, name, layer.base_layer)
    for p in model.parameters():
        p.requires_grad = True  # an ordinary model again (apply_lora froze everything)
    if hasattr(model, "lora_config"):
        del model.lora_config
    return list(layers)


def apply_adapter(model: Module, directory: str | os.PathLike[str]) -> list[str]:
    """Load the PEFT adapter in `directory` onto `model` and merge it; returns the layers."""
    load_adapter(model, directory)
    return merge_and_unload(model)


def load_adapted_model(path: str | os.PathLike[str], adapter: str | os.PathLike[str] | None = None,
                       **kwargs: Any) -> LoadedModel:
    """What `numpylm.training.families.load_model` reads, plus adapters: `path` may be a PEFT
    adapter directory (its base is loaded and the adapter merged), or a model with `adapter`
    to merge into it, or the directory `numpylm finetune --method sft` wrote (its
    `model/` checkpoint or `model.gguf`). `kwargs` go to `load_model`. A numpylm character tokenizer comes back
    able to render chats (`numpylm.tuning.data.chat_tokenizer`)."""
    path = Path(path)
    if is_adapter_dir(path):
        if adapter is not None:
            raise ValueError(f"{str(path)!r} is itself an adapter; give a base model with "
                             f"--adapter, or the adapter alone")
        adapter, path = path, adapter_base(path)
    if path.is_dir() and not (path / "config.json").exists():  # what finetune --method sft wrote
        if (path / "model" / "config.json").is_file():
            path = path / "model"
        elif (path / "model.gguf").is_file():
            path = path / "model.gguf"
    loaded = load_model(path, **kwargs)
    loaded.tokenizer = chat_tokenizer(loaded.tokenizer)  # a char model can chat, too
    if adapter is not None:
        if not Path(adapter).is_dir():
            raise FileNotFoundError(f"no adapter directory at {str(adapter)!r}")
        names = apply_adapter(loaded.model, adapter)
        loaded.model.eval()
        loaded.source = f"{loaded.source} + adapter {adapter} ({len(names)} layers merged)"
    return loaded
