"""A checkpoint survives any two crashes: every step of two interrupted saves, enumerated.

A kill is simulated by raising from `checkpoint._fs_step`, the hook called before each
filesystem step of `save_checkpoint` (each file written, each rename, each deletion), and
from every step after it: a killed process does nothing more, cleanup included.
"""
from __future__ import annotations

import numpy as np
import pytest

from numpylm.io.errors import FileFormatError
from numpylm.tokenizers.char import CharTokenizer
from numpylm.training import checkpoint as ckpt_module
from numpylm.training.checkpoint import (CheckpointError, load_checkpoint, save_checkpoint)


class Killed(BaseException):
    """Not an Exception: nothing in the save may catch it and carry on."""


def _save(directory, step: int) -> None:
    save_checkpoint(directory, model_family="bigram", model_args={"vocab_size": 2},
                    model_state={"w": np.array([step], dtype=np.float32)},
                    tokenizer=CharTokenizer.from_text("ab"), trainer_state={"step": step})


def _loaded_step(directory) -> int:
    return int(load_checkpoint(directory).model_state["w"][0])


def _count_steps(monkeypatch, action) -> int:
    calls = []
    monkeypatch.setattr(ckpt_module, "_fs_step", lambda kind, path: calls.append(kind))
    action()
    monkeypatch.undo()
    return len(calls)


def _run_killed_at(monkeypatch, k: int, action) -> bool:
    """Run `action`, killing it before its filesystem step number `k` (0-based).
    Returns True if it completed."""
    done = [0]

    def step(kind, path):
        if done[0] >= k:
            raise Killed(f"killed before step {k} ({kind} {path.name})")
        done[0] += 1

    monkeypatch.setattr(ckpt_module, "_fs_step", step)
    try:
        action()
        return True
    except Killed:
        return False
    finally:
        monkeypatch.undo()


def _snapshot(tmp_path) -> dict[str, bytes | None]:
    """Every path under tmp_path: a file's bytes, or None for a directory."""
    return {str(p.relative_to(tmp_path)): None if p.is_dir() else p.read_bytes()
            for p in sorted(tmp_path.rglob("*"))}


def _restore(tmp_path, snapshot: dict[str, bytes | None]) -> None:
    import shutil
    for child in tmp_path.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    for name, data in snapshot.items():  # sorted: a directory comes before its files
        if data is None:
            (tmp_path / name).mkdir(parents=True, exist_ok=True)
        else:
            (tmp_path / name).write_bytes(data)


@pytest.mark.parametrize("initial", [None, 1])
def test_every_interleaving_of_two_interrupted_saves_leaves_the_newest_complete_checkpoint(
        tmp_path, monkeypatch, initial):
    directory = tmp_path / "run"
    if initial is not None:
        _save(directory, initial)
    start = _snapshot(tmp_path)
    first_total = _count_steps(monkeypatch, lambda: _save(directory, 2))
    _restore(tmp_path, start)
    cases = 0
    for k1 in range(first_total + 1):
        _restore(tmp_path, start)
        completed1 = _run_killed_at(monkeypatch, k1, lambda: _save(directory, 2))
        assert completed1 == (k1 == first_total)
        after_first = _snapshot(tmp_path)
        second_total = _count_steps(monkeypatch, lambda: _save(directory, 3))
        for k2 in range(second_total + 1):
            _restore(tmp_path, after_first)
            completed2 = _run_killed_at(monkeypatch, k2, lambda: _save(directory, 3))
            floor = max([s for s, ok in ((initial, True), (2, completed1), (3, completed2))
                         if ok and s is not None], default=None)
            where = f"killed at step {k1} of save 1 and step {k2} of save 2"
            if floor is None:
                try:  # nothing completed: a checkpoint may or may not be there, never a torn one
                    assert _loaded_step(directory) in (2, 3), where
                except CheckpointError:
                    pass
            else:
                assert _loaded_step(directory) >= floor, where
            # A third save, not interrupted, always completes and leaves no sibling behind.
            _save(directory, 4)
            assert _loaded_step(directory) == 4, where
            assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], where
            cases += 1
    assert cases > 50  # the enumeration really ran through the steps


