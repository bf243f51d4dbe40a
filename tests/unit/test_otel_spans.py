"""Spans of small graphs exported to a real OTLP/HTTP receiver: nesting, interrupts, failures, nothing secret.

The span exporter is made once per process (on the first traced run), so one receiver serves the whole module.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt
from pydantic import SecretStr

from core.llm_failures import ModelUnreachable
from core.settings import Settings
from core.tracing import model_span, tracing_callbacks
from models.tables import LLMCall
from tests.integration.trace_receivers import OtlpReceiver, Span

KEY = "sk-unit-4f1d9c"


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        old = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
        try:
            yield receiver
        finally:
            if old is None:
                del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
            else:
                os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = old


class State(TypedDict):
    x: Annotated[list, operator.add]


class Sub(TypedDict):
    y: int


async def inner(s: Sub) -> dict[str, Any]:
    model_span(LLMCall(role="developer", model="replay/x", prompt_tokens=3, completion_tokens=4, latency_ms=5.0))
    return {"y": s["y"] + 1}


async def ask(s: State) -> dict[str, Any]:
    return {"x": [interrupt("ok?")]}


async def fail(s: State) -> dict[str, Any]:
    raise ModelUnreachable(f"replay mismatch: the request starts: 'my prompt' with {KEY}", "replay_mismatch")


def graph(last: Any) -> Any:
    sub = StateGraph(Sub)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    b = StateGraph(State)
    b.add_node("start_work", lambda s: {"x": [1]})
    b.add_node("team", sub.compile())
    b.add_node("last", last)
    b.add_edge(START, "start_work")
    b.add_conditional_edges("start_work", lambda s: [Send("team", {"y": 1}), Send("team", {"y": 2})], ["team"])
    b.add_edge("team", "last")
    b.add_edge("last", END)
    return b.compile(checkpointer=InMemorySaver())


async def run(g: Any, value: Any, thread: str) -> None:
    settings = Settings(api_key=SecretStr(KEY))
    config: Any = {"configurable": {"thread_id": thread}}
    config["callbacks"] = tracing_callbacks(settings, thread, "cli:test", "replay/x", value)
    async for _ in g.astream(value, config, stream_mode=["tasks"], subgraphs=True):
        pass


def exported(otlp: OtlpReceiver, thread: str) -> list[Span]:
    from core import otel_export

    assert otel_export._provider is not None
    otel_export._provider.force_flush()
    return [s for s in otlp.spans if s.attrs.get("orchestrator.thread_id") == thread or s.name.startswith("chat ")]


async def test_nodes_nest_through_subgraphs_and_an_interrupt_is_an_outcome(otlp: OtlpReceiver) -> None:
    g = graph(ask)
    await run(g, {"x": []}, "t-unit-1")
    await run(g, Command(resume="yes"), "t-unit-1")
    spans = exported(otlp, "t-unit-1")
    by_id = {s.span_id: s for s in spans}
    runs = {s.attrs["orchestrator.run.kind"]: s for s in spans if s.name == "run"}
    assert {k: r.attrs["orchestrator.outcome"] for k, r in runs.items()} == {"message": "interrupted", "resume": "done"}
    first = [s for s in spans if s.trace_id == runs["message"].trace_id and s.name != "run"]
    paths = sorted(s.attrs.get("orchestrator.node.path", s.name) for s in first)
    assert paths == ["chat replay/x", "chat replay/x", "last", "start_work", "team", "team", "team/inner", "team/inner"]
    for s in first:
        parent = by_id[s.parent]
        expected = {"start_work": "run", "team": "run", "last": "run", "inner": "team", "chat replay/x": "inner"}
        assert parent.name == expected[s.name]
    [asked] = [s for s in first if s.name == "last"]
    assert asked.attrs["orchestrator.outcome"] == "interrupted"
    chat = next(s for s in first if s.name.startswith("chat "))
    assert (chat.attrs["gen_ai.usage.input_tokens"], chat.attrs["gen_ai.usage.output_tokens"]) == (3, 4)
    assert chat.attrs["gen_ai.system"] == "replay" and chat.attrs["orchestrator.role"] == "developer"


async def test_a_failed_node_names_its_cause_without_the_prompt_or_the_key(otlp: OtlpReceiver) -> None:
    g = graph(fail)
    with pytest.raises(ModelUnreachable):
        await run(g, {"x": []}, "t-unit-2")
    spans = exported(otlp, "t-unit-2")
    [root] = [s for s in spans if s.name == "run"]
    [failed] = [s for s in spans if s.name == "last"]
    assert root.attrs["orchestrator.outcome"] == "failed" and failed.attrs["orchestrator.outcome"] == "error"
    assert failed.attrs["orchestrator.error"] == "ModelUnreachable: replay_mismatch" and failed.status_code == 2
    assert root.attrs["orchestrator.run.kind"] == "message"
    values = [str(v) for s in spans for v in s.attrs.values()]
    assert not [v for v in values if KEY in v or "my prompt" in v]


def test_a_model_call_outside_a_traced_run_adds_nothing(otlp: OtlpReceiver) -> None:
    from core.otel_export import tracer

    tracer()  # the exporter is loaded, as after any traced run in this process
    before = len(otlp.spans)
    model_span(LLMCall(role="po", model="replay/x", latency_ms=1.0))
    exported(otlp, "none")
    assert len(otlp.spans) == before
