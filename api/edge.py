"""The edge of the HTTP API: what a request must look like before any route sees it.

* Host: the ``Host`` header must name one of ``allowed_hosts`` (port ignored; ``*`` allows any), else 400. A page
  on another site that rebinds its DNS name to 127.0.0.1 still sends its own name, so it is refused.
* Body size: a ``Content-Length`` over the limit is refused before the app runs (413); a body sent without one
  (chunked) is counted as it arrives and refused once it passes the limit. Either way the rest is read and dropped,
  up to :data:`DRAIN_BYTES`, so the client gets the 413 instead of a reset connection. The whole body is read here,
  each piece within ``body_timeout_s`` (408 after it), then handed to the app: a route never waits on a slow client.
* Only JSON changes state: a POST, PUT, PATCH or DELETE with a body or a ``Content-Type`` must say
  ``application/json`` (415). A cross-site HTML form can only send form or text bodies, so it cannot drive a route.

Written as a plain ASGI middleware (https://asgi.readthedocs.io/en/latest/specs/www.html): Starlette's
``BaseHTTPMiddleware`` would buffer the SSE streams the run routes send.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DRAIN_BYTES = 16 * 1024 * 1024
"""How much of a too-large chunked body is read and dropped before the 413 (beyond it the connection is closed)."""


class RequestEdge:
    """ASGI middleware enforcing the body limit, the body read timeout and JSON-only state changes."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: list[str], max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts}
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, read its body within the limits, then run the app on it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = host_name(headers.get("host", ""))
        if "*" not in self.allowed_hosts and host not in self.allowed_hosts:
            await _refuse(send, 400, f"host {host!r} is not served here (ORCH_API_ALLOWED_HOSTS)")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            if length.isdigit() and int(length) <= DRAIN_BYTES:
                try:
                    await self._drain(receive, {"more_body": True})
                except _Refused:
                    pass  # a slow or vanished client: the 413 below still goes out, then the connection closes
            await _refuse(send, 413, f"the body is larger than {self.max_body_bytes} bytes")
            return
        if scope["method"] in STATE_CHANGING and (length not in (None, "0") or "content-type" in headers):
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                await _refuse(send, 415, "send the body as JSON (Content-Type: application/json)")
                return
        try:
            body = await self._read_body(receive)
        except _Refused as exc:
            await _refuse(send, exc.status, exc.detail)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._next(receive)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._drain(receive, message)
                raise _Refused(413, f"the body is larger than {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _next(self, receive: Receive) -> Message:
        try:
            async with asyncio.timeout(self.body_timeout_s):
                message = await receive()
        except TimeoutError:
            raise _Refused(408, f"the body did not arrive within {self.body_timeout_s:g}s") from None
        if message["type"] == "http.disconnect":
            raise _Refused(400, "the client went away while sending the body")
        return message

    async def _drain(self, receive: Receive, message: Message) -> None:
        """Read and drop the rest of a too-large body, up to :data:`DRAIN_BYTES`."""
        dropped = 0
        while message.get("more_body", False) and dropped < DRAIN_BYTES:
            message = await self._next(receive)
            dropped += len(message.get("body", b""))


def host_name(value: str) -> str:
    """The host of a ``Host`` header, lower-case, without port or IPv6 brackets: ``[::1]:8000`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the client's later messages (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, status: int, detail: str) -> None:
    """Answer ``{"detail": ...}`` with ``status`` and close (the rest of the body is not read)."""
    payload: dict[str, Any] = {"detail": detail}
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
