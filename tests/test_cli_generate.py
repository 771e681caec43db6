"""`numpylm generate` stops at the end of the text, says when it crops a prompt, and `--help`
shows each default once; a registered family is reachable from `train --model`."""
from __future__ import annotations

import re

import pytest

from numpylm.cli import build_parser, main
from numpylm.corpus import embedded_corpus
from numpylm.inference import end_of_text_ids
from numpylm.models.ngram import NGramLM
from numpylm.tokenizers import BPETokenizer
from numpylm.training.families import FAMILIES, Family, register_family

TINY = ["--steps", "2", "--batch-size", "2", "--block-size", "8", "--warmup-steps", "1",
        "--eval-interval", "2", "--eval-batches", "1", "--log-interval", "1"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(embedded_corpus()[:2000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_gpt(tmp_path_factory):
    """A 1-layer character GPT (context 8) trained for two steps, shared by the tests that
    only read it."""
    root = tmp_path_factory.mktemp("tiny_gpt")
    text = root / "text.txt"
    text.write_text(embedded_corpus()[:2000], encoding="utf-8")
    out = root / "gpt"
    assert main(["train", "--model", "gpt", "--data", str(text), "--out", str(out),
                 "--n-layer", "1", "--n-head", "1", "--n-embd", "8", *TINY]) == 0
    return out


def test_end_of_text_ids_come_from_the_model_and_the_tokenizer():
    tok = BPETokenizer.train("abc abd abe " * 20, 260, special_tokens={"<|endoftext|>": 260})
    lm = NGramLM(2, 261).fit([[1, 2, 3]])
    assert end_of_text_ids(lm, tok) == (260, 261)  # the tokenizer's <|endoftext|>, the model's EOS
    assert end_of_text_ids(NGramLM(2, 100).fit([[1]]), tok) == (100,)  # 260 is outside V = 101


def test_generate_crops_with_a_note_and_the_ngram_stops_at_its_boundary(capsys, tmp_path,
                                                                        text_file, tiny_gpt):
    out = tiny_gpt
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out), "--prompt", "x" * 20,
                 "--max-new-tokens", "3"]) == 0
    err = capsys.readouterr().err
    assert "the prompt has 20 tokens, more than the model's context of 8" in err
    ngram = tmp_path / "ngram"
    assert main(["train", "--model", "ngram", "--order", "2", "--data", str(text_file),
                 "--out", str(ngram)]) == 0
    capsys.readouterr()
    # Greedy from "" on a 2-gram model: the boundary id ends the text long before 500 tokens.
    assert main(["generate", "--checkpoint", str(ngram), "--prompt", "", "--temperature", "0",
                 "--max-new-tokens", "500"]) == 0
    text = capsys.readouterr().out
    assert 0 < len(text.strip()) < 500


def test_help_shows_each_default_once():
    parser = build_parser()
    for command in ("train", "generate", "eval"):
        sub = parser._subparsers._group_actions[0].choices[command]
        text = sub.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, command
        assert not re.search(r"\(default: [^)]*\)\s*\(default:", text), command
    train_help = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert "kneser_ney" in train_help and "stupid_backoff" in train_help  # --smoothing choices


def test_a_registered_family_is_reachable_from_train(capsys, tmp_path, text_file):
    from numpylm.models.bigram import BigramLM

    register_family(Family("bigram2", build=BigramLM))
    try:
        out = tmp_path / "b2"
        assert main(["train", "--model", "bigram2", "--data", str(text_file), "--out", str(out),
                     *TINY]) == 0
        assert "model: bigram2" in capsys.readouterr().out
        assert main(["train", "--model", "bigram2", "--model-arg", "nonsense=3",
                     "--data", str(text_file), "--out", str(tmp_path / "b3"), *TINY]) == 2
        assert "cannot build a 'bigram2' model" in capsys.readouterr().err
    finally:
        FAMILIES.pop("bigram2")
    with pytest.raises(SystemExit):
        main(["train", "--model", "bigram2"])  # gone from the choices once unregistered


def test_threads_are_chosen_for_training_and_can_be_set(monkeypatch, capsys):
    from numpylm import blas
    from numpylm.models.bigram import BigramLM
    from numpylm.tokenizers import CharTokenizer
    from numpylm.training import TrainConfig, prepare_data, train

    if blas.get_threads() is None:
        pytest.skip("numpy's BLAS is not OpenBLAS: nothing to set")
    before = blas.get_threads()
    monkeypatch.setenv("NUMPYLM_THREADS", "1")
    text = "abcabd" * 100
    tok = CharTokenizer.from_text(text)
    seen = []
    train(BigramLM(tok.vocab_size), prepare_data(tok, text=text),
          TrainConfig(steps=2, batch_size=2, block_size=4, log_interval=1, eval_interval=2),
          log=lambda line: seen.append(blas.get_threads()))
    assert seen and set(seen) == {1}
    assert blas.get_threads() == before  # restored after the run
    assert main(["--threads", "1", "gradcheck", "--ops", "tanh"]) == 0
    assert blas.get_threads() == 1
    blas.set_threads(before)
    assert main(["--threads", "many", "gradcheck", "--ops", "tanh"]) == 2
    assert "expected a number of threads" in capsys.readouterr().err


