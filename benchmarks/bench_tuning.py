"""Fine-tuning SmolLM2-135M-Instruct: LoRA's speed against PEFT + PyTorch, memory of full
fine-tuning, LoRA and QLoRA, and what a short LoRA run teaches the model.

speed:    one LoRA training step (forward, masked loss, backward, AdamW on the adapters) on
          SmolLM2-135M's real weights in float32, batch 4 x 128 tokens, rank 8 (alpha 16) on
          q_proj and v_proj, against PEFT's LoRA on HF's LlamaForCausalLM with the same weights
          and the same adapters (numpylm's adapter saved in PEFT's layout and loaded by PEFT;
          equal first losses checked). Alternating rounds (benchmarks/_timing.py); prints
          s/step and the ratio numpylm / PyTorch (lower is better; target <= 1.5x).
memory:   each method in a subprocess of its own, two training steps: the bytes the model and
          the optimiser hold after set-up, the peak of numpy's allocations during a step
          (tracemalloc), and the process's peak resident size (getrusage; it includes loading
          the GGUF file and dequantizing it to float32 before QLoRA re-quantizes).
accuracy: held-out exact match (the task's checker) of the model before and after a short LoRA
          run on a built-in task, through `numpylm.tuning.sft.finetune` (the training loop).

Run with `python benchmarks/bench_tuning.py [--quick] [--mode speed|memory|accuracy|all]
[--rounds R] [--steps N] [--task NAME] [--lora-steps N] [--eval N] [--threads N]`;
`--quick` (one 1 x 64-token step a side, 1 x 32 tokens in the memory probes, one LoRA step of
two conversations, three questions, no Q4_0 probe) runs in about two minutes on two idle cores
(four on a busy machine); its figures only show that it works.
"""
from __future__ import annotations

import argparse

# Before numpy: --threads must reach OpenBLAS before it starts.
from _threads import THREADS, add_threads_argument, report_environment
from _timing import all_times, alternating_rounds, ratio_text, round_ratios
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from numpylm.models.pretrained import INSTALL_SMOLLM2, find_smollm2
from numpylm.optim import AdamW
from numpylm.training.families import load_model
from numpylm.tuning import (LoRAConfig, apply_lora, merge_lora, save_adapter,
                            trainable_parameters)
from numpylm.tuning.lora import _set_child, lora_layers
from numpylm.tuning.data import get_task, task_conversations
from numpylm.tuning.qlora import apply_qlora, model_bytes
from numpylm.tuning.sft import encode_conversations, exact_match, finetune

LORA = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])


def load_smollm2(quiet: bool = False):
    path = find_smollm2()
    if path is None:
        sys.exit(f"SmolLM2 is not installed: {INSTALL_SMOLLM2}")
    start = time.perf_counter()
    loaded = load_model(str(path))
    if not quiet:
        print(f"loaded {path.name} in {time.perf_counter() - start:.1f} s", flush=True)
    return path, loaded.model, loaded.tokenizer


def batch(vocab: int, rows: int, length: int, seed: int = 0):
    """Random ids: the same work for both sides (speed does not depend on the text)."""
    ids = np.random.default_rng(seed).integers(0, vocab, (rows, length + 1))
    return np.ascontiguousarray(ids[:, :-1]), np.ascontiguousarray(ids[:, 1:])


# --------------------------------------------------------------------------------- speed


def bench_speed(model, rounds: int, steps: int, rows: int, length: int) -> None:
    apply_lora(model, LoRAConfig(**LORA), rng=0)
    layers = lora_layers(model)
    model.train()
    x, y = batch(model.config.vocab_size, rows, length)
    params = [p for _, p in trainable_parameters(model)]
    opt = AdamW(params, lr=1e-4)

    def ours():
        opt.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        opt.step()

    first = float(model(x, y)[1].item())
    sides, theirs_first, torch = [ours], None, None
    try:
        import peft
        import torch
        import transformers
        if THREADS is not None:
            torch.set_num_threads(THREADS)
    except ImportError:
        print("peft/torch/transformers not installed: timing numpylm only")
    if torch is not None:
        with tempfile.TemporaryDirectory() as d:
            base, adapter = Path(d, "base"), Path(d, "adapter")
            _unwrap(model)
            model.save_pretrained(str(base))
            _wrap(model, layers)
            save_adapter(model, adapter)
            hf = transformers.LlamaForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
            hf = peft.PeftModel.from_pretrained(hf, adapter, is_trainable=True)
        hf.train()
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        topt = torch.optim.AdamW([p for p in hf.parameters() if p.requires_grad], lr=1e-4)

        def theirs():
            topt.zero_grad(set_to_none=True)
            logits = hf(input_ids=tx).logits
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]),
                                                     ty.view(-1))
            loss.backward()
            topt.step()

        with torch.no_grad():
            logits = hf(input_ids=tx).logits
            theirs_first = float(torch.nn.functional.cross_entropy(
                logits.view(-1, logits.shape[-1]), ty.view(-1)))
        assert abs(theirs_first - first) < 1e-3, (first, theirs_first)  # the same model
        n_peft = sum(p.numel() for p in hf.parameters() if p.requires_grad)
        assert n_peft == sum(p.size for p in params), (n_peft, sum(p.size for p in params))
        sides.append(theirs)
    times = alternating_rounds(sides, rounds, steps, warmup=1, settle=0)
    line = (f"LoRA step (SmolLM2-135M, float32, {rows} x {length} tokens, r=8 on q_proj,v_proj, "
            f"{sum(p.size for p in params):,} trained parameters): numpylm "
            f"{statistics.median(all_times(times[0])):.2f} s/step")
    if torch is not None:
        ratios = round_ratios(times[0], times[1])
        line += (f" | PEFT + PyTorch eager {statistics.median(all_times(times[1])):.2f} s/step "
                 f"({torch.get_num_threads()} threads) | ratio {ratio_text(ratios, '<= 1.5x')} "
                 f"| first losses {first:.4f} / {theirs_first:.4f}")
    print(line, flush=True)
    _unwrap(model)  # the base again, for the accuracy run


