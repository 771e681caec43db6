"""`numpylm tokenize`: tokens, ids and boundaries, plain or coloured."""
from numpylm.cli import main
from numpylm.tokenizers import BPETokenizer, CharTokenizer


def test_tokenize_with_a_saved_bpe(tmp_path, capsys):
    """Merges: (a,b) -> 256, then (256,256) "abab" -> 257. "ababab c" in GPT-4 chunks is
    "ababab", " c": abab + ab = [257, 256], then [32, 99]. Byte spans 0-4, 4-6, 6-7, 7-8."""
    tok = BPETokenizer.train("abab abab", 258)
    assert tok.merges == [(97, 98, 256), (256, 256, 257)]
    tok.save(tmp_path / "bpe.txt")
    assert main(["tokenize", "--tokenizer", str(tmp_path / "bpe.txt"), "--color", "never", "ababab c"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "abab|ab| |c"
    assert out[1].startswith("4 tokens for 8 characters")
    assert out[3].split() == ["0", "257", "0-4", "abab"]
    assert out[4].split() == ["1", "256", "4-6", "ab"]
    assert out[6].split() == ["3", "99", "7-8", "c"]


def test_tokenize_colour_and_char_tokenizer(tmp_path, capsys):
    CharTokenizer.from_text("hi").save(tmp_path / "char.txt")
    assert main(["tokenize", "--tokenizer", str(tmp_path / "char.txt"), "--color", "always", "hi"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "\x1b[" in first and "h" in first and "i" in first


def test_tokenize_default_tokenizer_and_errors(tmp_path, capsys):
    assert main(["tokenize", "--color", "never", "def f(x): return x"]) == 0
    out = capsys.readouterr().out
    assert "trained on the embedded corpus" in out and "vocab_size 1024" in out
    (tmp_path / "junk.txt").write_text("junk\n")
    # Exit code 2 and the "numpylm COMMAND: error:" prefix, as every other command.
    assert main(["tokenize", "--tokenizer", str(tmp_path / "junk.txt"), "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("numpylm tokenize: error: ") and "not a numpylm tokenizer" in err
    CharTokenizer.from_text("ab").save(tmp_path / "char.txt")
    assert main(["tokenize", "--tokenizer", str(tmp_path / "char.txt"), "abc"]) == 2
    assert "'c' at position 2" in capsys.readouterr().err