def test_generate_decodes_by_beams_drafts_lookup_or_regex(capsys, tiny_gpt):
    out = tiny_gpt
    capsys.readouterr()
    base = ["generate", "--checkpoint", str(out), "--prompt", "The ", "--max-new-tokens", "6",
            "--temperature", "0"]
    assert main([*base, "--num-beams", "3"]) == 0
    assert "the best of 3 beams" in capsys.readouterr().err
    assert main([*base, "--prompt-lookup"]) == 0
    assert "speculative decoding" in capsys.readouterr().err
    assert main([*base, "--draft", str(out)]) == 0  # a model drafting for itself: all accepted
    assert "(100%)" in capsys.readouterr().err
    plain = None
    for confidence in ("0", "1"):  # at 1 every guess is doubted: one draft per round
        assert main([*base, "--draft", str(out), "--draft-confidence", confidence]) == 0
        captured = capsys.readouterr()
        plain = plain or captured.out
        assert captured.out == plain
        if confidence == "1":
            assert re.search(r"accepted \(100%\), 2\.00 tokens per target call", captured.err)
    assert main([*base, "--draft", str(out), "--draft-confidence", "1.5"]) == 2
    assert "confidence_threshold must be a number in [0, 1]" in capsys.readouterr().err


def test_a_gru_checkpoint_drafts_for_a_gpt(capsys, tiny_gpt):
    """A draft of another family (a GRU trained on the same text, so the same characters): the
    output is the GPT's own greedy output."""
    gru = tiny_gpt.parent / "gru"
    assert main(["train", "--model", "gru", "--data", str(tiny_gpt.parent / "text.txt"),
                 "--out", str(gru), "--embedding-dim", "4", "--hidden-size", "8", *TINY]) == 0
    base = ["generate", "--checkpoint", str(tiny_gpt), "--prompt", "The ", "--max-new-tokens",
            "8", "--temperature", "0"]
    capsys.readouterr()
    assert main(base) == 0
    plain = capsys.readouterr().out
    assert main([*base, "--draft", str(gru), "--draft-tokens", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out == plain
    assert "speculative decoding" in captured.err
    assert main([*base, "--regex", "[0-9]{3}"]) == 0
    printed = capsys.readouterr().out
    assert re.fullmatch(r"The [0-9]{3}\n", printed), printed
    assert main([*base, "--num-beams", "2", "--prompt-lookup"]) == 2
    assert "choose one way of decoding" in capsys.readouterr().err


def test_train_a_llama_from_the_command_line(capsys, tmp_path, text_file):
    out = tmp_path / "llama"
    assert main(["train", "--model", "llama", "--data", str(text_file), "--out", str(out),
                 "--n-layer", "1", "--n-head", "2", "--n-kv-head", "1", "--n-embd", "16",
                 *TINY]) == 0
    from numpylm.training.families import load_model
    loaded = load_model(out)
    c = loaded.model.config
    assert loaded.family == "llama" and (c.num_attention_heads, c.num_key_value_heads) == (2, 1)
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out), "--prompt", "The ",
                 "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("The ")


def test_generate_cuts_at_stop_strings_and_prints_logprobs(capsys, tiny_gpt):
    out = tiny_gpt
    capsys.readouterr()
    base = ["generate", "--checkpoint", str(out), "--prompt", "The ", "--max-new-tokens", "12",
            "--temperature", "0", "--ignore-eos"]
    assert main(base) == 0
    full = capsys.readouterr().out[len("The "):-1]
    assert len(full) == 12  # characters: one per token
    stop = full[5:7]  # spans two tokens
    assert main([*base, "--stop", stop, "--stop", "never seen text"]) == 0
    assert capsys.readouterr().out == "The " + full[:full.find(stop)] + "\n"

    assert main([*base, "--logprobs", "3", "--stop", stop]) == 0
    printed = capsys.readouterr().out
    text, _, table = printed.partition("\n\ntoken")
    assert text == "The " + full[:full.find(stop)]
    rows = [re.fullmatch(r"('.*?')\s+(-?\d+\.\d+)  (.*)", line)
            for line in table.splitlines()[1:]]
    assert all(rows) and len(rows) == full.find(stop)  # the tokens shown, one row each
    for row, char in zip(rows, full):
        assert row[1] == repr(char)
        alternatives = re.findall(r"('.*?') (-?\d+\.\d+)", row[3])
        assert len(alternatives) == 3
        # Greedy: the chosen token is the most likely one, with the same log-probability.
        assert alternatives[0] == (row[1], row[2]) and float(row[2]) <= 0
        assert float(alternatives[1][1]) <= float(row[2])

    for flags, message in ((["--logprobs", "21"], "--logprobs takes"),
                           (["--stop", ""], "--stop takes a non-empty"),
                           (["--logprobs", "2", "--num-beams", "2"], "--logprobs goes with")):
        assert main([*base, *flags]) == 2
        assert message in capsys.readouterr().err
