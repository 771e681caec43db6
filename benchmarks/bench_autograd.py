"""How much does the autograd engine cost? A 3-layer MLP training step (forward, backward,
AdamW) with numpylm against the same step written by hand in numpy, and against PyTorch
eager when it is installed; plus the fixed cost of one op on a one-element tensor.

    python benchmarks/bench_autograd.py [--repeats 20]

Target: numpylm / hand-written <= 1.10. For a fair comparison with PyTorch run it as
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_autograd.py`.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
from _timing import median_time

import numpylm.functional as F
from numpylm import Tensor, nn
from numpylm.optim import AdamW

B, D, H, K = 1024, 512, 512, 10  # batch, input width, hidden width, classes
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.999), 1e-8, 1e-2


def init_weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(H, D), (H,), (H, H), (H,), (K, H), (K,)]
    return [rng.uniform(-1 / math.sqrt(s[-1]), 1 / math.sqrt(s[-1]), s).astype(np.float32)
            for s in shapes]


def numpylm_step(x: np.ndarray, y: np.ndarray):
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(D, H), nn.Linear(H, H), nn.Linear(H, K)

        def forward(self, x):
            return self.fc3(self.fc2(self.fc1(x).relu()).relu())

    model = MLP()
    for p, w in zip(model.parameters(), init_weights()):
        p.data[...] = w
    opt = AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    xt = Tensor(x)

    def step():
        loss = F.cross_entropy(model(xt), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def handwritten_step(x: np.ndarray, y: np.ndarray):
    """The same step with every derivative written out, and AdamW done in place."""
    w1, b1, w2, b2, w3, b3 = params = init_weights()
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    tmp = [np.empty_like(p) for p in params]
    t = [0]
    rows = np.arange(B)

    def step():
        h1 = x @ w1.T + b1
        a1 = np.maximum(h1, 0)
        h2 = a1 @ w2.T + b2
        a2 = np.maximum(h2, 0)
        logits = a2 @ w3.T + b3
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(p[rows, y]).mean()
        d = p
        d[rows, y] -= 1
        d /= B
        grads = [None] * 6
        grads[4], grads[5] = d.T @ a2, d.sum(0)
        d = (d @ w3) * (h2 > 0)
        grads[2], grads[3] = d.T @ a1, d.sum(0)
        d = (d @ w2) * (h1 > 0)
        grads[0], grads[1] = d.T @ x, d.sum(0)
        t[0] += 1
        c1, c2 = 1 - BETAS[0] ** t[0], 1 - BETAS[1] ** t[0]
        for p_, g, m_, v_, s in zip(params, grads, m, v, tmp):
            p_ *= 1 - LR * WD
            m_ *= BETAS[0]; m_ += (1 - BETAS[0]) * g
            v_ *= BETAS[1]; np.multiply(g, g, out=s); s *= 1 - BETAS[1]; v_ += s
            np.sqrt(v_, out=s); s /= math.sqrt(c2); s += EPS
            np.divide(m_, s, out=s); s *= -LR / c1; p_ += s
        return float(loss)
    return step


def torch_step(x: np.ndarray, y: np.ndarray):
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, H),
                                torch.nn.ReLU(), torch.nn.Linear(H, K))
    with torch.no_grad():
        for p, w in zip(model.parameters(), init_weights()):
            p.copy_(torch.from_numpy(w))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return step


def op_overhead(repeats: int = 20000) -> float:
    x = Tensor(np.float32(1.0), requires_grad=True)
    t0 = time.perf_counter()
    for _ in range(repeats):
        (x * 2.0).backward()
    return (time.perf_counter() - t0) / repeats * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    openblas = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    print(f"3-layer MLP step, batch {B}, widths {D}-{H}-{H}-{K}, float32, AdamW "
          f"(median of {args.repeats}; OPENBLAS settings in env: {openblas or 'none'})")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, D)).astype(np.float32)
    y = rng.integers(0, K, B)

    ours, hand = numpylm_step(x, y), handwritten_step(x, y)
    assert abs(ours() - hand()) < 1e-4, "the two steps must compute the same loss"
    t_hand = median_time(hand, args.repeats)
    t_ours = median_time(ours, args.repeats)
    print(f"  hand-written numpy : {t_hand * 1e3:8.2f} ms")
    print(f"  numpylm            : {t_ours * 1e3:8.2f} ms   ratio {t_ours / t_hand:.3f} "
          f"(target <= 1.10)")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("  PyTorch eager      : skipped (torch not installed)")
    else:
        t_torch = median_time(torch_step(x, y), args.repeats)
        print(f"  PyTorch eager      : {t_torch * 1e3:8.2f} ms   numpylm / torch "
              f"{t_ours / t_torch:.3f}")
    print(f"per-op overhead (1-element tensor, multiply + backward): {op_overhead():.1f} us")


if __name__ == "__main__":
    main()
