"""`numpylm train`, `generate` and `eval` end to end, at tiny settings, for several families."""
from __future__ import annotations

import json

import pytest

from numpylm.cli import main
from numpylm.corpus import embedded_corpus

TINY = ["--steps", "4", "--batch-size", "4", "--block-size", "8", "--warmup-steps", "1",
        "--eval-interval", "2", "--eval-batches", "1", "--log-interval", "2",
        "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
        "--embedding-dim", "8", "--hidden-size", "16", "--context", "3"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(embedded_corpus()[:3000], encoding="utf-8")
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("family, extra", [("ngram", []), ("bigram", ["--lr", "0.1"]),
                                           ("lstm", []), ("gpt", ["--tokenizer", "bpe",
                                                                  "--vocab-size", "280"])])
def test_train_generate_eval_round_trip(capsys, tmp_path, text_file, family, extra):
    out_dir = tmp_path / family
    code, out, _ = run(capsys, "train", "--model", family, "--data", text_file, "--out", out_dir,
                       *TINY, *extra)
    assert code == 0 and f"saved {out_dir}" in out
    assert {p.name for p in out_dir.iterdir()} >= {"config.json", "model.safetensors",
                                                   "tokenizer.txt", "trainer_state.json"}
    if family != "ngram":
        assert "step 4/4" in out and "val loss" in out
        assert (out_dir / "optimizer.safetensors").is_file()

    gen = ["generate", "--checkpoint", out_dir, "--prompt", "The ", "--max-new-tokens", "12",
           "--seed", "3", "--top-k", "5"]
    code, first, _ = run(capsys, *gen)
    assert code == 0 and first.startswith("The ") and len(first.rstrip("\n")) > len("The ")
    code, second, _ = run(capsys, *gen)
    assert second == first                      # a seed makes the sample repeatable

    code, out, _ = run(capsys, "eval", "--checkpoint", out_dir, "--json")
    report = json.loads(out)
    assert code == 0 and report["data"].startswith("the last 10% of")
    assert report["n_tokens"] > 0 and report["loss"] > 0
    # bits per char = loss * tokens / (chars * ln 2); for char tokens, = bits per token.
    assert report["bits_per_char"] == pytest.approx(
        report["bits_per_token"] * report["n_tokens"] / report["n_chars"])
    code, out, _ = run(capsys, "eval", "--checkpoint", out_dir, "--data", text_file)
    assert code == 0 and "bits per char" in out and f"all of {text_file}" in out


def test_train_resume_continues_the_saved_run(capsys, tmp_path, text_file):
    out_dir = tmp_path / "rnn"
    run(capsys, "train", "--model", "rnn", "--data", text_file, "--out", out_dir, *TINY)
    code, out, _ = run(capsys, "train", "--model", "rnn", "--data", text_file, "--out", out_dir,
                       "--resume", "--steps", "6")
    assert code == 0 and "resumed from" in out and "at step 4" in out and "step 6/6" in out
    state = json.loads((out_dir / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["train_config"]["block_size"] == 8


def test_a_gpt2_format_directory_works_for_generate_and_eval(capsys, tmp_path, text_file):
    from numpylm.models.gpt import GPT, GPTConfig
    from numpylm.tokenizers.bpe import BPETokenizer

    tokenizer = BPETokenizer.train(text_file.read_text(encoding="utf-8"), 270)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2,
                          n_embd=8), rng=0)
    directory = tmp_path / "gpt2"
    directory.mkdir()
    model.save_pretrained(directory)
    tokenizer.to_hf(directory)
    code, out, _ = run(capsys, "generate", "--checkpoint", directory, "--prompt", "def",
                       "--max-new-tokens", "5", "--temperature", "0")
    assert code == 0 and out.startswith("def")
    code, out, _ = run(capsys, "eval", "--checkpoint", directory, "--data", text_file)
    assert code == 0 and "gpt model from" in out and "(context 16)" in out


def test_bad_input_gets_a_one_line_error(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--checkpoint", tmp_path / "nothing", "--prompt", "x")
    assert code == 2 and "no checkpoint directory" in err
    code, _, err = run(capsys, "train", "--model", "bigram", "--data", tmp_path / "none.txt")
    assert code == 2 and "no text file" in err
    code, _, err = run(capsys, "train", "--model", "bigram", "--steps", "-1", "--data",
                       __file__, "--out", tmp_path / "x")
    assert code == 2 and "steps" in err


def test_help_lists_every_option(capsys):
    for command, options in {"train": ["--model", "--data", "--tokenizer", "--steps", "--out",
                                       "--resume", "--grad-accum", "ngram,bigram,mlp,rnn"],
                             "generate": ["--checkpoint", "--prompt", "--max-new-tokens",
                                          "--temperature", "--top-k", "--top-p", "--seed"],
                             "eval": ["--checkpoint", "--data", "--json"]}.items():
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert all(option in text for option in options), command


def test_streamed_text_never_splits_a_character(capsys):
    """Byte-level tokens can end inside a UTF-8 character; streaming must wait for the rest
    (this held for neural models and now for n-grams too, through the same printer)."""
    from numpylm.tokenizers import BPETokenizer
    from numpylm.inference.stop_strings import TextStream

    tok = BPETokenizer.train("abc", vocab_size=256)  # no merges: one token per byte
    text = "héllo, 日本語 🐍!"
    ids = tok.encode(text)
    assert len(ids) > len(text)  # several characters take more than one token
    stream = TextStream(tok)
    pieces = [stream.push(t) for t in ids] + [stream.flush()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert pieces.count("") >= len(ids) - len(text)  # waiting for the rest of a character


def test_resuming_an_ngram_is_refused_before_the_data_is_read(capsys, tmp_path, text_file):
    out = tmp_path / "ngram"
    assert run(capsys, "train", "--model", "ngram", "--data", text_file, "--out", out)[0] == 0
    code, stdout, err = run(capsys, "train", "--model", "ngram", "--data", text_file,
                            "--out", out, "--resume")
    assert code == 2 and "nothing to resume" in err
    assert "data:" not in stdout
