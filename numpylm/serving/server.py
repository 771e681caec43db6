"""The OpenAI-compatible HTTP server, part 3 of the guide: the interface every client, chat UI and
evaluation tool already speaks, on Python's standard library alone (`http.server`).

One background thread owns the engine and steps it while there is work (`EngineLoop`); each
HTTP request runs in its own thread, queues its prompt, and reads its tokens from a queue as
the loop produces them: all requests share every step of the model (continuous batching).

    GET  /                      a chat page (`numpylm.serving.chat_page`)
    GET  /health                {"status": "ok"}
    GET  /v1/models             the one model served
    POST /v1/completions        {"prompt", "max_tokens", "temperature", "top_p", "seed",
                                 "stop", "stream"}
    POST /v1/chat/completions   the same with "messages", rendered by the model's chat template

With `"stream": true` the answer comes as server-sent events, one `data: {json}` per piece of
text, ending with `data: [DONE]`. Errors are OpenAI's shape, `{"error": {"message", "type",
"param", "code"}}`, with the status that names the fault: 400 a malformed body or parameter,
401 a missing API key, 404 an unknown model or path, 413 a body too large, 429 a full queue.
A client that goes away mid-stream has its sequence cancelled, its blocks freed at once.
"""
from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from numpylm.serving.chat_page import CHAT_PAGE
from numpylm.serving.engine import Engine
from numpylm.serving.requests import APIError, parse_request

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

    def submit(self, prompt: list[int], max_tokens: int, sampling) -> tuple[Any, queue.Queue]:
        """Queue a request; its id and the queue its `TokenEvent`s arrive on (None: the
        engine failed). Raises APIError 429 when the queue is full."""
        with self._cond:
            if len(self.engine.scheduler.waiting) >= self.max_waiting:
                raise APIError(429, f"the queue is full ({self.max_waiting} requests waiting); "
                                    f"retry later", "rate_limit_exceeded")
            try:
                request_id = self.engine.add_request(prompt, max_tokens, sampling)
            except ValueError as err:  # e.g. more tokens than the whole pool holds
                raise APIError(400, str(err), "invalid_request") from None
            self._queues[request_id] = q = queue.Queue()
            self._cond.notify()
        return request_id, q

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


def _stream_text(tokenizer, ids: list[int], stops: tuple[str, ...],
                 final: bool) -> tuple[str, bool]:
    """(the text of `ids` safe to show now, whether a stop string ended it). A piece that may
    still grow into a stop string, or an incomplete UTF-8 character, is held back until final."""
    text = tokenizer.decode(ids)
    for s in stops:
        at = text.find(s)
        if at >= 0:
            return text[:at], True
    if final:
        return text, False
    hold = max((len(s) - 1 for s in stops), default=0)
    text = text[:len(text) - hold] if hold else text
    return text.rstrip("\ufffd"), False


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
            request_id, q = self.server.loop.submit(req.prompt, req.max_tokens, req.sampling)
        except APIError as err:
            self.close_connection = err.status == 413
            self._error(err)
            return
        try:
            if req.stream:
                self._stream(req, request_id, q)
            else:
                self._complete(req, request_id, q)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        finally:
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

    def _events(self, req, q: queue.Queue):
        """Yield (text so far, finish_reason or None) as tokens arrive."""
        ids: list[int] = []
        while True:
            event = q.get()
            if isinstance(event, Exception):
                raise event
            finish = event.finish_reason
            req.completion_tokens += 1
            if finish != "stop":  # a stop token ends the text without showing
                ids.append(event.token)
            text, stopped = _stream_text(self.server.tokenizer, ids, req.stop, finish is not None)
            if stopped:
                yield text, "stop"
                return
            yield text, finish
            if finish is not None:
                return

    def _complete(self, req, request_id, q: queue.Queue) -> None:
        text, finish = "", None
        for text, finish in self._events(req, q):
            pass
        self._json(200, req.response(text, finish))

    def _stream(self, req, request_id, q: queue.Queue) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        sent = 0
        self._event(req.chunk(None, None, first=True))
        for text, finish in self._events(req, q):
            if len(text) > sent:
                self._event(req.chunk(text[sent:], None))
                sent = len(text)
            if finish is not None:
                self._event(req.chunk(None, finish))
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
