"""The OpenAI-compatible server end to end, in-process on an ephemeral loopback port with a tiny
model, through urllib (and the `openai` client package where it is installed)."""
import json
import socket
import time
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from numpylm.inference import generate
from numpylm.models.llama import Llama, LlamaConfig
from numpylm.serving import Engine
from numpylm.serving.server import make_server
from numpylm.tokenizers.bpe import BPETokenizer

EOT = 256


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer([], special_tokens={"<|endoftext|>": EOT})  # bytes and one special


@pytest.fixture(scope="module")
def model():
    return Llama(LlamaConfig(vocab_size=257, hidden_size=32, intermediate_size=48,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=96), rng=np.random.default_rng(0))


def start(model, tokenizer, **kwargs):
    engine = Engine(model, page_size=8, max_running=8)
    server = make_server(engine, tokenizer, model_name="tiny", port=0, **kwargs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def served(model, tokenizer):
    server, url = start(model, tokenizer, max_body=4096)
    yield server, url
    server.shutdown()
    server.server_close()
    server.loop.stop()


def call(url, path, body=None, raw=None, headers=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), err.headers.get("Content-Type")


def events(text):
    chunks = [c[len("data: "):] for c in text.split("\n\n") if c]
    assert chunks[-1] == "[DONE]"
    return [json.loads(c) for c in chunks[:-1]]


def test_get_endpoints(served):
    _, url = served
    status, body, _ = call(url, "/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == "tiny"
    assert json.loads(call(url, "/health")[1]) == {"status": "ok"}
    status, page, kind = call(url, "/")
    assert status == 200 and kind.startswith("text/html")
    assert "/v1/chat/completions" in page and "http" not in page.split("<script>")[1]


def test_completion_is_greedy_generate(served, model, tokenizer):
    _, url = served
    prompt = "The cat"
    status, body, _ = call(url, "/v1/completions", {"model": "tiny", "prompt": prompt,
                                                    "max_tokens": 6, "temperature": 0})
    assert status == 200
    reply = json.loads(body)
    ids = tokenizer.encode(prompt)
    new = [int(t) for t in generate(model, np.array(ids), 6, temperature=0)[len(ids):]]
    assert EOT not in new
    assert reply["object"] == "text_completion"
    assert reply["choices"][0]["text"] == tokenizer.decode(new)
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"] == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}


def test_seeded_chat_and_its_stream_agree(served):
    _, url = served
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8, "seed": 5, "temperature": 1.0}
    status, whole, _ = call(url, "/v1/chat/completions", body)
    assert status == 200
    whole = json.loads(whole)
    assert whole["object"] == "chat.completion"
    message = whole["choices"][0]["message"]
    assert message["role"] == "assistant"
    status, stream, kind = call(url, "/v1/chat/completions", {**body, "stream": True})
    assert status == 200 and kind == "text/event-stream"
    chunks = events(stream)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == message["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_stop_string_cuts_the_text(served):
    _, url = served
    base = {"prompt": [1, 2, 3], "max_tokens": 10, "temperature": 0}
    full = json.loads(call(url, "/v1/completions", base)[1])["choices"][0]["text"]
    stop = full[3:5]
    assert len(stop) == 2
    reply = json.loads(call(url, "/v1/completions", {**base, "stop": stop})[1])
    assert reply["choices"][0]["text"] == full[:full.index(stop)]
    assert reply["choices"][0]["finish_reason"] == "stop"
    # Two stop strings, the later one in the text listed first: the text ends at the earlier.
    late, early = full[6:8], full[2:4]
    cut = min(full.index(late), full.index(early))
    for stream in (False, True):
        status, body, _ = call(url, "/v1/completions", {**base, "stop": [late, early],
                                                        "stream": stream})
        assert status == 200
        if stream:
            chunks = events(body)
            text = "".join(c["choices"][0]["text"] for c in chunks)
            assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        else:
            text = json.loads(body)["choices"][0]["text"]
        assert text == full[:cut]


@pytest.mark.parametrize("body, status, param", [
    ({"prompt": "x", "temperature": 3}, 400, "temperature"),
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": "9"}, 400, "max_tokens"),
    ({"prompt": 5}, 400, "prompt"),
    ({"prompt": [1, 999]}, 400, "prompt"),
    ({"prompt": "x", "n": 0}, 400, "n"),
    ({"prompt": "x", "n": 9}, 400, "n"),
    ({"prompt": "x", "logprobs": 6}, 400, "logprobs"),
    ({"prompt": "x", "logprobs": "yes"}, 400, "logprobs"),
    ({"prompt": "x", "top_logprobs": 2}, 400, "top_logprobs"),
    ({"prompt": "x", "echo": "yes"}, 400, "echo"),
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),  # 0 only with echo
    ({"prompt": "x", "stop": [1]}, 400, "stop"),
    ({"prompt": "x", "wibble": 1}, 400, "wibble"),
    ({"prompt": "x", "model": "gpt-9"}, 404, "model"),
    ({"prompt": "y" * 200}, 400, "prompt"),
])
def test_bad_requests_get_openai_errors(served, body, status, param):
    _, url = served
    got, text, kind = call(url, "/v1/completions", body)
    assert got == status and kind == "application/json"
    error = json.loads(text)["error"]
    assert error["param"] == param and error["type"] and error["message"]
    if body.get("prompt") == "y" * 200:
        assert "96" in error["message"] and "200" in error["message"]


def test_malformed_body_unknown_path_and_oversized(served):
    _, url = served
    status, text, _ = call(url, "/v1/completions", raw=b"{not json")
    assert status == 400 and json.loads(text)["error"]["code"] == "invalid_json"
    status, text, _ = call(url, "/v1/chat/completions", {"messages": []})
    assert status == 400 and json.loads(text)["error"]["param"] == "messages"
    status, text, _ = call(url, "/v2/nothing", {"prompt": "x"})
    assert status == 404 and "error" in json.loads(text)
    status, text, _ = call(url, "/v1/completions", raw=b" " * 5000)
    assert status == 413 and json.loads(text)["error"]["code"] == "body_too_large"
    assert call(url, "/health")[0] == 200  # still serving


def test_api_key_and_full_queue(model, tokenizer):
    server, url = start(model, tokenizer, api_key="s3cret", max_waiting=0)
    try:
        status, text, _ = call(url, "/v1/models")
        assert status == 401 and json.loads(text)["error"]["code"] == "invalid_api_key"
        auth = {"Authorization": "Bearer s3cret"}
        assert call(url, "/v1/models", headers=auth)[0] == 200
        status, text, _ = call(url, "/v1/completions", {"prompt": "x"}, headers=auth)
        assert status == 429 and json.loads(text)["error"]["code"] == "rate_limit_exceeded"
    finally:
        server.shutdown()
        server.server_close()
        server.loop.stop()


def test_concurrent_clients_all_answered(served, model, tokenizer):
    _, url = served
    prompts = [f"request {i}" for i in range(6)]
    results = {}

    def ask(i):
        body = {"prompt": prompts[i], "max_tokens": 4 + i, "temperature": 0}
        results[i] = json.loads(call(url, "/v1/completions", body)[1])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, p in enumerate(prompts):
        ids = tokenizer.encode(p)
        new = [int(t) for t in generate(model, np.array(ids), 4 + i, temperature=0)[len(ids):]]
        if EOT in new:
            new = new[:new.index(EOT)]
        assert results[i]["choices"][0]["text"] == tokenizer.decode(new)


def test_disconnect_mid_stream_frees_the_sequence(served, monkeypatch):
    server, url = served
    engine = server.loop.engine
    # A tiny model writes 80 tokens faster than a closed socket reports its first failed
    # write; a pause per step makes "cancelled before the end" a property, not a race.
    real_step = engine.step
    monkeypatch.setattr(engine, "step", lambda: (time.sleep(0.02), real_step())[1])
    for _ in range(500):  # earlier tests' requests are done before counting
        with server.loop._cond:
            if not engine.has_work():
                break
        time.sleep(0.01)
    steps_before = engine.steps
    body = json.dumps({"prompt": "a long answer", "max_tokens": 80, "stream": True}).encode()
    sock = socket.create_connection(server.server_address[:2], timeout=30)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body)
    assert sock.recv(64).startswith(b"HTTP/1.1 200")  # the stream has begun
    sock.close()
    for _ in range(1000):  # the loop notices at one of its next writes
        with server.loop._cond:
            if not engine.has_work():
                break
        time.sleep(0.02)
    assert not engine.has_work()
    assert engine.steps - steps_before < 80  # cancelled, not run to its end
    assert engine.cache.num_free == engine.cache.num_blocks
    assert call(url, "/health")[0] == 200


