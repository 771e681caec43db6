"""A model directory's tokenizer: `tokenizer.json` plus what `tokenizer_config.json` adds to it.

`tokenizer.json` holds the vocabulary and the pipeline but not which token begins or ends a
sequence, nor the chat template; those live in `tokenizer_config.json` (`bos_token`,
`eos_token`, `pad_token`, `chat_template`) or, in newer directories, in `chat_template.jinja`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from numpylm.io.config import parse_json
from numpylm.io.errors import FileFormatError
from numpylm.io.text import read_utf8
from numpylm.tokenizers.hf_json import HFTokenizer


def _token_text(config: dict[str, Any], key: str, path: str) -> str | None:
    value = config.get(key)
    if isinstance(value, dict):  # {"__type": "AddedToken", "content": "<s>", ...}
        value = value.get("content")
    if value is not None and not isinstance(value, str):
        raise FileFormatError(path, f"expected a token string, got {type(value).__name__}",
                              field=key)
    return value


def _chat_template(config: dict[str, Any], path: str) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is not None and not isinstance(template, str):
        raise FileFormatError(path, "expected a Jinja template string", field="chat_template")
    return template


def load_hf_tokenizer(directory: str | os.PathLike[str]) -> HFTokenizer:
    """The tokenizer of an HF model directory, with `bos_id`, `eos_id`, `pad_id` and
    `chat_template` set from `tokenizer_config.json` / `chat_template.jinja` when present."""
    root = Path(directory)
    config: dict[str, Any] = {}
    config_path = root / "tokenizer_config.json"
    if config_path.is_file():
        config = parse_json(read_utf8(config_path, "tokenizer_config.json"), config_path)
        if not isinstance(config, dict):
            raise FileFormatError(config_path, "expected a JSON object", field="(root)")
    where = str(config_path)
    tokenizer = HFTokenizer.from_file(
        root / "tokenizer.json",
        bos_token=_token_text(config, "bos_token", where),
        eos_token=_token_text(config, "eos_token", where),
        pad_token=_token_text(config, "pad_token", where))
    template_file = root / "chat_template.jinja"
    if template_file.is_file():
        tokenizer.chat_template = read_utf8(template_file, "chat_template.jinja")
    else:
        tokenizer.chat_template = _chat_template(config, where)
    return tokenizer