def _unwrap(model) -> dict:
    """Put every LoRA layer's base layer back in its place (the model is the base again)."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        _set_child(model, name, layer.base_layer)
    return layers


def _wrap(model, layers: dict) -> None:
    for name, layer in layers.items():
        _set_child(model, name, layer)


# -------------------------------------------------------------------------------- memory


def child_memory(method: str, rows: int, length: int, steps: int) -> None:
    """In a subprocess: set up `method`, train `steps` steps, print the figures as JSON."""
    _, model, _ = load_smollm2(quiet=True)
    if method == "lora":
        apply_lora(model, LoRAConfig(**LORA), rng=0)
    elif method.startswith("qlora"):
        apply_qlora(model, LoRAConfig(**LORA), method.split("-")[1], rng=0)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = AdamW(params, lr=1e-5)
    x, y = batch(model.config.vocab_size, rows, length)
    tracemalloc.start()
    peak = 0
    for _ in range(steps):
        tracemalloc.reset_peak()
        opt.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        peak = max(peak, tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
    moments = sum(v.nbytes for state in opt.state_dict()["state"].values()
                  for v in state.values() if isinstance(v, np.ndarray))
    sizes = model_bytes(model)
    print(json.dumps({"weights": sizes["total"], "trainable": sizes["trainable"],
                      "optimizer": moments, "step_peak": peak,
                      "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def bench_memory(quick: bool) -> None:
    rows, length, steps = (1, 32, 1) if quick else (4, 128, 2)
    methods = ("full", "lora", "qlora-q8_0") + (() if quick else ("qlora-q4_0",))
    print(f"memory ({rows} x {length} tokens, {steps} step(s) each, one subprocess per method, "
          f"run side by side):", flush=True)
    procs = {method: subprocess.Popen(
        [sys.executable, __file__, "--child", method, "--rows", str(rows), "--length",
         str(length), "--steps", str(steps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for method in methods}
    for method, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode:
            print(f"  {method}: failed: {err.strip().splitlines()[-1:]}")
            continue
        m = json.loads(out.strip().splitlines()[-1])
        mb = lambda n: f"{n / 2**20:,.0f} MB"  # noqa: E731
        print(f"  {method:11s} weights {mb(m['weights']):>9s} (trained {mb(m['trainable'])}) | "
              f"optimiser {mb(m['optimizer']):>9s} | step peak (numpy) {mb(m['step_peak']):>9s} | "
              f"process peak {mb(m['max_rss']):>9s}", flush=True)


# ------------------------------------------------------------------------------ accuracy


def bench_accuracy(model, tok, task_name: str, steps: int, n_eval: int, lr: float,
                   max_new_tokens: int, batch_size: int = 4) -> None:
    task = get_task(task_name)
    questions = [q for q, _ in task.examples(n_eval, seed=10_000)]
    model.eval()
    t = time.perf_counter()
    before = exact_match(model, tok, task, questions, max_new_tokens=max_new_tokens)
    print(f"accuracy: {task_name}, {n_eval} held-out questions: exact match before "
          f"{before:.2f} ({time.perf_counter() - t:.0f} s to answer)", flush=True)
    apply_lora(model, LoRAConfig(**LORA), rng=0)
    examples = encode_conversations(task_conversations(task, 512, seed=0), tok)
    result = finetune(model, examples, steps, batch_size=batch_size, lr=lr, seed=0, log=print,
                      log_interval=max(steps // 5, 1))
    merge_lora(model)
    after = exact_match(model, tok, task, questions, max_new_tokens=max_new_tokens)
    print(f"accuracy: after {steps} LoRA steps ({result.seconds:.0f} s, batch {batch_size}, "
          f"lr {lr:g}): "
          f"exact match {after:.2f} (before {before:.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["speed", "memory", "accuracy", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="about two minutes in all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1, help="timed steps per turn")
    parser.add_argument("--task", default="reverse", help="built-in task for the accuracy run")
    parser.add_argument("--lora-steps", type=int, default=60)
    parser.add_argument("--eval", type=int, default=30, help="held-out questions")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, default=128, help=argparse.SUPPRESS)
    add_threads_argument(parser)
    args = parser.parse_args()
    if args.child:
        child_memory(args.child, args.rows, args.length, args.steps)
        return
    rows, length, new_tokens, lora_batch = 4, 128, 24, 4
    if args.quick:
        args.rounds, args.steps, args.lora_steps, args.eval = 1, 1, 1, 3
        rows, length, new_tokens, lora_batch = 1, 64, 12, 2
    report_environment()
    start = time.perf_counter()
    if args.mode in ("memory", "all"):  # first: its subprocesses load while this one waits
        bench_memory(args.quick)
        print(f"  ({time.perf_counter() - start:.0f} s so far)", flush=True)
    if args.mode in ("speed", "accuracy", "all"):
        _, model, tok = load_smollm2()
    if args.mode in ("speed", "all"):
        bench_speed(model, args.rounds, args.steps, rows, length)
    if args.mode in ("accuracy", "all"):
        bench_accuracy(model, tok, args.task, args.lora_steps, args.eval, args.lr, new_tokens,
                       lora_batch)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
