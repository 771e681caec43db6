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

Crash safety. A save goes through three hidden siblings of the checkpoint directory NAME:

    .NAME.writing    the new checkpoint while its files are written: never loadable
    .NAME.incoming   the new checkpoint, complete (renamed from .writing once every file is in)
    .NAME.previous   the old checkpoint, moved aside while the new one is renamed into place

A save first finishes whatever an interrupted save left (`_recover`), then writes `.writing`,
renames it to `.incoming`, moves NAME to `.previous`, renames `.incoming` to NAME and deletes
`.previous`. Every step is one rename or the deletion of a copy that is not the last
loadable one, so a crash (or two, or a second Ctrl-C) at any point leaves a loadable
checkpoint: `load_checkpoint` takes `.incoming` (complete and newest) if it exists, else
NAME, else `.previous`. The test enumerates every interleaving of two interrupted saves.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from numpylm.io import load_json, load_safetensors_with_metadata, save_json, save_safetensors
from numpylm.io.errors import FileFormatError
from numpylm.io.safetensors import check_finite

__all__ = ["Checkpoint", "CheckpointError", "FORMAT", "MAX_STEP", "check_trainer_state",
           "load_checkpoint", "save_checkpoint"]

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


# A step above this is not a run anyone trained; a file saying 10**30 is refused.
MAX_STEP = 10**12
# The numpy bit generators a saved random state may name.
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


