"""The real API server (uvicorn in a subprocess) taking hello-api from a message to a live service, over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from services import deploys
from tests.fixtures.api_server import ApiServer, start_api, stop_api

HELLO = "I need a small HTTP service called hello-api with a /health endpoint and unit tests."


def pids_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


async def stop_service(settings: Settings, project: str) -> None:
    """Stop the deployed service with the real stop playbook, then kill anything still running from its releases."""
    releases = settings.release_root.resolve()
    try:
        await deploys.stop_service(settings, project=project, server=deploys.local_server())
    finally:
        for pid in pids_with(str(releases / project)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


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


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` for each event of an SSE stream; comments (keep-alive pings) are skipped."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield event, json.loads("\n".join(data))


async def run_sse(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines()]
    return list(parse_sse(iter(lines)))


@pytest.mark.slow
async def test_api_takes_hello_api_from_message_to_live(api: ApiServer) -> None:
    timeout = httpx.Timeout(10, read=180)
    async with api.client("operator", timeout=timeout) as client, api.client("approver", timeout=timeout) as approver:
        created = await client.post("/threads")
        assert created.status_code == 201
        tid = created.json()["thread_id"]
        assert (await client.get(f"/threads/{tid}/interrupts")).status_code == 404, "nothing has run on it yet"

        empty = await client.post(f"/threads/{tid}/messages", json={"text": "  "})
        assert empty.status_code == 422 and "empty" in empty.json()["detail"]
        assert (await client.get(f"/threads/{tid}/interrupts")).status_code == 404, "a refused message runs nothing"

        events = await run_sse(client, f"/threads/{tid}/messages", {"text": HELLO})
        kinds = [kind for kind, _ in events]
        started = {data["node"] for kind, data in events if kind == "node_start"}
        assert {"zavhoz", "engineering"} <= started, kinds
        interrupts = [data for kind, data in events if kind == "interrupt"]
        assert len(interrupts) == 1 and interrupts[0]["payload"]["kind"] == "deploy_approval", events
        assert kinds[-1] == "done" and "error" not in kinds
        assert all(data["kind"] == kind for kind, data in events)

        pending = (await client.get(f"/threads/{tid}/interrupts")).json()
        assert [p["id"] for p in pending] == [interrupts[0]["interrupt_id"]]
        assert pending[0]["payload"]["project"] == "hello-api"
        threads = (await client.get("/threads")).json()
        assert [t["pending"] for t in threads if t["id"] == tid] == [pending]

        busy = await client.post(f"/threads/{tid}/messages", json={"text": "hello?"})
        assert busy.status_code == 409 and "waits for an answer" in busy.json()["detail"]

        wrong = await client.post(f"/threads/{tid}/resume", json={"action": "reject"})
        assert wrong.status_code == 422 and "reason" in wrong.json()["detail"]
        not_an_action = await client.post(f"/threads/{tid}/resume", json={"action": "maybe"})
        assert not_an_action.status_code == 422
        assert (await client.get(f"/threads/{tid}/interrupts")).json() == pending, "a refused answer changes nothing"

        unknown = await client.post("/threads/t-nosuchthread/resume", json={"action": "approve"})
        assert unknown.status_code == 404 and "unknown thread" in unknown.json()["detail"]
        assert (await client.get("/threads/t-nosuchthread/interrupts")).status_code == 404

        refused = await client.post(f"/threads/{tid}/resume", json={"action": "approve"})
        assert refused.status_code == 403 and "approver" in refused.json()["detail"], "an operator cannot approve"
        events = await run_sse(approver, f"/threads/{tid}/resume", {"action": "approve"})
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "done" and "interrupt" not in kinds and "error" not in kinds, events
        said = [data["text"] for kind, data in events if kind == "message"]
        assert said and "hello-api is live" in said[-1], said
        assert (await client.get(f"/threads/{tid}/interrupts")).json() == []
        again = await approver.post(f"/threads/{tid}/resume", json={"action": "approve"})
        assert again.status_code == 409 and "nothing pending" in again.json()["detail"]

        projects = (await client.get("/projects")).json()
        hello = next(p for p in projects if p["name"] == "hello-api")
        assert hello["status"] == "active" and hello["server"] == "localhost"
        assert (hello["requested_by"], hello["approved_by"]) == ("token:operator", "token:approver")
        assert hello["url"] == f"http://127.0.0.1:{hello['port']}/health"
        assert (await client.get("/projects/hello-api")).json() == hello
        missing = await client.get("/projects/no-such-project")
        assert missing.status_code == 404 and "unknown project" in missing.json()["detail"]
        servers = (await client.get("/servers")).json()
        assert [(s["name"], s["status"]) for s in servers] == [("localhost", "ready")]
        assert "facts" not in servers[0]

    assert httpx.get(hello["url"], timeout=5, trust_env=False).status_code == 200
    assert "Traceback" not in api.log.read_text()


@pytest.mark.slow
async def test_a_client_that_disconnects_does_not_cancel_the_run(api: ApiServer) -> None:
    async with api.client("operator", timeout=60) as client:
        thread_id = (await client.post("/threads")).json()["thread_id"]
        async with client.stream("POST", f"/threads/{thread_id}/messages", json={"text": HELLO}) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:") and '"node": "engineering"' in line:
                    break  # leave mid-run: the stream closes with the Engineering branch just started
        pending: list[dict[str, Any]] = []
        deadline = time.monotonic() + 90
        while not pending and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            pending = (await client.get(f"/threads/{thread_id}/interrupts")).json()
    assert pending and pending[0]["payload"]["kind"] == "deploy_approval"
    assert pending[0]["payload"]["tests"]["passed"] == 4 and pending[0]["payload"]["attestation"]["commit"]


async def test_servers_are_registered_over_http_with_clear_refusals(api: ApiServer) -> None:
    async with api.client("admin", timeout=30) as client:
        made = await client.post("/servers", json={"name": "web-1", "address": "10.0.0.5", "provision": True})
        assert made.status_code == 201, made.text
        assert (made.json()["name"], made.json()["status"]) == ("web-1", "provisioning")

        again = await client.post("/servers", json={"name": "web-1", "address": "10.0.0.6"})
        assert again.status_code == 409 and "already registered" in again.json()["detail"]
        bad = await client.post("/servers", json={"name": "Web 1", "address": "not a host!", "port_range_start": 9})
        assert bad.status_code == 422
        assert {tuple(e["loc"]) for e in bad.json()["detail"]} == {("body", "name"), ("body", "address")}
        trail = (await client.get("/events", params={"subject_type": "server"})).json()
        assert [(e["to_status"], e["actor"]) for e in trail] == [
            ("provisioning", "token:admin"),
            ("ready", "system:startup"),
        ]

        listed = {s["name"]: s for s in (await client.get("/servers")).json()}
    assert set(listed) == {"localhost", "web-1"} and listed["web-1"]["address"] == "10.0.0.5"
