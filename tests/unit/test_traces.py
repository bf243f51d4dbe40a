"""Run traces on a real SQLite file: what ``RunTrace`` stores from LangGraph's ``tasks`` items, what the queries
answer (the slowest node, sums, costs by project, role and model), and where a model call finds its run and node
inside a real LangGraph graph with a subgraph."""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import START, StateGraph
from langgraph.types import Send
from sqlmodel import col, select

from core.db import Database
from core.trace_position import graph_position
from models.enums import AccessRole, ProjectStatus
from models.tables import LLMCall, Project, ThreadRecord
from models.time_tables import NodeRun, Run
from runtime.traces import RunTrace
from services.identities import Identity
from services.traces import costs, parse_date_time, parse_since, run_timeline, thread_runs, thread_visible


def start(task_id: str, name: str) -> dict[str, Any]:
    """A ``tasks`` stream start item, as LangGraph sends it."""
    return {"id": task_id, "name": name, "input": {}, "triggers": ("branch:to:" + name,)}


def end(task_id: str, name: str, *, error: Exception | None = None, interrupts: list[Any] | None = None) -> dict:
    """A ``tasks`` stream end item, as LangGraph sends it."""
    return {"id": task_id, "name": name, "error": error, "result": {}, "interrupts": interrupts or []}


async def traced_run(db: Database, thread_id: str = "t-1") -> RunTrace:
    """A run with a top node, a subgraph of two nodes, a failed node and one stopped at an interrupt."""
    trace = await RunTrace.begin(db, thread_id, "message", "cli:me", "replay/hello-api")
    await trace.task(start("a", "call_po"), ())
    await trace.task(end("a", "call_po"), ())
    await trace.task(start("b", "engineering"), ())
    await trace.task(start("c", "run_phase"), ("engineering",))
    await trace.task(end("c", "run_phase"), ("engineering",))
    await trace.task(start("d", "run_phase"), ("engineering",))
    await trace.task(end("d", "run_phase", error=ValueError("bad answer")), ("engineering",))
    await trace.task(end("b", "engineering"), ())
    await trace.task(start("e", "request_deploy_approval"), ())
    await trace.task(end("e", "request_deploy_approval", interrupts=[{"id": "i1", "value": {}}]), ())
    await trace.task(end("zz", "never_started"), ())  # an end without its start (a resumed stream): skipped
    await trace.finish("interrupted")
    return trace


async def test_a_trace_stores_each_node_end_and_the_outcome_once(db: Database) -> None:
    trace = await traced_run(db)
    await trace.finish("failed", RuntimeError("late"))  # a second end changes nothing
    async with db.session() as s:
        run = await s.get(Run, trace.run_id)
        nodes = list((await s.exec(select(NodeRun).order_by(col(NodeRun.id)))).all())
    assert run is not None and (run.kind, run.actor, run.model) == ("message", "cli:me", "replay/hello-api")
    assert (run.outcome, run.error) == ("interrupted", None) and run.finished_at is not None
    assert trace.run_id.startswith("r-") and len(trace.run_id) == 14
    assert [(n.path, n.node, n.outcome) for n in nodes] == [
        ("", "call_po", "ok"),
        ("engineering", "run_phase", "ok"),
        ("engineering", "run_phase", "error"),
        ("", "engineering", "ok"),
        ("", "request_deploy_approval", "interrupted"),
    ]
    assert nodes[2].error == "ValueError: bad answer"
    assert all(n.run_id == trace.run_id and n.thread_id == "t-1" and n.duration_ms >= 0 for n in nodes)


