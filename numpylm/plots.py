"""Pictures for where a reader would rather look than read: loss curves, an attention
heatmap, a text cut into its tokens, and the ladder of model families.

Needs the `plot` extra (`pip install "numpylm[plot]"`); matplotlib is imported only when a
function here is called, and each function writes a PNG file (no window opens).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'numpylm[plot]'") from None
    matplotlib.use("Agg")  # write files; never open a window
    import matplotlib.pyplot as plt
    return plt


def plot_loss_curves(train_losses: Sequence[float], path: str,
                     val_losses: Sequence[tuple[int, float]] = (),
                     title: str = "training loss", start_step: int = 1) -> None:
    """Training loss per step (light), its running mean (dark) and validation points
    ((step, loss) pairs, as `TrainResult.val_losses`)."""
    plt = _pyplot()
    losses = np.asarray(train_losses, dtype=float)
    steps = np.arange(start_step, start_step + len(losses))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=1, label="train (per step)")
    if len(losses) >= 10:
        w = max(len(losses) // 20, 5)
        smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, color="tab:blue", lw=2, label=f"train ({w}-step mean)")
    if len(val_losses):
        vs, vl = zip(*val_losses)
        ax.plot(vs, vl, "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_attention(weights: np.ndarray, tokens: Sequence[str], path: str,
                   title: str = "attention") -> None:
    """A heatmap of one head's attention weights (T, T): row t shows where token t looks.

    The upper triangle is zero in a causal model: no token attends to the future.
    """
    plt = _pyplot()
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"plot_attention: need a (T, T) array, got shape {weights.shape}")
    if len(tokens) != weights.shape[0]:
        raise ValueError(f"plot_attention: {len(tokens)} token labels for "
                         f"{weights.shape[0]} positions")
    T = len(tokens)
    size = min(max(4.0, 0.35 * T + 2), 14.0)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(weights, cmap="viridis", vmin=0.0)
    labels = [repr(t)[1:-1] for t in tokens]
    ax.set_xticks(range(T), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(T), labels, fontsize=8)
    ax.set_xlabel("attended position (key)")
    ax.set_ylabel("attending position (query)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tokens(pieces: Sequence[str], path: str, ids: Sequence[int] | None = None,
                width: int = 60, title: str = "tokens") -> None:
    """The text laid out as coloured boxes, one per token, with each token's id beneath."""
    plt = _pyplot()
    colours = ["#cfe2f3", "#d9ead3", "#fff2cc", "#f4cccc", "#d9d2e9", "#fce5cd"]
    rows: list[list[tuple[int, str, int]]] = [[]]
    column = 0
    for i, piece in enumerate(pieces):
        shown = piece.replace(" ", "·").replace("\n", "⏎").replace("\t", "→") or "∅"
        if column + len(shown) > width and rows[-1]:
            rows.append([])
            column = 0
        rows[-1].append((column, shown, i))
        column += len(shown) + 1
    fig, ax = plt.subplots(figsize=(max(6, width * 0.14), 0.8 * len(rows) + 0.8))
    for r, row in enumerate(rows):
        y = -r
        for column, shown, i in row:
            ax.add_patch(plt.Rectangle((column, y - 0.35), len(shown), 0.7,
                                       color=colours[i % len(colours)], ec="#555555", lw=0.5))
            ax.text(column + len(shown) / 2, y, shown, ha="center", va="center",
                    family="monospace", fontsize=9)
            if ids is not None:
                ax.text(column + len(shown) / 2, y - 0.5, str(ids[i]), ha="center", va="top",
                        fontsize=6, color="#333333")
    ax.set_xlim(-1, width + 1)
    ax.set_ylim(-len(rows) + 0.2, 0.8)
    ax.axis("off")
    ax.set_title(f"{title} ({len(pieces)} tokens)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_ladder(rungs: Sequence, path: str) -> None:
    """`numpylm ladder`'s picture: validation bits per character against training time, one
    point per model (`rungs` are `numpylm.ladder.Rung`s: model, train_seconds, val_bpc)."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.5))
    markers = "os^Dv<>pPX*h"
    colours = plt.get_cmap("tab20").colors
    # Neural models share one budget and sit close together: a legend, not labels, names them.
    for i, r in enumerate(rungs):
        ax.scatter(max(r.train_seconds, 1e-2), r.val_bpc, s=45, marker=markers[i % len(markers)],
                   color=colours[(2 * i) % len(colours)], label=f"{r.model}: {r.val_bpc:.2f}")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xscale("log")
    ax.set_xlabel("training seconds (log scale)")
    ax.set_ylabel("validation bits per character")
    ax.set_title("numpylm ladder")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
