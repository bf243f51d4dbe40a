"""Who may do what over HTTP, against the real API process (`orchestrator api`, uvicorn on 127.0.0.1).

The route table comes from the app's own route list: a route added without a role rule fails here (and the app
refuses to start with it).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.auth import api_routes, rule_of
from core.settings import Settings
from models.enums import AccessRole
from tests.fixtures.api_server import (
    ApiServer,
    make_key,
    orchestrator,
    orchestrator_env,
    start_api,
    stop_api,
)
from tests.integration.test_api import HELLO, parse_sse, stop_service

ROLES: list[str | None] = [None, *(r.value for r in AccessRole)]
UNKNOWN_THREAD = "t-000000000000"
PATH_VALUES = {"thread_id": UNKNOWN_THREAD, "name": "no-such-thing", "webhook_id": "999999", "run_id": "r-000000000000"}
SIGNED_ROUTES = {("POST", "/webhooks/github")}
"""Public to key checks, authenticated by a signature of the body instead: 401 for every caller without one."""
"""Path parameters of the route table: things that do not exist, so no call changes anything that matters."""


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_api(settings, tmp_path / "api.log")
    try:
        yield server
    finally:
        stop_api(server)


def route_table(settings: Settings) -> list[tuple[str, str, AccessRole | None]]:
    """(method, concrete path, role needed or None) for every route of the app."""
    rows = []
    for route in api_routes(create_app(settings)):
        rule = rule_of(route)  # LookupError: a route without a rule
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PATH_VALUES[m.group(1)], route.path)  # {id:int} too
        for method in sorted(route.methods or ()):
            rows.append((method, path, rule))
    return rows


def expected_refusal(rule: AccessRole | None, role: str | None) -> int | None:
    """401 for no key, 403 for a role below the rule, None when the rule lets the call through."""
    if rule is None:
        return None
    if role is None:
        return 401
    return None if AccessRole(role).includes(rule) else 403


async def test_every_route_refuses_who_it_must_and_only_them(api: ApiServer, settings: Settings) -> None:
    table = route_table(settings)
    assert ("GET", "/healthz", None) in table and len(table) >= 15, table
    wrong: list[str] = []
    async with httpx.AsyncClient(base_url=api.base_url, trust_env=False, timeout=30) as client:
        for method, path, rule in table:
            for role in ROLES:
                headers = api.headers(role) if role else {}
                body = {} if method in ("POST", "DELETE") else None
                response = await client.request(method, path, headers=headers, json=body)
                want = 401 if (method, path) in SIGNED_ROUTES else expected_refusal(rule, role)
                got = response.status_code
                if want is not None and got != want:
                    wrong.append(f"{method} {path} as {role}: {got}, expected {want}")
                elif want is None and got in (401, 403):
                    wrong.append(f"{method} {path} as {role}: {got}, expected to pass the role rule")
                if got == 401:
                    scheme = "HMAC-SHA256" if (method, path) in SIGNED_ROUTES else "Bearer"
                    assert response.headers["www-authenticate"].startswith(scheme), (method, path)
                if got == 403:
                    assert f"needs the {rule.value if rule else ''} role" in response.json()["detail"]
                assert got < 500, (method, path, role, response.text)
    assert not wrong, "\n".join(wrong)


def test_a_route_without_a_rule_keeps_the_app_from_starting(settings: Settings) -> None:
    app = create_app(settings)
    app.add_api_route("/naked", lambda: {"ok": True}, methods=["GET"])
    naked = next(r for r in api_routes(app) if r.path == "/naked")
    with pytest.raises(LookupError, match="declares 0 role rules"):
        rule_of(naked)


async def test_keys_in_both_headers_wrong_and_revoked_ones(api: ApiServer, settings: Settings) -> None:
    env = orchestrator_env(settings)
    key = make_key(settings.data_dir, "ci-bot", "viewer", env)
    assert re.fullmatch(r"orch_[A-Za-z0-9_-]{43}", key), key
    async with httpx.AsyncClient(base_url=api.base_url, trust_env=False) as client:
        assert (await client.get("/projects", headers={"Authorization": f"Bearer {key}"})).status_code == 200
        assert (await client.get("/projects", headers={"X-Api-Key": key})).status_code == 200
        for bad in (key[:-1] + ("A" if key[-1] != "A" else "B"), "orch_short", "not-a-key"):
            refused = await client.get("/projects", headers={"Authorization": f"Bearer {bad}"})
            assert refused.status_code == 401 and "unknown or revoked" in refused.json()["detail"]
            assert refused.headers["www-authenticate"] == 'Bearer realm="orchestrator"'
        anonymous = await client.get("/projects")
        assert anonymous.status_code == 401 and "token create" in anonymous.json()["detail"]

        listed = orchestrator(settings.data_dir, "token", "list", "--json", env=env)
        assert listed.returncode == 0 and key not in listed.stdout and key[8:20] not in listed.stdout
        bot = next(t for t in json.loads(listed.stdout) if t["name"] == "ci-bot")
        assert bot["role"] == "viewer" and bot["hint"] == key[:8] and bot["last_used_at"] is not None
        assert bot["created_by"].startswith("cli:") and bot["revoked_at"] is None

        revoked = orchestrator(settings.data_dir, "token", "revoke", "ci-bot", env=env)
        assert revoked.returncode == 0, revoked.stderr
        after = await client.get("/projects", headers={"X-Api-Key": key})
        assert after.status_code == 401, "a revoked key is refused from the next request on"
        again = orchestrator(settings.data_dir, "token", "create", "ci-bot", "--role", "viewer", env=env)
        assert again.returncode == 2 and "never reused" in again.stderr

        trail = (await client.get("/events", params={"subject_type": "token"}, headers=api.headers("viewer"))).json()
        actions = [(e["to_status"], e["reason"]) for e in trail if "ci-bot" in e["reason"]]
        assert [a for a, _ in actions] == ["token_revoked", "token_created"]
        assert all(e["actor"].startswith("cli:") for e in trail)


async def test_tokens_over_http_are_for_admins_and_shown_once(api: ApiServer) -> None:
    async with api.client("admin") as admin:
        made = await admin.post("/tokens", json={"name": "deployer", "role": "approver"})
        assert made.status_code == 201 and made.json()["key"].startswith("orch_")
        key = made.json()["key"]
        listed = (await admin.get("/tokens")).json()
        assert key not in json.dumps(listed)
        assert {t["name"]: t["role"] for t in listed}["deployer"] == "approver"
        async with httpx.AsyncClient(base_url=api.base_url, trust_env=False) as client:
            assert (await client.get("/threads", headers={"X-Api-Key": key})).status_code == 200
            assert (await admin.delete("/tokens/deployer")).status_code == 204
            assert (await client.get("/threads", headers={"X-Api-Key": key})).status_code == 401
        assert (await admin.delete("/tokens/deployer")).status_code == 404
        dup = await admin.post("/tokens", json={"name": "deployer", "role": "viewer"})
        assert dup.status_code == 409
        trail = (await admin.get("/events", params={"subject_type": "token"})).json()
        assert [e["actor"] for e in trail if "deployer" in e["reason"]] == ["token:admin", "token:admin"]


async def test_operators_see_and_use_only_their_own_threads(api: ApiServer, settings: Settings) -> None:
    other = make_key(settings.data_dir, "operator-2", "operator", orchestrator_env(settings))
    async with api.client("operator") as mine, api.client("approver") as approver:
        tid = (await mine.post("/threads")).json()["thread_id"]
        async with httpx.AsyncClient(base_url=api.base_url, trust_env=False, headers={"X-Api-Key": other}) as theirs:
            for method, path, body in [
                ("GET", f"/threads/{tid}/interrupts", None),
                ("POST", f"/threads/{tid}/messages", {"text": "let me in"}),
                ("POST", f"/threads/{tid}/resume", {"action": "answer", "text": "x"}),
                ("POST", f"/threads/{tid}/continue", None),
            ]:
                response = await theirs.request(method, path, json=body)
                assert response.status_code == 404, (method, path, response.text)
                assert "unknown thread" in response.json()["detail"]
            assert tid not in [t["id"] for t in (await theirs.get("/threads")).json()]
        assert tid in [t["id"] for t in (await mine.get("/threads")).json()]
        assert tid in [t["id"] for t in (await approver.get("/threads")).json()], "approvers see every thread"
        async with api.client("viewer") as viewer:
            assert tid not in [t["id"] for t in (await viewer.get("/threads")).json()]


async def test_the_edge_host_form_posts_and_cors(api: ApiServer) -> None:
    port = api.base_url.rsplit(":", 1)[1]
    async with api.client("operator") as client:
        rebound = await client.get("/threads", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 400 and "evil.example" in rebound.json()["detail"]
        assert (await client.get("/threads", headers={"Host": f"localhost:{port}"})).status_code == 200
        assert (await client.get("/threads", headers={"Host": f"[::1]:{port}"})).status_code == 200
        tid = (await client.post("/threads")).json()["thread_id"]
        for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"):
            form = await client.post(
                f"/threads/{tid}/continue", content=b"text=approve", headers={"Content-Type": content_type}
            )
            assert form.status_code == 415 and "JSON" in form.json()["detail"], content_type
        plain = await client.get("/threads", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in plain.headers, "no CORS unless origins are configured"


async def test_messages_and_thread_ids_have_limits(api: ApiServer) -> None:
    async with api.client("operator") as client:
        tid = (await client.post("/threads")).json()["thread_id"]
        long = await client.post(f"/threads/{tid}/messages", json={"text": "x" * 16_001})
        assert long.status_code == 422 and long.json()["detail"][0]["loc"] == ["body", "text"]
        for bad in ("t" * 65, "bad%20id", "-leading"):
            refused = await client.post(f"/threads/{bad}/messages", json={"text": "hi"})
            assert refused.status_code == 422, (bad, refused.text)
        huge = await client.post(f"/threads/{tid}/messages", json={"text": "x" * (1024 * 1024)})
        assert huge.status_code == 413 and "larger than" in huge.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"text": "'
            for _ in range(80):
                yield b"x" * 16384
            yield b'"}'

        chunked = await client.post(
            f"/threads/{tid}/messages", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 413, "a body without Content-Length is counted as it arrives"
        threads = (await client.get("/threads")).json()
        assert [t["title"] for t in threads if t["id"] == tid] == [""], "a refused message stores nothing"


def raw_exchange(port: int, data: bytes, wait_s: float) -> bytes:
    """Send ``data`` on a raw connection, then read until the server closes it or ``wait_s`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                return received + b"<closed>"
            received += chunk
        return received


@pytest.fixture
def tight_api(settings: Settings, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_api(
        settings,
        tmp_path / "api.log",
        ORCH_API_MAX_RUNS_PER_IDENTITY="1",
        ORCH_API_HEADER_TIMEOUT_S="1",
        ORCH_API_BODY_TIMEOUT_S="1",
        ORCH_API_CORS_ORIGINS="https://console.example",
    )
    try:
        yield server
    finally:
        stop_api(server)


async def test_slow_clients_are_cut_off_and_cors_answers_listed_origins(tight_api: ApiServer) -> None:
    port = int(tight_api.base_url.rsplit(":", 1)[1])
    drip = await asyncio.to_thread(raw_exchange, port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n", 4)
    assert drip == b"<closed>", "headers not finished within the deadline: the connection is closed, unanswered"
    key = tight_api.keys["operator"].encode()
    head = (
        b"POST /threads HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    slow = await asyncio.to_thread(raw_exchange, port, head, 4)
    assert slow.startswith(b"HTTP/1.1 408"), slow[:200]
    async with tight_api.client("operator") as client:
        allowed = await client.get("/threads", headers={"Origin": "https://console.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://console.example"
        other = await client.get("/threads", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.slow
async def test_one_identity_gets_a_limited_number_of_runs(tight_api: ApiServer) -> None:
    timeout = httpx.Timeout(10, read=180)
    async with (
        tight_api.client("operator", timeout=timeout) as client,
        tight_api.client("approver", timeout=timeout) as approver,
    ):
        first = (await client.post("/threads")).json()["thread_id"]
        second = (await client.post("/threads")).json()["thread_id"]
        async with client.stream("POST", f"/threads/{first}/messages", json={"text": HELLO}) as running:
            assert running.status_code == 200
            stream = running.aiter_lines()
            await anext(stream)
            busy = await client.post(f"/threads/{second}/messages", json={"text": HELLO})
            assert busy.status_code == 429 and busy.headers["retry-after"].isdigit()
            assert "runs going" in busy.json()["detail"]
            own = await approver.post("/threads/t-000000000000/continue")
            assert own.status_code == 404, "another identity's slots are its own"
            lines = [line async for line in stream]
        assert any('"kind": "interrupt"' in line for line in lines)
        third = await client.post(f"/threads/{first}/continue")
        assert third.status_code == 409, "the slot came back when the run ended (the thread waits: 409)"


@pytest.fixture
def separate_api(settings: Settings, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_api(settings, tmp_path / "api.log", ORCH_APPROVAL_SEPARATE_APPROVER="true")
    try:
        yield server
    finally:
        try:
            asyncio.run(stop_service(settings, "hello-api"))
        finally:
            stop_api(server)


async def run_sse(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        lines = [line async for line in response.aiter_lines()]
    return list(parse_sse(iter(lines)))


@pytest.mark.slow
def test_whoever_asked_cannot_approve_and_the_trail_names_the_approver(
    separate_api: ApiServer, settings: Settings
) -> None:
    asyncio.run(_separate_approver(separate_api, settings))


async def _separate_approver(api: ApiServer, settings: Settings) -> None:
    env = orchestrator_env(settings)
    second = make_key(settings.data_dir, "approver-2", "approver", env)
    timeout = httpx.Timeout(10, read=180)
    async with api.client("approver", timeout=timeout) as asker:
        tid = (await asker.post("/threads")).json()["thread_id"]
        events = await run_sse(asker, f"/threads/{tid}/messages", {"text": HELLO})
        assert [d["payload"]["kind"] for k, d in events if k == "interrupt"] == ["deploy_approval"]
        own = await asker.post(f"/threads/{tid}/resume", json={"action": "approve"})
        assert own.status_code == 403 and "cannot approve" in own.json()["detail"]
        assert "ORCH_APPROVAL_SEPARATE_APPROVER" in own.json()["detail"]
        assert len((await asker.get(f"/threads/{tid}/interrupts")).json()) == 1, "the refusal changed nothing"
        async with httpx.AsyncClient(
            base_url=api.base_url, trust_env=False, timeout=timeout, headers={"X-Api-Key": second}
        ) as reviewer:
            events = await run_sse(reviewer, f"/threads/{tid}/resume", {"action": "approve"})
        assert events[-1][0] == "done" and not [k for k, _ in events if k == "error"], events
        project = (await asker.get("/projects/hello-api")).json()
        assert (project["status"], project["requested_by"]) == ("active", "token:approver")
        assert project["approved_by"] == "token:approver-2"
        trail = (await asker.get("/events", params={"subject_type": "project"})).json()
    by_action = {e["to_status"]: e["actor"] for e in trail}
    assert by_action["deploy_approved"] == "token:approver-2"
    assert by_action["active"] == "token:approver-2" and by_action["draft"] == "token:approver"
    listed = orchestrator(settings.data_dir, "projects", "--json", env=env)
    assert [p["approved_by"] for p in json.loads(listed.stdout) if p["name"] == "hello-api"] == ["token:approver-2"]


def test_api_refuses_to_listen_beyond_loopback_without_an_admin_token(settings: Settings) -> None:
    env = orchestrator_env(settings)
    refused = orchestrator(settings.data_dir, "api", "--host", "0.0.0.0", "--port", "1", env=env)
    assert refused.returncode == 2, refused.stderr
    assert "no admin token" in refused.stderr and "token create admin --role admin" in refused.stderr
