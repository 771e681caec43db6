"""Reading an OpenAI-style request, part 3 of the guide: every field checked, and every fault an
error in OpenAI's shape that names the field, so a client learns what to fix and the server
keeps serving the others.

`parse_request` turns the JSON body of `/v1/completions` or `/v1/chat/completions` into a
`ParsedRequest`: the prompt's token ids (a chat's messages rendered by the model's template),
`max_tokens`, a `SamplingParams`, the stop strings, whether to stream, how many answers (`n`)
and how many alternatives to report with each token's log-probability; the request also
builds its own response objects (`response`, `chunk`) in the API's layout.

Log-probabilities come in the two layouts of the API: a completion's `logprobs` (an integer,
the alternatives per token, at most 5) gives parallel lists `{"tokens", "token_logprobs",
"top_logprobs", "text_offset"}`; a chat's `logprobs: true` with `top_logprobs` (0-20) gives
`{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]}`.

A completion's `echo: true` returns the prompt's text before the answer's, and with
`logprobs` the prompt tokens' records before the answer's: the first token has no context to
be predicted from, so its `token_logprobs` and `top_logprobs` entries are null. With echo,
`max_tokens` may be 0: the prompt scored, nothing generated (how evaluation tools ask for the
log-likelihood of a text).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from numpylm.chat import render_chat
from numpylm.inference.chat_session import end_of_turn_ids
from numpylm.inference.generate import end_of_text_ids
from numpylm.inference.logprobs import TokenLogprob
from numpylm.inference.sampling import SamplingParams

__all__ = ["APIError", "ParsedRequest", "parse_request"]

_KNOWN = {"model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature",
          "top_p", "seed", "stop", "stream", "n", "user", "logprobs", "top_logprobs",
          "frequency_penalty", "presence_penalty", "stream_options", "echo"}


class APIError(Exception):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 param: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.kind = (
            status, message, code, param, kind)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def _bad(param: str, message: str) -> APIError:
    return APIError(400, f"'{param}': {message}", "invalid_value", param)


MAX_N = 8  # answers per request: each is a sequence in the batch


@dataclass
class Choice:
    """One answer of a request as it stands: its text, finish reason, and the log-probability
    records of the tokens in that text, each with the offset of its text."""

    index: int
    text: str = ""
    finish: str | None = None
    logprobs: list[tuple[TokenLogprob, int]] = field(default_factory=list)


@dataclass
class ParsedRequest:
    """A checked request, and the builder of its response objects."""

    chat: bool
    model: str
    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]
    stream: bool
    request_id: str
    n: int = 1
    logprobs: int | None = None  # alternatives per token; None: no log-probabilities
    piece: Callable[[int], tuple[str, bytes]] | None = None  # a token's text and bytes
    created: int = field(default_factory=lambda: int(time.time()))
    completion_tokens: int = 0
    echo: bool = False  # the prompt's text (and records) before each answer's


    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model}

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": len(self.prompt), "completion_tokens": self.completion_tokens,
                "total_tokens": len(self.prompt) + self.completion_tokens}

    def _logprobs(self, records: Sequence[tuple[TokenLogprob, int]]) -> dict | None:
        """The `logprobs` object of a choice (or of one streamed piece) in the API's layout."""
        if self.logprobs is None:
            return None
        piece = self.piece or (lambda t: (str(t), str(t).encode()))
        if self.chat:
            def entry(token: int, logprob: float) -> dict[str, Any]:
                text, raw = piece(token)
                return {"token": text, "logprob": logprob, "bytes": list(raw)}
            return {"content": [{**entry(r.token, r.logprob),
                                 "top_logprobs": [entry(t, lp) for t, lp in r.top]}
                                for r, _ in records], "refusal": None}
        # An echoed prompt's first token has no log-probability: None in both lists.
        return {"tokens": [piece(r.token)[0] for r, _ in records],
                "token_logprobs": [r.logprob for r, _ in records],
                "top_logprobs": [None if r.top is None else {piece(t)[0]: lp for t, lp in r.top}
                                 for r, _ in records],
                "text_offset": [offset for _, offset in records]}

    def response(self, choices: Sequence[Choice]) -> dict[str, Any]:
        """The whole answer: a `text_completion` or a `chat.completion`, one choice per answer."""
        if self.chat:
            out = [{"index": c.index, "message": {"role": "assistant", "content": c.text},
                    "logprobs": self._logprobs(c.logprobs), "finish_reason": c.finish}
                   for c in choices]
            return {**self._base("chat.completion"), "choices": out, "usage": self.usage()}
        out = [{"index": c.index, "text": c.text, "logprobs": self._logprobs(c.logprobs),
                "finish_reason": c.finish} for c in choices]
        return {**self._base("text_completion"), "choices": out, "usage": self.usage()}

    def chunk(self, text: str | None, finish: str | None, first: bool = False, index: int = 0,
              records: Sequence[tuple[TokenLogprob, int]] = ()) -> dict[str, Any] | None:
        """One server-sent event of answer `index`: a piece of text (with its tokens'
        log-probabilities when asked), or the finish reason (the opening event of a chat says
        the role; completions have none)."""
        logprobs = self._logprobs(records) if records else None
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else (
                {"content": text} if text else {})
            choice = {"index": index, "delta": delta, "logprobs": logprobs,
                      "finish_reason": finish}
            return {**self._base("chat.completion.chunk"), "choices": [choice]}
        if first:
            return None
        choice = {"index": index, "text": text or "", "logprobs": logprobs,
                  "finish_reason": finish}
        return {**self._base("text_completion"), "choices": [choice]}


