"""`numpylm train` does not lose work or train on the wrong thing: it refuses to overwrite a
checkpoint, refuses flags that contradict the run it resumes, resumes and evaluates on the
recorded text (refusing a changed one), keeps the first run's learning-rate schedule, and
Ctrl-C saves the current step."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from numpylm.cli import main
from numpylm.corpus import embedded_corpus
from numpylm.training.checkpoint import load_checkpoint

TINY = ["--batch-size", "2", "--block-size", "8", "--warmup-steps", "1", "--eval-interval", "2",
        "--eval-batches", "1", "--log-interval", "1", "--n-layer", "1", "--n-head", "1",
        "--n-embd", "8"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(embedded_corpus()[:3000], encoding="utf-8")
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_existing_checkpoint_is_not_overwritten(capsys, tmp_path, text_file):
    out = tmp_path / "gpt"
    assert run(capsys, "train", "--data", text_file, "--out", out, "--steps", "4", *TINY)[0] == 0
    code, _, err = run(capsys, "train", "--data", text_file, "--out", out, "--steps", "2", *TINY)
    assert code == 2 and "already holds a checkpoint" in err
    assert load_checkpoint(out, for_resume=True).trainer_state["step"] == 4  # untouched
    code, _, _ = run(capsys, "train", "--data", text_file, "--out", out, "--steps", "2",
                     "--overwrite", *TINY)
    assert code == 0 and load_checkpoint(out, for_resume=True).trainer_state["step"] == 2


def test_resume_refuses_conflicting_flags_and_says_when_nothing_is_left(capsys, tmp_path,
                                                                       text_file):
    out = tmp_path / "gpt"
    assert run(capsys, "train", "--data", text_file, "--out", out, "--steps", "4", *TINY)[0] == 0
    code, _, err = run(capsys, "train", "--resume", "--out", out, "--model", "lstm",
                       "--steps", "6")
    assert code == 2 and "--model lstm (checkpoint: gpt)" in err
    code, _, err = run(capsys, "train", "--resume", "--out", out, "--lr", "0.5", "--steps", "6")
    assert code == 2 and "--lr 0.5 (checkpoint: 0.001)" in err
    code, _, err = run(capsys, "train", "--resume", "--out", out, "--n-embd", "16",
                       "--steps", "6")
    assert code == 2 and "n_embd=16 (checkpoint: 8)" in err
    code, out_text, _ = run(capsys, "train", "--resume", "--out", out, "--steps", "4")
    assert code == 0 and "nothing to train" in out_text and "saved" not in out_text


def test_resume_and_eval_use_the_recorded_text_and_refuse_a_changed_one(capsys, tmp_path,
                                                                        text_file, monkeypatch):
    out = tmp_path / "gpt"
    assert run(capsys, "train", "--data", text_file, "--out", out, "--steps", "4", *TINY)[0] == 0
    recorded = load_checkpoint(out, for_resume=True).trainer_state["data"]
    assert recorded["path"] == str(text_file.resolve()) and recorded["sha256"].startswith("sha256:")
    monkeypatch.chdir(tmp_path.parent)  # another directory: the absolute path still finds it
    code, out_text, _ = run(capsys, "train", "--resume", "--out", out, "--steps", "6")
    assert code == 0 and str(text_file) in out_text  # not the embedded corpus
    assert run(capsys, "eval", "--checkpoint", out)[0] == 0
    text_file.write_text(embedded_corpus()[3000:6000], encoding="utf-8")
    code, _, err = run(capsys, "train", "--resume", "--out", out, "--steps", "8")
    assert code == 2 and "differs" in err and "--allow-different-data" in err
    code, _, err = run(capsys, "eval", "--checkpoint", out)
    assert code == 2 and "--allow-different-data" in err
    assert run(capsys, "eval", "--checkpoint", out, "--allow-different-data")[0] == 0


def test_resume_with_a_new_total_keeps_the_schedule(capsys, tmp_path, text_file):
    out = tmp_path / "gpt"
    assert run(capsys, "train", "--data", text_file, "--out", out, "--steps", "4", *TINY)[0] == 0
    code, out_text, _ = run(capsys, "train", "--resume", "--out", out, "--steps", "8")
    assert code == 0 and "schedule is kept (cosine decay until step 4, then min_lr" in out_text
    lrs = [float(line.split("lr ")[1].split(" ")[0]) for line in out_text.splitlines()
           if line.startswith("step ") and "| lr " in line]
    assert lrs and all(lr == pytest.approx(1e-4) for lr in lrs)  # past the decay: min_lr


def _interrupt_training(tmp_path, text_file, signals: int):
    out = tmp_path / f"gpt{signals}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "numpylm", "train", "--data", str(text_file), "--out", str(out),
         "--steps", "100000", "--eval-interval", "100000", *TINY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 5/"):
            for _ in range(signals):
                proc.send_signal(signal.SIGINT)
                time.sleep(0.02)
            break
    rest, err = proc.communicate(timeout=60)
    return proc.returncode, "".join(lines) + rest, err, out


def test_ctrl_c_saves_the_current_step_and_exits_130(tmp_path, text_file):
    code, out_text, err, out = _interrupt_training(tmp_path, text_file, 1)
    assert code == 130, err
    assert "Traceback" not in err
    step = load_checkpoint(out, for_resume=True).trainer_state["step"]
    assert step >= 5 and f"saved at step {step}, continue with --resume" in out_text


def test_a_second_ctrl_c_does_not_break_the_checkpoint(tmp_path, text_file):
    code, _, err, out = _interrupt_training(tmp_path, text_file, 2)
    # The second signal may land during the save (ignored) or after it, once the command
    # is ending (then it ends the process); either way the checkpoint is whole.
    assert code in (130, -signal.SIGINT), err
    assert load_checkpoint(out, for_resume=True).trainer_state["step"] >= 5
