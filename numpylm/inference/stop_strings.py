"""Stop strings, part 3 of the guide: end the output at a piece of *text* ("\\n\\n", "User:"),
not at a token id, and cut the text before it (OpenAI's `stop`).

A stop string may span token boundaries ("Us" + "er:"), and a token may carry text past it
("\\n\\nThe"), so the check runs on the decoded text of all the new tokens, never on single
tokens. While streaming, the text that could still be the start of a stop string is held back
(at most the longest stop string minus one character): "Us" is not shown until the next token
says whether "er:" follows.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from numpylm.inference.generate import generate_stream
from numpylm.inference.sampling import SamplingParams

__all__ = ["TextStream", "check_stop_strings", "find_stop", "generate_text", "stream_text"]


def check_stop_strings(stops: Sequence[str]) -> tuple[str, ...]:
    """The stop strings as a tuple; a ValueError names an empty or non-string one."""
    if isinstance(stops, str):
        stops = (stops,)
    stops = tuple(stops)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop_strings must be non-empty strings, got {s!r}")
    return stops


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of `text` could begin a stop string."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if s.startswith(text[-n:]):
                longest = max(longest, n)
                break
    return longest


class TextStream:
    """Token ids in, text out, a piece at a time: the one place that turns a stream of tokens
    into whole characters that stop at a stop string (used by `stream_text`, `numpylm
    generate` and the chat session).

    `push(token)` returns the text that token makes safe to show ('' while a UTF-8 character
    is unfinished or the end could still grow into a stop string); once a stop string appears,
    `stopped` is True and nothing more is shown. `flush()` returns what was held back when the
    tokens end without a stop. Ids in `skip` (an end-of-text id) are not text and are ignored.
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str] = (),
                 skip: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = check_stop_strings(stop_strings)
        self.skip = {int(t) for t in skip}
        self.ids: list[int] = []  # the tokens shown (after a stop: those begun before it)
        self.shown = 0  # characters of the text already returned
        self.stopped = False

    def push(self, token: int) -> str:
        if self.stopped or int(token) in self.skip:
            return ""
        self.ids.append(int(token))
        text = self.tokenizer.decode(self.ids)
        cut = find_stop(text, self.stops)
        if cut is not None:
            self.stopped = True
            while self.ids and len(self.tokenizer.decode(self.ids[:-1])) >= cut:
                self.ids.pop()  # keep only the tokens whose text begins before the stop
            piece, self.shown = text[self.shown:cut], max(self.shown, cut)
            return piece
        safe = len(text) - _held_back(text, self.stops)
        while safe > self.shown and text[safe - 1] == "\ufffd":  # an unfinished character
            safe -= 1
        piece = text[self.shown:safe] if safe > self.shown else ""
        self.shown = max(self.shown, safe)
        return piece

    def flush(self) -> str:
        if self.stopped:
            return ""
        text = self.tokenizer.decode(self.ids)
        piece, self.shown = text[self.shown:], len(text)
        return piece


def stream_text(model: Any, tokenizer: Any, prompt: Sequence[int], max_new_tokens: int,
                stop_strings: Sequence[str] = (), *,
                sampling: SamplingParams | None = None) -> Iterator[str]:
    """Yield the new text piece by piece as tokens are chosen, ending before the first stop
    string (which is never yielded)."""
    stream = TextStream(tokenizer, stop_strings)
    for token in generate_stream(model, prompt, max_new_tokens,
                                 sampling=sampling or SamplingParams()):
        piece = stream.push(token)
        if piece:
            yield piece
        if stream.stopped:
            return
    rest = stream.flush()
    if rest:
        yield rest


def generate_text(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int,
                  stop_strings: Sequence[str] = (), *,
                  sampling: SamplingParams | None = None) -> str:
    """The new text after `prompt` (a string), cut before the first of `stop_strings`."""
    ids = np.asarray(tokenizer.encode(prompt), dtype=np.int64)
    return "".join(stream_text(model, tokenizer, ids, max_new_tokens, stop_strings,
                               sampling=sampling))