def test_openai_client(served):
    openai = pytest.importorskip("openai")
    _, url = served
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    done = client.completions.create(model="tiny", prompt="Hi", max_tokens=3, temperature=0)
    assert done.choices[0].finish_reason in ("stop", "length")
    chat = client.chat.completions.create(model="tiny", max_tokens=3,
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.role == "assistant"
    pieces = client.chat.completions.create(model="tiny", max_tokens=3, stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
    assert [c.choices[0].finish_reason for c in pieces][-1] in ("stop", "length")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="Hi", max_tokens=1)


def test_serve_command_is_registered(capsys):
    from numpylm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--api-key" in out and "127.0.0.1" in out


def test_serve_command_refuses_a_model_it_cannot_serve(tmp_path, capsys):
    from numpylm.cli import main

    assert main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "numpylm serve: error" in capsys.readouterr().err


def test_request_larger_than_the_pool_is_a_400(model, tokenizer):
    engine = Engine(model, page_size=8, num_blocks=2)  # 16 tokens in all
    server = make_server(engine, tokenizer, model_name="tiny", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, text, _ = call(url, "/v1/completions", {"prompt": "x" * 10, "max_tokens": 20})
        assert status == 400 and "blocks" in json.loads(text)["error"]["message"]
        assert call(url, "/v1/completions", {"prompt": "x", "max_tokens": 3})[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        server.loop.stop()


# ---- log-probabilities and several answers ----

def _reference_logprobs(model, ids, n, top):
    """Greedy tokens and their records from numpylm.inference.logprobs, outside the server."""
    from numpylm.inference import SamplingParams
    from numpylm.inference.logprobs import generate_with_logprobs

    out, records = generate_with_logprobs(model, np.array(ids), n, top,
                                          sampling=SamplingParams(temperature=0.0))
    return [int(t) for t in out[len(ids):]], records


def test_completion_logprobs_match_generate_with_logprobs(served, model, tokenizer):
    _, url = served
    prompt = "Logs"
    status, body, _ = call(url, "/v1/completions", {"prompt": prompt, "max_tokens": 5,
                                                    "temperature": 0, "logprobs": 3})
    assert status == 200
    choice = json.loads(body)["choices"][0]
    lp = choice["logprobs"]
    new, records = _reference_logprobs(model, tokenizer.encode(prompt), 5, 3)
    assert EOT not in new
    assert lp["tokens"] == [tokenizer.decode([t]) for t in new]
    assert "".join(lp["tokens"]) == choice["text"]
    np.testing.assert_allclose(lp["token_logprobs"], [r.logprob for r in records], rtol=1e-4)
    assert all(v <= 0 for v in lp["token_logprobs"])
    for got, r in zip(lp["top_logprobs"], records):
        # keyed by text, as the API's layout is: tokens with the same text share a key
        want = {tokenizer.decode([t]): v for t, v in r.top}
        assert list(got) == list(want)
        np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-4)
    assert lp["text_offset"] == [len(tokenizer.decode(new[:i])) for i in range(5)]
    # without the parameter: no log-probabilities
    plain = json.loads(call(url, "/v1/completions", {"prompt": prompt, "max_tokens": 5,
                                                     "temperature": 0})[1])
    assert plain["choices"][0]["logprobs"] is None and plain["choices"][0]["text"] == choice["text"]


def test_chat_logprobs_layout_and_stream(served, model, tokenizer):
    _, url = served
    body = {"messages": [{"role": "user", "content": "hey"}], "max_tokens": 4,
            "temperature": 0, "logprobs": True, "top_logprobs": 2}
    whole = json.loads(call(url, "/v1/chat/completions", body)[1])["choices"][0]
    content = whole["logprobs"]["content"]
    assert 1 <= len(content) <= 4
    assert "".join(e["token"] for e in content) == whole["message"]["content"]
    for e in content:
        assert set(e) == {"token", "logprob", "bytes", "top_logprobs"}
        assert bytes(e["bytes"]).decode("utf-8", "replace") == e["token"]
        assert len(e["top_logprobs"]) == 2
        assert e["top_logprobs"][0]["logprob"] >= e["top_logprobs"][1]["logprob"]
        assert e["logprob"] == pytest.approx(e["top_logprobs"][0]["logprob"])  # greedy
    chunks = events(call(url, "/v1/chat/completions", {**body, "stream": True})[1])
    streamed = [e for c in chunks if c["choices"][0]["logprobs"]
                for e in c["choices"][0]["logprobs"]["content"]]
    assert streamed == content
    status, text, _ = call(url, "/v1/chat/completions", {**body, "logprobs": False})
    assert status == 400 and json.loads(text)["error"]["param"] == "top_logprobs"


def test_n_answers_are_the_seeded_answers_alone(served):
    _, url = served
    base = {"prompt": "Once", "max_tokens": 6, "temperature": 1.0}
    reply = json.loads(call(url, "/v1/completions", {**base, "n": 3, "seed": 7})[1])
    choices = reply["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    alone = [json.loads(call(url, "/v1/completions", {**base, "seed": 7 + i})[1])
             ["choices"][0]["text"] for i in range(3)]
    assert [c["text"] for c in choices] == alone
    assert len(set(alone)) > 1  # different seeds, different answers (the test can fail)
    if all(c["finish_reason"] == "length" for c in choices):
        assert reply["usage"]["completion_tokens"] == 18  # usage counts every answer
    chunks = events(call(url, "/v1/completions", {**base, "n": 2, "seed": 7,
                                                  "stream": True})[1])
    texts = ["", ""]
    for c in chunks:
        texts[c["choices"][0]["index"]] += c["choices"][0]["text"]
    assert texts == alone[:2]


# ---- echo ----

def _prompt_logprobs(model, ids):
    """log softmax of the autograd model's logits (not the server's stepper) at each prompt
    position, the row that predicts the next token: (T - 1,) picked and (T - 1, V) rows."""
    logits, _ = model(np.asarray([ids], dtype=np.int64))
    z = np.asarray(logits.data if hasattr(logits, "data") else logits, dtype=np.float64)[0]
    lp = z - z.max(axis=-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(axis=-1, keepdims=True))
    return lp[np.arange(len(ids) - 1), ids[1:]], lp[:-1]


def test_echo_puts_the_prompt_and_its_logprobs_first(served, model, tokenizer):
    _, url = served
    prompt = "Echo this"
    ids = tokenizer.encode(prompt)
    base = {"prompt": prompt, "max_tokens": 4, "temperature": 0}
    plain = json.loads(call(url, "/v1/completions", {**base, "logprobs": 2})[1])["choices"][0]
    status, body, _ = call(url, "/v1/completions", {**base, "logprobs": 2, "echo": True})
    assert status == 200
    choice = json.loads(body)["choices"][0]
    assert choice["text"] == prompt + plain["text"]
    lp, T = choice["logprobs"], len(ids)
    assert lp["tokens"] == [tokenizer.decode([t]) for t in ids] + plain["logprobs"]["tokens"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    picked, rows = _prompt_logprobs(model, ids)
    np.testing.assert_allclose(lp["token_logprobs"][1:T], picked, rtol=1e-4, atol=1e-5)
    for got, row in zip(lp["top_logprobs"][1:T], rows):
        best = np.argsort(-row, kind="stable")[:2]
        assert list(got) == [tokenizer.decode([int(t)]) for t in best]
        np.testing.assert_allclose(list(got.values()), row[best], rtol=1e-4, atol=1e-5)
    assert lp["token_logprobs"][T:] == pytest.approx(plain["logprobs"]["token_logprobs"])
    assert lp["text_offset"] == [len(tokenizer.decode(ids[:i])) for i in range(T)] + [
        len(prompt) + o for o in plain["logprobs"]["text_offset"]]
    # streamed: the prompt first (with its records), then the answer, the same in all
    chunks = events(call(url, "/v1/completions", {**base, "logprobs": 2, "echo": True,
                                                  "stream": True})[1])
    assert chunks[0]["choices"][0]["text"] == prompt
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]
    streamed = [v for c in chunks if c["choices"][0]["logprobs"]
                for v in c["choices"][0]["logprobs"]["token_logprobs"]]
    assert streamed == lp["token_logprobs"]


def test_echo_alone_scores_the_prompt(served, model, tokenizer):
    """max_tokens 0 with echo (how evaluation tools ask for a text's log-likelihood): the
    prompt back, scored, nothing generated; without logprobs, the text alone."""
    _, url = served
    ids = [5, 70, 33, 101, 9, 250, 17]
    reply = json.loads(call(url, "/v1/completions", {"prompt": ids, "max_tokens": 0,
                                                     "echo": True, "logprobs": 0})[1])
    choice = reply["choices"][0]
    assert choice["text"] == tokenizer.decode(ids) and choice["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 0
    picked, _ = _prompt_logprobs(model, ids)
    assert choice["logprobs"]["token_logprobs"][0] is None
    np.testing.assert_allclose(choice["logprobs"]["token_logprobs"][1:], picked, rtol=1e-4,
                               atol=1e-5)
    assert choice["logprobs"]["top_logprobs"][1:] == [{}] * (len(ids) - 1)
    chunks = events(call(url, "/v1/completions", {"prompt": ids, "max_tokens": 0,
                                                  "echo": True, "stream": True})[1])
    assert "".join(c["choices"][0]["text"] for c in chunks) == tokenizer.decode(ids)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    status, text, _ = call(url, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "hi"}], "echo": True})
    assert status == 400 and json.loads(text)["error"]["param"] == "echo"


