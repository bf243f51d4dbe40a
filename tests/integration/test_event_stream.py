"""The domain event stream against real processes: ``GET /events`` as Server-Sent Events from a real
``orchestrator api``, changes made by other ``orchestrator`` processes (tokens, webhooks, a sync pass), a resume
with ``Last-Event-ID`` that loses and repeats nothing, and ``orchestrator events --follow`` stopped with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.conftest import REPO_ROOT
from tests.fixtures.api_server import ApiServer, orchestrator, orchestrator_env, start_api, stop_api
from tests.integration.test_api import HELLO, run_sse, stop_service

STREAM = {"Accept": "text/event-stream"}
WAIT_S = 60.0
"""Longest wait for one expected event (a loaded 2-core machine starts a CLI process in seconds)."""

Sse = tuple[int, str, dict[str, Any]]
"""One stream event: (id, event, data)."""


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_api(settings, tmp_path / "api.log")
    try:
        yield server
    finally:
        stop_api(server)


async def sse(response: httpx.Response) -> AsyncIterator[Sse]:
    """The events of an SSE response as they arrive; comments (keep-alives) are skipped."""
    event_id, event = "", "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield int(event_id), event, json.loads("\n".join(data))
            event_id, event, data = "", "message", []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            event = value
        elif field == "data":
            data.append(value)


async def take(events: AsyncIterator[Sse], count: int) -> list[Sse]:
    """The next ``count`` events (each within :data:`WAIT_S`)."""
    return [await asyncio.wait_for(anext(events), WAIT_S) for _ in range(count)]


async def until(events: AsyncIterator[Sse], reason_part: str) -> list[Sse]:
    """Events up to and including the audit row whose reason contains ``reason_part``."""
    got: list[Sse] = []
    while not got or reason_part not in str(got[-1][2]["data"].get("reason")):
        got += await take(events, 1)
    return got


async def cli(server: ApiServer, settings: Settings, *args: str, stdin: str | None = None) -> str:
    """Run ``orchestrator ARGS`` (another process than the API) to its end; its stdout."""
    if stdin is None:
        done = await asyncio.to_thread(orchestrator, server.data_dir, *args, env=orchestrator_env(settings))
    else:
        cmd = [sys.executable, "-m", "cli.main", "--data-dir", str(server.data_dir), *args]
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=REPO_ROOT, env=orchestrator_env(settings), stdin=-1, stdout=-1, stderr=-1
        )
        out, error = await proc.communicate(stdin.encode())
        assert proc.returncode == 0, error.decode()
        return out.decode()
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_stream_shows_other_processes_changes_and_resumes_with_nothing_lost_or_repeated(
    api: ApiServer, settings: Settings
) -> None:
    timeout = httpx.Timeout(10, read=WAIT_S)
    async with api.client("viewer", timeout=timeout) as client:
        async with client.stream("GET", "/events", headers=STREAM) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse(response)
            await cli(api, settings, "token", "create", "watcher-1", "--role", "viewer")
            seen = await until(events, "'watcher-1' created")
            await cli(api, settings, "webhooks", "add", "http://127.0.0.1:9/hook", "--events", "all",
                      "--secret-from-stdin", stdin="s3cret")  # fmt: skip
            seen += await until(events, "webhook 1 to http://127.0.0.1:9/hook")
        ids = [i for i, _, _ in seen]
        assert ids == sorted(set(ids)), "ids only grow"
        assert all(kind == "audit" == data["kind"] and data["id"] == i for i, kind, data in seen)
        assert seen[0][2]["actor"].startswith("cli:") and seen[0][2]["subject_type"] == "token"
        assert "s3cret" not in json.dumps([data for _, _, data in seen]), "never a secret"
        last = ids[-1]

        # while nobody listens: more changes, by other processes, of several kinds
        await cli(api, settings, "token", "create", "watcher-2", "--role", "operator")
        await cli(api, settings, "token", "revoke", "watcher-1")
        await cli(api, settings, "sync", "--once", "--only", "server_sync")
        lines = (await cli(api, settings, "events", "--after", str(last), "--json")).splitlines()
        missed = [json.loads(line) for line in lines]
        kinds = {m["kind"] for m in missed}
        assert {"audit", "sync.pass"} <= kinds, missed
        assert any(m["kind"] == "sync.pass" and m["data"]["worker"] == "server_sync" for m in missed)

        resumed = {**STREAM, "Last-Event-ID": str(last)}
        async with client.stream("GET", "/events", headers=resumed, params={"after": 1}) as response:
            assert response.status_code == 200
            events = sse(response)
            got = await take(events, len(missed))
            assert [data for _, _, data in got] == missed, "exactly the missed events, in order (Last-Event-ID wins)"
            assert [(i, kind) for i, kind, _ in got] == [(m["id"], m["kind"]) for m in missed]
            await cli(api, settings, "token", "create", "watcher-3", "--role", "viewer")
            [(after_id, _, data)] = await take(events, 1)
            assert after_id > missed[-1]["id"] and "'watcher-3' created" in data["data"]["reason"], "nothing repeated"


async def test_the_kind_filter_the_json_listing_and_the_key_rule(api: ApiServer, settings: Settings) -> None:
    timeout = httpx.Timeout(10, read=WAIT_S)
    async with api.client("viewer", timeout=timeout) as client:
        async with client.stream("GET", "/events", headers=STREAM, params={"after": 0, "kind": "sync."}) as response:
            await cli(api, settings, "token", "create", "quiet-one", "--role", "viewer")
            await cli(api, settings, "sync", "--once", "--only", "server_sync")
            [(_, kind, data)] = await take(sse(response), 1)
            assert kind == "sync.pass" and data["actor"] == "system:server_sync", "audit rows before it are filtered"

        listing = await client.get("/events", params={"subject_type": "token"})
        assert listing.status_code == 200 and listing.headers["content-type"] == "application/json"
        assert "token 'quiet-one' created with role viewer" in [e["reason"] for e in listing.json()]
        assert (await client.get("/events", headers={"Accept": "*/*"})).headers["content-type"] == "application/json"
        bad = await client.get("/events", headers={**STREAM, "Last-Event-ID": "seven"})
        assert bad.status_code == 422
    async with api.client(None) as anonymous:
        answer = await anonymous.get("/events", headers=STREAM)
        assert answer.status_code == 401 and answer.headers["content-type"] == "application/json", "no key, no stream"
        assert (await anonymous.get("/events")).status_code == 401


async def test_events_follow_prints_what_comes_and_stops_cleanly_on_ctrl_c(api: ApiServer, settings: Settings) -> None:
    cmd = [sys.executable, "-m", "cli.main", "--data-dir", str(api.data_dir), "events", "--follow", "--json"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--kind", "audit", "--limit", "1", cwd=REPO_ROOT, env=orchestrator_env(settings), stdout=-1, stderr=-1
    )
    try:
        assert proc.stdout is not None
        latest = json.loads(await asyncio.wait_for(proc.stdout.readline(), WAIT_S))
        assert latest["kind"] == "audit", "the latest audit row first (the API's keys were made before)"
        # it printed the listing: it is following now
        await cli(api, settings, "token", "create", "followed", "--role", "viewer")
        while True:
            line = json.loads(await asyncio.wait_for(proc.stdout.readline(), WAIT_S))
            assert line["id"] > latest["id"]
            if "'followed' created" in line["data"]["reason"]:
                break
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
        assert proc.stderr is not None and b"Traceback" not in await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_an_open_stream_does_not_hold_the_api_up_on_stop(settings: Settings, tmp_path: Path) -> None:
    server = start_api(settings, tmp_path / "api.log")
    try:
        async with server.client("viewer", timeout=httpx.Timeout(10, read=WAIT_S)) as client:
            async with client.stream("GET", "/events", headers=STREAM) as response:
                assert response.status_code == 200
                server.proc.send_signal(signal.SIGTERM)
                rest = [line async for line in response.aiter_lines()]  # ends when the server closes it
        assert not [line for line in rest if line.startswith("data:")]
        await asyncio.to_thread(server.proc.wait, 20)  # TimeoutExpired: the stream kept the API up
    finally:
        stop_api(server)


@pytest.mark.slow
async def test_a_full_run_streams_its_approval_request_its_deploy_and_its_trail(
    api: ApiServer, settings: Settings
) -> None:
    timeout = httpx.Timeout(10, read=180)
    try:
        async with (
            api.client("viewer", timeout=timeout) as viewer,
            api.client("operator", timeout=timeout) as operator,
            api.client("approver", timeout=timeout) as approver,
            viewer.stream("GET", "/events", headers=STREAM) as response,
        ):
            tid = (await operator.post("/threads")).json()["thread_id"]
            ran = await run_sse(operator, f"/threads/{tid}/messages", {"text": HELLO})
            assert [k for k, _ in ran if k == "interrupt"] == ["interrupt"], ran
            resumed = await run_sse(approver, f"/threads/{tid}/resume", {"action": "approve"})
            assert resumed[-1][0] == "done", resumed
            events = sse(response)
            got: list[Sse] = []
            while not got or got[-1][1] not in ("deploy.succeeded", "deploy.failed", "deploy.rolled_back"):
                got += await take(events, 1)
        kinds = [kind for _, kind, _ in got]
        assert kinds[-1] == "deploy.succeeded", kinds
        asked = next(data for _, kind, data in got if kind == "approval.requested")
        assert asked["thread_id"] == tid and asked["data"]["kind"] == "deploy_approval"
        moves = [
            data["data"]["to_status"] for _, kind, data in got if kind == "audit" and data["subject_type"] == "project"
        ]
        assert {"implementing", "verified", "deploying"} <= set(moves), moves
        assert [data["data"]["to_status"] for _, k, data in got if k == "audit"].count("deploy_approved") == 1
        ids = [i for i, _, _ in got]
        assert ids == sorted(set(ids))
    finally:
        await stop_service(settings, "hello-api")
