"""`numpylm tokenize`: see where a tokenizer cuts a text, and which id each piece gets.

Seeing the cuts is the quickest way to understand a tokenizer: a common word is one token,
a rare one several, a leading space belongs to the word after it, and a token may even end
in the middle of a multi-byte character.
"""
from __future__ import annotations

import argparse
import os
import sys

from numpylm.tokenizers.base import Tokenizer, load_tokenizer
from numpylm.tokenizers.bpe import BPETokenizer, show_bytes

DEFAULT_VOCAB_SIZE = 1024
# Light background colours (256-colour ANSI codes) under black text; neighbours always differ.
_PALETTE = (153, 223, 157, 217, 189, 229)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tokenize",
        help="show the tokens, ids and boundaries of a text",
        description=(
            "Show how a tokenizer cuts TEXT: each token's id, its byte span and its text. "
            "Without --tokenizer, a byte-level BPE with "
            f"{DEFAULT_VOCAB_SIZE} ids (GPT-4's split pattern) is trained on the embedded "
            "corpus, Python's reference manual (a fraction of a second)."
        ),
    )
    parser.add_argument("text", metavar="TEXT", help="the text ('-' reads standard input)")
    parser.add_argument(
        "--tokenizer", metavar="FILE", help="a file written by a numpylm tokenizer's save()"
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour token boundaries: on a terminal (auto, the default), always, or never",
    )
    parser.set_defaults(func=run)


def _default_tokenizer() -> BPETokenizer:
    from numpylm.corpus import embedded_corpus

    return BPETokenizer.train(embedded_corpus(), DEFAULT_VOCAB_SIZE)


def token_pieces(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """The text of each id on its own (stray bytes of a split character shown as `\\xNN`)."""
    if isinstance(tokenizer, BPETokenizer):
        return [show_bytes(tokenizer.token_bytes(token)) for token in ids]
    return [tokenizer.decode([token]) for token in ids]


def _visible(piece: str) -> str:
    return piece.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def render(pieces: list[str], color: bool) -> str:
    """The pieces in a row: coloured backgrounds on a terminal, `|` between them otherwise."""
    if not color:
        return "|".join(_visible(piece) for piece in pieces)
    return "".join(
        f"\x1b[30;48;5;{_PALETTE[i % len(_PALETTE)]}m{_visible(piece)}\x1b[0m"
        for i, piece in enumerate(pieces)
    )


def run(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if args.tokenizer is None:
        tokenizer: Tokenizer = _default_tokenizer()
        source = "byte-level BPE trained on the embedded corpus"
    else:
        try:
            tokenizer = load_tokenizer(args.tokenizer)
        except (OSError, ValueError) as err:
            print(f"numpylm tokenize: error: {err}", file=sys.stderr)
            return 2
        source = f"{type(tokenizer).__name__} from {args.tokenizer}"
    try:
        if isinstance(tokenizer, BPETokenizer):
            ids = tokenizer.encode(text, allowed_special="all")
        else:
            ids = tokenizer.encode(text)
    except ValueError as err:
        print(f"numpylm tokenize: error: {err}", file=sys.stderr)
        return 2

    color = args.color == "always" or (
        args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    )
    pieces = token_pieces(tokenizer, ids)
    print(render(pieces, color))
    print(f"{len(ids)} tokens for {len(text)} characters "
          f"({source}, vocab_size {tokenizer.vocab_size})")
    # Boundaries are byte offsets for BPE (a token may end mid-character) and character
    # offsets for a character tokenizer (each token is one character of the text).
    unit = "bytes" if isinstance(tokenizer, BPETokenizer) else "chars"
    print(f"{'#':>5} {'id':>7}  {unit:>11}  token")
    start = 0
    for i, (token, piece) in enumerate(zip(ids, pieces)):
        size = len(tokenizer.token_bytes(token)) if isinstance(tokenizer, BPETokenizer) else 1
        print(f"{i:>5} {token:>7}  {f'{start}-{start + size}':>11}  {_visible(piece)}")
        start += size
    return 0
