"""The chat page at `/` driven in headless Chromium, where Debian's `chromium` and
`chromium-driver` are installed (skipped otherwise).

The browser is driven through chromedriver's W3C WebDriver HTTP interface with urllib, so the
test needs no client package. The model is a tiny Llama whose weights are set by hand so that
it answers every chat turn with "Hi" and the end-of-text token (at the page's default
temperature of 1, with logit margins of about 57, so with probability 1 - 1e-22): the page's
streamed text, its multi-turn history and its Stop button are then checked exactly.
"""
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from numpylm.models.llama import Llama, LlamaConfig
from numpylm.serving import Engine
from numpylm.serving import server as server_module
from numpylm.serving.server import make_server
from numpylm.tokenizers.bpe import BPETokenizer

EOT = 256
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
BROWSER = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                              "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(BROWSER is None or DRIVER is None,
                                reason="needs chromium and chromedriver (Debian: apt-get "
                                       "install chromium chromium-driver)")


def scripted_model(chain: dict[int, int]) -> Llama:
    """A Llama whose next token depends only on the last one: `chain[t]` after t, EOT after
    any other. Its layers add nothing (o_proj and down_proj are zero), so the last hidden
    state is the last token's embedding, a basis vector; the head maps that vector to its
    successor with a logit of 10 * sqrt(32) (RMS norm scales a basis vector to sqrt(C))."""
    C = 32
    model = Llama(LlamaConfig(vocab_size=257, hidden_size=C, intermediate_size=48,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=1024, tie_word_embeddings=False),
                  rng=np.random.default_rng(0))
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight.data[:] = 0
        layer.mlp.down_proj.weight.data[:] = 0
    embed = model.model.embed_tokens.weight.data
    head = model.lm_head.weight.data
    embed[:] = 0
    embed[:, 0] = 1.0  # every token not in the chain: basis vector 0, followed by EOT
    head[:] = 0
    head[EOT, 0] = 10.0
    for slot, (token, following) in enumerate(chain.items(), start=1):
        embed[token] = 0
        embed[token, slot] = 1.0
        head[following, slot] = 10.0
    return model


