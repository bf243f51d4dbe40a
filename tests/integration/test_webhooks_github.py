"""GitHub deliveries into the real API (a subprocess) with a fake GitHub on 127.0.0.1: signed ones reconcile the one
repository at once; forged, unsigned and replayed ones change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from core.db import Database
from core.settings import Settings
from models import ProjectStatus
from models.notification_tables import GithubDelivery
from models.tables import Project
from tests.fixtures.api_server import ApiServer, start_api, stop_api
from tests.fixtures.fake_github import FakeGitHub

TOKEN = "ghp_hookSECRET0123456789abcdef"
ORG = "acme"
HOOK_SECRET = "gh-hook-secret-3f9a"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, org=ORG) as server:
        yield server


@pytest.fixture
def api(settings: Settings, gh: FakeGitHub, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_api(
        settings,
        tmp_path / "api.log",
        roles=False,
        ORCH_GITHUB_WEBHOOK_SECRET=HOOK_SECRET,
        ORCH_GITHUB_TOKEN=TOKEN,
        ORCH_GITHUB_ORG=ORG,
        ORCH_GITHUB_BASE_URL=gh.base_url,
        ORCH_GITHUB_RETRIES="0",
    )
    try:
        yield server
    finally:
        stop_api(server)


def signed(event: str, payload: dict[str, Any], *, secret: str = HOOK_SECRET, delivery: str | None = None) -> dict:
    body = json.dumps(payload).encode()
    return {
        "content": body,
        "headers": {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        },
    }


async def project_of(settings: Settings, repo_id: int, *, until: Any, timeout_s: float = 15) -> Project | None:
    """The project of ``repo_id`` once ``until(project)`` holds (polled: the reconcile runs after the answer)."""
    db = Database(settings.db_url)
    try:
        for _ in range(int(timeout_s / 0.1)):
            async with db.session() as s:
                found = (await s.exec(select(Project).where(Project.github_repo_id == repo_id))).first()
            if until(found):
                return found
            await asyncio.sleep(0.1)
    finally:
        await db.dispose()
    raise AssertionError(f"repository {repo_id}: the condition never held")


async def recorded_deliveries(settings: Settings) -> list[str]:
    db = Database(settings.db_url)
    try:
        async with db.session() as s:
            return list((await s.exec(select(GithubDelivery.delivery_id))).all())
    finally:
        await db.dispose()


async def test_signed_repository_events_reconcile_that_repository_at_once(
    api: ApiServer, gh: FakeGitHub, settings: Settings
) -> None:
    repo = gh.add_repo("billing", "bills")
    async with httpx.AsyncClient(base_url=api.base_url, trust_env=False, timeout=30) as client:
        pong = await client.post("/webhooks/github", **signed("ping", {"zen": "Keep it logically awesome."}))
        assert pong.status_code == 200 and pong.json()["status"] == "pong"

        created = await client.post(
            "/webhooks/github", **signed("repository", {"action": "created", "repository": repo})
        )
        assert created.status_code == 202 and created.json()["repository_id"] == repo["id"], created.text
        found = await project_of(settings, repo["id"], until=lambda p: p is not None)
        assert found is not None and found.status == ProjectStatus.discovered and found.name == "billing"

        renamed = gh.rename("billing", "invoices")
        answer = await client.post(
            "/webhooks/github", **signed("push", {"ref": "refs/heads/main", "repository": renamed})
        )
        assert answer.status_code == 202
        found = await project_of(settings, repo["id"], until=lambda p: p.repo_full_name == f"{ORG}/invoices")
        assert found is not None and found.name == "billing", "a rename keeps the project"

        gh.delete("invoices")
        gone = await client.post(
            "/webhooks/github", **signed("repository", {"action": "deleted", "repository": renamed})
        )
        assert gone.status_code == 202
        await project_of(settings, repo["id"], until=lambda p: p.status == ProjectStatus.missing)

        other = await client.post("/webhooks/github", **signed("issues", {"action": "opened"}))
        assert other.status_code == 200 and other.json()["status"] == "ignored"
    assert gh.count("GET", f"/repositories/{repo['id']}") == 3, "one request by id per event, no listing"
    assert gh.count("GET", f"/orgs/{ORG}/repos") == 0
    assert TOKEN not in api.log.read_text() and HOOK_SECRET not in api.log.read_text()


async def test_forged_unsigned_and_replayed_deliveries_change_nothing(
    api: ApiServer, gh: FakeGitHub, settings: Settings
) -> None:
    repo = gh.add_repo("payroll")
    event = {"action": "created", "repository": repo}
    async with httpx.AsyncClient(base_url=api.base_url, trust_env=False, timeout=30) as client:
        forged = await client.post("/webhooks/github", **signed("repository", event, secret="guessed"))
        assert forged.status_code == 401 and "X-Hub-Signature-256" in forged.json()["detail"]
        unsigned = signed("repository", event)
        del unsigned["headers"]["X-Hub-Signature-256"]
        assert (await client.post("/webhooks/github", **unsigned)).status_code == 401
        tampered = signed("repository", event)
        tampered["content"] = tampered["content"].replace(b"payroll", b"payrolx")
        assert (await client.post("/webhooks/github", **tampered)).status_code == 401
        assert await recorded_deliveries(settings) == [], "a refused delivery is not even recorded"
        assert gh.count("GET") == 0

        first = signed("repository", event, delivery="d-0001")
        assert (await client.post("/webhooks/github", **first)).json()["status"] == "accepted"
        await project_of(settings, repo["id"], until=lambda p: p is not None)
        replay = await client.post("/webhooks/github", **first)
        assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
        await asyncio.sleep(0.5)
        assert gh.count("GET", f"/repositories/{repo['id']}") == 1, "a replay is answered, not acted on"
        no_id = signed("push", {"repository": repo})
        del no_id["headers"]["X-GitHub-Delivery"]
        assert (await client.post("/webhooks/github", **no_id)).status_code == 400
    assert await recorded_deliveries(settings) == ["d-0001"]


async def test_no_configured_secret_refuses_every_delivery(settings: Settings, tmp_path: Path) -> None:
    server = start_api(settings, tmp_path / "api.log", roles=False)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=30) as client:
            answer = await client.post("/webhooks/github", **signed("ping", {"zen": "z"}))
        assert answer.status_code == 401 and "ORCH_GITHUB_WEBHOOK_SECRET" in answer.json()["detail"]
        assert answer.headers["www-authenticate"].startswith("HMAC-SHA256")
    finally:
        stop_api(server)
