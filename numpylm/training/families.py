"""The model families `numpylm train` knows, by name, and how each is rebuilt from a checkpoint.

A checkpoint's `config.json` stores a family name and that family's constructor arguments;
`build_model(name, args)` turns them back into a model, so `generate` and `eval` work for any
family without knowing which one they hold. Families are imported lazily: a checkpoint of one
family never needs the code of another.

The count n-gram is the odd one out: it has no gradients and no parameters. Its "weights"
are its count tables, saved as integer safetensors arrays (`order{m}.keys`, `order{m}.counts`:
the packed m-grams and the count used at that order; `discounts` for Kneser-Ney; `n_tokens`)
and turned back into a fitted model by `NGramLM.load_state_dict`.
"""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["FAMILIES", "LoadedModel", "NEURAL_FAMILIES", "build_model", "load_model",
           "register_family"]


def _ngram(**args: Any):
    from numpylm.models.ngram import NGramLM

    return NGramLM(**args)


def _bigram(**args: Any):
    from numpylm.models import BigramLM

    return BigramLM(**args)


def _mlp(**args: Any):
    from numpylm.models import MLPLM

    return MLPLM(**args)


def _rnn(**args: Any):
    from numpylm.models.rnn_lm import RNNLM

    return RNNLM(**args)


def _gpt(**args: Any):
    from numpylm.models.gpt import GPT, GPTConfig

    return GPT(GPTConfig(**args))


# name -> constructor taking the checkpoint's model_args as keywords. rnn, gru and lstm are
# one class (RNNLM) whose model_args carry `cell`.
FAMILIES: dict[str, Callable[..., Any]] = {
    "ngram": _ngram,
    "bigram": _bigram,
    "mlp": _mlp,
    "rnn": _rnn,
    "gru": _rnn,
    "lstm": _rnn,
    "gpt": _gpt,
}
NEURAL_FAMILIES = ("bigram", "mlp", "rnn", "gru", "lstm", "gpt")


def register_family(name: str, constructor: Callable[..., Any]) -> None:
    """Make `build_model(name, args)` call `constructor(**args)` (for models of your own)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a family name must be a non-empty string, got {name!r}")
    FAMILIES[name] = constructor


def build_model(family: str, args: dict[str, Any]):
    """A fresh model of `family` built with `args` (the checkpoint's `model_args`)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    try:
        return FAMILIES[family](**args)
    except TypeError as err:
        raise ValueError(f"cannot build a {family!r} model from arguments {args}: {err}") from None


class LoadedModel:
    """A model ready for `generate`/`eval`: the model, its tokenizer, its family and the
    context length to evaluate with."""

    def __init__(self, model, tokenizer, family: str, block_size: int, source: str,
                 trainer_state: dict[str, Any] | None = None) -> None:
        self.model, self.tokenizer, self.family = model, tokenizer, family
        self.block_size, self.source, self.trainer_state = block_size, source, trainer_state


def _is_gpt2_directory(path) -> bool:
    from numpylm.io import load_json

    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        data = load_json(config)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("model_type") == "gpt2"


def _load_gpt2_directory(path) -> LoadedModel:
    from numpylm.models.gpt2_io import load_pretrained

    missing = [name for name in ("model.safetensors", "vocab.json", "merges.txt")
               if not (path / name).is_file()]
    if missing:
        raise ValueError(f"GPT-2 directory {str(path)!r} lacks {', '.join(missing)} "
                         f"(it needs config.json, model.safetensors, vocab.json, merges.txt)")
    model, tokenizer = load_pretrained(path)
    model.eval()
    return LoadedModel(model, tokenizer, "gpt", int(model.config.block_size), str(path))


def load_model(directory, default_block_size: int = 64) -> LoadedModel:
    """Load a numpylm checkpoint directory, or a GPT-2-format directory (config.json with
    model_type "gpt2", model.safetensors, vocab.json, merges.txt), for inference."""
    from pathlib import Path

    from numpylm.training.checkpoint import (TRAINER, CheckpointError, load_checkpoint,
                                             read_trainer_state)

    path = Path(directory)
    if _is_gpt2_directory(path):
        return _load_gpt2_directory(path)
    ckpt = load_checkpoint(path)
    trainer_state = read_trainer_state(ckpt.path) if (ckpt.path / TRAINER).is_file() else None
    if ckpt.model_family == "ngram":
        try:
            model = _ngram(**ckpt.model_args).load_state_dict(ckpt.model_state)
        except ValueError as err:
            raise CheckpointError(f"checkpoint {str(ckpt.path)!r}: {err}") from None
    else:
        model = build_model(ckpt.model_family, ckpt.model_args)
        try:
            model.load_state_dict(ckpt.model_state)
        except ValueError as err:
            raise CheckpointError(
                f"checkpoint {str(ckpt.path)!r}: model.safetensors does not fit the "
                f"{ckpt.model_family!r} model of config.json:\n{err}") from None
        model.eval()
    block_size = default_block_size
    if isinstance(trainer_state, dict):
        block_size = int(trainer_state.get("train_config", {}).get("block_size", block_size))
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "block_size"):
        block_size = min(block_size, int(config.block_size))
    return LoadedModel(model, ckpt.tokenizer, ckpt.model_family, block_size, str(ckpt.path),
                       trainer_state)
