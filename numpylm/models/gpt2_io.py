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
from numpylm.io.config import require_float, require_int
from numpylm.io.errors import FileFormatError
from numpylm.io.safetensors import (TensorInfo, check_finite, read_safetensors_header,
                                    shape_mismatch)
from numpylm.models.gpt import GPT, GPTConfig

CONFIG, WEIGHTS, VOCAB, MERGES = "config.json", "model.safetensors", "vocab.json", "merges.txt"
# Fields a GPT-2 config.json must have, and the GPTConfig field each becomes.
_REQUIRED = {"n_layer": "n_layer", "n_head": "n_head", "n_embd": "n_embd",
             "n_positions": "block_size", "vocab_size": "vocab_size"}
# Both names HF transformers uses for GPT-2's tanh-approximated GELU.
# Upper bounds far above any GPT-2 (the largest: 48 layers, width 1600, 50257 tokens, 1024
# positions), so that a lying config is refused instead of allocating gigabytes.
_LIMITS = {"n_layer": 1024, "n_head": 1024, "n_embd": 65536, "n_positions": 1 << 20,
           "vocab_size": 1 << 24}
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
    """A `GPTConfig` from the fields of a GPT-2 `config.json`; other model types are refused.

    Every field used is checked for its type and a plausible range (a `FileFormatError`
    naming the file and the field), so a `null`, a list or `-1` is refused here, not later.
    """
    if not isinstance(hf, dict):
        raise FileFormatError(where, f"expected a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise FileFormatError(where, f"model_type is {model_type!r}; only GPT-2 ('gpt2') "
                                     f"checkpoints can be loaded as GPT")
    hf = dict(hf)
    if "n_positions" not in hf and "n_ctx" in hf:  # very old configs name it n_ctx only
        hf["n_positions"] = hf["n_ctx"]
    missing = [k for k in _REQUIRED if k not in hf]
    if missing:
        raise FileFormatError(where, f"missing GPT-2 field(s) {', '.join(missing)}")
    fields = {ours: require_int(hf, theirs, where, low=1, high=_LIMITS[theirs])
              for theirs, ours in _REQUIRED.items()}
    if fields["n_embd"] % fields["n_head"]:
        raise FileFormatError(where, f"n_head {fields['n_head']} does not divide n_embd "
                                     f"{fields['n_embd']}", field="n_head")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _TANH_GELU:
        raise FileFormatError(where, f"activation_function {activation!r} is not supported; GPT "
                                     f"uses GELU with the tanh approximation ({_TANH_GELU[0]!r})")
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * fields["n_embd"]:
        raise FileFormatError(where, f"{n_inner!r} is not supported; GPT's MLP is 4 * n_embd = "
                                     f"{4 * fields['n_embd']} wide", field="n_inner")
    if hf.get("scale_attn_weights", True) is not True or hf.get("scale_attn_by_inverse_layer_idx"):
        raise FileFormatError(where, "only GPT-2's standard attention scaling 1/sqrt(head size) "
                                     "is supported (scale_attn_weights true, "
                                     "scale_attn_by_inverse_layer_idx false)")
    # LayerNorm divides by sqrt(var + eps): eps must be positive and small.
    eps = require_float(hf, "layer_norm_epsilon", where, low=0.0, high=0.1, low_open=True,
                        default=1e-5)
    dropout = require_float(hf, "resid_pdrop", where, low=0.0, high=0.999, default=0.0)
    return GPTConfig(**fields, layer_norm_epsilon=eps, dropout=dropout, bias=True)


def expected_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every weight of a `GPT` with `config`, under its state-dict names (GPT-2's
    without the `transformer.` prefix), computed from the config alone, so that a file can be
    checked against its config before any model is built."""
    C, V, P = config.n_embd, config.vocab_size, config.block_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (P, C)}
    block = {"ln_1.weight": (C,), "ln_1.bias": (C,), "attn.c_attn.weight": (C, 3 * C),
             "attn.c_attn.bias": (3 * C,), "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
             "ln_2.weight": (C,), "ln_2.bias": (C,), "mlp.c_fc.weight": (C, 4 * C),
             "mlp.c_fc.bias": (4 * C,), "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,)}
    for i in range(config.n_layer):
        shapes.update((f"h.{i}.{name}", shape) for name, shape in block.items())
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    if not config.bias:
        shapes = {name: shape for name, shape in shapes.items() if not name.endswith(".bias")}
    return shapes


def check_header_fits(entries: dict[str, TensorInfo], config: GPTConfig, where: str) -> None:
    """Compare a safetensors header's shapes with the shapes `config` implies, before
    anything is allocated: a config that lies about its sizes costs nothing to refuse."""
    have: dict[str, tuple[int, ...]] = {}
    for key, info in entries.items():
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if name.endswith(_BUFFERS):
            continue
        if name == "lm_head.weight":
            name = "wte.weight" if "wte.weight" not in have else "lm_head.weight"
        if info.dtype not in ("F64", "F32", "F16", "BF16"):
            raise FileFormatError(where, f"dtype {info.dtype} is not a float dtype", field=key)
        have[name] = info.shape
    have.pop("lm_head.weight", None)  # compared with wte.weight once the data is read
    problems = shape_mismatch(expected_shapes(config), have)
    if problems:
        raise FileFormatError(where, "does not fit config.json:\n  " + problems)


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
            raise FileFormatError(where, "lm_head.weight differs from wte.weight; GPT ties the "
                                         "LM head to the token embedding and cannot load an "
                                         "untied head")
    elif lm_head is not None:
        state["wte.weight"] = lm_head  # a file that stored the tied matrix under the head's name
    return state


def from_pretrained(directory: str | os.PathLike[str], dtype: Any = np.float32) -> GPT:
    """Load a GPT-2 directory (`config.json` + `model.safetensors`) as a `GPT`, in eval mode.

    Raises `FileNotFoundError` naming missing files and `FileFormatError` (a `ValueError`) for
    a config of another model type, a field of the wrong type or range, weights that do not
    fit the config (listing missing, unexpected and mis-shaped keys, compared from the
    safetensors header before any weight is read or any model built) and NaN or infinite
    weights.
    """
    directory = Path(directory)
    _require_files(directory, (CONFIG, WEIGHTS))
    config = config_from_hf(load_json(directory / CONFIG), str(directory / CONFIG))
    weights = str(directory / WEIGHTS)
    check_header_fits(read_safetensors_header(weights)[0], config, weights)
    tensors = load_safetensors(weights)
    check_finite(tensors, weights)
    state = gpt2_state_dict(tensors, weights)
    model = GPT(config, dtype=dtype, rng=0)
    try:
        model.load_state_dict(state, strict=True)
    except ValueError as err:
        raise FileFormatError(weights, f"does not fit {directory / CONFIG}: {err}") from None
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
        raise FileFormatError(directory / VOCAB, f"the tokenizer has {tokenizer.vocab_size} "
                                                 f"tokens but the model only "
                                                 f"{model.config.vocab_size}")
    return model, tokenizer
