"""Chat templates: how a conversation becomes the one flat text a chat model was tuned on.

A chat model sees no messages, only tokens. Its fine-tuning fixed a format: ChatML (SmolLM2,
Qwen) wraps each turn as `<|im_start|>role\\ncontent<|im_end|>\\n`; Llama 3 as
`<|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>` after one `<|begin_of_text|>`.
Asking for a reply means ending the text with the header of an assistant turn (the
*generation prompt*) and letting the model write the content and the end marker itself, so
a model given another format than its own answers worse or never stops.

`render_chat` returns the text, its ids and an *assistant mask*: 1 on the tokens of each
assistant turn's content and its end marker, 0 on everything the template or the other roles
wrote. Fine-tuning takes the loss only where the mask is 1: the model learns to answer, not
to predict the user's questions.

Models ship their format as a Jinja template (`chat_template` in `tokenizer_config.json`, or
`tokenizer.chat_template` in GGUF). With the optional `jinja2` package such a template renders
as the reference renders it (`render_template`); ChatML and Llama 3 are also written out here
in plain Python, needing nothing.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ROLES = ("system", "user", "assistant", "tool")

# SmolLM2's template adds this system turn when a conversation does not start with one.
SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

Span = tuple[int, int]  # [start, end) in characters of the rendered text


@dataclass(frozen=True)
class RenderedChat:
    """A rendered conversation: `text`, its `ids`, and `assistant_mask` (one 0/1 per id)."""

    text: str
    ids: list[int]
    assistant_mask: list[int]
    assistant_spans: list[Span]


def check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `messages`, each a mapping with a known `role` and a str `content`."""
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of {{'role', 'content'}} mappings, "
                         f"got {type(messages).__name__}")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"message {i} must be a mapping, got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"message {i} has role {role!r}; known roles are {ROLES}")
        if not isinstance(content, str):
            raise ValueError(f"message {i} ({role}) has content of type "
                             f"{type(content).__name__}, not str")
        checked.append({key: value for key, value in message.items() if value is not None})
    return checked


# ---- the built-in formats, in plain Python ------------------------------------------------


