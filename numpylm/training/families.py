"""The model families numpylm knows, one record each: how a family is built from the command
line, how the ladder sizes it, and how a checkpoint of it is saved and loaded.

A checkpoint's `config.json` stores a family name and that family's constructor arguments
(`model_args`); `build_model(name, args)` turns them back into a model, so `generate` and
`eval` work for any family without knowing which one they hold. `numpylm train --model`,
`generate`, `eval` and the ladder all read `FAMILIES`, so adding a family is: one model file
(following `numpylm.models.base`), one `Family` record passed to `register_family`, and its
tests. A family registered from your own code is reachable from the CLI (`numpylm train
--model NAME --model-arg key=value`) and the ladder (when its record says how to size it).

Families are imported lazily: a checkpoint of one family never needs the code of another.
The count n-gram is the one family that is fitted by counting rather than trained
(`trainable=False`); its "weights" are its count tables, saved as integer safetensors arrays
and turned back into a fitted model by `NGramLM.load_state_dict`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["FAMILIES", "Family", "LadderSpec", "LoadedModel", "build_model", "family_names",
           "get_family", "load_model", "register_family", "trainable_families"]


@dataclass(frozen=True)
class LadderSpec:
    """How the ladder sizes a family for a character-level run.

    `args(vocab_size, block_size, tiny)` gives the constructor arguments (tiny: a few
    hundred parameters, for tests); `lr` is the peak learning rate of its run.
    """

    args: Callable[[int, int, bool], dict[str, Any]]
    lr: float
    weight_decay: float = 0.1


@dataclass(frozen=True)
class Family:
    """One model family: its name, constructor, command-line sizing and ladder sizing.

    - `build(**model_args)` returns a fresh model (the checkpoint's `model_args`);
    - `cli_args(args, vocab_size)` turns `numpylm train`'s flags into `model_args`
      (None: the family takes only `--model-arg key=value` pairs, plus `vocab_size`);
    - `ladder`: how the ladder sizes it, or None to leave it out of the ladder;
    - `trainable`: False for a model fitted by counting (`model.fit([ids])`) instead of the
      training loop;
    - `count(model_args)`: the number of parameters those arguments imply, from arithmetic
      alone, so that a checkpoint whose config.json lies about its sizes is refused before
      anything is built (None: no such check).
    """

    name: str
    build: Callable[..., Any]
    cli_args: Callable[[argparse.Namespace, int], dict[str, Any]] | None = None
    ladder: LadderSpec | None = None
    trainable: bool = True
    help: str = ""
    count: Callable[[dict[str, Any]], int] | None = None


def _ngram(**args: Any):
    from numpylm.models.ngram import NGramLM

    return NGramLM(**args)


def _bigram(**args: Any):
    from numpylm.models.bigram import BigramLM

    return BigramLM(**args)


def _mlp(**args: Any):
    from numpylm.models.mlp import MLPLM

    return MLPLM(**args)


def _rnn(**args: Any):
    from numpylm.models.rnn_lm import RNNLM

    return RNNLM(**args)


def _gpt(**args: Any):
    from numpylm.models.gpt import GPT, GPTConfig

    return GPT(GPTConfig(**args))


def _llama(**args: Any):
    from numpylm.models.llama import Llama, LlamaConfig

    return Llama(LlamaConfig(**args))


def _llama_mlp_width(C: int, L: int, T: int) -> int:
    """The SwiGLU width that gives a Llama the parameter count of a GPT-2 of that shape."""
    from numpylm.models.llama import gpt_budget_intermediate_size

    return gpt_budget_intermediate_size(C, L, T)


def _llama_ladder_args(V: int, T: int, tiny: bool) -> dict[str, Any]:
    C, L, H = (16, 1, 2) if tiny else (64, 2, 4)  # the GPT rung's shape, at its size
    return {"vocab_size": V, "max_position_embeddings": T, "hidden_size": C,
            "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": H,
            "intermediate_size": _llama_mlp_width(C, L, T)}


def _llama_cli_args(a: argparse.Namespace, V: int) -> dict[str, Any]:
    return {"vocab_size": V, "max_position_embeddings": a.block_size, "hidden_size": a.n_embd,
            "num_hidden_layers": a.n_layer, "num_attention_heads": a.n_head,
            "num_key_value_heads": a.n_kv_head or a.n_head,
            "intermediate_size": a.intermediate_size
            or _llama_mlp_width(a.n_embd, a.n_layer, a.block_size)}


def _llama_count(args: dict[str, Any]) -> int:
    from numpylm.models.llama import LlamaConfig

    c = LlamaConfig(**args)
    C, D, H, Hkv, I = c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads, \
        c.intermediate_size
    attention = C * H * D * 2 + 2 * C * Hkv * D + ((H + 2 * Hkv) * D if c.attention_bias else 0)
    per_layer = attention + 3 * C * I + 2 * C  # q, o; k, v; biases; the MLP; two RMSNorms
    head = 0 if c.tie_word_embeddings else c.vocab_size * C
    return c.vocab_size * C + c.num_hidden_layers * per_layer + C + head


def _gpt_count(args: dict[str, Any]) -> int:
    from numpylm.models.gpt import GPTConfig

    c = GPTConfig(**args)
    C, L = c.n_embd, c.n_layer
    # Per block: c_attn 3C^2, c_proj C^2, c_fc 4C^2, c_proj 4C^2, plus 13 C of biases and
    # LayerNorm gains and biases (2 C without biases: the two gains).
    per_block = 12 * C * C + (13 * C if c.bias else 2 * C)
    return (c.vocab_size + c.block_size) * C + L * per_block + (2 * C if c.bias else C)


def _rnn_count(args: dict[str, Any]) -> int:
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[args.get("cell", "lstm")]
    V, E, H = args["vocab_size"], args["embedding_dim"], args["hidden_size"]
    layers = args.get("num_layers", 1)
    recurrent = sum(gates * H * ((E if k == 0 else H) + H + 2) for k in range(layers))
    return V * E + recurrent + H * V + V


def _mlp_count(args: dict[str, Any]) -> int:
    V, ctx = args["vocab_size"], args.get("context", 3)
    e, h = args.get("n_embd", 10), args.get("n_hidden", 200)
    rows = V + (args.get("pad_id") is None)  # the extra <BLANK> embedding
    return rows * e + ctx * e * h + h + h * V + V


def _recurrent(cell: str, lr: float) -> Family:
    """rnn, gru and lstm are one class (RNNLM) whose model_args carry `cell`."""
    return Family(
        cell, _rnn,
        cli_args=lambda a, V: {"vocab_size": V, "embedding_dim": a.embedding_dim,
                               "hidden_size": a.hidden_size, "cell": cell},
        ladder=LadderSpec(lambda V, T, tiny: {"vocab_size": V, "embedding_dim": 8 if tiny else 32,
                                              "hidden_size": 16 if tiny else 128, "cell": cell},
                          lr=lr),
        help=f"{cell.upper()} language model", count=_rnn_count)


# name -> record, in the order the CLI and the ladder list them. Gated cells tolerate a larger
# step than the plain tanh RNN, whose gradients explode.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("ngram", _ngram,
           cli_args=lambda a, V: {"order": a.order, "vocab_size": V, "smoothing": a.smoothing},
           trainable=False, help="count n-gram (--order, --smoothing)"),
    Family("bigram", _bigram, cli_args=lambda a, V: {"vocab_size": V},
           ladder=LadderSpec(lambda V, T, tiny: {"vocab_size": V}, lr=3e-2, weight_decay=0.0),
           help="neural bigram: a table of logits",
           count=lambda a: a["vocab_size"] ** 2),
    Family("mlp", _mlp,
           cli_args=lambda a, V: {"vocab_size": V, "context": a.context,
                                  "n_embd": a.embedding_dim, "n_hidden": a.hidden_size},
           ladder=LadderSpec(lambda V, T, tiny: {"vocab_size": V, "context": 8,
                                                 "n_embd": 8 if tiny else 32,
                                                 "n_hidden": 32 if tiny else 256}, lr=3e-3),
           help="Bengio et al.'s MLP over the last --context tokens", count=_mlp_count),
    _recurrent("rnn", 5e-3),
    _recurrent("gru", 1.5e-2),
    _recurrent("lstm", 1.5e-2),
    Family("gpt", _gpt,
           cli_args=lambda a, V: {"vocab_size": V, "block_size": a.block_size,
                                  "n_layer": a.n_layer, "n_head": a.n_head, "n_embd": a.n_embd,
                                  "dropout": a.dropout},
           ladder=LadderSpec(lambda V, T, tiny: {"vocab_size": V, "block_size": T,
                                                 "n_layer": 1 if tiny else 2,
                                                 "n_head": 2 if tiny else 4,
                                                 "n_embd": 16 if tiny else 64,
                                                 "dropout": 0.0, "bias": True}, lr=3e-3),
           help="GPT-2 transformer", count=_gpt_count),
    Family("llama", _llama, cli_args=_llama_cli_args,
           ladder=LadderSpec(_llama_ladder_args, lr=3e-3),
           help="Llama: RMSNorm, RoPE, SwiGLU, grouped-query attention (--n-kv-head)",
           count=_llama_count),
)}


def register_family(family: Family | str, constructor: Callable[..., Any] | None = None) -> None:
    """Add (or replace) a family: `register_family(Family(...))`, or for a model that needs
    nothing but a constructor, `register_family(name, constructor)`."""
    if isinstance(family, str):
        if constructor is None:
            raise TypeError("register_family(name, constructor): the constructor is missing")
        family = Family(family, constructor)
    if not isinstance(family, Family) or not isinstance(family.name, str) or not family.name:
        raise ValueError(f"a family needs a non-empty string name, got {family!r}")
    FAMILIES[family.name] = family


def family_names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def trainable_families() -> tuple[str, ...]:
    """Families trained by the training loop (the neural ones), in registry order."""
    return tuple(name for name, f in FAMILIES.items() if f.trainable)


def get_family(name: str) -> Family:
    """The record of family `name`; an unknown name is a `ValueError` listing the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def build_model(family: str, args: dict[str, Any]):
    """A fresh model of `family` built with `args` (the checkpoint's `model_args`)."""
    record = get_family(family)
    try:
        return record.build(**args)
    except TypeError as err:
        raise ValueError(f"cannot build a {family!r} model from arguments {args}: {err}") from None


def cli_model_args(family: str, args: argparse.Namespace, vocab_size: int) -> dict[str, Any]:
    """`model_args` of `family` from `numpylm train`'s flags: the family's own sizing flags,
    then any `--model-arg key=value` pairs on top."""
    record = get_family(family)
    model_args = (record.cli_args(args, vocab_size) if record.cli_args is not None
                  else {"vocab_size": vocab_size})
    return {**model_args, **dict(getattr(args, "model_arg", None) or {})}


class LoadedModel:
    """A model ready for `generate`/`eval`: the model, its tokenizer, its family and the
    context length to evaluate with."""

    def __init__(self, model, tokenizer, family: str, block_size: int, source: str,
                 trainer_state: dict[str, Any] | None = None) -> None:
        self.model, self.tokenizer, self.family = model, tokenizer, family
        self.block_size, self.source, self.trainer_state = block_size, source, trainer_state


def _load_pretrained(path: Path, kind: str) -> LoadedModel:
    """An HF directory or GGUF file (numpylm.models.pretrained), for inference."""
    from numpylm.models.pretrained import load_pretrained

    if kind == "gpt2":
        missing = [name for name in ("model.safetensors", "vocab.json", "merges.txt")
                   if not (path / name).is_file()]
        if missing:
            raise ValueError(f"GPT-2 directory {str(path)!r} lacks {', '.join(missing)} "
                             f"(it needs config.json, model.safetensors, vocab.json, merges.txt)")
    model, tokenizer = load_pretrained(path)
    if tokenizer is None:
        raise ValueError(f"{str(path)!r} has no tokenizer (tokenizer.json, or the GGUF "
                         f"file's tokenizer.ggml.* metadata)")
    family = "gpt" if kind == "gpt2" else "llama"
    return LoadedModel(model, tokenizer, family, int(model.block_size), str(path))


def _check_size(ckpt) -> None:
    """Refuse a config.json whose sizes do not add up to the weights it came with, before the
    model is built (a config claiming a million layers would otherwise allocate them)."""
    from numpylm.training.checkpoint import CheckpointError

    record = get_family(ckpt.model_family)
    if record.count is None:
        return
    try:
        expected = int(record.count(dict(ckpt.model_args)))
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r}: config.json: cannot build a "
                              f"{ckpt.model_family!r} model from {ckpt.model_args}: {err}") from None
    found = sum(int(np.asarray(a).size) for a in ckpt.model_state.values())
    if expected != found:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r}: config.json's model_args imply "
                              f"{expected:,} parameters but model.safetensors holds {found:,}; "
                              f"the two files do not belong together")