def _number(body: dict, name: str, low: float, high: float, default: Any) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _bad(name, f"must be a number in [{low}, {high}], got {value!r}")
    return value


def _prompt_ids(body: dict, chat: bool, app: Any) -> list[int]:
    tokenizer = app.tokenizer
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("messages", "must be a non-empty list of {role, content} objects")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) \
                    or m.get("role") not in ("system", "user", "assistant"):
                raise _bad(f"messages[{i}]", "must be an object with 'role' (system, user or "
                                             "assistant) and a string 'content'")
        try:
            return list(render_chat([{"role": m["role"], "content": m["content"]}
                                     for m in messages], tokenizer, app.template,
                                    add_generation_prompt=True).ids)
        except ValueError as err:
            raise _bad("messages", str(err)) from None
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str) and prompt:
        return list(tokenizer.encode(prompt))
    if isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        V = app.loop.engine.model.vocab_size
        if not all(0 <= t < V for t in prompt):
            raise _bad("prompt", f"token ids must be in [0, {V})")
        return prompt
    raise _bad("prompt", "must be a non-empty string, a list of token ids, or a list of one "
                         "of those")


def parse_request(raw: bytes, chat: bool, app: Any) -> ParsedRequest:
    """Check the JSON body of a (chat) completion request for the server `app`."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"the body is not valid JSON: {err}", "invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object", "invalid_json")
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise _bad(unknown[0], "is not a parameter this server knows")
    model = body.get("model", app.model_name)
    if model != app.model_name:
        raise APIError(404, f"the model '{model}' does not exist; this server serves "
                            f"'{app.model_name}'", "model_not_found", "model")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise _bad("n", f"must be an integer in [1, {MAX_N}], got {n!r}")
    echo = body.get("echo", False)
    if echo is None:
        echo = False
    if not isinstance(echo, bool):
        raise _bad("echo", f"must be true or false, got {echo!r}")
    if echo and chat:
        raise _bad("echo", "belongs to /v1/completions; a chat does not echo its messages")
    logprobs = _logprobs_setting(body, chat)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", f"must be true or false, got {stream!r}")
    prompt = _prompt_ids(body, chat, app)
    context = app.loop.engine.context
    if len(prompt) >= context:
        raise APIError(400, f"this model's maximum context length is {context} tokens, but "
                            f"the prompt has {len(prompt)} tokens (and at least one must be "
                            f"left for the answer)", "context_length_exceeded",
                       "messages" if chat else "prompt")
    max_name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = body.get(max_name)
    if max_tokens is None:
        max_tokens = app.default_max_tokens
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < (
            0 if echo else 1):
        raise _bad(max_name, f"must be a positive integer (or 0 with 'echo'), got "
                             f"{max_tokens!r}")
    max_tokens = min(max_tokens, context - len(prompt))
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise _bad("seed", f"must be an integer >= 0, got {seed!r}")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > 4 or not all(
            isinstance(s, str) and s for s in stop):
        raise _bad("stop", "must be a string or a list of at most 4 non-empty strings")
    model_obj, tokenizer = app.loop.engine.model, app.tokenizer
    stop_ids = end_of_turn_ids(model_obj, tokenizer) if chat else end_of_text_ids(model_obj,
                                                                                   tokenizer)
    sampling = SamplingParams(
        temperature=_number(body, "temperature", 0.0, 2.0, 1.0),
        top_p=_number(body, "top_p", 1e-9, 1.0, None), seed=seed, stop_tokens=stop_ids,
        presence_penalty=_number(body, "presence_penalty", -2.0, 2.0, 0.0),
        frequency_penalty=_number(body, "frequency_penalty", -2.0, 2.0, 0.0))
    prefix = "chatcmpl" if chat else "cmpl"
    return ParsedRequest(chat, model, prompt, max_tokens, sampling, tuple(stop), stream,
                         app.new_id(prefix), n=n, logprobs=logprobs,
                         piece=_token_piece(tokenizer), echo=echo)


def _logprobs_setting(body: dict, chat: bool) -> int | None:
    """How many alternatives to report per token (None: no log-probabilities). A completion
    asks with `logprobs` = k in [0, 5]; a chat with `logprobs: true` and `top_logprobs` in
    [0, 20] (which needs `logprobs: true`)."""
    value, top = body.get("logprobs"), body.get("top_logprobs")
    if not chat:
        if top is not None:
            raise _bad("top_logprobs", "belongs to /v1/chat/completions; a completion asks "
                                       "with 'logprobs' (an integer in [0, 5])")
        if value is None or value is False:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
            raise _bad("logprobs", f"must be an integer in [0, 5], got {value!r}")
        return value
    if value is not None and not isinstance(value, bool):
        raise _bad("logprobs", f"must be true or false, got {value!r}")
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
            raise _bad("top_logprobs", f"must be an integer in [0, 20], got {top!r}")
        if not value:
            raise _bad("top_logprobs", "needs 'logprobs': true")
    return (top or 0) if value else None


def _token_piece(tokenizer: Any) -> Callable[[int], tuple[str, bytes]]:
    """A token's text and bytes (a byte-level token may hold part of a character: its bytes
    say which, its text shows the replacement character)."""
    token_bytes = getattr(tokenizer, "token_bytes", None)

    def piece(token: int) -> tuple[str, bytes]:
        if token_bytes is not None:
            raw = token_bytes(token)
            return raw.decode("utf-8", errors="replace"), raw
        text = tokenizer.decode([token])
        return text, text.encode()
    return piece
