"""OpenTelemetry spans of graph runs, exported over OTLP/HTTP (protobuf) with the standard SDK and exporter.

Imported only when an OTLP endpoint is configured (:func:`core.tracing.otel_enabled`). The exporter reads the
standard variables itself (``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, ``..._HEADERS``, ``..._TIMEOUT``,
``..._COMPRESSION``: https://opentelemetry.io/docs/specs/otel/protocol/exporter/); the service is ``orchestrator``
unless ``OTEL_SERVICE_NAME`` (or ``OTEL_RESOURCE_ATTRIBUTES``) names it.

Spans come from LangChain's callbacks, which LangGraph fires for every task (a node execution: a chain run tagged
``graph:step:N``, named after the node, https://langchain-ai.github.io/langgraph/how-tos/streaming/), for the
compiled subgraph a node runs, and for routers and other runnables inside a node. Only tasks become spans; every
other chain run passes its parent on, so a subgraph's nodes nest under the node that ran the subgraph:

- ``run``: ``orchestrator.thread_id`` (also ``gen_ai.conversation.id``), ``orchestrator.run.kind``
  (message/resume/continue), ``orchestrator.actor``, ``orchestrator.model``, ``orchestrator.outcome``
  (done/interrupted/drained/failed), ``orchestrator.error``;
- one span per node execution, named after the node: ``orchestrator.node``, ``orchestrator.node.path`` (``a/b``,
  the node last), ``langgraph.step``, ``orchestrator.outcome`` (ok/error/interrupted), ``orchestrator.error``;
- ``chat <model>`` per model call, under its node: ``gen_ai.operation.name``, ``gen_ai.system``,
  ``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens`` (the GenAI semantic conventions,
  https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/), ``orchestrator.role``, ``orchestrator.cost_usd``.

No inputs, outputs, prompts or answers are put in spans. An error is its type and message cut to 300 characters, with
the model API key scrubbed; a model failure (``ModelUnreachable``) is its type and cause only (``timeout``...), as
its message may quote the request.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.errors import GraphBubbleUp, GraphDrained, GraphInterrupt
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

if TYPE_CHECKING:
    from models.tables import LLMCall

SERVICE_NAME = "orchestrator"
ERROR_CHARS = 300
FLUSH_TIMEOUT_MS = 10_000
TASK_TAG = "graph:step:"
"""LangGraph tags a task's own chain run (not its children) ``graph:step:<n>``."""
HIDDEN_TAG = "langsmith:hidden"
"""Internal tasks (``__start__``...), hidden from LangGraph's ``tasks`` stream too."""

_provider: TracerProvider | None = None
_lock = threading.Lock()


def tracer() -> trace.Tracer:
    """The process's tracer, made on first use: one TracerProvider with a batching OTLP/HTTP exporter.

    Not installed as the global provider (other libraries keep theirs). The SDK shuts it down at exit, which
    exports what is left.
    """
    global _provider
    with _lock:
        if _provider is None:
            named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
                "OTEL_RESOURCE_ATTRIBUTES", ""
            )
            _provider = TracerProvider(resource=Resource.create({} if named else {"service.name": SERVICE_NAME}))
            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return _provider.get_tracer("orchestrator")


def flush_soon() -> None:
    """Export the spans ended so far, from a background thread (the event loop never waits on the network)."""
    if _provider is not None:
        provider = _provider
        threading.Thread(target=provider.force_flush, args=(FLUSH_TIMEOUT_MS,), name="otel-flush", daemon=True).start()


@dataclass
class _Anchor:
    """Where a chain run's children go: the span above them, the node path so far, and whether the run owns it."""

    span: trace.Span
    path: tuple[str, ...]
    owned: bool


