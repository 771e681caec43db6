"""Checkpoints, part 2 of the guide: everything a run needs to continue exactly, in one directory
of files that nothing can execute.

    config.json            {"format": "numpylm-checkpoint", "model_family": "gpt",
                            "model_args": {...constructor arguments...}}
    model.safetensors      the model's state dict (for the count n-gram: its count tables)
    optimizer.safetensors  the optimiser's state dict, flattened (`numpylm.optim.serialize`)
    trainer_state.json     step, random-generator states, training settings, data source
    tokenizer.txt          the tokenizer, in its own text format

`config.json`, `model.safetensors` and `tokenizer.txt` are enough to rebuild the model for
`generate` and `eval`; resuming training also needs the optimiser and trainer state.

Crash safety. A checkpoint is first written in full to a hidden sibling directory
(`.NAME.incoming`); only then is the old checkpoint moved aside (`.NAME.previous`), the new
one renamed into place, and the old one deleted. A crash while the files are being written
leaves the previous checkpoint untouched; a crash between the two renames leaves it under
`.NAME.previous`, where `load_checkpoint` finds it.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from numpylm.io import load_json, load_safetensors_with_metadata, save_json, save_safetensors

__all__ = ["Checkpoint", "CheckpointError", "FORMAT", "load_checkpoint", "save_checkpoint"]

FORMAT = "numpylm-checkpoint"
CONFIG, MODEL, OPTIMIZER, TRAINER, TOKENIZER = (
    "config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json",
    "tokenizer.txt")
# What each file is for, for error messages that say what a missing file means.
ROLES = {
    CONFIG: "model family and constructor arguments",
    MODEL: "model weights",
    OPTIMIZER: "optimiser state, needed to resume training",
    TRAINER: "step and random states, needed to resume training",
    TOKENIZER: "the tokenizer the model was trained with",
}


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, incomplete or corrupt."""


@dataclass
class Checkpoint:
    """A checkpoint read back from disk. `optimizer_state`/`trainer_state` may be None
    (not saved, or not asked for)."""

    path: Path
    model_family: str
    model_args: dict[str, Any]
    model_state: dict[str, np.ndarray]
    tokenizer: Any
    optimizer_state: dict[str, Any] | None = None
    trainer_state: dict[str, Any] | None = None
    model_metadata: dict[str, str] = field(default_factory=dict)


def _sibling(directory: Path, tag: str) -> Path:
    return directory.parent / f".{directory.name}.{tag}"


def save_checkpoint(directory: str | os.PathLike[str], *, model_family: str,
                    model_args: dict[str, Any], model_state: dict[str, np.ndarray], tokenizer,
                    optimizer_state: dict[str, Any] | None = None,
                    trainer_state: dict[str, Any] | None = None,
                    model_metadata: dict[str, str] | None = None) -> Path:
    """Write a checkpoint to `directory`, replacing any checkpoint there only once the new one
    is complete. Returns the directory's path."""
    from numpylm.optim import optimizer_state_to_tensors

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"cannot write a checkpoint to {str(directory)!r}: it is a file")
    directory.parent.mkdir(parents=True, exist_ok=True)
    incoming, previous = _sibling(directory, "incoming"), _sibling(directory, "previous")
    if incoming.exists():  # left over from an earlier crash; never a complete checkpoint
        shutil.rmtree(incoming)
    incoming.mkdir()
    try:
        save_json({"format": FORMAT, "model_family": model_family, "model_args": model_args},
                  incoming / CONFIG)
        save_safetensors(model_state, incoming / MODEL, metadata=model_metadata)
        if optimizer_state is not None:
            tensors, metadata = optimizer_state_to_tensors(optimizer_state)
            save_safetensors(tensors, incoming / OPTIMIZER, metadata=metadata)
        if trainer_state is not None:
            save_json({**trainer_state, "tokenizer_file": TOKENIZER}, incoming / TRAINER)
        tokenizer.save(incoming / TOKENIZER)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    # The swap: two renames, each atomic; in between, the old checkpoint sits at `previous`.
    if previous.exists():
        shutil.rmtree(previous)
    if directory.exists():
        os.rename(directory, previous)
    os.rename(incoming, directory)
    shutil.rmtree(previous, ignore_errors=True)
    return directory