class CheckpointError(FileFormatError):
    """A checkpoint directory that is missing, incomplete or corrupt.

    A `FileFormatError` (so a `ValueError`) whose message names the checkpoint and the file;
    raised as `CheckpointError("message")`, optionally with `path=` and `field=`.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None,
                 field: str | None = None) -> None:
        super().__init__(None, message)
        self.path = None if path is None else os.fspath(path)
        self.field = field


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


def _fs_step(action: str, path: Path) -> None:
    """Called before every filesystem step of a save. It does nothing; the crash tests
    replace it to stop a save at each step in turn, as a kill would."""


def _rename(source: Path, target: Path) -> None:
    _fs_step("rename", source)
    os.rename(source, target)


def _remove(directory: Path) -> None:
    if directory.exists():
        _fs_step("remove", directory)
        shutil.rmtree(directory)


def _recover(directory: Path) -> None:
    """Finish what an interrupted save left, so that NAME holds the newest complete checkpoint.

    Never deletes the last loadable copy: `.writing` is never loadable; `.previous` is deleted
    only while NAME exists; a complete `.incoming` is renamed into place, never deleted.
    """
    writing, incoming, previous = (_sibling(directory, tag)
                                   for tag in ("writing", "incoming", "previous"))
    _remove(writing)
    if incoming.is_dir() and check_files(incoming):  # only an older version leaves it partial
        _remove(incoming)
    if incoming.is_dir():  # complete and newer than NAME: finish its swap
        if directory.is_dir():
            _remove(previous)
            _rename(directory, previous)
        _rename(incoming, directory)
    if not directory.is_dir() and previous.is_dir():  # killed between the two renames
        _rename(previous, directory)
    if directory.is_dir():
        _remove(previous)


def save_checkpoint(directory: str | os.PathLike[str], *, model_family: str,
                    model_args: dict[str, Any], model_state: dict[str, np.ndarray], tokenizer,
                    optimizer_state: dict[str, Any] | None = None,
                    trainer_state: dict[str, Any] | None = None,
                    model_metadata: dict[str, str] | None = None) -> Path:
    """Write a checkpoint to `directory`, replacing any checkpoint there only once the new one
    is complete. Returns the directory's path.

    A `trainer_state` whose `val_loss` is NaN or infinite is refused (`CheckpointError`)
    before anything is written: the checkpoint already there, the last one with a finite
    validation loss, stays.
    """
    from numpylm.optim import optimizer_state_to_tensors

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"cannot write a checkpoint to {str(directory)!r}: it is a file")
    if trainer_state is not None and "val_loss" in trainer_state:
        val_loss = trainer_state["val_loss"]
        if not isinstance(val_loss, (int, float)) or not math.isfinite(val_loss):
            raise CheckpointError(
                f"not saving to {str(directory)!r}: the validation loss is {val_loss!r}; the "
                f"checkpoint already there (the last with a finite validation loss) is kept")
    directory.parent.mkdir(parents=True, exist_ok=True)
    _recover(directory)
    writing, incoming, previous = (_sibling(directory, tag)
                                   for tag in ("writing", "incoming", "previous"))
    _fs_step("mkdir", writing)
    writing.mkdir()
    try:
        _fs_step("write", writing / CONFIG)
        save_json({"format": FORMAT, "model_family": model_family, "model_args": model_args},
                  writing / CONFIG)
        _fs_step("write", writing / MODEL)
        save_safetensors(model_state, writing / MODEL, metadata=model_metadata)
        if optimizer_state is not None:
            tensors, metadata = optimizer_state_to_tensors(optimizer_state)
            _fs_step("write", writing / OPTIMIZER)
            save_safetensors(tensors, writing / OPTIMIZER, metadata=metadata)
        if trainer_state is not None:
            _fs_step("write", writing / TRAINER)
            save_json({**trainer_state, "tokenizer_file": TOKENIZER}, writing / TRAINER)
        _fs_step("write", writing / TOKENIZER)
        tokenizer.save(writing / TOKENIZER)
    except Exception:
        # An error (not a kill or Ctrl-C, which the next save's _recover cleans up): tidy now.
        shutil.rmtree(writing, ignore_errors=True)
        raise
    # Complete: from here on the new checkpoint is loadable under one name or another.
    _rename(writing, incoming)
    if directory.is_dir():
        _rename(directory, previous)
    _rename(incoming, directory)
    _remove(previous)
    return directory


def _resolve(directory: Path) -> Path:
    """Where the newest complete checkpoint of `directory` is, whatever step a save died at."""
    incoming = _sibling(directory, "incoming")
    if incoming.is_dir() and not check_files(incoming):  # complete, newer than NAME
        return incoming
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
        check_finite(model_state, path / MODEL)
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
        check_trainer_state(ckpt.trainer_state, path / TRAINER,
                            needs_random_states=config["model_family"] != "ngram")
        if (path / OPTIMIZER).is_file():
            try:
                ckpt.optimizer_state = optimizer_state_from_tensors(
                    *load_safetensors_with_metadata(path / OPTIMIZER))
            except ValueError as err:
                raise corrupt(OPTIMIZER, err) from None
    return ckpt


def check_trainer_state(state: Any, where: str | os.PathLike[str],
                        needs_random_states: bool = True) -> None:
    """Refuse a trainer state that cannot be resumed from, naming the field.

    `step` must be an int in [0, MAX_STEP]; a neural run's `random_states` must hold the
    `batches` and `nn_default` generator states (and optional per-module `modules`), each one
    a state numpy accepts; `train_config` and `data`, when present, must be objects.
    """
    def bad(field: str, message: str) -> CheckpointError:
        where_ = Path(where)
        return CheckpointError(f"checkpoint {str(where_.parent)!r}: {where_.name} is corrupt: "
                               f"{field}: {message}", path=where, field=field)

    if not isinstance(state, dict):
        raise bad("(top level)", f"expected a JSON object, got {type(state).__name__}")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise bad("step", f"must be an integer in [0, {MAX_STEP}], got {str(step)[:40]}")
    for name in ("train_config", "data"):
        if name in state and not isinstance(state[name], dict):
            raise bad(name, f"must be a JSON object, got {type(state[name]).__name__}")
    if not needs_random_states:
        return
    states = state.get("random_states")
    if not isinstance(states, dict):
        raise bad("random_states", "missing or not an object; the run cannot continue "
                                   "exactly without its generators' states")
    modules = states.get("modules", {})
    if not isinstance(modules, dict):
        raise bad("random_states.modules", "must be an object")
    named = [("batches", states.get("batches")), ("nn_default", states.get("nn_default"))]
    for field_name, generator_state in named + [(f"modules.{k}", v) for k, v in modules.items()]:
        if not _valid_generator_state(generator_state):
            raise bad(f"random_states.{field_name}", "missing or not a numpy generator state")


def _valid_generator_state(state: Any) -> bool:
    """Whether numpy accepts `state` as a bit generator's state (tried on a fresh one)."""
    if not isinstance(state, dict) or state.get("bit_generator") not in _BIT_GENERATORS:
        return False
    generator = getattr(np.random, state["bit_generator"])()
    try:
        generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError):
        return False
    return True


def read_trainer_state(directory: str | os.PathLike[str]) -> Any:
    """The JSON of a checkpoint's trainer_state.json; CheckpointError if it is not JSON."""
    path = Path(directory)
    try:
        return load_json(path / TRAINER)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {str(path)!r}: {TRAINER} is corrupt: {err}") from None
