"""PEFT interchange: an adapter PEFT saved (stored fixture, made by
tests/fixtures/make_tuning_peft_fixture.py) loads into numpylm with PEFT's logits; where peft
and transformers are installed, PEFT loads what numpylm saves and the other way round."""
import json
from pathlib import Path

import numpy as np
import pytest

from numpylm.models.llama import Llama
from numpylm.tuning import LoRAConfig, apply_lora, load_adapter, lora_layers, save_adapter

FIXTURE = Path(__file__).parent / "fixtures" / "tuning_peft"


def test_numpylm_loads_an_adapter_peft_saved():
    expected = json.loads((FIXTURE / "expected.json").read_text())
    model = Llama.from_pretrained(FIXTURE / "base")
    names = load_adapter(model, FIXTURE / "adapter")
    assert len(names) == 6  # q_proj, v_proj, down_proj in 2 layers
    logits = model(np.asarray(expected["ids"]))[0].data
    np.testing.assert_allclose(logits, np.asarray(expected["logits"]), atol=2e-5)
    # and the adapter matters: the base alone gives other logits
    base = Llama.from_pretrained(FIXTURE / "base")
    assert np.abs(base(np.asarray(expected["ids"]))[0].data - logits).max() > 1e-2


def _hf_pair(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from numpylm.models.llama import LlamaConfig
    model = Llama(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=32), rng=3)
    model.save_pretrained(str(tmp_path / "base"))
    return torch, model


def test_peft_loads_what_numpylm_saves(tmp_path):
    torch, model = _hf_pair(tmp_path)
    from peft import PeftModel
    from transformers import LlamaForCausalLM
    apply_lora(model, LoRAConfig(r=4, lora_alpha=12,
                                 target_modules=["q_proj", "v_proj", "gate_proj"]), rng=1)
    rng = np.random.default_rng(2)
    for layer in lora_layers(model).values():
        layer.lora_B.weight.data[...] = rng.normal(0, 0.3, layer.lora_B.weight.shape)
    save_adapter(model, tmp_path / "adapter")
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "base", torch_dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    ids = rng.integers(0, 50, (2, 9))
    with torch.no_grad():
        reference = peft_model(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(model(ids)[0].data, reference, atol=1e-5)


def test_numpylm_loads_what_peft_saves(tmp_path):
    torch, model = _hf_pair(tmp_path)
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "base", torch_dtype=torch.float32)
    peft_model = get_peft_model(hf, LoraConfig(r=2, lora_alpha=4,
                                               target_modules=["k_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = np.random.default_rng(4).integers(0, 50, (2, 9))
    with torch.no_grad():
        reference = peft_model.eval()(torch.tensor(ids)).logits.numpy()
    load_adapter(model, tmp_path / "adapter")
    np.testing.assert_allclose(model(ids)[0].data, reference, atol=1e-5)