def test_kill_between_the_two_renames_then_a_second_save(tmp_path):
    """The reported double crash: only `.incoming` (complete) and `.previous` exist."""
    directory = tmp_path / "run"
    _save(tmp_path / ".run.previous", 1)
    _save(tmp_path / ".run.incoming", 2)
    assert _loaded_step(directory) == 2  # the newest complete copy, not the older one
    _save(directory, 3)
    assert _loaded_step(directory) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_only_previous_left_is_loaded_and_kept_by_the_next_save(tmp_path, monkeypatch):
    directory = tmp_path / "run"
    _save(tmp_path / ".run.previous", 1)
    (tmp_path / ".run.writing").mkdir()  # a save killed while writing its files
    assert _loaded_step(directory) == 1
    # The next save is killed right after recovering: the old copy must still be there.
    _run_killed_at(monkeypatch, 2, lambda: _save(directory, 2))
    assert _loaded_step(directory) == 1


def test_a_nan_validation_loss_keeps_the_last_finite_checkpoint(tmp_path):
    directory = tmp_path / "run"
    _save(directory, 1)
    with pytest.raises(CheckpointError, match="validation loss is nan"):
        save_checkpoint(directory, model_family="bigram", model_args={},
                        model_state={"w": np.array([2.0], dtype=np.float32)},
                        tokenizer=CharTokenizer.from_text("ab"),
                        trainer_state={"step": 2, "val_loss": float("nan")})
    assert _loaded_step(directory) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_nan_weights_are_refused_naming_the_tensor(tmp_path):
    directory = tmp_path / "run"
    save_checkpoint(directory, model_family="bigram", model_args={},
                    model_state={"w": np.array([1.0, np.inf], dtype=np.float32)},
                    tokenizer=CharTokenizer.from_text("ab"))
    with pytest.raises(CheckpointError, match=r"model.safetensors.*w: holds inf at index \(1,\)"):
        load_checkpoint(directory)


def _resume_state(tmp_path, trainer_state):
    directory = tmp_path / "run"
    from numpylm.io import save_json
    save_checkpoint(directory, model_family="bigram", model_args={},
                    model_state={"w": np.zeros(1, np.float32)},
                    tokenizer=CharTokenizer.from_text("ab"),
                    optimizer_state={"state": {}, "param_groups": []},
                    trainer_state={"step": 1})
    save_json(trainer_state, directory / "trainer_state.json")
    return directory


GOOD_RANDOM = {"batches": np.random.default_rng(0).bit_generator.state,
               "nn_default": np.random.default_rng(1).bit_generator.state}


@pytest.mark.parametrize("state, field", [
    ({"step": 10**30, "random_states": GOOD_RANDOM}, "step"),
    ({"step": -1, "random_states": GOOD_RANDOM}, "step"),
    ({"step": 1.5, "random_states": GOOD_RANDOM}, "step"),
    ({"step": True, "random_states": GOOD_RANDOM}, "step"),
    ({"step": 3}, "random_states"),
    ({"step": 3, "random_states": {"batches": GOOD_RANDOM["batches"]}}, "random_states.nn_default"),
    ({"step": 3, "random_states": {**GOOD_RANDOM, "batches": {"bit_generator": "PCG64"}}},
     "random_states.batches"),
    ({"step": 3, "random_states": {**GOOD_RANDOM, "modules": []}}, "random_states.modules"),
    ({"step": 3, "random_states": GOOD_RANDOM, "train_config": None}, "train_config"),
    ([1, 2], "(top level)"),
])
def test_trainer_states_that_cannot_be_resumed_are_refused(tmp_path, state, field):
    directory = _resume_state(tmp_path, state)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(directory, for_resume=True)
    assert isinstance(info.value, FileFormatError) and isinstance(info.value, ValueError)
    assert info.value.field == field and "trainer_state.json" in str(info.value)


def test_a_good_trainer_state_resumes(tmp_path):
    directory = _resume_state(tmp_path, {"step": 3, "random_states": GOOD_RANDOM})
    assert load_checkpoint(directory, for_resume=True).trainer_state["step"] == 3


def test_the_data_record_tells_one_text_from_another(tmp_path):
    """A resumed run or an evaluation compares the fingerprint of its text with the
    checkpoint's (hand-checked: sha256 of b"abc" begins ba7816bf)."""
    from numpylm.training.data import (check_data_record, data_record, prepare_data,
                                       text_fingerprint)

    assert text_fingerprint("abc").startswith("sha256:ba7816bf8f01cfea")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world " * 50, encoding="utf-8")
    data = prepare_data(CharTokenizer.from_text("helo wrd"), corpus)
    record = data_record(data)
    assert record["path"] == str(corpus.resolve()) and record["sha256"] == text_fingerprint(
        "hello world " * 50)
    check_data_record(record, "hello world " * 50, "the same file")
    with pytest.raises(ValueError, match="differs"):
        check_data_record(record, "another text", "the embedded corpus")
    check_data_record({"source": "old checkpoint"}, "anything", "x")  # no fingerprint: accepted
