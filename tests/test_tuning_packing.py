"""Packing: examples laid end to end never attend across a boundary, positions restart, and
each example's logits and the loss are what they are for the example alone."""
import numpy as np
import pytest

from numpylm.models.base import IGNORE_INDEX
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.tuning.data import TaskTokenizer, task_conversations
from numpylm.tuning.packing import pack, packed_forward, packed_positions
from numpylm.tuning.sft import encode_conversations

TOK = TaskTokenizer()


def tiny(fused=True):
    return Llama(LlamaConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=256, fused_attention=fused),
                 rng=0, dtype=np.float64)


def test_positions_restart_by_hand():
    doc = np.array([[1, 1, 1, 2, 2, 3, 0, 0]])
    np.testing.assert_array_equal(packed_positions(doc), [[0, 1, 2, 0, 1, 0, 0, 1]])


def test_pack_fills_rows_in_order():
    examples = encode_conversations(task_conversations("addition", 5, seed=0), TOK)
    n = [len(e.ids) for e in examples]
    ids, targets, doc = pack(examples, block_size=2 * max(n))
    assert ids.shape[1] == 2 * max(n)
    assert sorted(np.unique(doc[doc > 0]).tolist())[0] == 1
    assert (targets[doc == 0] == IGNORE_INDEX).all()
    assert (targets != IGNORE_INDEX).sum() == sum(int((e.targets != IGNORE_INDEX).sum())
                                                  for e in examples)
    with pytest.raises(ValueError, match="longer than block_size"):
        pack(examples, block_size=3)


@pytest.mark.parametrize("fused", [True, False])
def test_packed_rows_equal_each_example_alone(fused):
    model = tiny(fused)
    examples = encode_conversations(task_conversations("sort", 4, seed=1)
                                    + task_conversations("addition", 3, seed=1), TOK)
    ids, targets, doc = pack(examples, block_size=160)
    assert ids.shape[0] < len(examples)  # several examples share a row
    logits, loss = packed_forward(model, ids, doc, targets)
    total, count, k = 0.0, 0, 0
    for r in range(ids.shape[0]):
        t = 0
        for d in range(1, doc[r].max() + 1):
            e = examples[k]
            alone, alone_loss = model(e.ids[None], e.targets[None])
            np.testing.assert_allclose(logits.data[r, t:t + len(e.ids)], alone.data[0],
                                       rtol=1e-9, atol=1e-9)
            c = int((e.targets != IGNORE_INDEX).sum())
            total, count, k, t = total + alone_loss.item() * c, count + c, k + 1, t + len(e.ids)
    assert k == len(examples)
    assert loss.item() == pytest.approx(total / count, rel=1e-10)


def test_finetune_with_packing_learns():
    from numpylm.tuning.sft import finetune
    model = tiny()
    model.to(np.float32)
    examples = encode_conversations(task_conversations("copy", 64, seed=0), TOK)
    result = finetune(model, examples, steps=15, batch_size=8, lr=1e-2, pack_block=256)
    assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3]) - 0.5
