"""Reading and writing GPT-2 checkpoint directories, so that a model trained here runs in other
GPT-2 implementations and pretrained GPT-2 weights run here (part 3 of the guide: running a
pre-existing model).

A GPT-2 directory holds:

    config.json         model_type "gpt2"; n_layer, n_head, n_embd, n_positions, vocab_size,
                        layer_norm_epsilon (and dropout rates, activation_function, ...)
    model.safetensors   the weights under GPT-2's names, with or without a `transformer.`
                        prefix; `attn.bias` / `attn.masked_bias` (constant causal-mask
                        buffers) may be present and are ignored; `lm_head.weight`, if
                        present, must equal `wte.weight` (the head is tied)
    vocab.json          (optional) the byte-level BPE vocabulary
    merges.txt          (optional) its merges

Because `GPT` uses GPT-2's parameter names and shapes (Conv1D weights stored (in, out)),
loading is a renaming of keys, never a transposition.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from numpylm.io import load_json, load_safetensors, save_json, save_safetensors
from numpylm.models.gpt import GPT, GPTConfig

CONFIG, WEIGHTS, VOCAB, MERGES = "config.json", "model.safetensors", "vocab.json", "merges.txt"
# Fields a GPT-2 config.json must have, and the GPTConfig field each becomes.
_REQUIRED = {"n_layer": "n_layer", "n_head": "n_head", "n_embd": "n_embd",
             "n_positions": "block_size", "vocab_size": "vocab_size"}
# Both names HF transformers uses for GPT-2's tanh-approximated GELU.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
_BUFFERS = (".attn.bias", ".attn.masked_bias")


def _require_files(directory: Path, names: tuple[str, ...]) -> None:
    if not directory.is_dir():
        raise FileNotFoundError(f"{str(directory)!r} is not a directory")
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{str(directory)!r} is missing {', '.join(missing)} "
                                f"(a GPT-2 directory needs {' and '.join(names)})")


def config_from_hf(hf: dict[str, Any], where: str = CONFIG) -> GPTConfig:
    """A `GPTConfig` from the fields of a GPT-2 `config.json`; other model types are refused."""
    if not isinstance(hf, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"{where}: model_type is {model_type!r}; only GPT-2 ('gpt2') "
                         f"checkpoints can be loaded as GPT")
    hf = dict(hf)
    if "n_positions" not in hf and "n_ctx" in hf:  # very old configs name it n_ctx only
        hf["n_positions"] = hf["n_ctx"]
    missing = [k for k in _REQUIRED if k not in hf]
    if missing:
        raise ValueError(f"{where}: missing GPT-2 field(s) {', '.join(missing)}")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _TANH_GELU:
        raise ValueError(f"{where}: activation_function {activation!r} is not supported; "
                         f"GPT uses GELU with the tanh approximation ({_TANH_GELU[0]!r})")
    n_inner = hf.get("n_inner")
    if n_inner not in (None, 4 * hf["n_embd"]):
        raise ValueError(f"{where}: n_inner {n_inner} is not supported; GPT's MLP is "
                         f"4 * n_embd = {4 * hf['n_embd']} wide")
    if hf.get("scale_attn_weights", True) is not True or hf.get("scale_attn_by_inverse_layer_idx"):
        raise ValueError(f"{where}: only GPT-2's standard attention scaling 1/sqrt(head size) "
                         f"is supported (scale_attn_weights true, "
                         f"scale_attn_by_inverse_layer_idx false)")
    fields = {ours: hf[theirs] for theirs, ours in _REQUIRED.items()}
    return GPTConfig(**fields, layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)),
                     dropout=float(hf.get("resid_pdrop", 0.0)), bias=True)


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """The `config.json` fields, under GPT-2's names, that describe `config`."""
    eos = 50256 if config.vocab_size > 50256 else None  # GPT-2's <|endoftext|>, if it exists
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": 0.0,  # GPT has no dropout on attention weights
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    }


def gpt2_state_dict(tensors: dict[str, np.ndarray], where: str = WEIGHTS) -> dict[str, np.ndarray]:
    """GPT-2 weights renamed to `GPT`'s keys: drop the `transformer.` prefix and the mask
    buffers, and check that an `lm_head.weight` is the tied token embedding."""
    state: dict[str, np.ndarray] = {}
    lm_head = None
    for key, value in tensors.items():
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if name.endswith(_BUFFERS):
            continue
        if name == "lm_head.weight":
            lm_head = value
            continue
        state[name] = value
    if lm_head is not None and "wte.weight" in state:
        wte = state["wte.weight"]
        if lm_head.shape != wte.shape or not np.array_equal(lm_head, wte):
            raise ValueError(f"{where}: lm_head.weight differs from wte.weight; GPT ties the "
                             f"LM head to the token embedding and cannot load an untied head")
    elif lm_head is not None:
        state["wte.weight"] = lm_head  # a file that stored the tied matrix under the head's name
    return state


def from_pretrained(directory: str | os.PathLike[str], dtype: Any = np.float32) -> GPT:
    """Load a GPT-2 directory (`config.json` + `model.safetensors`) as a `GPT`, in eval mode.

    Raises `FileNotFoundError` naming missing files and `ValueError` for a config of another
    model type or weights that do not fit the config (listing missing, unexpected and
    mis-shaped keys).
    """
    directory = Path(directory)
    _require_files(directory, (CONFIG, WEIGHTS))
    config = config_from_hf(load_json(directory / CONFIG), str(directory / CONFIG))
    state = gpt2_state_dict(load_safetensors(directory / WEIGHTS), str(directory / WEIGHTS))
    model = GPT(config, dtype=dtype, rng=0)
    try:
        model.load_state_dict(state, strict=True)
    except ValueError as err:
        raise ValueError(f"{directory / WEIGHTS} does not fit {directory / CONFIG}: "
                         f"{err}") from None
    return model.eval()


def save_pretrained(model: GPT, directory: str | os.PathLike[str]) -> None:
    """Write `config.json` and `model.safetensors` in GPT-2's layout into `directory`.

    Weights are stored as float32 under `transformer.`-prefixed names (as GPT-2
    implementations write them), without `lm_head.weight` (tied to `wte.weight`).
    """
    config = model.config
    if not config.bias:
        raise ValueError("save_pretrained: GPT-2's format has biases; a model built with "
                         "bias=False cannot be written in it")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"transformer.{k}": np.ascontiguousarray(v, dtype=np.float32)
               for k, v in model.state_dict().items()}
    save_safetensors(tensors, directory / WEIGHTS, metadata={"format": "pt"})
    save_json(config_to_hf(config), directory / CONFIG)


def load_pretrained(directory: str | os.PathLike[str], dtype: Any = np.float32):
    """(model, tokenizer) from a GPT-2 directory; the tokenizer is read from `vocab.json` +
    `merges.txt` and is None if the directory holds neither. One of the two alone is an error."""
    directory = Path(directory)
    model = from_pretrained(directory, dtype=dtype)
    has = [(directory / n).is_file() for n in (VOCAB, MERGES)]
    if not any(has):
        return model, None
    if not all(has):
        missing = VOCAB if not has[0] else MERGES
        raise FileNotFoundError(f"{str(directory)!r} has one tokenizer file but is missing "
                                f"{missing} (a GPT-2 tokenizer needs {VOCAB} and {MERGES})")
    from numpylm.tokenizers import BPETokenizer
    tokenizer = BPETokenizer.from_hf(directory / VOCAB, directory / MERGES)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"{str(directory)!r}: the tokenizer has {tokenizer.vocab_size} tokens "
                         f"but the model only {model.config.vocab_size}")
    return model, tokenizer
