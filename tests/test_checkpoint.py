"""Checkpoints: exact resumption, crash safety, and clear errors for missing or corrupt files."""
from __future__ import annotations

import os

import numpy as np
import pytest

from numpylm import nn
from numpylm.models.ngram import NGramLM
from numpylm.training import (CheckpointError, TrainConfig, load_checkpoint, save_checkpoint,
                              train)
from numpylm.training import checkpoint as checkpoint_module
from numpylm.training.families import build_model, load_model, register_family
from test_training import TinyLM, quiet, small_data


def run(tokenizer, data, out, steps, resume=False, **overrides):
    """Train a fresh TinyLM (dropout on, so every generator matters) to `steps` total."""
    nn.manual_seed(123)     # the generator `drop_shared` draws its masks from
    model = TinyLM(tokenizer.vocab_size, dropout=0.2)
    settings = dict(batch_size=3, block_size=8, grad_accum=2, lr=1e-2, warmup_steps=3,
                    eval_interval=4, eval_batches=1, log_interval=100, out_dir=str(out))
    settings.update(overrides)
    train(model, data, TrainConfig(steps=steps, **settings), tokenizer=tokenizer,
          model_family="tiny", model_args={"vocab_size": tokenizer.vocab_size, "dropout": 0.2},
          resume_from=str(out) if resume else None, log=quiet)
    return model


def test_resuming_is_bit_identical_to_not_stopping(tmp_path, monkeypatch):
    """6 steps, save, a fresh process-like restart, 4 more steps == 10 steps straight.

    Needs the weights, AdamW's moments and step counts, the batch sampler's position and both
    dropout generators (the shared one and the module's own) to come back exactly; the
    schedule is a function of the step, and the decay's length (steps=10) is the same in both.
    """
    monkeypatch.setenv("NUMPYLM_THREADS", "1")  # both parts with the same BLAS threads
    tokenizer, data = small_data(5_000)
    straight = run(tokenizer, data, tmp_path / "straight", 10)
    run(tokenizer, data, tmp_path / "stopped", 6, decay_steps=7)
    # run() builds a fresh model and resets the shared generator to its starting state, so
    # only a resume that restores every generator can continue the same random streams.
    resumed = run(tokenizer, data, tmp_path / "stopped", 10, resume=True, decay_steps=7)
    for name, array in straight.state_dict().items():
        assert np.array_equal(resumed.state_dict()[name], array), name
    a = load_checkpoint(tmp_path / "straight", for_resume=True)
    b = load_checkpoint(tmp_path / "stopped", for_resume=True)
    assert a.trainer_state["step"] == b.trainer_state["step"] == 10
    for i, entry in a.optimizer_state["state"].items():
        for key, value in entry.items():
            assert np.array_equal(b.optimizer_state["state"][i][key], value), (i, key)
    assert a.trainer_state["random_states"] == b.trainer_state["random_states"]


def test_the_random_states_survive_json_exactly(tmp_path):
    tokenizer, data = small_data(3_000)
    run(tokenizer, data, tmp_path / "c", 2)
    state = load_checkpoint(tmp_path / "c", for_resume=True).trainer_state["random_states"]
    # PCG64 state words are 128-bit integers: JSON keeps them exactly, and numpy accepts them.
    rng = np.random.default_rng()
    rng.bit_generator.state = state["batches"]
    assert rng.bit_generator.state == state["batches"]
    assert set(state["modules"]) == {"drop_own"}
    assert state["batches"]["state"]["state"] > 2**64 or state["batches"]["state"]["inc"] > 2**64


def _tiny_checkpoint(tmp_path, steps=2):
    tokenizer, data = small_data(3_000)
    out = tmp_path / "ckpt"
    model = run(tokenizer, data, out, steps)
    return out, model, tokenizer


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    out, model, tokenizer = _tiny_checkpoint(tmp_path)
    before = load_checkpoint(out, for_resume=True)
    real_save = checkpoint_module.save_safetensors

    def crash_on_optimizer(tensors, path, *args, **kwargs):
        if os.path.basename(path) == "optimizer.safetensors":
            raise OSError("disk full (simulated)")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_safetensors", crash_on_optimizer)
    for p in model.parameters():
        p.data += 1.0                                   # a different model to save
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(out, model_family="tiny", model_args={}, model_state=model.state_dict(),
                        tokenizer=tokenizer, optimizer_state={"state": {}, "param_groups": []},
                        trainer_state={"step": 99})
    after = load_checkpoint(out, for_resume=True)
    assert after.trainer_state["step"] == before.trainer_state["step"] == 2
    for name, array in before.model_state.items():
        assert np.array_equal(after.model_state[name], array)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]      # no half-written directory left


