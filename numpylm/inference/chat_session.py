"""A conversation with a chat model, part 3 of the guide: what `numpylm chat` does between your
message and the model's streamed answer.

Each turn the whole conversation is rendered with the model's chat template
(`numpylm.chat.render_chat`) and ends with the header of an assistant turn. The model does not
re-read what it has already read: the decoding state (the KV cache of a transformer) is kept
from turn to turn, and only the ids after the longest prefix shared with what the state has
already consumed are fed (a template renders earlier turns the same way each time, so usually
that is just the new user message). The answer is sampled token by token until the template's
end-of-turn token (`<|im_end|>` for ChatML, `<|eot_id|>` for Llama 3) or the tokenizer's EOS.

A conversation longer than the model's context drops its oldest turns (never the system
prompt), with a notice, and the state starts again from the shortened conversation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from numpylm.chat import check_messages, render_chat
from numpylm.inference.generate import end_of_text_ids
from numpylm.inference.sampling import SamplingParams
from numpylm.inference.stop_strings import TextStream
from numpylm.nn.module import evaluating

__all__ = ["ChatSession", "end_of_turn_ids"]

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>")


def end_of_turn_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """The ids that end an assistant turn: the template's end marker(s) and the EOS id."""
    ids = set(end_of_text_ids(model, tokenizer))
    lookup = getattr(tokenizer, "token_to_id", None)
    if lookup is not None:
        for text in END_OF_TURN_TOKENS:
            token = lookup(text)
            if token is not None:
                ids.add(int(token))
    return tuple(sorted(ids))


@dataclass
class ChatSession:
    """A multi-turn chat: `ask(text)` yields the answer's text piece by piece.

    `template` is passed to `render_chat` (None: the tokenizer's own `chat_template`, else
    ChatML). `max_new_tokens` bounds each answer; the context keeps room for it.
    """

    model: Any
    tokenizer: Any
    system: str | None = None
    template: str | None = None
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0))
    max_new_tokens: int = 256
    notice: Callable[[str], None] = print
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.system is not None:
            self.messages = [{"role": "system", "content": self.system}]
        check_messages(self.messages)
        self.stops = np.asarray(end_of_turn_ids(self.model, self.tokenizer), dtype=np.int64)
        self._rng = self.sampling.rng()
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (keeping the system prompt) and the decoding state."""
        self.messages = [m for m in self.messages if m["role"] == "system"]
        self._forget_state()

    def _forget_state(self) -> None:
        self._state = None
        self._fed: list[int] = []  # the ids the state has consumed

    def _render(self) -> list[int]:
        return list(render_chat(self.messages, self.tokenizer, self.template,
                                add_generation_prompt=True).ids)

    def _fit_context(self) -> list[int]:
        """The rendered conversation, its oldest turns dropped until it leaves room for an
        answer within the model's context."""
        ids = self._render()
        limit = getattr(self.model, "block_size", None)
        if limit is None:
            return ids
        room = int(limit) - min(self.max_new_tokens, int(limit) // 2)
        dropped = 0
        while len(ids) > room:
            first = next((i for i, m in enumerate(self.messages) if m["role"] != "system"), None)
            if first is None or first == len(self.messages) - 1:
                break  # only the newest message is left: it is cropped, not dropped
            del self.messages[first]
            dropped += 1
            ids = self._render()
        if dropped:
            self.notice(f"[the conversation is longer than the model's context of {limit} "
                        f"tokens: dropped its {dropped} oldest message(s)]")
            self._forget_state()
        return ids[-room:] if len(ids) > room else ids

    def _feed(self, ids: list[int]) -> np.ndarray:
        """Bring the decoding state to `ids`, feeding only what it has not consumed yet."""
        shared = 0
        for a, b in zip(self._fed, ids):
            if a != b:
                break
            shared += 1
        if self._state is None or shared < len(self._fed) or shared == len(ids):
            self._forget_state()
            shared = 0
        if self._state is None:
            self._state = self.model.init_state(1)
        new = np.asarray([ids[shared:]], dtype=np.int64)
        self._fed = list(ids)
        return self.model.step(self._state, new)

    def ask(self, text: str) -> Iterator[str]:
        """Add a user message and yield the answer as it is written (whole characters).

        The answer (as far as it got, if the caller stops early) joins the conversation.
        """
        self.messages.append({"role": "user", "content": text})
        check_messages(self.messages)
        answer_ids: list[int] = []
        stream = TextStream(self.tokenizer)  # whole characters only
        try:
            with evaluating(self.model):
                logits = self._feed(self._fit_context())
            for _ in range(self.max_new_tokens):
                # The processors (penalties, banned words) see the whole conversation and
                # count this answer's tokens as the new ones.
                token = int(self.sampling.sample(logits, self._rng, contexts=[self._fed],
                                                 n_new=len(answer_ids))[0])
                if token in self.stops:
                    break
                answer_ids.append(token)
                piece = stream.push(token)
                if piece:
                    yield piece
                with evaluating(self.model):
                    self._fed.append(token)
                    logits = self.model.step(self._state, np.asarray([[token]]))
            rest = stream.flush()
            if rest:
                yield rest
        finally:  # also when the caller stops early (Ctrl-C): keep what was written
            self.messages.append({"role": "assistant",
                                  "content": self.tokenizer.decode(answer_ids)})
