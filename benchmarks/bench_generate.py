"""Generation speed of numpylm's GPT with its KV cache against HF transformers' `generate`.

GPT-2 small's shape (12 layers, 12 heads, width 768, vocabulary 50257) with random weights,
float32, batch 1, a 16-token prompt and 64 new tokens, greedy. Both sides run the same
weights (HF's model is saved with `save_pretrained` and loaded with `GPT.from_pretrained`),
so their greedy tokens should agree; the script says whether they do.
Prints tokens per second of each and the ratio numpylm / HF (higher is better), measured in
alternating rounds.

Run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_generate.py`
so that OpenBLAS picks its native kernel. Usage: `bench_generate.py [--new-tokens N]
[--repeats R] [--small] [--threads N]` (`--small` uses a 4-layer, 256-wide model for a quick check).
"""
from __future__ import annotations

import argparse

# Before numpy: --threads must reach OpenBLAS before it starts.
from _threads import THREADS, add_threads_argument, report_environment
from _hf import hf_greedy
from _timing import all_times, alternating_rounds, best_of, round_ratios
import tempfile

import numpy as np

from numpylm.inference import generate
from numpylm.models.gpt import GPT, GPTConfig


def weight_streaming_floor(model, repeats: int) -> float:
    """Seconds per token of only the matrix-vector products one decoding step needs (every
    block's four projections and the tied LM head, on a dummy vector): the time to read the
    weights once, with none of the other work. No decoder of these float32 weights on this
    machine's BLAS gets much faster than this."""
    weights = [lin.weight.data for block in model.h
               for lin in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)]
    wte = model.wte.weight.data

    def one_token():
        for w in weights:
            np.ones((1, w.shape[0]), dtype=w.dtype) @ w
        np.ones((1, wte.shape[1]), dtype=wte.dtype) @ wte.T

    one_token()
    return best_of(lambda: [one_token() for _ in range(16)], repeats) / 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true")
    add_threads_argument(parser)
    args = parser.parse_args()
    report_environment()
    shape = (dict(n_layer=4, n_head=4, n_embd=256) if args.small
             else dict(n_layer=12, n_head=12, n_embd=768))
    prompt = np.random.default_rng(0).integers(0, 50257, args.prompt_tokens)
    n = args.new_tokens

    try:
        import torch
        import transformers
        if THREADS is not None:
            torch.set_num_threads(THREADS)
    except ImportError:
        torch = None
        print("torch/transformers not installed: timing numpylm only")

    with tempfile.TemporaryDirectory() as directory:
        if torch is not None:
            torch.manual_seed(0)
            config = transformers.GPT2Config(vocab_size=50257, n_positions=1024, **shape)
            hf = transformers.GPT2LMHeadModel(config).eval()
            hf.save_pretrained(directory, safe_serialization=True)
            model = GPT.from_pretrained(directory)
        else:
            model = GPT(GPTConfig(vocab_size=50257, block_size=1024, **shape), rng=0).eval()
        print(f"model: {model.num_parameters() / 1e6:.1f}M parameters, float32, batch 1, "
              f"{len(prompt)}-token prompt, {n} new tokens, greedy")

        floor = weight_streaming_floor(model, args.repeats)
        read = sum(p.data.nbytes for p in model.parameters()) - model.wpe.weight.data.nbytes
        print(f"weight-streaming floor: {floor * 1e3:.1f} ms per token "
              f"({read / floor / 1e9:.1f} GB/s), at most {1 / floor:.1f} tokens/s")
        ours_tokens = generate(model, prompt, n, temperature=0)[len(prompt):]  # warm-up

        def run_ours():
            generate(model, prompt, n, temperature=0)

        if torch is None:
            ours = best_of(run_ours, args.repeats)
            print(f"numpylm {n / ours:7.1f} tokens/s ({n / ours * floor:.0%} of the floor's rate)")
            return
        run_hf = hf_greedy(torch, hf, prompt, n)

        hf_tokens = run_hf()[0, len(prompt):].numpy()  # warm-up
        # Both are warm (above); one timed run per side and round.
        ours_rounds, hf_rounds = alternating_rounds([run_ours, run_hf], args.repeats, 1,
                                                    warmup=0, settle=0)
        ours_times, hf_times = all_times(ours_rounds), all_times(hf_rounds)
        ratios = np.array(round_ratios(hf_rounds, ours_rounds))
        same = int((hf_tokens == ours_tokens).sum())
        print(f"numpylm {n / min(ours_times):7.1f} tokens/s ({n / min(ours_times) * floor:.0%} of "
              f"the floor's rate) | HF transformers "
              f"{n / min(hf_times):7.1f} tokens/s ({torch.get_num_threads()} threads), best "
              f"of {args.repeats} each | ratio {np.median(ratios):5.2f}x (median over "
              f"{len(ratios)} rounds, range {ratios.min():.2f}-{ratios.max():.2f}; target "
              f">= 2x) | greedy tokens equal: {same}/{n}")


if __name__ == "__main__":
    main()
