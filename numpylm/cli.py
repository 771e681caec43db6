"""The front door: the `numpylm` console script and `python -m numpylm`.

Each sub-command lives beside the code it shows and registers itself here through a
`register(subparsers)` function, so this file stays a table of contents.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules that define a `register(subparsers)` function, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "numpylm.ladder",
    "numpylm.autograd.commands",
    "numpylm.tokenizers.commands",
    "numpylm.training.commands",
    "numpylm.inference.commands",
    "numpylm.quant.commands",
    "numpylm.evaluation.commands",
    "numpylm.tuning.commands",
    "numpylm.serving.commands",
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` that shows each default once: not when there is none (None, False), nor when
    the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def guarded(run, errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError,
                                                          TypeError)):
    """A command's `func`: the clear errors bad input gets (bad files, bad values, missing
    paths) become one line on stderr, `numpylm COMMAND: error: ...`, and exit code 2."""
    def handler(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except errors as err:
            print(f"numpylm {args.command}: error: {err}", file=sys.stderr)
            return 2
    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numpylm",
        description="numpylm: language models in plain NumPy, from autograd to GPT.",
    )
    parser.add_argument("--threads", metavar="N|auto", default=None,
                        help="BLAS threads for matrix products: a number, or auto (one for "
                             "small models or a busy machine, every free core otherwise; the "
                             "default, also set by NUMPYLM_THREADS)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    if args.threads is not None:
        os.environ["NUMPYLM_THREADS"] = args.threads  # read by numpylm.blas's policy
    try:
        from numpylm.blas import apply_thread_policy

        apply_thread_policy()  # a busy machine: fewer threads; training refines it per model
    except ValueError as err:
        print(f"numpylm: error: {err}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling: no traceback
        print(f"numpylm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
