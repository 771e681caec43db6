"""A PEFT adapter directory stands in for a model in `generate`, `chat`, `eval`, `evaluate` and
`serve` (its base loaded, the adapter merged), and `--adapter DIR` adds one to a model; the
merged model computes what the base with the adapter computes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from numpylm.cli import main
from numpylm.io.errors import FileFormatError
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.training.checkpoint import save_checkpoint
from numpylm.tuning import LoRAConfig, apply_lora, lora_layers, save_adapter
from numpylm.tuning.data import ChatCharTokenizer, TaskTokenizer
from numpylm.tuning.loading import adapter_base, load_adapted_model

TOK = ChatCharTokenizer(TaskTokenizer.ALPHABET, unk="<unk>")  # evaluate's tasks: any text
ARGS = dict(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=128, tie_word_embeddings=False)
IDS = np.array([TOK.encode("copy: sun red log")])


def base_model():
    return Llama(LlamaConfig(**ARGS), rng=0)


def adapted_model():
    """The base with adapters whose B is not zero, so they change what the model says."""
    model = base_model()
    apply_lora(model, LoRAConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj",
                                                                      "down_proj"]), rng=5)
    rng = np.random.default_rng(7)
    for layer in lora_layers(model).values():
        layer.lora_B.weight.data[...] = rng.normal(0, 2.0, layer.lora_B.weight.shape)
    return model


@pytest.fixture
def dirs(tmp_path):
    base = tmp_path / "base"
    save_checkpoint(base, model_family="llama", model_args=ARGS,
                    model_state=base_model().state_dict(), tokenizer=TOK)
    adapter = tmp_path / "adapter"
    save_adapter(adapted_model(), adapter, base_model_name_or_path=str(base))
    return base, adapter


def logits(model):
    return model(IDS)[0].data


def test_an_adapter_directory_loads_its_base_and_merges(dirs):
    base, adapter = dirs
    expected = logits(adapted_model())  # the unmerged adapted forward, W x + s B A x
    loaded = load_adapted_model(adapter)
    assert not lora_layers(loaded.model)  # merged and unwrapped: an ordinary model
    np.testing.assert_allclose(logits(loaded.model), expected, atol=1e-5)
    assert np.abs(logits(base_model()) - expected).max() > 1e-2  # the adapter matters
    beside = load_adapted_model(base, adapter)
    np.testing.assert_array_equal(logits(beside.model), logits(loaded.model))
    assert "adapter" in loaded.source and "6 layers merged" in loaded.source


def test_a_relative_base_is_found_beside_the_adapter(dirs):
    base, adapter = dirs
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "../base"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert adapter_base(adapter) == adapter / "../base"


def test_a_missing_base_is_a_clear_error(dirs, tmp_path):
    base, adapter = dirs
    config = json.loads((adapter / "adapter_config.json").read_text())
    for value in (str(tmp_path / "gone"), None):
        config["base_model_name_or_path"] = value
        (adapter / "adapter_config.json").write_text(json.dumps(config))
        with pytest.raises(FileFormatError, match="--adapter") as info:
            load_adapted_model(adapter)
        assert info.value.field == "base_model_name_or_path"


def cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_reads_an_adapter_or_a_base_with_one(capsys, dirs):
    base, adapter = dirs
    flags = ("--prompt", "copy: sun", "--max-new-tokens", "8", "--temperature", "0")
    code, with_dir, err = cli(capsys, "generate", "--checkpoint", adapter, *flags)
    assert code == 0, err
    code, with_flag, err = cli(capsys, "generate", "--checkpoint", base, "--adapter", adapter,
                               *flags)
    assert code == 0, err
    code, plain, _ = cli(capsys, "generate", "--checkpoint", base, *flags)
    assert with_dir == with_flag != plain
    # the same continuation as greedy decoding of the adapted model, computed here
    from numpylm.inference.generate import generate
    model = adapted_model()
    model.eval()
    out = generate(model, [np.array(TOK.encode("copy: sun"))], 8, temperature=0.0)[0]
    assert with_dir.rstrip("\n") == "copy: sun" + TOK.decode([int(i) for i in out[9:]])


def test_eval_and_evaluate_score_the_adapted_model(capsys, dirs, tmp_path):
    base, adapter = dirs
    text = tmp_path / "t.txt"
    text.write_text("copy: sun red log\nreverse: cup box\n" * 4)
    scores = {}
    for name, extra in (("dir", [adapter]), ("flag", [base, "--adapter", adapter]),
                        ("base", [base])):
        code, out, err = cli(capsys, "eval", "--checkpoint", *extra, "--data", text, "--json")
        assert code == 0, err
        scores[name] = json.loads(out)["loss"]
    assert scores["dir"] == pytest.approx(scores["flag"], rel=1e-6)
    assert abs(scores["dir"] - scores["base"]) > 1e-3
    code, out, err = cli(capsys, "evaluate", "--model", base, "--adapter", adapter,
                         "--tasks", "arithmetic", "--limit", "2", "--format", "json")
    assert code == 0, err
    code, _, err = cli(capsys, "evaluate", "--model", base, "--model", adapter, "--adapter",
                       adapter, "--tasks", "arithmetic")
    assert code == 2 and "--adapter goes with one --model" in err


def test_chat_and_serve_load_the_adapter(capsys, dirs, monkeypatch):
    base, adapter = dirs
    replies = iter(["copy: sun"])

    def read(prompt):
        try:
            return next(replies)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", read)
    code, out, err = cli(capsys, "chat", base, "--adapter", adapter, "--max-new-tokens", "3",
                         "--temperature", "0")
    assert code == 0, err
    assert "+ adapter" in err and "6 layers merged" in err

    seen = {}

    class Server:  # stands in for the HTTP server: the command's loading is what is tested
        server_address = ("127.0.0.1", 0)

        def serve_forever(self):
            raise KeyboardInterrupt

        def server_close(self):
            pass

        class loop:
            @staticmethod
            def stop():
                pass

    def make_server(engine, tokenizer, **kwargs):
        seen["model"] = engine.model
        return Server()

    monkeypatch.setattr("numpylm.serving.server.make_server", make_server)
    code, out, err = cli(capsys, "serve", adapter, "--num-blocks", "8", "--max-running", "2")
    assert code == 0, err
    assert "+ adapter" in out and not lora_layers(seen["model"])
    np.testing.assert_allclose(logits(seen["model"]), logits(adapted_model()), atol=1e-5)


def test_an_adapter_given_twice_is_refused(capsys, dirs):
    base, adapter = dirs
    code, _, err = cli(capsys, "generate", "--checkpoint", adapter, "--adapter", adapter,
                       "--prompt", "x")
    assert code == 2 and "is itself an adapter" in err


@pytest.mark.parametrize("method", ["lora", "sft", "grpo"])
def test_what_finetune_writes_is_read_by_generate(capsys, dirs, tmp_path, method):
    base, _ = dirs
    out = tmp_path / method
    extra = ["--group-size", "2"] if method == "grpo" else []
    code, printed, err = cli(capsys, "finetune", "--method", method, "--model", base, "--task",
                             "copy", "--examples", "8", "--eval", "1", "--steps", "2",
                             "--batch-size", "2", "--max-new-tokens", "2", "--out", out, *extra)
    assert code == 0, err
    assert "held-out exact match before" in printed and "held-out exact match after" in printed
    if method == "grpo":  # two steps of two questions with two sampled answers each
        assert printed.count("reward") >= 3 and "mean reward of the sampled answers" in printed
    code, text, err = cli(capsys, "generate", "--checkpoint", out, "--prompt", "copy: sun",
                          "--max-new-tokens", "3", "--temperature", "0")
    assert code == 0 and text.startswith("copy: sun"), err