class RunSpans(BaseCallbackHandler):
    """A LangChain callback handler that traces one graph run: give it in the run's ``config["callbacks"]``.

    Args:
        attrs: ``thread_id``, ``kind``, ``actor``, ``model`` of the run.
        hidden: strings never to export (scrubbed from error texts).
    """

    run_inline = True  # called in the event loop (or the node's worker thread), in order: parents before children

    def __init__(self, attrs: dict[str, str], *, hidden: list[str]) -> None:
        self.attrs = attrs
        self.hidden = [h for h in hidden if h]
        self.tracer = tracer()
        self._anchors: dict[UUID, _Anchor] = {}
        self._root: trace.Span | None = None
        self._interrupted = False
        self._lock = threading.Lock()

    def clean(self, text: str) -> str:
        """``text`` with every hidden string replaced by ``***``, cut to ``ERROR_CHARS``."""
        for secret in self.hidden:
            text = text.replace(secret, "***")
        return text[:ERROR_CHARS]

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open ``run`` for the graph's own run, a node span for a task; anything else passes its parent on."""
        with self._lock:
            if parent_run_id is None:
                self._root = self.tracer.start_span("run", attributes=self._run_attributes())
                self._anchors[run_id] = _Anchor(self._root, (), owned=False)
                return
            parent = self._anchors.get(parent_run_id)
            if parent is None:
                if self._root is None:
                    return
                parent = _Anchor(self._root, (), owned=False)
            tags = tags or []
            if HIDDEN_TAG in tags or not any(t.startswith(TASK_TAG) for t in tags):
                self._anchors[run_id] = _Anchor(parent.span, parent.path, owned=False)
                return
            name = str(kwargs.get("name") or (metadata or {}).get("langgraph_node") or "node")
            path = (*parent.path, name)
            span = self.tracer.start_span(
                name,
                context=trace.set_span_in_context(parent.span),
                attributes={
                    "orchestrator.thread_id": self.attrs["thread_id"],
                    "orchestrator.node": name,
                    "orchestrator.node.path": "/".join(path),
                    "langgraph.step": int((metadata or {}).get("langgraph_step", -1)),
                },
            )
            self._anchors[run_id] = _Anchor(span, path, owned=True)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        """Close the run's span (``done`` or ``interrupted``) or a node's (``ok``)."""
        self._finish(run_id, parent_run_id, None)

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Close the span with its outcome: an interrupt is ``interrupted``, a drain ``drained``, else an error."""
        self._finish(run_id, parent_run_id, error)

    def _finish(self, run_id: UUID, parent_run_id: UUID | None, error: BaseException | None) -> None:
        with self._lock:
            anchor = self._anchors.pop(run_id, None)
            if parent_run_id is None and self._root is not None:
                self._end_root(error)
                return
            if anchor is None or not anchor.owned:
                return
            span = anchor.span
            if isinstance(error, GraphInterrupt):
                self._interrupted = True
                span.set_attribute("orchestrator.outcome", "interrupted")
            elif error is None or isinstance(error, GraphBubbleUp):  # a Command to the parent graph is no failure
                span.set_attribute("orchestrator.outcome", "ok")
            else:
                self._set_error(span, error, "error")
            span.end()

    def _end_root(self, error: BaseException | None) -> None:
        root = self._root
        assert root is not None
        if isinstance(error, GraphDrained):
            root.set_attribute("orchestrator.outcome", "drained")
        elif error is not None:
            self._set_error(root, error, "failed")
        else:
            root.set_attribute("orchestrator.outcome", "interrupted" if self._interrupted else "done")
        for anchor in self._anchors.values():  # a cancelled run may leave tasks that never reported their end
            if anchor.owned:
                self._set_error(anchor.span, error or RuntimeError("the run ended first"), "error")
                anchor.span.end()
        self._anchors.clear()
        root.end()
        self._root = None
        flush_soon()

    def _set_error(self, span: trace.Span, error: BaseException, outcome: str) -> None:
        cause = getattr(error, "cause", None)  # a model failure by its cause only: its text may quote the prompt
        text = self.clean(f"{type(error).__name__}: {cause if isinstance(cause, str) else error}")
        span.set_attribute("orchestrator.outcome", outcome)
        span.set_attribute("orchestrator.error", text)
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(trace.Status(trace.StatusCode.ERROR, text))

    def _run_attributes(self) -> dict[str, str]:
        return {
            "orchestrator.thread_id": self.attrs["thread_id"],
            "gen_ai.conversation.id": self.attrs["thread_id"],
            "orchestrator.run.kind": self.attrs["kind"],
            "orchestrator.actor": self.attrs["actor"],
            "orchestrator.model": self.attrs["model"],
        }

    def node_span(self, parent_run_id: UUID | None) -> trace.Span | None:
        """The span a model call made under the chain run ``parent_run_id`` belongs to (its node's, or ``run``)."""
        with self._lock:
            anchor = self._anchors.get(parent_run_id) if parent_run_id is not None else None
            return anchor.span if anchor is not None else self._root


def add_model_span(row: LLMCall) -> None:
    """A ``chat <model>`` span for a model call that just ended, under the running node's span.

    Outside a traced run (no LangChain config in this task, or no :class:`RunSpans` in its callbacks) nothing is
    recorded.
    """
    config = var_child_runnable_config.get()
    manager = (config or {}).get("callbacks")
    handlers = getattr(manager, "handlers", None) or []
    spans = next((h for h in handlers if isinstance(h, RunSpans)), None)
    if spans is None:
        return
    parent = spans.node_span(getattr(manager, "parent_run_id", None))
    if parent is None:
        return
    ended = time.time_ns()
    provider = row.model.split("/", 1)[0] if "/" in row.model else "openai"
    span = spans.tracer.start_span(
        f"chat {row.model}",
        context=trace.set_span_in_context(parent),
        kind=trace.SpanKind.CLIENT,
        start_time=ended - int(row.latency_ms * 1_000_000),
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": provider,
            "gen_ai.request.model": row.model,
            "gen_ai.usage.input_tokens": row.prompt_tokens,
            "gen_ai.usage.output_tokens": row.completion_tokens,
            "orchestrator.role": row.role,
            "orchestrator.cost_usd": row.cost_usd,
            "orchestrator.outcome": "ok" if row.ok else "error",
        },
    )
    if not row.ok and row.error:
        cause = row.error.split(":", 1)[0].split(" (", 1)[0]
        span.set_attribute("error.type", cause)
        span.set_status(trace.Status(trace.StatusCode.ERROR, spans.clean(cause)))
    span.end(end_time=ended)
