"""Benchmark: one LSTM layer, forward + backward, T = 64, B = 32, input 128, hidden 256, float32.

Compares numpylm's fused LSTM layer with `torch.nn.LSTM` measured in the same run (skipped if
torch is not installed), and the readable unrolled layer with the fused one. Also times the
fused GRU and tanh RNN layers for reference.

    python benchmarks/bench_rnn.py [--repeats 20] [--threads N]

`--threads N` limits both numpy's OpenBLAS and torch to N threads (useful on a busy machine,
where a second BLAS thread that cannot get a core slows everything down).

OpenBLAS reads OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE when numpy is imported; either can pin
numpy to slower kernels than PyTorch's, so this script removes both from its environment
before importing numpy (the same as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`).
"""
from __future__ import annotations

import argparse
import os

_UNSET = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.pop(v, None)]
# Environment first: OpenBLAS reads it once, when numpy is imported below.
_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--threads", type=int, default=None)
_THREADS = _pre.parse_known_args()[0].threads
if _THREADS is not None:
    os.environ["OPENBLAS_NUM_THREADS"] = str(_THREADS)

import numpy as np  # noqa: E402
from _timing import all_times, alternating_rounds, median_time, round_ratios  # noqa: E402

from numpylm import nn  # noqa: E402
from numpylm.autograd.tensor import Tensor  # noqa: E402

T, B, I, H = 64, 32, 128, 256


ROUNDS = 5  # alternating rounds of a comparison


def numpylm_step(layer, x: np.ndarray, g: np.ndarray):
    def step():
        xt = Tensor(x, requires_grad=True)
        out, _ = layer(xt)
        layer.zero_grad()
        out.backward(g)
    return step


def torch_step(x: np.ndarray, g: np.ndarray):
    import torch
    if _THREADS is not None:
        torch.set_num_threads(_THREADS)
    lstm = torch.nn.LSTM(I, H, batch_first=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    gt = torch.from_numpy(g)

    def step():
        lstm.zero_grad()
        xt.grad = None
        out, _ = lstm(xt)
        out.backward(gt)
    return step, torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per case")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads for numpy and torch (default: the libraries' own)")
    args = parser.parse_args()
    print(f"LSTM layer forward + backward: T={T} B={B} input={I} hidden={H} float32")
    print("environment: run as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` "
          + (f"(removed {', '.join(_UNSET)})" if _UNSET else "(neither was set)")
          + (f"; {_THREADS} BLAS thread(s)" if _THREADS is not None else ""))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    g = rng.standard_normal((B, T, H)).astype(np.float32)

    fused_step = numpylm_step(nn.LSTM(I, H, rng=0), x, g)
    try:
        step, threads = torch_step(x, g)
    except ImportError:
        fused = median_time(fused_step, args.repeats)
        print(f"numpylm LSTM fused      {fused * 1e3:8.2f} ms")
        print("torch.nn.LSTM           skipped (torch is not installed)")
    else:
        ours, ref = alternating_rounds([fused_step, step], ROUNDS, max(1, args.repeats // ROUNDS))
        fused = float(np.median(all_times(ours)))
        ratios = np.array(round_ratios(ours, ref))
        print(f"numpylm LSTM fused      {fused * 1e3:8.2f} ms")
        print(f"torch.nn.LSTM           {np.median(all_times(ref)) * 1e3:8.2f} ms  "
              f"({threads} threads)")
        print(f"fused / torch           {np.median(ratios):8.2f}x  (median over {len(ratios)} "
              f"rounds, range {ratios.min():.2f}-{ratios.max():.2f}; target <= 2.0x)")
    unrolled = median_time(numpylm_step(nn.LSTM(I, H, fused=False, rng=0), x, g),
                     max(3, args.repeats // 4))
    print(f"numpylm LSTM unrolled   {unrolled * 1e3:8.2f} ms")
    print(f"unrolled / fused        {unrolled / fused:8.2f}x")
    for cls in (nn.GRU, nn.RNN):
        t = median_time(numpylm_step(cls(I, H, rng=0), x, g), args.repeats)
        print(f"numpylm {cls.__name__:<4} fused      {t * 1e3:8.2f} ms")
    print("(timings depend on machine load; compare ratios measured in the same run)")


if __name__ == "__main__":
    main()
