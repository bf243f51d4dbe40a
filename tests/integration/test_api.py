"""The real API server (uvicorn in a subprocess) taking hello-api from a message to a live service, over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from services import deploys
from tests.conftest import REPO_ROOT

HELLO = "I need a small HTTP service called hello-api with a /health endpoint and unit tests."


@dataclass
class Api:
    base_url: str
    data_dir: Path
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def start_uvicorn(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_") and k != "DATABASE_URL"}
    env.update(
        ORCH_DATA_DIR=str(settings.data_dir),
        ORCH_MODEL="replay/hello-api",
        ORCH_PORT_RANGE_START=str(settings.port_range_start),
        ORCH_PORT_RANGE_END=str(settings.port_range_end),
        ORCH_HEALTH_TIMEOUT_S=str(settings.health_timeout_s),
        ORCH_DEPLOY_TIMEOUT_S=str(settings.deploy_timeout_s),
        ORCH_TEST_TIMEOUT_S=str(settings.test_timeout_s),
    )
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "api.app:app_factory",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_healthy(proc: subprocess.Popen[bytes], base_url: str, log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"uvicorn exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1, trust_env=False).json() == {"status": "ok"}:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"no answer from {base_url}/healthz in {timeout_s}s:\n{log.read_text()}")


def stop_uvicorn(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


async def stop_service(data_dir: Path, project: str) -> None:
    """Stop the deployed service with the real stop playbook, then kill anything still running from its releases."""
    releases = data_dir.resolve() / "releases"
    try:
        await deploys.stop_service(Settings(data_dir=data_dir), project=project, server=deploys.local_server())
    finally:
        for pid in pids_with(str(releases / project)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
async def api(settings: Settings, tmp_path: Path) -> AsyncIterator[Api]:
    port, log = free_port(), tmp_path / "uvicorn.log"
    proc = start_uvicorn(settings, port, log)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base_url, log)
        yield Api(base_url=base_url, data_dir=settings.data_dir, log=log)
    finally:
        try:
            await stop_service(settings.data_dir, "hello-api")
        finally:
            stop_uvicorn(proc)


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
async def test_api_takes_hello_api_from_message_to_live(api: Api) -> None:
    timeout = httpx.Timeout(10, read=180)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=timeout, trust_env=False) as client:
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

        events = await run_sse(client, f"/threads/{tid}/resume", {"action": "approve"})
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "done" and "interrupt" not in kinds and "error" not in kinds, events
        said = [data["text"] for kind, data in events if kind == "message"]
        assert said and "hello-api is live" in said[-1], said
        assert (await client.get(f"/threads/{tid}/interrupts")).json() == []
        again = await client.post(f"/threads/{tid}/resume", json={"action": "approve"})
        assert again.status_code == 409 and "nothing pending" in again.json()["detail"]

        projects = (await client.get("/projects")).json()
        hello = next(p for p in projects if p["name"] == "hello-api")
        assert hello["status"] == "active" and hello["server"] == "localhost"
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
async def test_a_client_that_disconnects_does_not_cancel_the_run(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60, trust_env=False) as client:
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
    assert pending[0]["payload"]["tests"]["passed"] is True


async def test_servers_are_registered_over_http_with_clear_refusals(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.base_url, trust_env=False, timeout=30) as client:
        made = await client.post("/servers", json={"name": "web-1", "address": "10.0.0.5", "provision": True})
        assert made.status_code == 201, made.text
        assert (made.json()["name"], made.json()["status"]) == ("web-1", "provisioning")

        again = await client.post("/servers", json={"name": "web-1", "address": "10.0.0.6"})
        assert again.status_code == 409 and "already registered" in again.json()["detail"]
        bad = await client.post("/servers", json={"name": "Web 1", "address": "not a host!", "port_range_start": 9})
        assert bad.status_code == 422
        assert {tuple(e["loc"]) for e in bad.json()["detail"]} == {("body", "name"), ("body", "address")}

        listed = {s["name"]: s for s in (await client.get("/servers")).json()}
    assert set(listed) == {"localhost", "web-1"} and listed["web-1"]["address"] == "10.0.0.5"
