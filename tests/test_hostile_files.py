"""Files that lie: every format numpylm reads, mutated at random and by hand.

For each reader the contract is the same: a file either loads, or is refused with
`numpylm.io.errors.FileFormatError` (a ValueError naming the file and the field), within
5 seconds and 200 MB (`_within_limits`). The known attacks at the end (deep nesting, wrong
types, lone surrogates, huge sizes, NaN weights, slow patterns) must also be refused in
under 1 s and 100 MB. Any other exception (RecursionError, TypeError, KeyError, IndexError,
OverflowError, numpy's MemoryError) fails the test.
"""
from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpylm.io import load_json, load_safetensors_with_metadata, save_json, save_safetensors
from numpylm.io.errors import FileFormatError
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.models.gpt2_io import load_pretrained, save_pretrained
from numpylm.models.ngram import NGramLM
from numpylm.tokenizers import BPETokenizer, load_tokenizer
from numpylm.tokenizers.char import CharTokenizer
from numpylm.training.checkpoint import load_checkpoint, save_checkpoint

MB = 1 << 20
DEEP = "[" * 1000 + "]" * 1000  # 2 KB of JSON that recursion-based parsers cannot read


def _within_limits(load, seconds: float = 5.0, megabytes: float = 200.0) -> str:
    """Run `load()`; return "loaded" or "refused" (FileFormatError). Anything else, or a case
    over the time or memory limit, fails."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        load()
        outcome = "loaded"
    except FileFormatError:
        outcome = "refused"
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < seconds, f"{elapsed:.1f} s"
    assert peak < megabytes * MB, f"{peak / MB:.0f} MB"
    return outcome


def _refused(load, match: str | None = None) -> FileFormatError:
    """A known attack: refused with FileFormatError in under 1 s and 100 MB."""
    caught: list[FileFormatError] = []

    def run():
        try:
            load()
        except FileFormatError as err:
            caught.append(err)
            raise

    assert _within_limits(run, seconds=1.0, megabytes=100) == "refused"
    if match is not None:
        assert match in str(caught[0]), str(caught[0])
    return caught[0]


# ---- mutations ----------------------------------------------------------------------------

# Values that lie about types and sizes.
LIES = st.sampled_from([None, True, False, -1, 0, 1, 10**30, -(10**30), 1e308, 0.5, "x", "",
                        [], [1, 2], {}, {"a": 1}, [[[[[]]]]], "\ud800"])


@st.composite
def json_mutation(draw, value):
    """`value` (parsed JSON) with one node replaced by a lie, or a key removed or added."""
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, path + (key,))
        elif isinstance(node, list) and len(node) < 50:
            for i, child in enumerate(node):
                walk(child, path + (i,))

    walk(value, ())
    path = draw(st.sampled_from(paths))
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    value = json.loads(json.dumps(value))
    if not path:
        return draw(LIES)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.sampled_from(["extra", "__metadata__", "step"]))] = draw(LIES)
    else:
        parent[path[-1]] = draw(LIES)
    return value


def _dumps(value) -> bytes:
    return json.dumps(value).encode("utf-8", errors="surrogatepass")


# Mostly bytes that keep a text file text (digits, separators, brackets), some any byte.
BYTE_EDITS = st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                st.sampled_from(list(b"0123456789 \n#\"[]{}-a")) | st.integers(0, 255)),
                      min_size=1, max_size=4)


def _edit_bytes(data: bytes, edits, cut: float | None) -> bytes:
    out = bytearray(data)
    for where, byte in edits:
        out[int(where * len(out))] = byte
    if cut is not None:
        out = out[: int(cut * len(out))]
    return bytes(out)


# ---- valid files to start from ------------------------------------------------------------

TINY = dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    save_safetensors(tensors, root / "t.safetensors", metadata={"format": "pt"})

    gpt2 = root / "gpt2"
    save_pretrained(GPT(GPTConfig(**TINY), rng=0), gpt2)

    text = "hello world, hello there; the quick brown fox " * 20
    bpe = BPETokenizer.train(text, 300, special_tokens=["<|endoftext|>"])
    bpe.save(root / "bpe.txt")
    bpe.to_hf(root / "hf")
    bpe.to_tiktoken(root / "t.tiktoken")
    CharTokenizer.from_text(text, unk="<unk>").save(root / "char.txt")

    ngram = NGramLM(3, vocab_size=40).fit([[1, 2, 3, 1, 2, 4, 5, 1, 2, 3], [7, 8, 1, 2]])
    ckpt = root / "ckpt"
    save_checkpoint(ckpt, model_family="ngram", model_args=ngram.config,
                    model_state=ngram.state_dict(), tokenizer=CharTokenizer.from_text("ab"),
                    trainer_state={"step": 0})
    neural = root / "neural"
    save_checkpoint(neural, model_family="bigram", model_args={"vocab_size": 2},
                    model_state={"w": np.zeros((2, 2), np.float32)},
                    tokenizer=CharTokenizer.from_text("ab"),
                    optimizer_state={"state": {}, "param_groups": []},
                    trainer_state={"step": 5, "random_states": {
                        "batches": np.random.default_rng(0).bit_generator.state,
                        "nn_default": np.random.default_rng(1).bit_generator.state}})
    return {"root": root, "safetensors": root / "t.safetensors", "gpt2": gpt2,
            "ngram": ckpt, "ngram_model": ngram, "neural": neural}


def _write(path, data: bytes) -> None:
    path.write_bytes(data)


def _copy_dir(source, target):
    import shutil
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


def _split_safetensors(data: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join_safetensors(header, buffer: bytes) -> bytes:
    raw = _dumps(header)
    return len(raw).to_bytes(8, "little") + raw + buffer


# ---- hypothesis: random mutations of every format -----------------------------------------


@settings(max_examples=80)
@given(edits=BYTE_EDITS, cut=st.none() | st.floats(0, 1))
def test_safetensors_with_edited_bytes(files, tmp_path_factory, edits, cut):
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    _write(path, _edit_bytes(files["safetensors"].read_bytes(), edits, cut))
    _within_limits(lambda: load_safetensors_with_metadata(path))


@settings(max_examples=80)
@given(data=st.data())
def test_safetensors_with_a_lying_header(files, tmp_path_factory, data):
    header, buffer = _split_safetensors(files["safetensors"].read_bytes())
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    _write(path, _join_safetensors(data.draw(json_mutation(header)), buffer))
    _within_limits(lambda: load_safetensors_with_metadata(path))


@settings(max_examples=60)
@given(data=st.data())
def test_gpt2_config_that_lies(files, tmp_path_factory, data):
    directory = _copy_dir(files["gpt2"], tmp_path_factory.mktemp("g") / "gpt2")
    config = json.loads((directory / "config.json").read_text())
    _write(directory / "config.json", _dumps(data.draw(json_mutation(config))))
    _within_limits(lambda: load_pretrained(directory), seconds=1.0, megabytes=100)


@settings(max_examples=40)
@given(data=st.data())
def test_gpt2_weights_header_that_lies(files, tmp_path_factory, data):
    directory = _copy_dir(files["gpt2"], tmp_path_factory.mktemp("g") / "gpt2")
    header, buffer = _split_safetensors((directory / "model.safetensors").read_bytes())
    _write(directory / "model.safetensors",
           _join_safetensors(data.draw(json_mutation(header)), buffer))
    _within_limits(lambda: load_pretrained(directory), seconds=1.0, megabytes=100)


@settings(max_examples=60)
@given(data=st.data(), name=st.sampled_from(["trainer_state.json", "config.json"]))
def test_checkpoint_json_that_lies(files, tmp_path_factory, data, name):
    directory = _copy_dir(files["neural"], tmp_path_factory.mktemp("c") / "ckpt")
    value = json.loads((directory / name).read_text())
    _write(directory / name, _dumps(data.draw(json_mutation(value))))
    _within_limits(lambda: load_checkpoint(directory, for_resume=True))


@settings(max_examples=60)
@given(name=st.sampled_from(["bpe.txt", "char.txt", "t.tiktoken", "hf/vocab.json",
                             "hf/merges.txt"]),
       edits=BYTE_EDITS, cut=st.none() | st.floats(0, 1))
def test_tokenizer_files_with_edited_bytes(files, tmp_path_factory, name, edits, cut):
    root = _copy_dir(files["root"], tmp_path_factory.mktemp("tok") / "root")
    path = root / name
    _write(path, _edit_bytes(path.read_bytes(), edits, cut))
    if name.startswith("hf/"):
        load = lambda: BPETokenizer.from_hf(root / "hf/vocab.json", root / "hf/merges.txt")  # noqa: E731
    elif name.endswith(".tiktoken"):
        load = lambda: BPETokenizer.from_tiktoken(path)  # noqa: E731
    else:
        load = lambda: load_tokenizer(path)  # noqa: E731
    _within_limits(load)


@settings(max_examples=60)
@given(data=st.data())
def test_ngram_tables_that_lie(files, data):
    model: NGramLM = files["ngram_model"]
    state = {k: v.copy() for k, v in model.state_dict().items()}
    name = data.draw(st.sampled_from(sorted(state)))
    kind = data.draw(st.sampled_from(["float", "value", "drop_one", "shape"]))
    array = state[name]
    if kind == "float":
        state[name] = array.astype(np.float64) + 0.5
    elif kind == "value" and array.size:
        flat = array.reshape(-1).copy()
        flat[data.draw(st.integers(0, flat.size - 1))] = data.draw(
            st.sampled_from([-1, 0, 2, 10**9, 2**62]) if array.dtype.kind == "i"
            else st.sampled_from([0.0, -1.0, 5.0, float("nan")]))
        state[name] = flat.reshape(array.shape)
    elif kind == "drop_one" and array.ndim == 1 and array.size:
        state[name] = array[1:]
    else:
        state[name] = array.reshape(1, -1)
    args = dict(model.config)
    _within_limits(lambda: NGramLM(**args).load_state_dict(state))


# ---- known attacks, each refused quickly ----------------------------------------------------


def test_deep_json_is_refused_by_every_json_reader(files, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP)
    _refused(lambda: load_json(path), "nests 1000 levels")
    header, buffer = _split_safetensors(files["safetensors"].read_bytes())
    raw = DEEP.encode()
    _write(tmp_path / "deep.safetensors", len(raw).to_bytes(8, "little") + raw)
    _refused(lambda: load_safetensors_with_metadata(tmp_path / "deep.safetensors"), "nests")
    neural = _copy_dir(files["neural"], tmp_path / "neural")
    (neural / "trainer_state.json").write_text(DEEP)
    _refused(lambda: load_checkpoint(neural, for_resume=True), "trainer_state.json")
    root = _copy_dir(files["root"], tmp_path / "root")
    (root / "hf/vocab.json").write_text(DEEP)
    _refused(lambda: BPETokenizer.from_hf(root / "hf/vocab.json", root / "hf/merges.txt"),
             "vocab.json")
    text = (root / "bpe.txt").read_text().splitlines()
    text = [f"pattern {DEEP}" if line.startswith("pattern ") else line for line in text]
    (root / "bpe.txt").write_text("\n".join(text))
    _refused(lambda: load_tokenizer(root / "bpe.txt"), "nests")


def test_safetensors_dtype_of_the_wrong_type(files, tmp_path):
    header, buffer = _split_safetensors(files["safetensors"].read_bytes())
    header["a"]["dtype"] = ["F32"]
    _write(tmp_path / "x.safetensors", _join_safetensors(header, buffer))
    err = _refused(lambda: load_safetensors_with_metadata(tmp_path / "x.safetensors"))
    assert err.field == "a.dtype" and err.path == str(tmp_path / "x.safetensors")


def test_safetensors_metadata_with_a_lone_surrogate(files, tmp_path):
    header, buffer = _split_safetensors(files["safetensors"].read_bytes())
    header["__metadata__"] = {"format": "\ud800"}
    _write(tmp_path / "x.safetensors", _join_safetensors(header, buffer))
    _refused(lambda: load_safetensors_with_metadata(tmp_path / "x.safetensors"),
             "lone surrogate")
    with pytest.raises(ValueError, match="lone surrogate .* at position 3") as info:
        save_safetensors({"a": np.zeros(1)}, tmp_path / "y.safetensors",
                         metadata={"k": "abc\udc80"})
    assert not isinstance(info.value, UnicodeError)
    assert not (tmp_path / "y.safetensors").exists()


def test_lone_surrogates_in_encode_and_char_save(tmp_path):
    bpe = BPETokenizer.train("some text to learn from " * 5, 270)
    text = "a long line of words, " * 3 + "then \ud800 here"
    with pytest.raises(ValueError, match="at position 71") as info:
        bpe.encode(text)
    assert not isinstance(info.value, UnicodeError)
    with pytest.raises(ValueError, match="at position 71"):
        bpe.encode(text, allowed_special="all")
    char = CharTokenizer(["a", "\udfff"])
    with pytest.raises(ValueError, match="alphabet holds a lone surrogate .* at position 1"):
        char.save(tmp_path / "c.txt")


def test_ngram_checkpoint_with_float_counts(files):
    model: NGramLM = files["ngram_model"]
    state = model.state_dict()
    state["order2.counts"] = state["order2.counts"].astype(np.float64)
    err = _refused(lambda: NGramLM(**model.config).load_state_dict(state))
    assert err.field == "order2.counts"


def test_ngram_order_of_a_billion_is_refused_at_once():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="does not fit in an int64"):
        NGramLM(10**9, vocab_size=40)
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize("stored_key_base", [True, False])
def test_ngram_checkpoint_with_an_edited_vocab_size(files, stored_key_base):
    """The keys are base-V numbers: V = 41 (40 ids + the boundary id) read in base 51 are
    other n-grams. Refused through the stored base, or without it (older checkpoints)
    because the lower orders are no longer the suffixes of the higher ones."""
    model: NGramLM = files["ngram_model"]
    state = model.state_dict()
    if not stored_key_base:
        del state["key_base"]
    args = {**model.config, "vocab_size": 50}
    err = _refused(lambda: NGramLM(**args).load_state_dict(state))
    assert err.field in ("key_base", "order1.keys", "order2.keys", "order3.keys")


def test_an_ngram_checkpoint_round_trips_through_the_checks(files):
    model: NGramLM = files["ngram_model"]
    again = NGramLM(**model.config).load_state_dict(model.state_dict())
    assert again.logprob([1, 2, 3]) == model.logprob([1, 2, 3])


def _gpt2_with(files, tmp_path, **changes):
    directory = _copy_dir(files["gpt2"], tmp_path / "gpt2")
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("changes", [{"n_embd": 4000}, {"n_layer": 1_000_000},
                                     {"vocab_size": 50_000_000}, {"n_positions": 10**9}])
def test_gpt2_config_sizes_are_compared_with_the_header_first(files, tmp_path, changes):
    directory = _gpt2_with(files, tmp_path, **changes)
    err = _refused(lambda: load_pretrained(directory))
    assert "config.json" in str(err)


@pytest.mark.parametrize("field, value", [("layer_norm_epsilon", -1), ("layer_norm_epsilon", None),
                                          ("n_head", None), ("n_head", [2]), ("n_layer", True),
                                          ("n_embd", 8.0), ("resid_pdrop", 2.0), ("n_head", 3)])
def test_gpt2_config_types_and_ranges(files, tmp_path, field, value):
    directory = _gpt2_with(files, tmp_path, **{field: value})
    err = _refused(lambda: load_pretrained(directory))
    assert err.field == field or field in str(err)


def test_gpt2_nan_weights_are_refused_naming_the_tensor(files, tmp_path):
    directory = _copy_dir(files["gpt2"], tmp_path / "gpt2")
    tensors = load_safetensors_with_metadata(directory / "model.safetensors")[0]
    tensors["transformer.h.1.mlp.c_fc.weight"][2, 3] = np.nan
    save_safetensors(tensors, directory / "model.safetensors")
    err = _refused(lambda: load_pretrained(directory))
    assert err.field == "transformer.h.1.mlp.c_fc.weight" and "(2, 3)" in str(err)


def test_a_slow_split_pattern_from_a_file_is_refused(files, tmp_path):
    lines = (files["root"] / "bpe.txt").read_text().splitlines()
    for pattern, message in ((r"(?:a|aa)+$|[\s\S]", "took over"),
                             (r"\w+|\s+", "skips characters")):
        edited = [f"pattern {json.dumps(pattern)}" if line.startswith("pattern ") else line
                  for line in lines]
        (tmp_path / "p.txt").write_text("\n".join(edited) + "\n")
        start = time.perf_counter()
        with pytest.raises(FileFormatError, match=message):
            load_tokenizer(tmp_path / "p.txt")
        assert time.perf_counter() - start < 3.0  # the regex timeout, not minutes


def test_a_pattern_that_covers_everything_loads(files, tmp_path):
    lines = (files["root"] / "bpe.txt").read_text().splitlines()
    edited = [f"pattern {json.dumps(r'[a-z]+|[^a-z]')}" if line.startswith("pattern ") else line
              for line in lines]
    (tmp_path / "p.txt").write_text("\n".join(edited) + "\n")
    tok = load_tokenizer(tmp_path / "p.txt")
    text = "hello world, ÜNÏCÖDÉ 🙂 \n\t"
    assert tok.decode(tok.encode(text)) == text


def test_json_field_checks_name_the_field(tmp_path):
    from numpylm.io.config import require_float, require_int
    where = tmp_path / "c.json"
    save_json({"n": True, "eps": float("1e-5"), "big": 10**30}, where)
    data = load_json(where)
    with pytest.raises(FileFormatError, match=r"c.json: n: must be an integer, got true"):
        require_int(data, "n", where)
    with pytest.raises(FileFormatError, match=r"big: 1000000000000000000000000000000 is outside"):
        require_int(data, "big", where, low=1, high=100)
    assert require_float(data, "eps", where, low=0.0, low_open=True) == 1e-5
    with pytest.raises(FileFormatError, match="missing"):
        require_float(data, "absent", where)
