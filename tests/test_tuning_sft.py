"""Supervised fine-tuning: the loss mask on a hand-checked multi-turn conversation, right
padding that changes no loss, and a short run that learns."""
import numpy as np
import pytest

from numpylm.models.base import IGNORE_INDEX
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.tuning import LoRAConfig, apply_lora
from numpylm.tuning.data import TaskTokenizer, get_task, task_conversations
from numpylm.tuning.sft import (answer, encode_conversation, encode_conversations,
                                exact_match, finetune, pad_batch)

TOK = TaskTokenizer()


def tiny(seed=0, dtype=np.float32):
    return Llama(LlamaConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                             max_position_embeddings=160), rng=seed, dtype=dtype)


def test_mask_covers_every_assistant_turn_and_nothing_else():
    messages = [{"role": "system", "content": "sea"}, {"role": "user", "content": "cat"},
                {"role": "assistant", "content": "dog"}, {"role": "user", "content": "owl"},
                {"role": "assistant", "content": "fig"}]
    example = encode_conversation(messages, TOK, "chatml")
    # Written out by hand: ChatML wraps each turn as <|im_start|>role\ncontent<|im_end|>\n
    text = ("<|im_start|>system\nsea<|im_end|>\n<|im_start|>user\ncat<|im_end|>\n"
            "<|im_start|>assistant\ndog<|im_end|>\n<|im_start|>user\nowl<|im_end|>\n"
            "<|im_start|>assistant\nfig<|im_end|>\n")
    assert TOK.decode(list(example.ids)) == text[:-1]  # inputs: all but the last token
    kept = example.targets != IGNORE_INDEX
    assert TOK.decode(list(example.targets[kept])) == "dog<|im_end|>fig<|im_end|>"
    first = text.index("dog")  # the token 'd' is predicted at the position before it
    assert np.flatnonzero(kept)[0] == first - 1
    second = text.index("fig")
    assert kept[second - 1] and not kept[second - 2]
    assert kept.sum() == 2 * len("dog<|im_end|>")


def test_a_conversation_without_an_assistant_turn_is_refused():
    with pytest.raises(ValueError, match="nothing to learn"):
        encode_conversation([{"role": "user", "content": "cat"}], TOK)


def test_right_padding_changes_no_loss():
    model = tiny(dtype=np.float64)
    examples = encode_conversations(task_conversations("sort", 3, seed=2)
                                    + task_conversations("addition", 2, seed=2), TOK)
    assert len({len(e.ids) for e in examples}) > 1  # so there is padding
    x, y = pad_batch(examples)
    batch_loss = model(x, y)[1].item()
    total, count = 0.0, 0
    for e in examples:  # each row alone, unpadded: mean loss times its number of targets
        n = int((e.targets != IGNORE_INDEX).sum())
        total += model(e.ids[None], e.targets[None])[1].item() * n
        count += n
    assert batch_loss == pytest.approx(total / count, rel=1e-10)
    # the padded positions are ignored targets, and only at the right end
    row = int(np.argmin([len(e.ids) for e in examples]))
    assert (y[row, len(examples[row].ids):] == IGNORE_INDEX).all()


def test_lora_finetuning_lowers_the_loss_and_trains_adapters_only():
    model = tiny()
    apply_lora(model, LoRAConfig(r=4, target_modules=["q_proj", "v_proj", "up_proj"]))
    frozen = model.model.layers[0].mlp.down_proj.weight.data.copy()
    examples = encode_conversations(task_conversations("copy", 64, seed=0), TOK)
    result = finetune(model, examples, steps=25, batch_size=8, lr=5e-2)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.2
    assert result.trainable < result.total / 5
    np.testing.assert_array_equal(model.model.layers[0].mlp.down_proj.weight.data, frozen)


def test_exact_match_uses_the_checker():
    model = tiny()
    task = get_task("reverse")
    questions = [q for q, _ in task.examples(3, seed=0)]
    replies = answer(model, TOK, questions, max_new_tokens=5)
    assert len(replies) == 3 and all(len(r) <= 5 for r in replies)
    assert exact_match(model, TOK, task, questions, max_new_tokens=5) == 0.0  # untrained