async def test_a_failed_write_is_logged_and_the_run_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = Database(f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db")
    try:
        with caplog.at_level(logging.WARNING, logger="runtime.traces"):
            trace = await traced_run(broken)
    finally:
        await broken.dispose()
    assert trace.finished
    assert "could not record the start of run" in caplog.text and "could not record a node of run" in caplog.text


async def calls(db: Database, *rows: LLMCall) -> None:
    async with db.session() as s:
        s.add_all(rows)


async def test_the_timeline_marks_the_slowest_node_that_is_not_a_subgraph(db: Database) -> None:
    trace = await traced_run(db)
    async with db.session() as s:
        for n in (await s.exec(select(NodeRun))).all():  # fixed durations: the subgraph node is the longest
            n.duration_ms = {"engineering": 900.0, "call_po": 300.0, "request_deploy_approval": 1.0}.get(n.node, 0.0)
            n.duration_ms = n.duration_ms or (400.0 if n.outcome == "ok" else 200.0)
            s.add(n)
    await calls(
        db,
        LLMCall(role="po", model="m", thread_id="t-1", run_id=trace.run_id, node="call_po", prompt_tokens=10,
                completion_tokens=5, cost_usd=0.25, latency_ms=30),
        LLMCall(role="developer", model="m", thread_id="t-1", run_id=trace.run_id, node="engineering/run_phase",
                prompt_tokens=100, completion_tokens=50, cost_usd=1.5, latency_ms=70),
        LLMCall(role="po", model="m", thread_id="t-1", run_id="r-other", prompt_tokens=7),
    )  # fmt: skip
    async with db.session() as s:
        timeline = await run_timeline(s, trace.run_id)
        listed = await thread_runs(s, "t-1")
        assert await run_timeline(s, "r-000000000000") is None
    assert timeline is not None and timeline.slowest is not None
    assert (timeline.slowest.where, timeline.slowest.duration_ms) == ("engineering/run_phase", 400.0)
    assert [n.where for n in timeline.nodes if n.subgraph] == ["engineering"]
    assert [n.slowest for n in timeline.nodes].count(True) == 1
    totals = timeline.as_dict()["totals"]
    assert (totals["calls"], totals["tokens"], totals["cost_usd"]) == (2, 165, 1.75)
    assert [c.node for c in timeline.calls] == ["call_po", "engineering/run_phase"]
    assert all(n.offset_ms >= 0 for n in timeline.nodes)
    assert [(r.id, r.nodes, r.usage.tokens, r.outcome) for r in listed] == [(trace.run_id, 5, 165, "interrupted")]


async def test_costs_group_by_project_role_and_model_and_add_up(db: Database) -> None:
    now = datetime.now(UTC)
    async with db.session() as s:
        s.add(Project(name="alpha", thread_id="t-a", status=ProjectStatus.active))
        s.add(Project(name="beta", thread_id="t-b", status=ProjectStatus.draft))
    await calls(
        db,
        LLMCall(role="po", model="gpt-x", thread_id="t-a", prompt_tokens=10, completion_tokens=2, cost_usd=0.5),
        LLMCall(role="developer", model="gpt-x", thread_id="t-a", prompt_tokens=20, completion_tokens=8, cost_usd=1.0),
        LLMCall(role="developer", model="gpt-y", thread_id="t-a", prompt_tokens=1, completion_tokens=1, cost_usd=0.1),
        LLMCall(role="po", model="gpt-x", thread_id="t-b", prompt_tokens=5, completion_tokens=5, cost_usd=0.2),
        LLMCall(role="po", model="gpt-x", thread_id="t-none", prompt_tokens=3, completion_tokens=0, cost_usd=0.0),
        LLMCall(role="po", model="gpt-x", thread_id="t-a", prompt_tokens=99, cost_usd=9.0,
                created_at=now - timedelta(days=3)),
    )  # fmt: skip
    async with db.session() as s:
        everything = await costs(s)
        alpha = await costs(s, project="alpha")
        recent = await costs(s, project="alpha", since=parse_since("1d"))
        with pytest.raises(LookupError, match="no project named 'gamma'"):
            await costs(s, project="gamma")
    assert everything.total.calls == 6 and everything.total.cost_usd == pytest.approx(10.8)
    by_project = everything.by("project")
    assert set(by_project) == {"alpha", "beta", None}
    assert by_project["alpha"].tokens == 10 + 2 + 20 + 8 + 1 + 1 + 99
    assert sum(u.tokens for u in alpha.by("role").values()) == alpha.total.tokens == by_project["alpha"].tokens
    assert [(r.role, r.model, r.usage.calls) for r in recent.rows] == [
        ("developer", "gpt-x", 1),
        ("po", "gpt-x", 1),
        ("developer", "gpt-y", 1),
    ], "most expensive first; the call from 3 days ago is left out"
    shape = everything.as_dict()
    assert {r["project"] for r in shape["projects"]} == {"alpha", "beta", None}
    assert sum(r["cost_usd"] for r in shape["roles"]) == pytest.approx(shape["total"]["cost_usd"])


def test_since_takes_a_duration_or_an_iso_time() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("2026-12-01T08:00+02:00") == datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    first = datetime.min.replace(tzinfo=UTC)
    assert parse_since("999999w", now) == parse_since("0001-01-01T00:00+05:00") == first, "clamped, not an error"
    for bad in ("yesterday", "7 days", "-1d", ""):
        with pytest.raises(ValueError, match="neither a duration"):
            parse_since(bad, now)


def test_the_api_takes_rfc3339_date_times_only() -> None:
    assert parse_date_time("2026-12-01T08:00:00.5+02:00") == datetime(2026, 12, 1, 6, 0, 0, 500000, tzinfo=UTC)
    assert (
        parse_date_time("2026-12-01t08:00:00z")
        == parse_date_time("2026-12-01 08:00:00")
        == parse_since("2026-12-01T08:00Z")
    )
    for bad in ("0.5", "1700000000", "2026-12-01", "2024-01-01T12:99:00Z", "7d", ""):
        with pytest.raises(ValueError, match="not an RFC 3339 date-time"):
            parse_date_time(bad)


async def test_a_thread_is_visible_to_its_owner_and_approvers_only(db: Database) -> None:
    async with db.session() as s:
        s.add(ThreadRecord(id="t-mine", title="x", owner="token:op"))
    op, other = Identity("token:op", AccessRole.operator), Identity("token:op2", AccessRole.operator)
    boss, viewer = Identity("token:boss", AccessRole.approver), Identity("token:v", AccessRole.viewer)
    async with db.session() as s:
        assert await thread_visible(s, "t-mine", op) and await thread_visible(s, "t-mine", boss)
        assert not await thread_visible(s, "t-mine", other) and not await thread_visible(s, "t-mine", viewer)
        assert not await thread_visible(s, "t-unknown", boss)


@dataclass
class Ctx:
    run_id: str | None


class State(TypedDict):
    seen: Annotated[list[tuple[str | None, str | None]], operator.add]


def record_position(state: State) -> dict[str, Any]:
    return {"seen": [graph_position()]}


async def arecord_position(state: State) -> dict[str, Any]:
    return {"seen": [graph_position()]}


async def test_a_call_inside_a_node_finds_its_run_and_node_path() -> None:
    inner = StateGraph(State)
    inner.add_node("run_phase", arecord_position)
    inner.add_node("check", record_position)  # a sync node: LangGraph runs it in a worker thread
    inner.add_edge(START, "run_phase")
    inner.add_edge("run_phase", "check")
    outer = StateGraph(State, context_schema=Ctx)
    outer.add_node("call_po", arecord_position)
    outer.add_node("engineering", inner.compile())
    outer.add_edge(START, "call_po")
    outer.add_conditional_edges("call_po", lambda s: [Send("engineering", {"seen": []})], ["engineering"])
    out = await outer.compile().ainvoke({"seen": []}, context=Ctx(run_id="r-0123456789ab"))
    assert out["seen"] == [
        ("r-0123456789ab", "call_po"),
        ("r-0123456789ab", "engineering/run_phase"),
        ("r-0123456789ab", "engineering/check"),
    ]
    assert graph_position() == (None, None), "outside a graph run"
