"""Traces of graph runs for outside tools: OpenTelemetry over OTLP, and LangSmith through LangChain's own tracer.

OpenTelemetry is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (the
variables of the OTLP exporter spec, https://opentelemetry.io/docs/specs/otel/protocol/exporter/) and
``OTEL_SDK_DISABLED`` is not ``true``. Each run then gets a LangChain callback handler
(:mod:`core.otel_export`) that turns LangGraph's chain callbacks into spans: ``run``, a child per node execution
(nested through subgraphs), and model calls under their node (:func:`model_span`). Without those variables nothing
of the SDK is imported: this module only reads the environment.

LangSmith is LangChain's: ``LANGSMITH_TRACING=true`` with ``LANGSMITH_API_KEY`` (and optionally
``LANGSMITH_ENDPOINT``, ``LANGSMITH_PROJECT``) makes LangChain add its ``LangChainTracer`` to every run next to
ours. Its client sends from a background thread; a short CLI process could end before it has, so the first traced
run registers an exit hook that flushes it (:func:`langsmith_enabled`).
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import Settings
    from models.tables import LLMCall

log = logging.getLogger(__name__)

OTLP_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""Either one turns the OpenTelemetry export on (the traces-specific one wins, as the exporter reads them)."""
LANGSMITH_FLUSH_S = 10.0
"""How long a process waits at exit for LangSmith's queue to drain (seconds)."""
_langsmith_hooked = False


def otel_enabled() -> bool:
    """Whether spans are exported: an OTLP endpoint is configured and the SDK is not disabled."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(name, "").strip() for name in OTLP_ENDPOINT_VARS)


def langsmith_enabled() -> bool:
    """Whether LangChain's LangSmith tracer is on (``LANGSMITH_TRACING`` or the older ``LANGCHAIN_TRACING_V2``)."""
    return any(
        os.environ.get(name, "").strip().lower() == "true" for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2")
    )


def run_kind(value: Any) -> str:
    """What started a run, from the value given to ``astream``: ``message``, ``resume`` or ``continue``."""
    from langgraph.types import Command

    if value is None:
        return "continue"
    return "resume" if isinstance(value, Command) else "message"


def tracing_callbacks(settings: Settings, thread_id: str, actor: str, model: str, value: Any) -> list[Any] | None:
    """The callback handlers to put in a run's config (``config["callbacks"]``), or None when nothing exports.

    Args:
        settings: the process settings (its model API key is scrubbed from every span attribute).
        thread_id: the run's thread.
        actor: who started the run (an identity name).
        model: the run's default model.
        value: what ``astream`` is given (a message input, a ``Command(resume=...)`` or None): gives the run kind.

    Returns:
        ``[handler]`` with an OpenTelemetry span handler when an OTLP endpoint is set; None otherwise. LangSmith
        needs no handler here (LangChain adds its own); its exit flush is registered on the way.
    """
    if langsmith_enabled():
        _hook_langsmith_flush()
    if not otel_enabled():
        return None
    from core.otel_export import RunSpans

    hidden = [settings.api_key.get_secret_value()] if settings.api_key else []
    attrs = {"thread_id": thread_id, "kind": run_kind(value), "actor": actor, "model": model}
    return [RunSpans(attrs, hidden=hidden)]


def model_span(row: LLMCall) -> None:
    """Add a model call, just finished, as a span under the node that made it (no-op when no span handler runs).

    ``row`` is the call's ``llmcall`` row (role, model, tokens, cost, latency in ms, ok/error): the span ends now
    and started ``latency_ms`` earlier. The node is found from the LangChain config of the running task
    (``langchain_core.runnables.config.var_child_runnable_config``), so concurrent runs never mix.
    """
    import sys

    if "core.otel_export" not in sys.modules:  # no run of this process exports spans: nothing to import
        return
    from core.otel_export import add_model_span

    try:
        add_model_span(row)
    except Exception:  # a broken trace never breaks a model call
        log.warning("could not add a model-call span", exc_info=True)


def _hook_langsmith_flush() -> None:
    """Once per process: make sure LangSmith's client exists, then flush it at exit (after it would close)."""
    global _langsmith_hooked
    if _langsmith_hooked:
        return
    _langsmith_hooked = True
    from langchain_core.tracers.langchain import get_client

    client = get_client()  # created now, so its own exit hook (closing its session) runs after ours

    def flush() -> None:
        try:
            client.flush(timeout=LANGSMITH_FLUSH_S)
        except Exception:  # an unreachable LangSmith never fails the command that used it
            log.warning("LangSmith traces were not all sent", exc_info=True)

    atexit.register(flush)
