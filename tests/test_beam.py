"""Beam search: a hand-computed case, greedy as one beam, every family's reordered states scored
as forward scores the beams, and the same beams and scores as HF transformers' generate."""
import numpy as np
import pytest

from numpylm.inference import SamplingParams, generate
from numpylm.inference.beam import beam_search
from numpylm.models.bigram import BigramLM
from numpylm.models.gpt import GPT, GPTConfig
from numpylm.training.families import FAMILIES, build_model, get_family

V = 11


def table_model(P):
    model = BigramLM(len(P))
    model.logits.data[...] = np.log(np.asarray(P))
    return model


def test_beam_search_finds_what_greedy_misses():
    """From 0: P(1) = 0.599, P(2) = 0.4; after 1 everything is 1/3, after 2 token 0 has 0.9.
    Greedy takes 1 (joint 0.599 / 3 = 0.2); two beams find 0 2 0 (0.4 * 0.9 = 0.36). Scores
    are log-probabilities over 2 new tokens: log(0.36) / 2, then the best of the 1-branch,
    0 1 0 (ties after 1 go to the lowest id), log(0.599 / 3) / 2."""
    model = table_model([[0.001, 0.599, 0.4], [1 / 3, 1 / 3, 1 / 3], [0.9, 0.05, 0.05]])
    assert list(generate(model, [0], 2, temperature=0)) == [0, 1, 0]
    beams = beam_search(model, [0], 2, num_beams=2)
    assert [list(b.ids) for b in beams] == [[0, 2, 0], [0, 1, 0]]
    np.testing.assert_allclose([b.score for b in beams],
                               [np.log(0.36) / 2, np.log(0.599 / 3) / 2], rtol=1e-6)


def test_eos_ends_a_beam_and_length_penalty_weighs_length():
    """EOS = 2. From 0: 0 2 ends at once with log 0.4 (one token); 0 1 x runs on. With
    length_penalty 1 the short 0 2 scores log(0.4) = -0.92 against log(0.599 / 3) / 2 =
    -0.81 for 0 1 0: the longer one wins. With length_penalty 0 (plain sums) -0.92 beats -1.61."""
    model = table_model([[0.001, 0.599, 0.4], [1 / 3, 1 / 3, 1 / 3], [0.9, 0.05, 0.05]])
    beams = beam_search(model, [0], 2, num_beams=2, eos_token_ids=[2], length_penalty=1.0)
    assert [list(b.ids) for b in beams][0] == [0, 1, 0]
    beams = beam_search(model, [0], 2, num_beams=2, eos_token_ids=[2], length_penalty=0.0)
    assert list(beams[0].ids) == [0, 2] and beams[0].score == pytest.approx(np.log(0.4))


def family_model(name: str, seed: int):
    family = get_family(name)
    if name == "ngram":
        ids = np.random.default_rng(seed).integers(0, V, 200)
        args = {"order": 3, "vocab_size": V, "smoothing": "kneser_ney"}
        return build_model(name, args).fit([ids])
    args = family.ladder.args(V, 16, True) if family.ladder else {"vocab_size": V}
    model = build_model(name, args)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.normal(0, 0.5, p.shape)
    return model


def forward_score(model, ids, prompt_len, length_penalty):
    logits, _ = model(np.asarray(ids)[None, :])
    z = np.asarray(logits.data, dtype=np.float64)[0]
    lp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    new = range(prompt_len, len(ids))
    return sum(lp[t - 1, ids[t]] for t in new) / len(new) ** length_penalty


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_one_beam_is_greedy_and_beams_score_as_forward(name):
    model = family_model(name, 3)
    prompt = [1, 4, 2]
    greedy = generate(model, prompt, 6, temperature=0)
    np.testing.assert_array_equal(beam_search(model, prompt, 6, num_beams=1)[0].ids, greedy)
    beams = beam_search(model, prompt, 6, num_beams=3, length_penalty=0.5)
    assert len(beams) == 3 and len({tuple(b.ids) for b in beams}) == 3
    for beam in beams:  # each beam's score is its own sequence's, so rows were reordered right
        assert beam.score == pytest.approx(forward_score(model, beam.ids, 3, 0.5), abs=1e-4)
    assert beams[0].score >= forward_score(model, greedy, 3, 0.5) - 1e-6


@pytest.mark.parametrize("settings", [
    dict(num_beams=4, length_penalty=1.0, early_stopping=False),
    dict(num_beams=3, length_penalty=2.0, early_stopping=True),
    dict(num_beams=4, length_penalty=-0.5, early_stopping="never"),
    dict(num_beams=2, length_penalty=0.0, early_stopping=False),
    dict(num_beams=4, length_penalty=1.5, early_stopping="never"),
])
def test_the_same_beams_and_scores_as_hf_generate(settings, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from numpylm.models.gpt2_io import from_pretrained
    config = transformers.GPT2Config(vocab_size=23, n_positions=32, n_embd=16, n_layer=2,
                                     n_head=2, initializer_range=0.6, bos_token_id=0,
                                     eos_token_id=0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = from_pretrained(tmp_path)
    prompt = [3, 7, 1]
    # An EOS the model likes: the second token of its greedy continuation.
    eos = int(generate(ours, prompt, 2, temperature=0)[-1])
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=7, do_sample=False,
                          num_return_sequences=settings["num_beams"], eos_token_id=eos,
                          pad_token_id=eos, return_dict_in_generate=True, output_scores=True,
                          **settings)
    beams = beam_search(ours, prompt, 7, eos_token_ids=[eos], **settings)
    expected = []
    for row in out.sequences.numpy():
        new = list(row[3:])
        expected.append(prompt + (new[:new.index(eos) + 1] if eos in new else new))
    assert [list(b.ids) for b in beams] == expected
    np.testing.assert_allclose([b.score for b in beams], out.sequences_scores.numpy(),
                               rtol=1e-4, atol=1e-5)


def test_processors_apply_to_the_beams():
    """no_repeat_ngram_size=1 forbids any id twice: every beam's ids are distinct."""
    model = family_model("gpt", 5)
    for beam in beam_search(model, [1], 6, num_beams=3,
                            sampling=SamplingParams(no_repeat_ngram_size=1)):
        assert len(set(beam.ids)) == len(beam.ids)


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_beams=0), "num_beams"),
    (dict(length_penalty=float("inf")), "length_penalty"),
    (dict(early_stopping="sometimes"), "early_stopping"),
    (dict(eos_token_ids=[V]), "eos_token_ids"),
])
def test_bad_input_is_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        beam_search(family_model("bigram", 0), [1], 3, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        beam_search(family_model("bigram", 0), [1], 0)
