"""The `quantize` sub-command: write a Llama-family model as a GGUF file in a block format.

    numpylm quantize checkpoints/llama small.gguf --type q8_0
    numpylm quantize SmolLM2.Q4_1.gguf smollm2-q8_0.gguf --type q8_0

The model may be a numpylm checkpoint, an HF directory or a GGUF file; matrices are stored in
the chosen format (f32, f16, q8_0, q4_0), norms in f32, with llama.cpp's names and metadata
(`numpylm.models.llama_gguf.save_gguf`). The tokenizer goes along when it came from a GGUF file.
"""
from __future__ import annotations

import argparse
import os


def _run(args: argparse.Namespace) -> int:
    from numpylm.models.llama import Llama
    from numpylm.models.llama_gguf import save_gguf
    from numpylm.training.families import load_model

    loaded = load_model(args.model)
    if not isinstance(loaded.model, Llama):
        raise ValueError(f"{args.model} holds a {loaded.family} model; GGUF export is for the "
                         f"Llama family")
    save_gguf(loaded.model, args.out, loaded.tokenizer, quantization=args.type)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {loaded.model.num_parameters():,} parameters as {args.type}, "
          f"{size / 1e6:.1f} MB")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from numpylm.cli import HelpFormatter, guarded

    p = subparsers.add_parser(
        "quantize", help="write a Llama-family model as a GGUF file (f32, f16, q8_0, q4_0)",
        description="Read a numpylm checkpoint, an HF directory or a GGUF file of the Llama "
                    "family and write it as GGUF with its matrices in a block format.",
        formatter_class=HelpFormatter)
    p.add_argument("model", metavar="MODEL", help="checkpoint directory, HF directory or .gguf")
    p.add_argument("out", metavar="OUT.gguf", help="the file to write")
    p.add_argument("--type", choices=("f32", "f16", "q8_0", "q4_0"), default="q8_0",
                   help="format of the weight matrices")

    p.set_defaults(func=guarded(_run, (ValueError, FileNotFoundError)))
