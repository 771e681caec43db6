"""Fine-tuning through the shared training loop: a run stopped after N steps and resumed ends
with the same parameters (and optimiser state) as one that never stopped, through the API and
through `numpylm finetune --resume`; the run's settings come from its checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest

from numpylm.cli import main
from numpylm.io.safetensors import load_safetensors
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.training.checkpoint import load_checkpoint, save_checkpoint
from numpylm.tuning import LoRAConfig, apply_lora
from numpylm.tuning.data import TaskTokenizer, task_conversations
from numpylm.tuning.sft import SFTData, encode_conversations, finetune


@pytest.fixture(autouse=True)
def _fixed_blas_threads(monkeypatch):
    """Bit-identical resumption needs the same BLAS thread count in both parts of a run; left to
    the load-based policy, a busy moment can give the two parts different counts."""
    monkeypatch.setenv("NUMPYLM_THREADS", "1")

TOK = TaskTokenizer()
ARGS = dict(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64,  # Q8_0: rows of 32
            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=128)


def lora_model(dropout=0.1):
    model = Llama(LlamaConfig(**ARGS), rng=0)
    apply_lora(model, LoRAConfig(r=2, target_modules=["q_proj", "v_proj"],
                                 lora_dropout=dropout), rng=1)
    return model


EXAMPLES = encode_conversations(task_conversations("copy", 24, seed=0), TOK)


@pytest.mark.parametrize("pack", [None, 128])
def test_stop_and_resume_equals_one_run(tmp_path, pack):
    data = SFTData(EXAMPLES, EXAMPLES[:4], pack_block=pack)
    straight = lora_model()
    finetune(straight, data, 6, batch_size=2, lr=1e-2, seed=3, grad_accum=2)
    run = str(tmp_path / "run")
    stopped = lora_model()
    first = finetune(stopped, data, 3, batch_size=2, lr=1e-2, seed=3, grad_accum=2,
                     out_dir=run, tokenizer=TOK, eval_interval=2)
    assert first.step == 3 and first.val_losses and first.val_losses[-1][0] == 3
    resumed = lora_model()  # a fresh process: the base rebuilt, the adapters re-drawn
    second = finetune(resumed, data, 6, batch_size=2, lr=1e-2, seed=3, grad_accum=2,
                      out_dir=run, resume_from=run, tokenizer=TOK)
    assert second.step == 6 and len(second.losses) == 3
    trained = [n for n, p in straight.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    for name, value in straight.state_dict().items():
        assert np.array_equal(resumed.state_dict()[name], value), name
    # ... and not equal by accident: three steps alone leave other adapters
    assert any(not np.array_equal(stopped.state_dict()[n], resumed.state_dict()[n])
               for n in trained)

def test_the_checkpoint_keeps_only_what_trains(tmp_path):
    model = lora_model()
    finetune(model, EXAMPLES, 2, batch_size=2, out_dir=str(tmp_path / "run"), tokenizer=TOK,
             run_info={"method": "lora"})
    ckpt = load_checkpoint(tmp_path / "run", for_resume=True)
    assert ckpt.model_family == "finetune" and ckpt.model_args == {"method": "lora"}
    assert sorted(ckpt.model_state) == sorted(
        n for n, p in model.named_parameters() if p.requires_grad)
    assert ckpt.trainer_state["data"]["examples"] == len(EXAMPLES)
    # a model with other adapters does not fit it
    other = Llama(LlamaConfig(**ARGS), rng=0)
    apply_lora(other, LoRAConfig(r=2, target_modules=["k_proj"]))
    with pytest.raises(ValueError, match="do not fit"):
        finetune(other, EXAMPLES, 4, batch_size=2, resume_from=str(tmp_path / "run"))


# ------------------------------------------------------------------------ the command line


@pytest.fixture
def base(tmp_path):
    """A tiny Llama saved as a numpylm checkpoint, with the task tokenizer."""
    model = Llama(LlamaConfig(**ARGS), rng=0)
    directory = tmp_path / "base"
    save_checkpoint(directory, model_family="llama", model_args=ARGS,
                    model_state=model.state_dict(), tokenizer=TOK)
    return directory


def finetune_cli(capsys, *args):
    code = main(["finetune", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


COMMON = ("--task", "copy", "--examples", "16", "--eval", "2", "--batch-size", "2",
          "--max-new-tokens", "4", "--lr", "0.01", "--rank", "2", "--dropout", "0.1")


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_finetune_resume_gives_the_uninterrupted_adapter(capsys, tmp_path, base, method):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    code, out, err = finetune_cli(capsys, "--method", method, "--model", base, "--out",
                                  straight, "--steps", "4", *COMMON)
    assert code == 0, err
    assert "held-out exact match before" in out and (straight / "run" / "config.json").is_file()
    code, _, err = finetune_cli(capsys, "--method", method, "--model", base, "--out", stopped,
                                "--steps", "2", *COMMON)
    assert code == 0, err
    code, out, err = finetune_cli(capsys, "--out", stopped, "--resume", "--steps", "4")
    assert code == 0, err
    assert "resumed from" in out and "at step 2" in out and "exact match before" not in out
    a = load_safetensors(straight / "adapter_model.safetensors")
    b = load_safetensors(stopped / "adapter_model.safetensors")
    assert sorted(a) == sorted(b) and len(a) == 4
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    config = json.loads((stopped / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base.resolve())


def test_full_sft_resumes_exactly(capsys, tmp_path, base):

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    flags = ("--method", "sft", "--model", base, *COMMON)
    assert finetune_cli(capsys, *flags, "--out", straight, "--steps", "3")[0] == 0
    assert finetune_cli(capsys, *flags, "--out", stopped, "--steps", "1")[0] == 0
    assert finetune_cli(capsys, "--method", "sft", "--out", stopped, "--resume",
                        "--steps", "3")[0] == 0
    a, b = (load_checkpoint(d / "model").model_state for d in (straight, stopped))
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_resume_refuses_other_settings_and_an_existing_run(capsys, tmp_path, base):
    out = tmp_path / "o"
    assert finetune_cli(capsys, "--model", base, "--out", out, "--steps", "2", *COMMON)[0] == 0
    code, _, err = finetune_cli(capsys, "--model", base, "--out", out, "--steps", "2", *COMMON)
    assert code == 2 and "--resume" in err and "--overwrite" in err
    code, _, err = finetune_cli(capsys, "--out", out, "--resume", "--steps", "4", "--rank", "4")
    assert code == 2 and "--rank 4 (the run: 2)" in err
    code, out_text, _ = finetune_cli(capsys, "--out", out, "--resume", "--steps", "2")
    assert code == 0 and "nothing to train" in out_text
    code, _, err = finetune_cli(capsys, "--out", tmp_path / "none", "--resume", "--steps", "2")
    assert code == 2 and "no checkpoint directory" in err


def test_a_run_on_an_hf_tokenizer_resumes_too(capsys, tmp_path):
    """A base whose tokenizer is a tokenizer.json (SmolLM2's kind), which numpylm's checkpoint
    format cannot hold: the run keeps a stand-in and --resume takes the base's own again."""
    from numpylm.models.llama_io import save_pretrained
    from numpylm.tokenizers.interchange import bytes_to_unicode

    base = tmp_path / "hf"
    save_pretrained(Llama(LlamaConfig(**{**ARGS, "vocab_size": 258}), rng=0), base)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    special = [{"id": 256 + i, "content": c, "single_word": False, "lstrip": False,
                "rstrip": False, "normalized": False, "special": True}
               for i, c in enumerate(["<|im_start|>", "<|im_end|>"])]
    (base / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
        "normalizer": None, "pre_tokenizer": byte_level, "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {ch: b for b, ch in bytes_to_unicode().items()}, "merges": []}}))
    flags = ("--model", base, "--template", "chatml", *COMMON)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert finetune_cli(capsys, *flags, "--out", straight, "--steps", "3")[0] == 0
    assert finetune_cli(capsys, *flags, "--out", stopped, "--steps", "1")[0] == 0
    code, out, err = finetune_cli(capsys, "--out", stopped, "--resume", "--steps", "3")
    assert code == 0 and "at step 1" in out, err
    assert load_checkpoint(stopped / "run").tokenizer.vocab_size == 1  # the stand-in
    a = load_safetensors(straight / "adapter_model.safetensors")
    b = load_safetensors(stopped / "adapter_model.safetensors")
    for key in a:
        assert np.array_equal(a[key], b[key]), key
