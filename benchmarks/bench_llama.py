"""Speed of numpylm's Llama against HF transformers' LlamaForCausalLM (PyTorch eager), same run.

train:  one step (forward + backward + AdamW) of a Llama with 6 layers, width 384, 6 heads,
        2 KV heads, MLP 1024, block 256, batch 16, vocabulary 65 (character level), both
        sides from the same weights (checked by equal first losses). Prints ms/step and
        the ratio numpylm / PyTorch (lower is better; target <= 1.0x).
decode: batch 1, float32, SmolLM2-135M's shape (30 layers, width 576, 9 heads, 3 KV heads,
        MLP 1536, vocabulary 49152, tied head) with random weights, a 16-token prompt and 64
        new greedy tokens, against HF `generate` on the same weights (HF's model is saved
        with `save_pretrained` and loaded with `Llama.from_pretrained`). Prints tokens/s,
        the ratio numpylm / HF (higher is better; target >= 1.5x) and the fraction of the
        weight-streaming floor (as bench_generate.py measures it).

Both measured in alternating rounds (benchmarks/_timing.py). Run with
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_llama.py
[--mode train|decode|both] [--rounds R] [--steps N] [--new-tokens N] [--threads N]`.
"""
from __future__ import annotations

import argparse

# Before numpy: --threads must reach OpenBLAS before it starts.
from _threads import THREADS, add_threads_argument, report_environment
from _hf import hf_greedy
from _timing import all_times, alternating_rounds, best_of, ratio_text, round_ratios
import statistics
import tempfile
import time

import numpy as np

from numpylm import blas
from numpylm.inference import generate
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.optim import AdamW

TRAIN = dict(vocab_size=65, hidden_size=384, intermediate_size=1024, num_hidden_layers=6,
             num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
             tie_word_embeddings=True, rms_norm_eps=1e-5)
TRAIN_BATCH = 16
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
               rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)


def _batches(seed: int = 0):
    rng = np.random.default_rng(seed)
    while True:
        x = rng.integers(0, TRAIN["vocab_size"], (TRAIN_BATCH, TRAIN["max_position_embeddings"] + 1))
        yield np.ascontiguousarray(x[:, :-1]), np.ascontiguousarray(x[:, 1:])