def test_a_crash_between_the_renames_is_recovered(tmp_path, monkeypatch):
    """The renames of a save: .writing -> .incoming, NAME -> .previous, .incoming -> NAME.
    A crash before the third leaves .incoming (complete, newest) and .previous; loading
    takes .incoming. (Every other interleaving: tests/test_checkpoint_recovery.py.)"""
    out, model, tokenizer = _tiny_checkpoint(tmp_path)
    state = load_checkpoint(out, for_resume=True).trainer_state
    real_rename = os.rename
    calls = []

    def crash_on_third(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError("power cut (simulated)")
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "rename", crash_on_third)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(out, model_family="tiny", model_args={}, model_state=model.state_dict(),
                        tokenizer=tokenizer, optimizer_state={"state": {}, "param_groups": []},
                        trainer_state={**state, "step": 99})
    monkeypatch.setattr(checkpoint_module.os, "rename", real_rename)
    assert not out.exists()              # the old one was moved aside, the new one not yet in
    assert sorted(os.listdir(tmp_path)) == [".ckpt.incoming", ".ckpt.previous"]
    recovered = load_checkpoint(out, for_resume=True)
    assert recovered.trainer_state["step"] == 99  # the newest complete copy
    # The next save completes the swap and cleans up.
    save_checkpoint(out, model_family="tiny", model_args={}, model_state=model.state_dict(),
                    tokenizer=tokenizer)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_missing_files_are_listed_with_what_they_are_for(tmp_path):
    out, _, _ = _tiny_checkpoint(tmp_path)
    (out / "optimizer.safetensors").unlink()
    (out / "trainer_state.json").unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(out, for_resume=True)
    message = str(err.value)
    assert "optimizer.safetensors (optimiser state" in message
    assert "trainer_state.json (step and random states" in message
    assert "present: config.json, model.safetensors, tokenizer.txt" in message
    load_checkpoint(out)                # still enough for generate and eval
    (out / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors .model weights"):
        load_checkpoint(out)
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")


@pytest.mark.parametrize("name, content, expected", [
    ("model.safetensors", b"\x08\x00\x00", "model.safetensors is corrupt"),
    ("config.json", b"{not json", "config.json is corrupt"),
    ("config.json", b'{"model_type": "llama"}', "not a numpylm checkpoint config"),
    ("tokenizer.txt", b"something else\n", "tokenizer.txt is corrupt"),
])
def test_corrupt_files_are_named(tmp_path, name, content, expected):
    out, _, _ = _tiny_checkpoint(tmp_path)
    (out / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(out)


def test_corrupt_trainer_and_optimizer_state_are_named(tmp_path):
    out, _, _ = _tiny_checkpoint(tmp_path)
    (out / "optimizer.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="optimizer.safetensors is corrupt"):
        load_checkpoint(out, for_resume=True)
    (out / "trainer_state.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="trainer_state.json is corrupt"):
        load_checkpoint(out, for_resume=True)


def test_load_model_rebuilds_a_registered_family(tmp_path):
    register_family("tiny", TinyLM)
    out, model, _ = _tiny_checkpoint(tmp_path)
    loaded = load_model(out)
    assert isinstance(loaded.model, TinyLM) and loaded.block_size == 8
    assert not loaded.model.training
    for name, array in model.state_dict().items():
        assert np.array_equal(loaded.model.state_dict()[name], array)
    # Weights that do not fit the configured model: the error says so and lists the keys.
    (out / "config.json").write_text('{"format": "numpylm-checkpoint", "model_family": "tiny", '
                                     '"model_args": {"vocab_size": 5}}')
    with pytest.raises(CheckpointError, match="(?s)does not fit.*mis-shaped keys: emb.weight"):
        load_model(out)


def test_unknown_families_and_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown model family 'transformerxl'"):
        build_model("transformerxl", {})
    register_family("tiny", TinyLM)
    with pytest.raises(ValueError, match="cannot build a 'tiny' model"):
        build_model("tiny", {"vocab_size": 5, "depth": 3})


@pytest.mark.parametrize("smoothing, params", [("mle", {}), ("add_k", {"k": 0.5}),
                                               ("kneser_ney", {}), ("modified_kneser_ney", {}),
                                               ("stupid_backoff", {})])
def test_an_ngram_model_round_trips_through_its_count_arrays(smoothing, params):
    rng = np.random.default_rng(0)
    seq = rng.integers(0, 6, size=400)
    args = {"order": 3, "vocab_size": 6, "smoothing": smoothing, **params}
    lm = NGramLM(**args).fit([seq])
    state = lm.state_dict()
    assert all(a.dtype in (np.int64, np.float64) for a in state.values())
    again = NGramLM(**args).load_state_dict(state)
    probe = rng.integers(0, 6, size=50)
    np.testing.assert_array_equal(again.token_logprobs([probe]), lm.token_logprobs([probe]))
    with pytest.raises(ValueError, match="order3.counts"):
        NGramLM(**args).load_state_dict({k: v for k, v in state.items() if k != "order3.counts"})