def test_prompt_scored_in_chunks_equals_in_one(served, model):
    server, _ = served
    ids = [int(t) for t in np.random.default_rng(2).integers(0, 256, 40)]
    whole = server.loop.score(ids, 3)
    pieces = server.loop.score(ids, 3, chunk=7)
    picked, _ = _prompt_logprobs(model, ids)
    assert [r.token for r in whole] == ids[1:] == [r.token for r in pieces]
    np.testing.assert_allclose([r.logprob for r in pieces], picked, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([r.logprob for r in pieces], [r.logprob for r in whole],
                               rtol=1e-5, atol=1e-6)
    assert [[t for t, _ in r.top] for r in pieces] == [[t for t, _ in r.top] for r in whole]


def test_prompt_scored_for_a_gpt_too():
    """The engine's other stepper (a GPT, the gather kernel) scores an echoed prompt alike."""
    from numpylm.models.gpt import GPT, GPTConfig
    from numpylm.serving.server import EngineLoop

    gpt = GPT(GPTConfig(vocab_size=40, n_embd=32, n_layer=2, n_head=4, block_size=64),
              dtype=np.float64, rng=np.random.default_rng(0))
    loop = EngineLoop(Engine(gpt, page_size=4))
    try:
        ids = [int(t) for t in np.random.default_rng(1).integers(0, 40, 30)]
        picked, _ = _prompt_logprobs(gpt, ids)
        np.testing.assert_allclose([r.logprob for r in loop.score(ids, 2, chunk=7)], picked,
                                   rtol=1e-9, atol=1e-10)
    finally:
        loop.stop()
