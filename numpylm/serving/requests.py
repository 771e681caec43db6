"""Reading an OpenAI-style request, part 3 of the guide: every field checked, and every fault an
error in OpenAI's shape that names the field, so a client learns what to fix and the server
keeps serving the others.

`parse_request` turns the JSON body of `/v1/completions` or `/v1/chat/completions` into a
`ParsedRequest`: the prompt's token ids (a chat's messages rendered by the model's template),
`max_tokens`, a `SamplingParams`, the stop strings and whether to stream; the request also
builds its own response objects (`response`, `chunk`) in the API's layout.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from numpylm.chat import render_chat
from numpylm.inference.chat_session import end_of_turn_ids
from numpylm.inference.generate import end_of_text_ids
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
    created: int = field(default_factory=lambda: int(time.time()))
    completion_tokens: int = 0

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model}

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": len(self.prompt), "completion_tokens": self.completion_tokens,
                "total_tokens": len(self.prompt) + self.completion_tokens}

    def response(self, text: str, finish: str | None) -> dict[str, Any]:
        """The whole answer: a `text_completion` or a `chat.completion`."""
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": finish}
            return {**self._base("chat.completion"), "choices": [choice], "usage": self.usage()}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {**self._base("text_completion"), "choices": [choice], "usage": self.usage()}

    def chunk(self, text: str | None, finish: str | None, first: bool = False
              ) -> dict[str, Any] | None:
        """One server-sent event: a piece of text, or the finish reason (the opening event of
        a chat says the role; completions have none)."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else (
                {"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**self._base("chat.completion.chunk"), "choices": [choice]}
        if first:
            return None
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
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
    if body.get("n", 1) != 1:
        raise _bad("n", "only n=1 is supported")
    for name in ("logprobs", "top_logprobs", "echo"):
        if body.get(name) not in (None, False, 0):
            raise _bad(name, "is not supported by this server")
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
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad(max_name, f"must be a positive integer, got {max_tokens!r}")
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
                         app.new_id(prefix))
