"""An update of a live project: the PO classifies it, both teams work on the existing project, a person approves,
Ansible redeploys the new commit on the same server and port."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import update

from core.db import Database
from core.settings import Settings
from models.enums import ProjectStatus
from models.tables import Deployment, Event, PortLease, Project
from tests.integration.helpers import (
    REQUEST,
    VERSION_UPDATE,
    cli,
    rows,
    run_turn,
    scenario_variant,
    stop_service,
    version_update_exchanges,
)


@pytest.mark.slow
async def test_updating_a_live_project_redeploys_it_on_the_same_port(settings: Settings, tmp_path) -> None:
    settings = settings.model_copy(
        update={
            "model": "replay/update",
            "replay_dir": scenario_variant(tmp_path / "rec", "update", extra=version_update_exchanges()),
        }
    )
    try:
        await run_turn(settings, REQUEST, "t-up")
        assert cli(settings, "resume", "t-up", "--approve").returncode == 0
        [first] = await rows(settings, Deployment)
        db = Database(settings.db_url)
        async with db.session() as s:  # as a project found by the sync is flagged until its first deploy
            await s.exec(update(Project).values(setup_required=True))  # type: ignore[call-overload]
        await db.dispose()

        events = await run_turn(settings, VERSION_UPDATE, "t-up")
        [approval] = [e for e in events if e.kind == "interrupt"]
        assert approval.payload is not None and approval.payload["kind"] == "deploy_approval"
        assert approval.payload["port"] == first.port and approval.payload["commit"] != first.commit_sha
        [project] = await rows(settings, Project)
        assert project.status == ProjectStatus.verified

        done = cli(settings, "resume", "t-up", "--approve")
        assert done.returncode == 0, done.stderr
        [project] = await rows(settings, Project)
        deployments = sorted(await rows(settings, Deployment), key=lambda d: d.id or 0)
        assert project.status == ProjectStatus.active and not project.setup_required
        assert [d.status.value for d in deployments] == ["succeeded", "succeeded"]
        assert deployments[1].commit_sha == approval.payload["commit"] and deployments[1].port == first.port
        assert len(await rows(settings, PortLease)) == 1
        assert httpx.get(deployments[1].url or "", timeout=5).status_code == 200
        version = deployments[1].url.replace("/health", "/version") if deployments[1].url else ""
        assert httpx.get(version, timeout=5).json() == {"version": "1.0.0"}  # the change is what was deployed
        moves = [(e.from_status, e.to_status) for e in await rows(settings, Event) if e.subject_type == "project"]
        at = moves.index(("active", "maintenance"))
        assert moves[at + 1] == ("maintenance", "designing") and moves[-1] == ("deploying", "active")
        assert moves[:at].count(("deploying", "active")) == 1

        # Rollback: the release before runs again (no /version), checked and recorded like a deploy; then forward.
        back = cli(settings, "rollback", "hello-api", "--json")
        assert back.returncode == 0, back.stderr
        assert httpx.get(deployments[0].url or "", timeout=5).status_code == 200
        assert httpx.get(version, timeout=5).status_code == 404
        listed = cli(settings, "deployments", "hello-api", "--json")
        assert listed.returncode == 0, listed.stderr
        newest = json.loads(listed.stdout)[0]
        assert (newest["commit_sha"], newest["status"]) == (first.commit_sha, "succeeded")
        assert newest["approved_by"] and newest["approved_by"].startswith("cli:")
        forward = cli(settings, "rollback", "hello-api", "--to", str(deployments[1].id))
        assert forward.returncode == 0, forward.stderr
        assert httpx.get(version, timeout=5).json() == {"version": "1.0.0"}
        same = cli(settings, "rollback", "hello-api", "--to", str(deployments[1].id))
        assert same.returncode == 2 and "already runs" in same.stderr
        [project] = await rows(settings, Project)
        assert project.status == ProjectStatus.active
    finally:
        await stop_service(settings)


DEPLOY_AFTER_ALL = [
    {
        "id": "po-deploy-after-all",
        "role": "po",
        "when": {"contains": ["Deploy hello-api after all"]},
        "reply": {"tool_calls": [{"name": "deploy_project_intent", "arguments": {"name": "hello-api"}}]},
    },
    {
        "id": "po-no-build-here",
        "role": "po",
        "when": {"contains": ["holds no verified build of hello-api"]},
        "reply": {"content": "This conversation has no verified build of hello-api; ask me for an update."},
    },
]


@pytest.mark.slow
async def test_a_rejected_deploy_can_be_approved_after_all_in_its_own_thread(settings: Settings, tmp_path) -> None:
    settings = settings.model_copy(
        update={"model": "replay/again", "replay_dir": scenario_variant(tmp_path / "rec", "again", DEPLOY_AFTER_ALL)}
    )
    try:
        await run_turn(settings, REQUEST, "t-again")
        assert cli(settings, "resume", "t-again", "--reject", "not today").returncode == 0

        elsewhere = await run_turn(settings, "Deploy hello-api after all, please.", "t-other")
        assert [e.kind for e in elsewhere if e.kind == "interrupt"] == []
        assert any("no verified build of hello-api" in (e.text or "") for e in elsewhere)

        events = await run_turn(settings, "Deploy hello-api after all, please.", "t-again")
        [approval] = [e for e in events if e.kind == "interrupt"]
        assert approval.payload is not None and approval.payload["kind"] == "deploy_approval"
        done = cli(settings, "resume", "t-again", "--approve")
        assert done.returncode == 0, done.stderr
        [project] = await rows(settings, Project)
        [deployment] = await rows(settings, Deployment)
        assert project.status == ProjectStatus.active and deployment.commit_sha == approval.payload["commit"]
    finally:
        await stop_service(settings)
