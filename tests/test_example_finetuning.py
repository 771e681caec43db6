"""Example 14 runs (with --tiny), prints its three stages, and takes --help."""
import pathlib
import re
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "14_finetuning.py"


def test_example_14_tiny():
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--tiny"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "1. full SFT from scratch" in out and "2. LoRA on 'reverse'" in out
    trained, total = (int(s.replace(",", "")) for s in
                      re.search(r"([\d,]+) of ([\d,]+) parameters trained", out).groups())
    assert 0 < trained < total / 4
    assert "adapter_model.safetensors" in out and "adapter_config.json" in out
    after = float(re.search(r"after LoRA: exact match (\S+)", out).group(1))
    merged = float(re.search(r"merged into the weights: exact match (\S+)", out).group(1))
    assert after == merged  # merging changes no answer


def test_example_14_help():
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "--tiny" in proc.stdout and "--lora-steps" in proc.stdout
