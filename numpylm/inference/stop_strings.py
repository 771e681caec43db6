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

__all__ = ["check_stop_strings", "find_stop", "generate_text", "stream_text"]


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


def stream_text(model: Any, tokenizer: Any, prompt: Sequence[int], max_new_tokens: int,
                stop_strings: Sequence[str] = (), *,
                sampling: SamplingParams | None = None) -> Iterator[str]:
    """Yield the new text piece by piece as tokens are chosen, ending before the first stop
    string (which is never yielded)."""
    stops = check_stop_strings(stop_strings)
    new: list[int] = []
    shown = 0  # characters of the text already yielded
    for token in generate_stream(model, prompt, max_new_tokens,
                                 sampling=sampling or SamplingParams()):
        new.append(int(token))
        text = tokenizer.decode(new)
        cut = find_stop(text, stops)
        if cut is not None:
            if cut > shown:
                yield text[shown:cut]
            return
        safe = len(text) - _held_back(text, stops)
        while safe > shown and text[safe - 1] == "\ufffd":  # an unfinished UTF-8 character
            safe -= 1
        if safe > shown:
            yield text[shown:safe]
            shown = safe
    text = tokenizer.decode(new)
    if len(text) > shown:
        yield text[shown:]


def generate_text(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int,
                  stop_strings: Sequence[str] = (), *,
                  sampling: SamplingParams | None = None) -> str:
    """The new text after `prompt` (a string), cut before the first of `stop_strings`."""
    ids = np.asarray(tokenizer.encode(prompt), dtype=np.int64)
    return "".join(stream_text(model, tokenizer, ids, max_new_tokens, stop_strings,
                               sampling=sampling))
