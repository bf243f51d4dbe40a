"""A webhook receiver on 127.0.0.1: a real HTTP server that checks each request's signature and can fail on purpose."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as received: headers (lower-case names), raw body, whether its signature was right."""

    headers: dict[str, str]
    body: bytes
    signed_ok: bool
    answered: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers ``fail_first`` requests with 500, then 204; ``always_fail`` answers 500 forever."""

    secret: bytes
    fail_first: int = 0
    always_fail: bool = False
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                expected = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
                signed_ok = hmac.compare_digest(expected, self.headers.get("X-Hub-Signature-256", ""))
                failing = receiver.always_fail or len(receiver.received) < receiver.fail_first
                status = 500 if failing or not signed_ok else 204
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append(Received(headers, body, signed_ok, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
