"""Stored traces of a real run: the real API (uvicorn in a subprocess) takes hello-api to the deploy approval and past
it on the recorded model; the real CLI (`orchestrator runs`, `runs show`, `costs`) and the API read the rows back.

What is proved: the stored node timeline equals the nodes the run streamed, in order; every model call names its
run and node; the run listing, the slowest node and the token and cost sums agree with the rows; the CLI and the
API answer the same numbers; another operator sees none of it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from models.tables import LLMCall
from models.time_tables import NodeRun
from tests.fixtures.api_server import ApiServer, make_key, orchestrator, orchestrator_env, start_api, stop_api
from tests.integration.helpers import rows
from tests.integration.test_api import HELLO, run_sse, stop_service

pytestmark = pytest.mark.slow  # a full run with its deploy: about a minute


@pytest.fixture
async def api(settings: Settings, tmp_path: Path) -> AsyncIterator[ApiServer]:
    server = start_api(settings, tmp_path / "api.log")
    try:
        yield server
    finally:
        try:
            await stop_service(settings, "hello-api")
        finally:
            stop_api(server)


def cli_json(settings: Settings, *args: str) -> Any:
    """`orchestrator --data-dir D ARGS... --json`, parsed; it must exit 0."""
    done = orchestrator(settings.data_dir, *args, "--json", env=orchestrator_env(settings))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def where(path: Any, node: str) -> str:
    """``engineering/run_phase`` from an event's path list (or a row's ``/``-joined path) and node."""
    parts = [*path] if isinstance(path, list) else [p for p in str(path).split("/") if p]
    return "/".join([*parts, node])


def streamed(events: list[tuple[str, dict[str, Any]]], kind: str) -> list[str]:
    """The nodes of ``kind`` events (``node_start`` / ``node_end``), in the order the run streamed them."""
    return [where(data["path"], data["node"]) for k, data in events if k == kind]


def check_timeline(nodes: list[NodeRun], events: list[tuple[str, dict[str, Any]]]) -> None:
    """The stored rows of one run are the nodes it streamed: ends in order, and every start has its row."""
    stored = sorted(nodes, key=lambda n: n.id or 0)  # written as each node ended
    ended = [where(n.path, n.node) for n in stored if n.outcome != "interrupted"]
    assert ended == streamed(events, "node_end")
    assert Counter(where(n.path, n.node) for n in stored) == Counter(streamed(events, "node_start"))
    stopped = Counter(streamed(events, "node_start")) - Counter(streamed(events, "node_end"))
    assert Counter(where(n.path, n.node) for n in stored if n.outcome == "interrupted") == stopped
    assert all(n.duration_ms >= 0 for n in stored)


def usage_of(calls: list[LLMCall]) -> tuple[int, int, float]:
    """(number of calls, tokens, cost) of model call rows."""
    return len(calls), sum(c.prompt_tokens + c.completion_tokens for c in calls), sum(c.cost_usd for c in calls)


async def test_a_run_is_stored_node_by_node_and_its_costs_add_up(api: ApiServer, settings: Settings) -> None:
    timeout = httpx.Timeout(10, read=180)
    async with api.client("operator", timeout=timeout) as op, api.client("approver", timeout=timeout) as approver:
        tid = (await op.post("/threads")).json()["thread_id"]
        asked = await run_sse(op, f"/threads/{tid}/messages", {"text": HELLO})
        assert [d["payload"]["kind"] for k, d in asked if k == "interrupt"] == ["deploy_approval"], asked
        approved = await run_sse(approver, f"/threads/{tid}/resume", {"action": "approve"})
        assert approved[-1][0] == "done" and "error" not in [k for k, _ in approved], approved

        # the CLI's listing: the resume run, then the message run (newest first), with how each ended
        listed = cli_json(settings, "runs", tid)
        assert [(r["kind"], r["outcome"]) for r in listed] == [("resume", "done"), ("message", "interrupted")]
        resume_id, message_id = (r["id"] for r in listed)
        assert all(r["thread_id"] == tid and r["actor"] and r["finished_at"] for r in listed)

        node_rows: list[NodeRun] = await rows(settings, NodeRun)
        call_rows: list[LLMCall] = await rows(settings, LLMCall)
        for run_id, events in ((message_id, asked), (resume_id, approved)):
            check_timeline([n for n in node_rows if n.run_id == run_id], events)
        assert {n.thread_id for n in node_rows} == {tid}
        interrupted = [n for n in node_rows if n.outcome == "interrupted"]
        assert interrupted and {n.run_id for n in interrupted} == {message_id}, "the run stopped at the approval"

        # every model call names its run and the node that made it (a node of that run)
        assert call_rows and all(c.run_id is not None and c.node is not None for c in call_rows)
        assert {c.run_id for c in call_rows} <= {message_id, resume_id}
        for c in call_rows:
            assert c.node in {where(n.path, n.node) for n in node_rows if n.run_id == c.run_id}, c
        assert any("/" in (c.node or "") for c in call_rows), "calls made inside the engineering subgraph"

        # one run's timeline: the slowest node, the sums of its model calls
        for summary in listed:
            shown = cli_json(settings, "runs", "show", summary["id"])
            leaves = [n for n in shown["nodes"] if not n["subgraph"]]
            assert shown["slowest"] is not None and shown["slowest"]["slowest"]
            assert shown["slowest"]["duration_ms"] == max(n["duration_ms"] for n in leaves)
            assert [n["where"] for n in shown["nodes"] if n["slowest"]] == [shown["slowest"]["where"]]
            mine = [c for c in call_rows if c.run_id == summary["id"]]
            calls, tokens, cost = usage_of(mine)
            totals = shown["totals"]
            assert (totals["calls"], totals["tokens"]) == (calls, tokens)
            assert totals["cost_usd"] == pytest.approx(cost)
            assert (summary["calls"], summary["tokens"]) == (calls, tokens)
            assert [c["id"] for c in shown["calls"]] == sorted(c.id or 0 for c in mine)
            assert sorted(n["duration_ms"] for n in shown["nodes"]) == sorted(
                n.duration_ms for n in node_rows if n.run_id == summary["id"]
            )
            served = (await op.get(f"/runs/{summary['id']}")).json()
            assert served["totals"] == shown["totals"] and served["slowest"]["where"] == shown["slowest"]["where"]
            assert [n["duration_ms"] for n in served["nodes"]] == [n["duration_ms"] for n in shown["nodes"]]
            assert [c["tokens"] for c in served["calls"]] == [c["tokens"] for c in shown["calls"]]
        message_calls = usage_of([c for c in call_rows if c.run_id == message_id])
        assert message_calls[0] > 0 and message_calls[1] > 0, "the message run asked the model"

        # costs: the roles add up to the project's total, which is the thread's model calls
        thread_calls = usage_of([c for c in call_rows if c.thread_id == tid])
        for args in ((), ("--project", "hello-api"), ("--since", "1h")):
            report = cli_json(settings, "costs", *args)
            total = report["total"]
            assert (total["calls"], total["tokens"]) == thread_calls[:2], args
            assert total["cost_usd"] == pytest.approx(thread_calls[2])
            assert sum(r["tokens"] for r in report["roles"]) == total["tokens"]
            assert sum(r["calls"] for r in report["roles"]) == total["calls"]
            assert sum(r["cost_usd"] for r in report["roles"]) == pytest.approx(total["cost_usd"])
            assert [p["project"] for p in report["projects"]] == ["hello-api"]
            assert {r["role"] for r in report["roles"]} >= {"po", "developer"}
        assert cli_json(settings, "costs", "--since", "2099-01-01")["total"]["calls"] == 0

        # the API answers the same numbers
        runs = (await op.get(f"/threads/{tid}/runs")).json()
        pick = ("id", "kind", "outcome", "calls", "tokens", "cost_usd", "nodes")
        assert [{k: r[k] for k in pick} for r in runs] == [{k: r[k] for k in pick} for r in listed]
        served_costs = (await op.get("/costs", params={"project": "hello-api"})).json()
        assert served_costs["total"] == cli_json(settings, "costs", "--project", "hello-api")["total"]
        later = await op.get("/costs", params={"since": "2099-01-01T00:00:00Z"})
        assert later.status_code == 200 and later.json()["total"]["calls"] == 0
        unknown = await op.get("/costs", params={"project": "no-such-project"})
        assert unknown.status_code == 404 and "no project" in unknown.json()["detail"]
        assert (await op.get("/runs/r-000000000000")).status_code == 404

    # another operator (and a viewer, who owns no thread) sees neither the runs nor a run; an approver does
    key = make_key(settings.data_dir, "other-operator", "operator", orchestrator_env(settings))
    async with httpx.AsyncClient(base_url=api.base_url, headers={"X-Api-Key": key}, trust_env=False) as other:
        for path in (f"/threads/{tid}/runs", f"/runs/{message_id}"):
            refused = await other.get(path)
            assert refused.status_code == 404, (path, refused.text)
    async with api.client("viewer") as viewer, api.client("approver") as approver:
        assert (await viewer.get(f"/runs/{message_id}")).status_code == 404
        assert (await approver.get(f"/runs/{message_id}")).status_code == 200
        assert len((await approver.get(f"/threads/{tid}/runs")).json()) == 2

    bad = orchestrator(settings.data_dir, "costs", "--since", "yesterday", env=orchestrator_env(settings))
    assert bad.returncode == 2 and "neither a duration" in bad.stderr
    missing = orchestrator(settings.data_dir, "runs", "show", "r-000000000000", env=orchestrator_env(settings))
    assert missing.returncode == 2 and "no run" in missing.stderr
    table = orchestrator(settings.data_dir, "runs", "show", message_id, env=orchestrator_env(settings))
    assert table.returncode == 0 and "slowest" in table.stdout and "total:" in table.stdout, table.stdout
    assert "Traceback" not in api.log.read_text()
