"""The pictures are written as PNG files (skipped without the plot extra)."""
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from numpylm.plots import plot_attention, plot_loss_curves, plot_tokens  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def test_loss_curves(tmp_path):
    path = tmp_path / "loss.png"
    plot_loss_curves(np.linspace(4, 2, 50), str(path), val_losses=[(25, 3.0), (50, 2.1)])
    assert path.read_bytes().startswith(PNG)


def test_attention_heatmap_checks_its_input(tmp_path):
    w = np.tril(np.ones((4, 4)))
    w /= w.sum(1, keepdims=True)
    plot_attention(w, list("abcd"), str(tmp_path / "att.png"))
    assert (tmp_path / "att.png").read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match=r"\(T, T\)"):
        plot_attention(np.ones((2, 3)), list("ab"), str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="3 token labels for 4 positions"):
        plot_attention(w, list("abc"), str(tmp_path / "bad.png"))


def test_token_view(tmp_path):
    path = tmp_path / "tok.png"
    plot_tokens(["Hel", "lo", " world", "\n"], str(path), ids=[1, 2, 3, 4], width=10)
    assert path.read_bytes().startswith(PNG)


def test_train_command_writes_loss_curves(tmp_path):
    from numpylm.cli import main

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    png = tmp_path / "loss.png"
    code = main(["train", "--model", "bigram", "--data", str(text), "--steps", "12",
                 "--batch-size", "4", "--block-size", "8", "--eval-interval", "6",
                 "--eval-batches", "2", "--log-interval", "6", "--warmup-steps", "2",
                 "--out", str(tmp_path / "ckpt"), "--plot-loss", str(png)])
    assert code == 0
    assert png.read_bytes().startswith(PNG)