def _numpylm_step(model: Llama):
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    data = _batches()

    def step():
        x, y = next(data)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _torch_step(torch, hf):
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-3, weight_decay=0.1)
    data = _batches()

    def step():
        x, y = (torch.from_numpy(a) for a in next(data))
        logits = hf(x).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _hf_model(torch, transformers, fields: dict, directory: str, attn: str):
    """An HF LlamaForCausalLM with `fields`, saved to `directory`; numpylm's copy of it."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**fields, attn_implementation=attn)
    hf = transformers.LlamaForCausalLM(config)
    hf.save_pretrained(directory)
    return hf, Llama.from_pretrained(directory)


def bench_train(torch, transformers, rounds: int, steps: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        if torch is not None:
            hf, model = _hf_model(torch, transformers, TRAIN, d, "sdpa")
            hf.train()
        else:
            model = Llama(LlamaConfig(**TRAIN), rng=0)
    model.train()
    x, y = next(_batches())
    first = model(x, y)[1].item()
    sides = [_numpylm_step(model)]
    if torch is not None:
        logits = hf(torch.from_numpy(x)).logits
        theirs = torch.nn.functional.cross_entropy(logits.view(-1, 65), torch.from_numpy(y).view(-1))
        assert abs(theirs.item() - first) < 1e-4, (theirs.item(), first)  # the same model
        sides.append(_torch_step(torch, hf))
    times = alternating_rounds(sides, rounds, steps, warmup=1, settle=0)  # steps of seconds
    ours = statistics.median(all_times(times[0]))
    line = (f"train (L=6, C=384, H=6, Hkv=2, I=1024, T=256, B=16, V=65, "
            f"{model.num_parameters() / 1e6:.1f}M parameters): numpylm {ours * 1e3:7.1f} ms/step")
    if torch is not None:
        ratios = round_ratios(times[0], times[1])
        line += (f" | PyTorch eager (transformers, sdpa) "
                 f"{statistics.median(all_times(times[1])) * 1e3:7.1f} ms/step | ratio "
                 f"{ratio_text(ratios, '<= 1.0x')}")
    print(line, flush=True)


def weight_streaming_floor(model: Llama, repeats: int) -> float:
    """Seconds per token of only the matrix-vector products one decoding step needs, on a
    dummy vector: each layer's q/k/v side by side and gate/up side by side (one product each,
    as the stepper multiplies them), o and down, and the LM head. Each kind of product is
    timed over every layer in both layouts a row-major BLAS can read, the weight as stored
    (out, in) multiplied as x @ W.T, and a transposed copy (in, out) multiplied as x @ W; the
    floor is a token's products, each kind in its faster layout (here (in, out) streams
    gate/up, o and the head faster, (out, in) down). The stepper uses the stored layout, so
    the floor can be below what its products alone cost: what decoding reaches is measured
    against the fastest streaming of the same weights this BLAS offers, not its own."""
    kinds: dict[str, list[np.ndarray]] = {"qkv": [], "o": [], "gate_up": [], "down": []}
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        kinds["qkv"].append(np.concatenate([a.q_proj.weight.data, a.k_proj.weight.data,
                                            a.v_proj.weight.data]))
        kinds["o"].append(a.o_proj.weight.data)
        kinds["gate_up"].append(np.concatenate([m.gate_proj.weight.data, m.up_proj.weight.data]))
        kinds["down"].append(m.down_proj.weight.data)
    kinds["head"] = [model.head_weight()]
    chosen = []
    for ws in kinds.values():
        transposed = [np.ascontiguousarray(w.T) for w in ws]
        stored_time = best_of(lambda: _products(ws, True), repeats)
        transposed_time = best_of(lambda: _products(transposed, False), repeats)
        chosen.append((ws, True) if stored_time <= transposed_time else (transposed, False))

    def one_token():
        for ws, stored in chosen:
            _products(ws, stored)

    time.sleep(1.0)  # PyTorch's idle threads spin for a while after its last call
    one_token()
    return best_of(lambda: [one_token() for _ in range(16)], repeats) / 16


def _products(weights: list[np.ndarray], stored: bool) -> None:
    """One row times each weight: x @ W.T for a stored (out, in) W, x @ W for an (in, out) W."""
    for w in weights:
        if stored:
            np.ones((1, w.shape[1]), dtype=w.dtype) @ w.T
        else:
            np.ones((1, w.shape[0]), dtype=w.dtype) @ w


def decode_floor(model: Llama, repeats: int = 3) -> tuple[float, int]:
    """(`weight_streaming_floor`, the BLAS threads it ran with): the threads numpylm decodes
    with (Llama.step's policy: one for a token at a time, unless NUMPYLM_THREADS or --threads
    says otherwise)."""
    n_threads = model._step_threads(1)
    with blas.threads(n_threads):
        return weight_streaming_floor(model, repeats), n_threads


def bench_decode(torch, transformers, rounds: int, n: int) -> None:
    prompt = np.random.default_rng(0).integers(0, SMOLLM2["vocab_size"], 16)
    with tempfile.TemporaryDirectory() as d:
        if torch is not None:
            hf, model = _hf_model(torch, transformers, SMOLLM2, d, "sdpa")
            hf.eval()
        else:
            model = Llama(LlamaConfig(**SMOLLM2), rng=0).eval()
    floor, n_threads = decode_floor(model)
    read = sum(p.data.nbytes for p in model.parameters())
    print(f"decode (SmolLM2-135M shape, {model.num_parameters() / 1e6:.1f}M parameters, float32, "
          f"batch 1, 16-token prompt, {n} new tokens, greedy): weight-streaming floor "
          f"{floor * 1e3:.1f} ms/token ({read / floor / 1e9:.1f} GB/s, {n_threads} BLAS "
          f"thread(s), as numpylm decodes), at most {1 / floor:.1f} tokens/s", flush=True)
    ours_tokens = generate(model, prompt, n, temperature=0)[len(prompt):]

    def run_ours():
        generate(model, prompt, n, temperature=0)

    if torch is None:
        t = best_of(run_ours, rounds)
        print(f"numpylm {n / t:.1f} tokens/s ({n / t * floor:.0%} of the floor's rate)")
        return
    run_hf = hf_greedy(torch, hf, prompt, n)

    hf_tokens = run_hf()[0, len(prompt):].numpy()
    ours_r, hf_r = alternating_rounds([run_ours, run_hf], rounds, 1, warmup=0, settle=0)
    floor = min(floor, decode_floor(model)[0])  # again, away from set-up: the lower counts
    ours_t, hf_t = all_times(ours_r), all_times(hf_r)
    ratios = np.array(round_ratios(hf_r, ours_r))
    same = int((hf_tokens == ours_tokens).sum())
    print(f"floor measured again after the rounds: {floor * 1e3:.1f} ms/token (the lower of the "
          f"two)")
    print(f"numpylm {n / min(ours_t):6.1f} tokens/s ({n / min(ours_t) * floor:.0%} of the "
          f"floor's rate) | HF generate {n / min(hf_t):6.1f} tokens/s "
          f"({torch.get_num_threads()} threads), best of {rounds} | ratio "
          f"{ratio_text(ratios, '>= 1.5x')} | greedy tokens equal: {same}/{n}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["train", "decode", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per turn")
    parser.add_argument("--new-tokens", type=int, default=64)
    add_threads_argument(parser)
    args = parser.parse_args()
    report_environment()
    try:
        import torch
        import transformers
        if THREADS is not None:
            torch.set_num_threads(THREADS)
        print(f"PyTorch {torch.__version__}, transformers {transformers.__version__}, "
              f"{torch.get_num_threads()} threads")
    except ImportError:
        torch = transformers = None
        print("torch/transformers not installed: timing numpylm only")
    if args.mode in ("train", "both"):
        bench_train(torch, transformers, args.rounds, args.steps)
    if args.mode in ("decode", "both"):
        bench_decode(torch, transformers, args.rounds, args.new_tokens)


if __name__ == "__main__":
    main()
