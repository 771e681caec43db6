"""Benchmark: BLAS threads under load, for a small model's training step and a large product.

    python benchmarks/bench_threads.py [--steps 20]

OpenBLAS's idle threads spin while they wait, so on a machine where another process is busy
they fight it for the cores. This times, at 1 and at 2 (or all) BLAS threads, set at run time
through `numpylm.blas`:

- one training step of example 06's character GPT (2 layers, 4 heads, C = 64, T = 64,
  batch 12: small products), forward + backward + AdamW;
- one 512 x 512 float32 matrix product (a large product, where threads pay on an idle machine);

first on the machine as it is, then with one competing busy process (`python -c "while True:
pass"`, started here and stopped at the end). It prints the seconds, the ratios, what
`numpylm.blas.choose_threads` would pick, and the machine's load, since other work on a
shared machine changes every figure.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from numpylm import blas
from numpylm.corpus import embedded_corpus
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.optim import AdamW
from numpylm.tokenizers.char import CharTokenizer
from numpylm.training.data import get_batch, prepare_data


def training_step_timer(steps: int):
    text = embedded_corpus()[:200_000]
    tokenizer = CharTokenizer.from_text(text, unk="<unk>")
    data = prepare_data(tokenizer, text=text)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=4,
                       n_embd=64)
    model = GPT(config, rng=0)
    optimizer = AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            x, y = get_batch(data.train, 12, 64, rng)
            optimizer.zero_grad()
            _, loss = model(x, y)
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / steps

    # The product that dominates a step: (B*T, C) @ (C, 4C) in the MLP.
    return run, 2 * (12 * 64) * 64 * 256


def product_timer(n: int = 512, repeats: int = 20):
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)

    def run() -> float:
        a @ a
        start = time.perf_counter()
        for _ in range(repeats):
            a @ a
        return (time.perf_counter() - start) / repeats

    return run, 2 * n**3


def measure(label: str, timers, counts) -> dict:
    out = {}
    for name, (run, work) in timers.items():
        for n in counts:
            with blas.threads(n):
                run()  # warm-up at this count
                out[name, n] = min(run() for _ in range(3))
        chosen = blas.choose_threads(work)
        times = ", ".join(f"{n} thread{'s' * (n > 1)} {out[name, n] * 1e3:8.2f} ms" for n in counts)
        print(f"  {label:>9} | {name:<22} | {times} | policy picks {chosen}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if blas.find_openblas() is None:
        print("no OpenBLAS with thread functions found: nothing to measure")
        return
    counts = sorted({1, 2, blas.available_cores()})
    timers = {"training step (06 GPT)": training_step_timer(args.steps),
              "512x512 product": product_timer()}
    print(f"{blas.available_cores()} cores; OpenBLAS {os.path.basename(blas.find_openblas().path)}; "
          f"default threads {blas.get_threads()}; {os.environ.get('NUMPYLM_THREADS', 'auto')=}")
    print(f"load before: {os.getloadavg()[0]:.2f}; busy elsewhere now: {blas.busy_elsewhere():.1f}")
    as_is = measure("as is", timers, counts)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        print(f"with one busy process: busy elsewhere now: {blas.busy_elsewhere():.1f}")
        loaded = measure("+1 busy", timers, counts)
    finally:
        busy.kill()
        busy.wait()
    print("ratios (time at the most threads / time at 1 thread):")
    top = counts[-1]
    for name in timers:
        print(f"  {name:<22} as is {as_is[name, top] / as_is[name, 1]:5.2f}x, "
              f"+1 busy {loaded[name, top] / loaded[name, 1]:5.2f}x")
    print("slow-down from the busy process at 1 thread: " + ", ".join(
        f"{name} {loaded[name, 1] / as_is[name, 1]:.2f}x" for name in timers))


if __name__ == "__main__":
    main()
