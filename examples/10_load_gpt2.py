"""10 - Loading GPT-2 weights: a GPT-2-format directory runs here as it runs elsewhere, because
`GPT` keeps GPT-2's parameter names, shapes and conventions.

    python examples/10_load_gpt2.py [--model-dir DIR] [--prompt TEXT] [--tokens 40]

A GPT-2-format directory holds `config.json` and `model.safetensors`, and for text in and out
`vocab.json` + `merges.txt`. Without --model-dir (no download needed) the example writes one
itself: a tiny randomly initialised GPT (`save_pretrained`) and a byte-level BPE learned from
the embedded corpus (`to_hf`), then loads it back with `load_pretrained`. Runs in a few
seconds. What to notice:
1. the files, and the GPT-2 fields of config.json;
2. the loaded model gives bit-identical logits (max difference 0.0) and the loaded tokenizer the
   same ids; greedy generation from both gives the same tokens (the text is noise: the
   weights are random);
With --model-dir DIR (for example the files of the Hugging Face `gpt2` repository, copied from
a machine with internet access; see --help), it prints the model's size (GPT-2 small:
124,439,808 parameters, about 0.5 GB in float32) and streams a continuation of the prompt.
"""
from __future__ import annotations

import argparse
import codecs
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from numpylm import GPT, GPT2_PATTERN, BPETokenizer, GPTConfig, generate, generate_stream
from numpylm import load_pretrained, no_grad
from numpylm.corpus import embedded_corpus

HOW_TO_GET_GPT2 = """\
getting GPT-2's weights: on a machine with internet access, download the files config.json,
model.safetensors, vocab.json and merges.txt of the Hugging Face repository "gpt2"
(https://huggingface.co/gpt2/tree/main), for instance with
    huggingface-cli download gpt2 config.json model.safetensors vocab.json merges.txt \\
        --local-dir gpt2
then copy the directory here and run this example with --model-dir gpt2. The larger
"gpt2-medium", "gpt2-large" and "gpt2-xl" repositories have the same layout."""


def demo_directory(directory: Path, tiny: bool) -> tuple[GPT, BPETokenizer]:
    """Write a small random GPT and a BPE learned from the corpus as a GPT-2 directory."""
    text = embedded_corpus()[: 20_000 if tiny else 200_000]
    # GPT-2's split pattern and end-of-text token, so the files look like the real ones.
    tokenizer = BPETokenizer.train(text, 280 if tiny else 512, pattern=GPT2_PATTERN,
                                   special_tokens=["<|endoftext|>"])
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64 if tiny else 128,
                          n_layer=2, n_head=2 if tiny else 4, n_embd=16 if tiny else 64), rng=0)
    model.save_pretrained(directory)   # config.json + model.safetensors
    tokenizer.to_hf(directory)         # vocab.json + merges.txt
    return model, tokenizer


def describe(model: GPT) -> None:
    c = model.config
    n = model.num_parameters()
    print(f"   {n:,} parameters ({4 * n / 1e6:.3g} MB in float32): {c.n_layer} layers, "
          f"{c.n_head} heads, n_embd {c.n_embd}, context {c.block_size}, vocabulary "
          f"{c.vocab_size}; about {model.flops_per_token(training=False) / 1e6:.3g} MFLOPs "
          f"per token forward")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Load a GPT-2-format directory (config.json, "
                                 "model.safetensors, vocab.json, merges.txt) and generate.",
                                 epilog=HOW_TO_GET_GPT2,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", metavar="DIR", help="a GPT-2-format directory; without it, "
                    "a tiny random one is written and loaded")
    ap.add_argument("--prompt", default="The Python language", help="text to continue")
    ap.add_argument("--tokens", type=int, default=40, help="new tokens (default 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="an even smaller demo, for the tests")
    args = ap.parse_args(argv)

    if args.model_dir:
        start = time.perf_counter()
        try:
            model, tokenizer = load_pretrained(args.model_dir)
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"error: {err}\n\n{HOW_TO_GET_GPT2}") from None
        print(f"1. loaded {args.model_dir} in {time.perf_counter() - start:.1f} s:")
        describe(model)
        if tokenizer is None:
            print("   no vocab.json + merges.txt in the directory, so no text to continue")
            return
        ids = tokenizer.encode(args.prompt)
        print(f"\n2. {args.prompt!r} is {len(ids)} tokens: {ids}")
        print(f"   continued with top-k 40 at temperature 0.8, seed {args.seed}:\n   "
              f"{args.prompt}", end="")
        # A token may end in the middle of a character's UTF-8 bytes; the incremental
        # decoder holds such bytes back until the token that completes them arrives.
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        start, count = time.perf_counter(), 0
        for token in generate_stream(model, ids, args.tokens, temperature=0.8, top_k=40,
                                     seed=args.seed):
            print(utf8.decode(tokenizer.decode_bytes([token])), end="", flush=True)
            count += 1
        print(f"\n   {count} tokens in {time.perf_counter() - start:.1f} s")
        return

    print("no --model-dir: writing a tiny random GPT-2-format directory instead\n"
          "(run with --help to see how to get the real GPT-2)\n")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp, "tiny-gpt2")
        model, tokenizer = demo_directory(directory, args.tiny)
        print(f"1. {directory.name}/ holds:")
        for f in sorted(directory.iterdir()):
            print(f"   {f.name:18s} {f.stat().st_size:>9,} bytes")
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        fields = ("model_type", "n_layer", "n_head", "n_embd", "n_positions", "vocab_size",
                  "activation_function", "layer_norm_epsilon")
        print("   config.json: " + ", ".join(f"{k}={config[k]!r}" for k in fields))
        first_merges = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()[1:4]
        print(f"   merges.txt begins: {first_merges} ('\u0120' is GPT-2's stand-in for a space)")

        loaded, loaded_tokenizer = load_pretrained(directory)
        print("\n2. loaded back with load_pretrained:")
        describe(loaded)
        text = "Every object has an identity, a type and a value."
        ids = tokenizer.encode(text)
        same_ids = loaded_tokenizer.encode(text) == ids
        print(f"   {len(ids)} tokens for {text!r}; the loaded tokenizer gives the same ids: "
              f"{same_ids}, and decodes them back: {loaded_tokenizer.decode(ids) == text}")
        with no_grad():
            diff = np.abs(model(np.asarray([ids]))[0].data - loaded(np.asarray([ids]))[0].data)
        print(f"   logits of the saved and the loaded model: max difference {diff.max()}")
        prompt = tokenizer.encode(args.prompt)
        a = generate(model, prompt, args.tokens, temperature=0)
        b = generate(loaded, prompt, args.tokens, temperature=0)
        print(f"   greedy generation, {args.tokens} tokens: the same from both: "
              f"{np.array_equal(a, b)}")
        print(f"   (random weights, so the text is noise: "
              f"{loaded_tokenizer.decode(b.tolist())[:80]!r})")


if __name__ == "__main__":
    main()
