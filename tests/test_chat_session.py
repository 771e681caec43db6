"""`numpylm chat`'s conversation: multi-turn with the template, the decoding state kept between
turns, answers ending at the end-of-turn token, old turns dropped when the context is full,
and the terminal loop's /reset, /quit and Ctrl-C."""
from __future__ import annotations

import numpy as np
import pytest

from numpylm.inference.chat_session import ChatSession, end_of_turn_ids
from numpylm.inference.commands import run_chat
from numpylm.inference.sampling import SamplingParams
from numpylm.models.decoding import WindowState
from numpylm.tokenizers.hf_json import HFTokenizer
from numpylm.tokenizers.interchange import bytes_to_unicode


def byte_tokenizer() -> HFTokenizer:
    """Byte-level ids 0..255 plus ChatML's two special tokens, 256 and 257."""
    symbols = bytes_to_unicode()
    vocab = {symbols[b]: b for b in range(256)}
    return HFTokenizer.from_json({
        "version": "1.0", "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                    "use_regex": True},
        "added_tokens": [{"id": 256, "content": "<|im_start|>", "special": True,
                          "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False},
                         {"id": 257, "content": "<|im_end|>", "special": True,
                          "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False}],
        "model": {"type": "BPE", "vocab": vocab, "merges": [], "dropout": None,
                  "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False}})


class ScriptedModel:
    """A stand-in for a chat model that follows the model contract: it answers every turn
    with `reply` then <|im_end|>, and records how many ids each `step` call was fed."""

    vocab_size = 258

    def __init__(self, reply: bytes, block_size: int | None = None) -> None:
        self.reply, self.block_size, self.fed = list(reply), block_size, []

    def init_state(self, batch_size=1):
        return WindowState(batch_size, 1, fill=0)

    def step(self, state, ids, mask=None):
        self.fed.append(ids.shape[1])
        state.push(ids, mask)
        last = int(state.window[0, -1])
        # After the generation prompt ("assistant\n") comes the first reply byte; after a
        # reply byte, the next one; after the last, <|im_end|>.
        if last == ord("\n") and ids.shape[1] > 1:
            nxt = self.reply[0]
        elif last in self.reply:
            i = self.reply.index(last)
            nxt = self.reply[i + 1] if i + 1 < len(self.reply) else 257
        else:
            nxt = 257
        logits = np.full((1, self.vocab_size), -10.0)
        logits[0, nxt] = 10.0
        return logits

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def test_end_of_turn_ids_include_im_end():
    assert 257 in end_of_turn_ids(ScriptedModel(b"x"), byte_tokenizer())


def test_turns_are_rendered_answered_and_only_new_ids_fed():
    model, tok = ScriptedModel(b"hey"), byte_tokenizer()
    session = ChatSession(model, tok, system="Be brief.", template="chatml",
                          sampling=SamplingParams(temperature=0))
    assert "".join(session.ask("hi")) == "hey"
    first_prefill = model.fed[0]
    assert "".join(session.ask("again")) == "hey"
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user",
                                                     "assistant"]
    # The second turn feeds only what follows the first turn's tokens, not the whole chat.
    second_prefill = model.fed[len(b"hey") + 1]
    assert second_prefill < first_prefill
    assert second_prefill == len(tok.encode("<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n"
                                            "<|im_start|>assistant\n"))
    session.reset()
    assert session.messages == [{"role": "system", "content": "Be brief."}]


def test_a_full_context_drops_the_oldest_turns_with_a_notice():
    notices = []
    model = ScriptedModel(b"ok", block_size=120)
    session = ChatSession(model, byte_tokenizer(), system="S", template="chatml",
                          sampling=SamplingParams(temperature=0), max_new_tokens=20,
                          notice=notices.append)
    for i in range(6):
        assert "".join(session.ask(f"message number {i}")) == "ok"
    assert notices and "dropped its" in notices[0]
    assert session.messages[0] == {"role": "system", "content": "S"}
    assert session.messages[-2]["content"] == "message number 5"
    assert len(session.messages) < 13


def test_the_terminal_loop_handles_reset_quit_and_ctrl_c():
    model = ScriptedModel(b"quick")  # distinct bytes: the script knows what comes next
    session = ChatSession(model, byte_tokenizer(), template="chatml",
                          sampling=SamplingParams(temperature=0))
    out = []
    inputs = iter(["hello", "/reset", "stop me", "", "/quit"])

    def write(text):
        out.append(text)
        if text == "u" and session.messages[-1]["content"] == "stop me":
            raise KeyboardInterrupt  # Ctrl-C while the answer streams

    assert run_chat(session, lambda prompt: next(inputs), write) == 0
    text = "".join(out)
    assert "[conversation reset]" in text and "[stopped]" in text
    assert session.messages[-1]["role"] == "assistant"  # the stopped answer was kept
    assert [m["content"] for m in session.messages if m["role"] == "user"] == ["stop me"]


def test_a_bad_message_is_refused():
    session = ChatSession(ScriptedModel(b"x"), byte_tokenizer(), template="chatml")
    with pytest.raises(ValueError, match="content of type int"):
        list(session.ask(3))


def test_processors_see_the_conversation():
    """no_repeat_ngram_size=1 forbids every token already in the conversation: the user wrote
    'q', so the scripted answer cannot start with it."""
    plain = ChatSession(ScriptedModel(b"qz"), byte_tokenizer(), template="chatml",
                        sampling=SamplingParams(temperature=0))
    assert "".join(plain.ask("q")) == "qz"
    banned = ChatSession(ScriptedModel(b"qz"), byte_tokenizer(), template="chatml",
                         sampling=SamplingParams(temperature=0, no_repeat_ngram_size=1),
                         max_new_tokens=3)
    answer = "".join(banned.ask("q"))
    assert not answer.startswith("q")
