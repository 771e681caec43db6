"""The OpenAI-compatible HTTP server, part 3 of the guide: the interface every client, chat UI and
evaluation tool already speaks, on Python's standard library alone (`http.server`).

One background thread owns the engine and steps it while there is work (`EngineLoop`); each
HTTP request runs in its own thread, queues its prompt, and reads its tokens from a queue as
the loop produces them: all requests share every step of the model (continuous batching).

    GET  /                      a chat page (`numpylm.serving.chat_page`)
    GET  /health                {"status": "ok"}
    GET  /v1/models             the one model served
    POST /v1/completions        {"prompt", "max_tokens", "temperature", "top_p", "seed",
                                 "stop", "stream", "n", "logprobs", "echo"}
    POST /v1/chat/completions   the same with "messages", rendered by the model's chat
                                template, and "logprobs": true with "top_logprobs"

`n` answers to one request are n sequences in the batch (seeds seed, seed + 1, ...), their
events read from one queue.

With `"stream": true` the answer comes as server-sent events, one `data: {json}` per piece of
text, ending with `data: [DONE]`. Errors are OpenAI's shape, `{"error": {"message", "type",
"param", "code"}}`, with the status that names the fault: 400 a malformed body or parameter,
401 a missing API key, 404 an unknown model or path, 413 a body too large, 429 a full queue.
A client that goes away mid-stream has its sequence cancelled, its blocks freed at once.
With `"echo": true` a completion starts with the prompt's text (and, with `logprobs`, the
prompt tokens' records, scored by the model between two engine steps, the first one null);
`max_tokens` 0 then asks for the prompt alone, scored. Text is cut at stop strings and held
back at unfinished characters by `numpylm.inference.stop_strings.TextStream`, the one used by
`numpylm generate` and the chat session.
"""
from __future__ import annotations

import dataclasses
import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from numpylm.inference.logprobs import TokenLogprob, token_logprobs
from numpylm.inference.stop_strings import TextStream
from numpylm.models.kv_cache import KVCache
from numpylm.serving.chat_page import CHAT_PAGE
from numpylm.serving.engine import Engine
from numpylm.serving.requests import APIError, Choice, ParsedRequest, parse_request

__all__ = ["EngineLoop", "make_server"]


class EngineLoop:
    """The engine stepped in a background thread; requests submit and read tokens from queues."""

    def __init__(self, engine: Engine, max_waiting: int = 64) -> None:
        self.engine, self.max_waiting = engine, max_waiting
        self._cond = threading.Condition()
        self._queues: dict[Any, queue.Queue] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="numpylm-engine", daemon=True)
        self._thread.start()

    def submit(self, prompt: list[int], max_tokens: int, samplings: list,
               logprobs: int | None = None) -> tuple[list[Any], queue.Queue]:
        """Queue one sequence per `SamplingParams` of `samplings` (the answers of one request);
        their ids and the one queue their `TokenEvent`s arrive on (an exception: the engine
        failed). Raises APIError 429 when the queue is full."""
        with self._cond:
            if len(self.engine.scheduler.waiting) + len(samplings) > self.max_waiting:
                raise APIError(429, f"the queue is full ({self.max_waiting} requests waiting); "
                                    f"retry later", "rate_limit_exceeded")
            q: queue.Queue = queue.Queue()
            ids: list[Any] = []
            try:
                for sampling in samplings:
                    ids.append(self.engine.add_request(prompt, max_tokens, sampling,
                                                       logprobs=logprobs))
                    self._queues[ids[-1]] = q
            except ValueError as err:  # e.g. more tokens than the whole pool holds
                for request_id in ids:
                    self._queues.pop(request_id, None)
                    self.engine.abort(request_id)
                raise APIError(400, str(err), "invalid_request") from None
            self._cond.notify()
        return ids, q

    def score(self, prompt: list[int], top: int, chunk: int = 256) -> list[TokenLogprob]:
        """The records of prompt tokens 1..T-1 (each predicted from those before it, with
        `top` alternatives), for `echo`: the model run over the prompt in chunks, between two
        engine steps (it holds the loop's lock, so the model is never run twice at once)."""
        engine = self.engine
        n_layer, n_kv, _, D = engine.cache.k.shape
        records: list[TokenLogprob] = []  # logits of `chunk` rows at a time, not (T, V)
        with self._cond:
            cache = KVCache(n_layer, 1, n_kv, len(prompt), D, dtype=engine.cache.k.dtype)
            for start in range(0, len(prompt) - 1, chunk):
                stop = min(start + chunk, len(prompt) - 1)
                ids = np.asarray([prompt[start:stop]], dtype=np.int64)
                logits = engine.forward_logits(engine.model, ids, np.arange(start, stop),
                                               cache, None)[0]  # (stop - start, V)
                records += token_logprobs(logits, prompt[start + 1:stop + 1], top)
        return records

    def cancel(self, request_id: Any) -> None:
        """Forget a request (its client left); its blocks are freed before the next step."""
        with self._cond:
            self._queues.pop(request_id, None)
            self.engine.abort(request_id)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self.engine.has_work():
                    self._cond.wait()
                if self._stopping:
                    return
                try:
                    events = self.engine.step()
                except Exception as err:  # a failed step must not leave clients waiting
                    for request_id, q in list(self._queues.items()):
                        q.put(err)
                        self.engine.abort(request_id)
                    self._queues.clear()
                    continue
                for event in events:
                    q = self._queues.get(event.request_id)
                    if q is not None:
                        q.put(event)
                        if event.finish_reason is not None:
                            del self._queues[event.request_id]


