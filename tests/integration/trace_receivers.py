"""Trace receivers on 127.0.0.1 for tests: an OTLP/HTTP collector and a LangSmith ingest endpoint.

- :class:`OtlpReceiver` answers ``POST /v1/traces`` (OTLP/HTTP, binary protobuf, optionally gzip) as a collector
  does (https://opentelemetry.io/docs/specs/otlp/#otlphttp), decoding each body with opentelemetry-proto's
  ``ExportTraceServiceRequest``.
- :class:`LangSmithReceiver` answers what the ``langsmith`` client sends: ``GET /info``, ``POST /runs/multipart``
  (multipart/form-data, a part ``post.<id>`` / ``patch.<id>`` per run), ``POST /runs/batch`` and ``POST /runs``.
"""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass
class Span:
    """One received span: ids in hex (``parent`` empty for a root), attributes as plain values."""

    name: str
    trace_id: str
    span_id: str
    parent: str
    attrs: dict[str, Any]
    resource: dict[str, Any]
    status_code: int


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind in {"string_value", "int_value", "double_value", "bool_value"} else str(v)


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port), run in a thread while the context is open."""

    server: ThreadingHTTPServer | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Any:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def _body(handler: BaseHTTPRequestHandler) -> bytes:
    raw = handler.rfile.read(int(handler.headers.get("Content-Length", "0")))
    return gzip.decompress(raw) if handler.headers.get("Content-Encoding") == "gzip" else raw


@dataclass
class OtlpReceiver(_Server):
    """Collects every span exported to it; ``requests`` counts the requests of any kind."""

    spans: list[Span] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                receiver.requests.append(f"POST {self.path}")
                body = _body(self)
                if self.path != "/v1/traces" or "protobuf" not in self.headers.get("Content-Type", ""):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver.raw.append(body)
                receiver.spans.extend(_spans(ExportTraceServiceRequest.FromString(body)))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                return None

        return Handler


def _spans(request: ExportTraceServiceRequest) -> list[Span]:
    out = []
    for rs in request.resource_spans:
        resource = {a.key: _value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    Span(
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent=s.parent_span_id.hex(),
                        attrs={a.key: _value(a.value) for a in s.attributes},
                        resource=resource,
                        status_code=s.status.code,
                    )
                )
    return out


@dataclass
class LangSmithReceiver(_Server):
    """Collects the runs posted to it (``posts``: the run dicts created) and every raw request body."""

    posts: list[dict[str, Any]] = field(default_factory=list)
    patches: list[dict[str, Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                receiver.requests.append(f"GET {self.path}")
                if self.path.split("?")[0] == "/info":
                    return self._answer(200, {"version": "0.10.0"})  # the client's defaults: multipart, no zstd
                return self._answer(404, {"detail": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                receiver.requests.append(f"POST {self.path}")
                body = _body(self)
                receiver.raw.append(body)
                path = self.path.split("?")[0]
                if path == "/runs/multipart":
                    receiver._multipart(self.headers.get("Content-Type", ""), body)
                elif path == "/runs/batch":
                    doc = json.loads(body)
                    receiver.posts.extend(doc.get("post") or [])
                    receiver.patches.extend(doc.get("patch") or [])
                elif path == "/runs":
                    receiver.posts.append(json.loads(body))
                else:
                    return self._answer(404, {"detail": "not found"})
                return self._answer(202, {})

            def do_PATCH(self) -> None:  # noqa: N802
                receiver.requests.append(f"PATCH {self.path}")
                body = _body(self)
                receiver.raw.append(body)
                receiver.patches.append(json.loads(body))
                return self._answer(200, {})

            def log_message(self, *args: object) -> None:
                return None

        return Handler

    def _multipart(self, content_type: str, body: bytes) -> None:
        """Read a multipart/form-data body: the ``post.<id>`` and ``patch.<id>`` parts are the runs."""
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        for part in message.iter_parts():
            name = str(part.get_param("name", header="content-disposition") or "")
            op, _, rest = name.partition(".")
            if op in {"post", "patch"} and rest and "." not in rest:
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                (self.posts if op == "post" else self.patches).append(json.loads(payload))
