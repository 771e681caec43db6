"""TrainConfig.max_seconds stops a run early, after a whole step, and says why."""
import numpy as np
import pytest

from numpylm.training import TrainConfig, train
from test_training import TinyLM, small_data


def test_a_time_limit_stops_after_the_step_that_crosses_it():
    tokenizer, data = small_data(4000)
    model = TinyLM(tokenizer.vocab_size)
    lines = []
    config = TrainConfig(steps=1000, batch_size=2, block_size=4, warmup_steps=0,
                         eval_interval=1000, eval_batches=1, log_interval=1000,
                         max_seconds=1e-9)
    result = train(model, data, config, log=lines.append)
    assert result.stopped == "time" and result.step == 1
    assert "time limit" in lines[-1]
    assert result.val_losses and result.val_losses[-1][0] == 1  # evaluated where it stopped
    assert np.isfinite(result.losses[0])


def test_without_a_limit_every_step_runs():
    tokenizer, data = small_data(4000)
    config = TrainConfig(steps=5, batch_size=2, block_size=4, warmup_steps=0,
                         eval_interval=5, eval_batches=1, log_interval=5)
    result = train(TinyLM(tokenizer.vocab_size), data, config, log=lambda line: None)
    assert result.stopped == "completed" and result.step == 5


def test_a_limit_must_be_positive():
    with pytest.raises(ValueError, match="max_seconds"):
        TrainConfig(max_seconds=0)