def _resolve(directory: Path) -> Path:
    if directory.is_dir():
        return directory
    previous = _sibling(directory, "previous")
    if previous.is_dir():  # a crash between the two renames of save_checkpoint
        return previous
    raise CheckpointError(f"no checkpoint directory at {str(directory)!r}")


def check_files(directory: str | os.PathLike[str], for_resume: bool = False) -> list[str]:
    """The checkpoint files missing from `directory` (empty when complete)."""
    directory = Path(directory)
    needed = [CONFIG, MODEL, TOKENIZER] + ([TRAINER] if for_resume else [])
    missing = [name for name in needed if not (directory / name).is_file()]
    if for_resume and (directory / CONFIG).is_file():
        try:
            family = load_json(directory / CONFIG).get("model_family")
        except (ValueError, AttributeError):
            family = None
        if family != "ngram" and not (directory / OPTIMIZER).is_file():
            missing.append(OPTIMIZER)
    return missing


def load_checkpoint(directory: str | os.PathLike[str], for_resume: bool = False) -> Checkpoint:
    """Read a checkpoint; with `for_resume`, also the optimiser and trainer state.

    A missing directory or file, or a file that does not parse, raises `CheckpointError`
    listing every missing file (and what it is for) or naming the corrupt one.
    """
    from numpylm.optim import optimizer_state_from_tensors
    from numpylm.tokenizers.base import load_tokenizer

    path = _resolve(Path(directory))
    missing = check_files(path, for_resume)
    if missing:
        lines = [f"checkpoint {str(path)!r} is incomplete; missing:"]
        lines += [f"  {name} ({ROLES[name]})" for name in missing]
        present = sorted(p.name for p in path.iterdir())
        lines.append(f"  present: {', '.join(present) if present else 'nothing'}")
        raise CheckpointError("\n".join(lines))

    def corrupt(name: str, err: Exception) -> CheckpointError:
        return CheckpointError(f"checkpoint {str(path)!r}: {name} is corrupt: {err}")

    try:
        config = load_json(path / CONFIG)
    except ValueError as err:
        raise corrupt(CONFIG, err) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: {CONFIG} is not a numpylm checkpoint config "
            f"(expected \"format\": \"{FORMAT}\" with model_family and model_args)")
    if not (isinstance(config.get("model_family"), str)
            and isinstance(config.get("model_args"), dict)):
        raise corrupt(CONFIG, ValueError("model_family must be a string and model_args an object"))
    try:
        model_state, model_metadata = load_safetensors_with_metadata(path / MODEL)
    except ValueError as err:
        raise corrupt(MODEL, err) from None
    try:
        tokenizer = load_tokenizer(path / TOKENIZER)
    except ValueError as err:
        raise corrupt(TOKENIZER, err) from None
    ckpt = Checkpoint(path, config["model_family"], config["model_args"], model_state, tokenizer,
                      model_metadata=model_metadata)
    if for_resume:
        ckpt.trainer_state = read_trainer_state(path)
        if not isinstance(ckpt.trainer_state, dict) or "step" not in ckpt.trainer_state:
            raise corrupt(TRAINER, ValueError("expected a JSON object with a 'step'"))
        if (path / OPTIMIZER).is_file():
            try:
                ckpt.optimizer_state = optimizer_state_from_tensors(
                    *load_safetensors_with_metadata(path / OPTIMIZER))
            except ValueError as err:
                raise corrupt(OPTIMIZER, err) from None
    return ckpt


def read_trainer_state(directory: str | os.PathLike[str]) -> Any:
    """The JSON of a checkpoint's trainer_state.json; CheckpointError if it is not JSON."""
    path = Path(directory)
    try:
        return load_json(path / TRAINER)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {str(path)!r}: {TRAINER} is corrupt: {err}") from None