def load_model(directory, default_block_size: int = 64) -> LoadedModel:
    """Load a numpylm checkpoint directory, an HF model directory (GPT-2 with vocab.json and
    merges.txt; Llama, Mistral or Qwen2 with tokenizer.json) or a GGUF file, for inference."""
    from numpylm.models.pretrained import pretrained_kind
    from numpylm.training.checkpoint import (TRAINER, CheckpointError, check_trainer_state,
                                             load_checkpoint, read_trainer_state)

    path = Path(directory)
    kind = pretrained_kind(path)
    if kind is not None:
        return _load_pretrained(path, kind)
    ckpt = load_checkpoint(path)
    trainer_state = read_trainer_state(ckpt.path) if (ckpt.path / TRAINER).is_file() else None
    if trainer_state is not None:
        check_trainer_state(trainer_state, ckpt.path / TRAINER, needs_random_states=False)
    _check_size(ckpt)
    try:
        model = build_model(ckpt.model_family, ckpt.model_args)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r}: config.json: {err}") from None
    try:
        model.load_state_dict(ckpt.model_state)
    except ValueError as err:
        raise CheckpointError(
            f"checkpoint {str(ckpt.path)!r}: model.safetensors does not fit the "
            f"{ckpt.model_family!r} model of config.json:\n{err}") from None
    if hasattr(model, "eval"):
        model.eval()
    block_size = default_block_size
    if isinstance(trainer_state, dict):
        block_size = int(trainer_state.get("train_config", {}).get("block_size", block_size))
    # A transformer cannot read more than its positions; the other families read any length
    # (their block_size, where they have one, says how much of it matters, not a limit).
    limit = getattr(getattr(model, "config", None), "block_size", None)
    if limit is not None:
        block_size = min(block_size, int(limit))
    return LoadedModel(model, ckpt.tokenizer, ckpt.model_family, block_size, str(ckpt.path),
                       trainer_state)