def render_chatml(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
                  default_system: str | None = None) -> tuple[str, list[Span]]:
    """ChatML text and the spans of assistant content + `<|im_end|>`.

    With `default_system`, a conversation whose first turn is not a system turn gets one,
    as SmolLM2's (and Qwen2's) own templates do.
    """
    messages = check_messages(messages)
    parts: list[str] = []
    spans: list[Span] = []
    length = 0

    def add(text: str, assistant: bool = False) -> None:
        nonlocal length
        if assistant:
            spans.append((length, length + len(text)))
        parts.append(text)
        length += len(text)

    if messages and default_system is not None and messages[0]["role"] != "system":
        add(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    for message in messages:
        add(f"<|im_start|>{message['role']}\n")
        if message["role"] == "assistant":
            add(message["content"] + "<|im_end|>", assistant=True)
            add("\n")
        else:
            add(message["content"] + "<|im_end|>\n")
    if add_generation_prompt:
        add("<|im_start|>assistant\n")
    return "".join(parts), spans


def render_llama3(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
                  bos_token: str = "<|begin_of_text|>") -> tuple[str, list[Span]]:
    """Llama 3's format: BOS, then a header and the stripped content per turn, each ended by
    `<|eot_id|>`; the spans cover assistant content + `<|eot_id|>`."""
    messages = check_messages(messages)
    text = ""
    spans: list[Span] = []
    for i, message in enumerate(messages):
        header = f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n"
        text += (bos_token if i == 0 else "") + header
        body = message["content"].strip() + "<|eot_id|>"
        if message["role"] == "assistant":
            spans.append((len(text), len(text) + len(body)))
        text += body
    if add_generation_prompt:
        text += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return text, spans


BUILTIN_FORMATS = ("chatml", "smollm2", "llama3")


# ---- any Jinja template, as the reference renders it --------------------------------------


def _environment() -> Any:
    """A sandboxed Jinja environment set up as the reference sets it up for chat templates."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ImportError('rendering a Jinja chat template needs jinja2: '
                          'pip install "numpylm[chat]" (or jinja2)') from None

    class GenerationSpans(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text; record its span."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_mark", [])
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _mark(self, caller: Any) -> str:
            text = caller()
            # A sentinel pair around the text; `render_template` turns them into spans.
            return f"\x00GEN[{text}\x00GEN]"

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: Any = None, sort_keys: bool = False) -> str:
        # Not Jinja's own filter, which escapes HTML characters.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationSpans, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def render_template(template: str, messages: Sequence[Mapping[str, Any]],
                    add_generation_prompt: bool = False, **variables: Any,
                    ) -> tuple[str, list[Span]]:
    """Render a Jinja chat template; `variables` are `bos_token`, `eos_token`, `tools`, ...

    The spans are those of `{% generation %}` blocks when the template has them. Otherwise
    they are found: each assistant content (as given or stripped) and an end marker right
    after it (`eos_token`, `<|im_end|>` or `<|eot_id|>`); a template that rewrites the
    content in another way gets no spans.
    """
    messages = check_messages(messages)
    compiled = _environment().from_string(template)
    tools, documents = variables.pop("tools", None), variables.pop("documents", None)

    def render(messages: list[dict[str, Any]]) -> str:
        return compiled.render(messages=messages, tools=tools, documents=documents,
                               add_generation_prompt=add_generation_prompt, **variables)

    rendered = render(messages)
    if "\x00GEN[" in rendered:
        return _cut_generation_marks(rendered)
    ends = [e for e in (variables.get("eos_token"), "<|im_end|>", "<|eot_id|>") if e]
    return rendered, _find_assistant_spans(rendered, messages, render, ends)


def _find_assistant_spans(rendered: str, messages: list[dict[str, Any]], render: Any,
                          ends: list[str]) -> list[Span]:
    """Where the assistant contents landed: render again with each one replaced by a marker,
    so the text around every content is known; the content itself may have been stripped."""
    marked = [dict(m, content=f"\x00{i}\x00") if m["role"] == "assistant" else m
              for i, m in enumerate(messages)]
    order = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    around = _split_markers(render(marked))
    spans: list[Span] = []
    if len(around) != 2 * len(order) + 1:
        return spans
    position = 0
    for k, piece in enumerate(around):
        if k % 2 == 0:
            if not rendered.startswith(piece, position):
                return []
            position += len(piece)
            continue
        content = messages[int(piece)]["content"]
        following = around[k + 1]
        for shown in (content, content.strip()):
            if rendered.startswith(shown + following, position):
                break
        else:  # the template changed the content in some other way: no reliable spans
            return []
        end = position + len(shown)
        marker = next((e for e in ends if following.startswith(e)), "")
        spans.append((position, end + len(marker)))
        position = end
    return spans


def _split_markers(text: str) -> list[str]:
    """`text` cut at markers NUL n NUL; odd items are the message numbers n."""
    return re.split(r"\x00(\d+)\x00", text)


def _cut_generation_marks(rendered: str) -> tuple[str, list[Span]]:
    text, spans, position = "", [], 0
    while True:
        start = rendered.find("\x00GEN[", position)
        if start < 0:
            return text + rendered[position:], spans
        end = rendered.index("\x00GEN]", start)
        text += rendered[position:start]
        inner = rendered[start + 5:end]
        spans.append((len(text), len(text) + len(inner)))
        text += inner
        position = end + 5


# ---- text and spans to ids and a mask -----------------------------------------------------


def _encode(tokenizer: Any, text: str) -> list[int]:
    from numpylm.tokenizers.bpe import BPETokenizer

    if isinstance(tokenizer, BPETokenizer):  # tiktoken's rules refuse special text by default
        return tokenizer.encode(text, allowed_special="all")
    return tokenizer.encode(text)


def tokens_and_mask(tokenizer: Any, text: str,
                    spans: Sequence[Span]) -> tuple[list[int], list[int]]:
    """The ids of `text` and a mask: 1 on every token that overlaps one of `spans`.

    The whole text is encoded at once, as the model will see it; each token's place in the
    text comes from its bytes. If the tokens' bytes do not spell the text (a normaliser changed
    it, or the vocabulary dropped a byte it lacks), the text is encoded piece by piece at the
    span boundaries instead, which places every token exactly.
    """
    ids = _encode(tokenizer, text)
    pieces = [tokenizer.token_bytes(i) for i in ids]
    data = text.encode("utf-8")
    if b"".join(pieces) == data:
        byte_spans = [(len(text[:a].encode("utf-8")), len(text[:b].encode("utf-8")))
                      for a, b in spans]
        mask, position = [], 0
        for piece in pieces:
            start, position = position, position + len(piece)
            mask.append(int(any(start < b and position > a for a, b in byte_spans)))
        return ids, mask
    ids, mask, position = [], [], 0
    for a, b in [*spans, (len(text), len(text))]:
        for piece, flag in ((text[position:a], 0), (text[a:b], 1)):
            piece_ids = _encode(tokenizer, piece) if piece else []
            ids += piece_ids
            mask += [flag] * len(piece_ids)
        position = b
    return ids, mask


def render_chat(messages: Sequence[Mapping[str, Any]], tokenizer: Any,
                template: str | None = None, *, add_generation_prompt: bool = False,
                **variables: Any) -> RenderedChat:
    """Render `messages` with a built-in format or a Jinja template string, and tokenize.

    `template` is "chatml", "smollm2" (ChatML with SmolLM2's default system prompt),
    "llama3", or the text of a model's `chat_template`; None takes the tokenizer's own
    `chat_template` (from its GGUF or `tokenizer_config.json`), else ChatML. For a Jinja
    template, `bos_token` and `eos_token` default to the tokenizer's, as the reference passes.
    """
    if template is None:
        template = getattr(tokenizer, "chat_template", None) or "chatml"
    if template == "chatml":
        text, spans = render_chatml(messages, add_generation_prompt)
    elif template == "smollm2":
        text, spans = render_chatml(messages, add_generation_prompt, SMOLLM2_SYSTEM_PROMPT)
    elif template == "llama3":
        text, spans = render_llama3(messages, add_generation_prompt)
    elif isinstance(template, str) and ("{{" in template or "{%" in template):
        for name in ("bos", "eos"):
            token_id = getattr(tokenizer, f"{name}_id", None)
            if f"{name}_token" not in variables and token_id is not None:
                variables[f"{name}_token"] = tokenizer.token_bytes(token_id).decode("utf-8")
        text, spans = render_template(template, messages, add_generation_prompt, **variables)
    else:
        raise ValueError(f"template must be one of {BUILTIN_FORMATS} or a Jinja template string, "
                         f"got {str(template)[:60]!r}")
    ids, mask = tokens_and_mask(tokenizer, text, spans)
    return RenderedChat(text, ids, mask, list(spans))
