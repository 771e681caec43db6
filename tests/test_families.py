"""Every registered family follows the one model contract (numpylm.models.base): it trains (or is
fitted), saves, loads, and decodes through the one `generate`, and stepping its decoding state
gives the tokens that running `forward` on the growing sequence gives."""
import numpy as np
import pytest

from numpylm.inference import generate
from numpylm.models.base import LanguageModel
from numpylm.tokenizers import CharTokenizer
from numpylm.training import TrainConfig, prepare_data, train
from numpylm.training.families import FAMILIES, build_model, get_family, load_model
from numpylm.training.checkpoint import save_checkpoint

TEXT = "the cat sat on the mat. the dog sat on the log. " * 20
TOKENIZER = CharTokenizer.from_text(TEXT)
V = TOKENIZER.vocab_size


def _tiny_args(name: str) -> dict:
    """Small constructor arguments for a family (the ladder's tiny sizing where it has one)."""
    family = get_family(name)
    if family.ladder is not None:
        return family.ladder.args(V, 16, True)
    if name == "ngram":
        return {"order": 3, "vocab_size": V, "smoothing": "kneser_ney"}
    return {"vocab_size": V}


def _trained(name: str, tmp_path):
    """A model of family `name` after two training steps (or a fit), saved and loaded back."""
    data = prepare_data(TOKENIZER, text=TEXT)
    args = _tiny_args(name)
    model = build_model(name, args)
    out = tmp_path / name
    if get_family(name).trainable:
        train(model, data, TrainConfig(steps=2, batch_size=2, block_size=16, eval_interval=2,
                                       eval_batches=1, log_interval=1, out_dir=str(out)),
              tokenizer=TOKENIZER, model_family=name, model_args=args, log=lambda line: None)
    else:
        model.fit([data.train])
        save_checkpoint(out, model_family=name, model_args=model.config,
                        model_state=model.state_dict(), tokenizer=TOKENIZER)
    return model, load_model(out)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_trains_saves_loads_and_decodes(name, tmp_path):
    model, loaded = _trained(name, tmp_path)
    again = loaded.model
    assert isinstance(again, LanguageModel) and loaded.family == name
    prompt = TOKENIZER.encode("the cat")
    # The loaded model is the saved one: the same logits for the same ids.
    with_state = again.init_state(1)
    np.testing.assert_allclose(again.step(with_state, np.array([prompt])),
                               model.step(model.init_state(1), np.array([prompt])),
                               rtol=1e-6, atol=1e-6)
    # Stepping the decoding state gives the greedy tokens of rerunning forward every step.
    stepped = generate(again, prompt, 24, temperature=0)
    rerun = generate(again, prompt, 24, temperature=0, use_cache=False)
    np.testing.assert_array_equal(stepped, rerun)
    assert len(stepped) == len(prompt) + 24


@pytest.mark.parametrize("name", list(FAMILIES))
def test_left_padded_batches_decode_as_each_prompt_alone(name, tmp_path):
    """Prompts of different lengths share one batch; each gets exactly its own tokens."""
    _, loaded = _trained(name, tmp_path)
    prompts = [TOKENIZER.encode("the dog sat"), TOKENIZER.encode("on"),
               TOKENIZER.encode("the mat. the")]
    together = generate(loaded.model, prompts, 10, temperature=0)
    for prompt, out in zip(prompts, together):
        np.testing.assert_array_equal(out, generate(loaded.model, prompt, 10, temperature=0))
    # And seeded sampling repeats itself.
    a = generate(loaded.model, prompts, 10, seed=3)
    b = generate(loaded.model, prompts, 10, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_step_logits_equal_forward_logits(name, tmp_path):
    """The decoding hook computes what forward computes, position by position, when the
    prompt is fed at once and when it is fed one token at a time."""
    _, loaded = _trained(name, tmp_path)
    model = loaded.model
    ids = np.array([TOKENIZER.encode("the cat sat on")])
    logits, _ = model(ids)
    full = np.asarray(logits.data)
    state = model.init_state(1)
    for t in range(ids.shape[1]):
        step_logits = model.step(state, ids[:, t:t + 1])
        np.testing.assert_allclose(step_logits, full[:, t], rtol=1e-5, atol=1e-5,
                                   err_msg=f"{name}, position {t}")


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model family 'transformerxl'; known: ngram"):
        get_family("transformerxl")


@pytest.mark.parametrize("name", [n for n, f in FAMILIES.items() if f.count is not None])
def test_the_parameter_count_arithmetic_matches_the_built_model(name):
    args = _tiny_args(name)
    if name in ("rnn", "gru", "lstm"):
        args = {**args, "num_layers": 2}
    if name == "gpt":
        args = {**args, "bias": False}
    assert get_family(name).count(args) == build_model(name, args).num_parameters()


def test_a_checkpoint_whose_config_lies_about_its_size_is_refused_at_once(tmp_path):
    """A 2-layer GPT's weights with a config.json claiming a million layers: refused in well
    under a second, with both numbers named, before anything is built."""
    import json
    import time

    from numpylm.training.checkpoint import CheckpointError

    _, loaded = _trained("gpt", tmp_path)
    config = json.loads((tmp_path / "gpt" / "config.json").read_text())
    config["model_args"]["n_layer"] = 1_000_000
    (tmp_path / "gpt" / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="imply .* parameters but model.safetensors holds"):
        load_model(tmp_path / "gpt")
    assert time.perf_counter() - start < 1.0
    config["model_args"] = {"vocab_size": V, "n_layer": "many"}
    (tmp_path / "gpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(tmp_path / "gpt")
    state = json.loads((tmp_path / "gpt" / "trainer_state.json").read_text())
    state["train_config"] = [1, 2]
    (tmp_path / "gpt" / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="train_config"):
        load_model(tmp_path / "gpt")
