"""A small OpenAI-compatible server on 127.0.0.1 for server-mode tests, stdlib only.

It serves vLLM's ``/v1/models`` (with ``max_model_len`` and ``root``), ``/v1/completions``
(a fixed answer per prompt, token ids or text) and, with a tokenizer, vLLM's ``/tokenize``.
It counts every request by path, and with ``die_after=N`` it answers N completion requests
and then shuts down (the listening socket closes: later requests are refused), as a crashed
server would; a new one on the same ``port`` is the server restarted. Use it as a context
manager: it stops at exit and checks that its thread ended.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeServer:
    """``with FakeServer(...) as server:`` then ``server.base_url`` and ``server.requests[path]``."""

    def __init__(
        self,
        model_id: str,
        root: str | None,
        max_model_len: int | None,
        *,
        tokenizer: Any = None,
        token_shift: int = 0,
        answer: str = "42",
        die_after: int | None = None,
        port: int = 0,
    ) -> None:
        self.cards = [{"id": model_id, "object": "model", "owned_by": "test", "root": root, "max_model_len": max_model_len}]
        self.tokenizer = tokenizer
        self.token_shift = token_shift  # add this to every /tokenize id: a "wrong tokenizer"
        self.answer = answer
        self.die_after = die_after
        self.requests: Counter[str] = Counter()
        #: Completion requests answered (``requests`` also counts those that found it dying).
        self.answered = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai-server", daemon=True)
        self._closed = False

    @property
    def root(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return self.root + "/v1/completions"

    def __enter__(self) -> FakeServer:  # noqa: PYI034 - Python 3.10 has no typing.Self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the fake server's thread did not stop"

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent; safe from a handler thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()

    def _reply(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/v1/models":
            return 200, {"object": "list", "data": self.cards}
        if path == "/tokenize" and self.tokenizer is not None:
            ids = self.tokenizer(body["prompt"], add_special_tokens=bool(body.get("add_special_tokens", True)))["input_ids"]
            ids = [token + self.token_shift for token in ids]
            return 200, {"count": len(ids), "max_model_len": self.cards[0]["max_model_len"], "tokens": ids}
        if path == "/v1/completions":
            prompt = body.get("prompt")
            batch = prompt if isinstance(prompt, list) and prompt and isinstance(prompt[0], (list, str)) else [prompt]
            choices = [{"index": i, "text": self.answer, "finish_reason": "stop", "logprobs": None} for i in range(len(batch))]
            return 200, {"id": "cmpl-test", "object": "text_completion", "model": body.get("model"), "choices": choices}
        return 404, {"error": f"no route {path}"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                with server._lock:
                    server.requests[path] += 1
                    dying = path == "/v1/completions" and server.die_after is not None and server.answered >= server.die_after
                    if path == "/v1/completions" and not dying:
                        server.answered += 1
                if dying:  # it raced the shutdown: hang up without an answer, as a crashing server does
                    self.close_connection = True
                    return
                status, reply = server._reply(path, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if path == "/v1/completions" and server.die_after is not None and server.answered >= server.die_after:
                    threading.Thread(target=server.stop, daemon=True).start()

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