class Browser:
    """A headless Chromium session through chromedriver's WebDriver HTTP endpoints."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.profile = tempfile.mkdtemp(prefix="numpylm-chromium-")
        self.driver = subprocess.Popen([DRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        try:
            self._wait_ready()
            args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", f"--user-data-dir={self.profile}"]
            caps = {"capabilities": {"alwaysMatch": {
                "goog:chromeOptions": {"binary": BROWSER, "args": args}}}}
            self.session = self._call("POST", "/session", caps)["sessionId"]
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self._call("GET", "/status")["ready"]:
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        raise RuntimeError("chromedriver did not start")

    def _call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as err:  # WebDriver's error names what went wrong
            value = json.loads(err.read() or b"{}").get("value", {})
            raise RuntimeError(f"WebDriver {method} {path}: {value.get('error')}: "
                               f"{value.get('message')}") from None

    def _session(self, method: str, path: str, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def element(self, css: str) -> str:
        return self._session("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css: str, text: str) -> None:
        self._session("POST", f"/element/{self.element(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._session("POST", f"/element/{self.element(css)}/click", {})

    def run(self, script: str):
        return self._session("POST", "/execute/sync", {"script": script, "args": []})

    def wait_for(self, script: str, timeout: float = 30.0):
        """The script's value once it is truthy; an AssertionError with the last value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script)
            if value or time.monotonic() > deadline:
                assert value, f"timed out waiting for: {script}"
                return value
            time.sleep(0.05)

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._call("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=30)
            shutil.rmtree(self.profile, ignore_errors=True)


LOG = ("return Array.from(document.querySelectorAll('#log div'))"
       ".map(d => [d.className, d.textContent]);")
IDLE = ("document.getElementById('send').disabled === false && "
        "document.getElementById('stop').disabled === true")  # no request in flight


def serve(model):
    tokenizer = BPETokenizer([], special_tokens={"<|endoftext|>": EOT})
    engine = Engine(model, page_size=8, max_running=4)
    server = make_server(engine, tokenizer, model_name="tiny", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def stop_serving(server) -> None:
    server.shutdown()
    server.server_close()
    server.loop.stop()


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


def test_chat_page_streams_each_answer_and_keeps_the_conversation(browser, monkeypatch):
    bodies = []
    real_parse = server_module.parse_request

    def spy(raw, chat, app):
        bodies.append(json.loads(raw))
        return real_parse(raw, chat, app)

    monkeypatch.setattr(server_module, "parse_request", spy)
    # ChatML's generation prompt ends with "\n": the answer is "Hi", then EOT.
    server, url = serve(scripted_model({ord("\n"): ord("H"), ord("H"): ord("i")}))
    try:
        browser.open(url)
        assert browser.wait_for("return document.getElementById('model').textContent;") \
            == "model: tiny"
        browser.type("#text", "hello")
        browser.click("#send")
        browser.wait_for(f"return {IDLE} && document.querySelectorAll('#log div').length === 2;")
        assert browser.run(LOG) == [["user", "hello"], ["assistant", "Hi"]]
        assert browser.run("return document.getElementById('text').value;") == ""

        browser.type("#text", "and again")
        browser.click("#send")
        browser.wait_for(f"return {IDLE} && document.querySelectorAll('#log div').length === 4;")
        assert browser.run(LOG) == [["user", "hello"], ["assistant", "Hi"],
                                    ["user", "and again"], ["assistant", "Hi"]]
        # The second request carried the whole conversation, streamed.
        assert [b["messages"] for b in bodies] == [
            [{"role": "user", "content": "hello"}],
            [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi"},
             {"role": "user", "content": "and again"}]]
        assert all(b["stream"] is True and b["model"] == "tiny" for b in bodies)

        browser.click("#clear")
        assert browser.run(LOG) == []
    finally:
        stop_serving(server)


def test_stop_button_ends_the_answer_and_frees_its_sequence(browser, monkeypatch):
    # "\n" -> "a" -> "a" -> ...: the answer would run to the page's 256 tokens; a pause per
    # engine step keeps it running while the button is pressed.
    server, url = serve(scripted_model({ord("\n"): ord("a"), ord("a"): ord("a")}))
    engine = server.loop.engine
    real_step = engine.step
    monkeypatch.setattr(engine, "step", lambda: (time.sleep(0.03), real_step())[1])
    try:
        browser.open(url)
        browser.wait_for("return document.getElementById('model').textContent;")
        browser.type("#text", "go on")
        browser.click("#send")
        browser.wait_for("const d = document.querySelectorAll('#log div');"
                         "return d.length === 2 && d[1].textContent.length >= 3;")
        assert browser.run("return document.getElementById('stop').disabled;") is False
        browser.click("#stop")
        browser.wait_for(f"return {IDLE};")
        shown = browser.run(LOG)[1]
        assert shown[0] == "assistant" and set(shown[1]) == {"a"} and len(shown[1]) < 256
        deadline = time.monotonic() + 30  # the server frees the sequence at a later step
        while time.monotonic() < deadline:
            with server.loop._cond:
                if not engine.has_work():
                    break
            time.sleep(0.02)
        assert not engine.has_work()
        assert engine.cache.num_free == engine.cache.num_blocks
        time.sleep(0.2)
        assert browser.run(LOG)[1] == shown  # nothing more arrived after Stop
        # The page still works: the next message gets an answer of its own.
        browser.type("#text", "more")
        browser.click("#send")
        browser.wait_for("const d = document.querySelectorAll('#log div');"
                         "return d.length === 4 && d[3].textContent.length >= 1;")
        browser.click("#stop")
        browser.wait_for(f"return {IDLE};")
    finally:
        stop_serving(server)