def _samplings(req: ParsedRequest) -> list:
    """One `SamplingParams` per answer: answer i draws with seed + i (so n answers differ,
    and each is the answer a request with that seed gets alone)."""
    base = req.sampling
    if base.seed is None:  # each sequence draws from its own fresh generator anyway
        return [base] * req.n
    return [dataclasses.replace(base, seed=base.seed + i) for i in range(req.n)]


class _Answer:
    """One answer as it streams: the text safe to show (whole characters, cut at the first
    stop string: `TextStream`, shared with `generate` and the chat session), and the records
    of the tokens whose text is shown (each with the offset where its text starts)."""

    def __init__(self, index: int, tokenizer: Any, stops: tuple[str, ...],
                 echo: tuple[str, list] = ("", [])) -> None:
        self.choice = Choice(index, echo[0], logprobs=list(echo[1]))  # an echoed prompt
        self.base = len(echo[0])  # where the answer's text starts
        self.text = TextStream(tokenizer, stops)
        self.pending: list[tuple[Any, int]] = []  # records whose text is not shown yet

    def add(self, event) -> list[tuple[Any, int]]:
        """Take one token event; the records that became visible with it."""
        finish, stream, choice = event.finish_reason, self.text, self.choice
        if finish != "stop":  # a stop token ends the text without showing
            if event.logprob is not None:
                offset = self.base + (len(stream.tokenizer.decode(stream.ids))
                                      if stream.ids else 0)
                self.pending.append((event.logprob, offset))
            choice.text += stream.push(event.token)
        if stream.stopped:
            finish = "stop"
        elif finish is not None:  # the last token: what was held back is shown
            choice.text += stream.flush()
        choice.finish = finish
        if finish is not None:  # the end: every token whose text starts before the cut
            shown = [r for r in self.pending if not stream.stopped or r[1] < len(choice.text)]
            self.pending = []
        else:
            shown = [r for r in self.pending if r[1] < len(choice.text)]
            self.pending = self.pending[len(shown):]
        choice.logprobs.extend(shown)
        return shown


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a slow client may take to send its request

    def log_message(self, format: str, *args: Any) -> None:  # quiet unless asked
        if self.server.verbose:
            super().log_message(format, *args)

    # ---- responses ----

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, err: APIError) -> None:
        self._json(err.status, err.body())

    def _authorised(self) -> bool:
        key = self.server.api_key
        if key is None or self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        self._error(APIError(401, "a valid API key is required: send 'Authorization: Bearer "
                                  "<key>'", "invalid_api_key", kind="authentication_error"))
        return False

    # ---- routes ----

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/":
            self._send(200, CHAT_PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/v1/models":
            if self._authorised():
                self._json(200, {"object": "list", "data": [
                    {"id": self.server.model_name, "object": "model",
                     "created": self.server.created, "owned_by": "numpylm"}]})
        else:
            self._error(APIError(404, f"no such path: GET {path}", "not_found"))

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        if path not in ("/v1/completions", "/v1/chat/completions"):
            self._drain()
            self._error(APIError(404, f"no such path: POST {path}", "not_found"))
            return
        try:
            body = self._read_body()
            if not self._authorised():
                return
            req = parse_request(body, chat=path.endswith("chat/completions"), app=self.server)
            echo = self._echo(req) if req.echo else ("", [])
            request_ids, q = (self.server.loop.submit(req.prompt, req.max_tokens,
                                                      _samplings(req), req.logprobs)
                              if req.max_tokens > 0 else ([], None))
        except APIError as err:
            self.close_connection = err.status == 413
            self._error(err)
            return
        try:
            if req.stream:
                self._stream(req, request_ids, q, echo)
            else:
                self._complete(req, request_ids, q, echo)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        finally:
            for request_id in request_ids:
                self.server.loop.cancel(request_id)  # a no-op when it finished

    def _drain(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= self.server.max_body:
            self.rfile.read(int(length))

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise APIError(400, "a Content-Length header is required", "missing_content_length")
        if int(length) > self.server.max_body:
            raise APIError(413, f"the body has {length} bytes, more than the limit of "
                                f"{self.server.max_body}", "body_too_large")
        return self.rfile.read(int(length))

    def _echo(self, req: ParsedRequest) -> tuple[str, list[tuple[TokenLogprob, int]]]:
        """The prompt's text, and (with `logprobs`) its tokens' records with their offsets:
        the first token's log-probability is None (nothing came before it)."""
        tokenizer, prompt = self.server.tokenizer, req.prompt
        text = tokenizer.decode(prompt)
        if req.logprobs is None:
            return text, []
        scored = self.server.loop.score(prompt, req.logprobs)
        first = TokenLogprob(prompt[0], None, None)  # type: ignore[arg-type]
        offsets = [len(tokenizer.decode(prompt[:i])) for i in range(len(prompt))]
        return text, list(zip([first] + scored, offsets))

    def _events(self, req: ParsedRequest, request_ids: list, q: queue.Queue | None,
                echo: tuple[str, list]):
        """Yield (choice, records of its tokens now shown) as tokens arrive, until every
        answer has finished; `choice.text` is the text safe to show so far. With no
        request (`max_tokens` 0, an echo alone) each answer is the echo, finished."""
        if not request_ids:
            for i in range(req.n):
                yield Choice(i, echo[0], "length", list(echo[1])), []
            return
        answers = {rid: _Answer(i, self.server.tokenizer, req.stop, echo)
                   for i, rid in enumerate(request_ids)}
        while any(a.choice.finish is None for a in answers.values()):
            event = q.get()
            if isinstance(event, Exception):
                raise event
            answer = answers[event.request_id]
            if answer.choice.finish is not None:  # cut by a stop string a step ago
                continue
            req.completion_tokens += 1
            records = answer.add(event)
            if answer.choice.finish is not None and event.finish_reason is None:
                self.server.loop.cancel(event.request_id)  # a stop string: free it now
            yield answer.choice, records

    def _complete(self, req: ParsedRequest, request_ids: list, q: queue.Queue | None,
                  echo: tuple[str, list]) -> None:
        choices = {}
        for choice, _ in self._events(req, request_ids, q, echo):
            choices[choice.index] = choice
        self._json(200, req.response([choices[i] for i in sorted(choices)]))

    def _stream(self, req: ParsedRequest, request_ids: list, q: queue.Queue | None,
                echo: tuple[str, list]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = [len(echo[0])] * req.n  # the echoed prompt goes first, as one piece
        for i in range(req.n):
            self._event(req.chunk(None, None, first=True, index=i))
            if req.echo:
                self._event(req.chunk(echo[0], None, index=i, records=echo[1]))
        for choice, records in self._events(req, request_ids, q, echo):
            i = choice.index
            if len(choice.text) > sent[i] or records:
                self._event(req.chunk(choice.text[sent[i]:], None, index=i, records=records))
                sent[i] = len(choice.text)
            if choice.finish is not None:
                self._event(req.chunk(None, choice.finish, index=i))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, obj: dict | None) -> None:
        if obj is not None:
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(engine: Engine, tokenizer: Any, *, model_name: str = "numpylm",
                host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                template: str | None = None, max_waiting: int = 64,
                max_body: int = 1 << 20, default_max_tokens: int = 256,
                verbose: bool = False) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving: call `serve_forever()`, `shutdown()`, then
    `server.loop.stop()`) for `engine`'s model with `tokenizer`. `port=0` takes a free port
    (`server.server_address`)."""
    server = _Server((host, port), _Handler)
    server.loop = EngineLoop(engine, max_waiting)
    server.tokenizer, server.model_name, server.api_key = tokenizer, model_name, api_key
    server.template, server.max_body, server.verbose = template, max_body, verbose
    server.default_max_tokens, server.created = default_max_tokens, int(time.time())
    server.new_id = lambda prefix: f"{prefix}-{uuid.uuid4().hex[:24]}"
    return server
