"""API keys, identities and who may answer what: the service layer under the HTTP API."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlmodel import select

from core.db import Database
from core.settings import Settings
from models.enums import AccessRole, ProjectStatus
from models.tables import ApiToken, Event, Server
from nodes.po_tools import get_project_status
from services import approvals, identities
from tests.unit.test_nodes import make_project


async def test_only_the_digest_is_stored_and_the_key_authenticates(db: Database) -> None:
    key = await identities.create_token(db, "ci", AccessRole.operator, actor="cli:ann")
    async with db.session() as s:
        row = (await s.exec(select(ApiToken))).one()
    assert key not in row.model_dump_json() and row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert row.hint == key[:8] and row.created_by == "cli:ann"
    who = await identities.authenticate(db, key)
    assert who == identities.Identity(name="token:ci", role=AccessRole.operator)
    assert await identities.authenticate(db, key + "x") is None
    assert await identities.authenticate(db, "orch_" + "A" * 43) is None
    await identities.revoke_token(db, "ci", actor="cli:ann")
    assert await identities.authenticate(db, key) is None
    with pytest.raises(identities.TokenError, match="no live token"):
        await identities.revoke_token(db, "ci", actor="cli:ann")


async def test_token_names_are_checked_and_never_reused(db: Database) -> None:
    for bad in ("", "Admin", "a b", "x" * 65, "-lead"):
        with pytest.raises(identities.TokenError, match="token name"):
            await identities.create_token(db, bad, AccessRole.viewer, actor="cli:ann")
    await identities.create_token(db, "ci", AccessRole.viewer, actor="cli:ann")
    with pytest.raises(identities.TokenError, match="never reused"):
        await identities.create_token(db, "ci", AccessRole.admin, actor="cli:ann")
    assert not await identities.has_admin_token(db)
    await identities.create_token(db, "root", AccessRole.admin, actor="cli:ann")
    assert await identities.has_admin_token(db)


def test_roles_include_the_ones_before() -> None:
    viewer, operator, approver, admin = AccessRole
    assert admin.includes(viewer) and approver.includes(operator) and not operator.includes(approver)
    op = identities.Identity("token:op", operator)
    assert op.sees("token:op") and not op.sees("token:other") and not op.sees(None)
    assert identities.Identity("token:ap", approver).sees("token:other")
    assert identities.cli_identity().name.startswith("cli:")


async def test_answers_need_their_role_and_a_separate_approver_when_asked(settings: Settings, db: Database) -> None:
    await make_project(db, ProjectStatus.verified, requested_by="token:asker")
    payload = {"kind": "deploy_approval", "project": "hello-api"}
    approve = {"decision": "approve"}
    operator = identities.Identity("token:op", AccessRole.operator)
    with pytest.raises(approvals.AnswerRefused, match="needs the approver role; token:op has operator"):
        await approvals.check_answer(db, settings, payload, approve, operator)
    retry = {"kind": "waiting_for_resources", "project": "hello-api"}
    await approvals.check_answer(db, settings, retry, {"reason": "go"}, operator)

    asker = identities.Identity("token:asker", AccessRole.approver)
    await approvals.check_answer(db, settings, payload, approve, asker)  # the rule is off by default
    strict = settings.model_copy(update={"approval_separate_approver": True})
    with pytest.raises(approvals.AnswerRefused, match="cannot approve its deploy"):
        await approvals.check_answer(db, strict, payload, approve, asker)
    await approvals.check_answer(db, strict, payload, {"decision": "reject", "reason": "no"}, asker)
    other = identities.Identity("token:other", AccessRole.approver)
    await approvals.check_answer(db, strict, payload, approve, other)

    feedback = {"decision": "feedback", "feedback": "add /version"}
    await approvals.record_answer(db, payload, feedback, other, "t-1")
    with pytest.raises(approvals.AnswerRefused, match="token:other asked for hello-api"):
        await approvals.check_answer(db, strict, payload, approve, other)
    async with db.session() as s:
        trail = (await s.exec(select(Event).where(Event.to_status == "deploy_feedback"))).all()
    assert [(e.actor, e.thread_id) for e in trail] == [("token:other", "t-1")]


async def test_the_status_tool_says_who_approved_the_live_deploy(settings: Settings, db: Database) -> None:
    from models.enums import DeploymentStatus
    from models.tables import Deployment
    from services.leases import ensure_default_server

    await ensure_default_server(db, settings)
    project = await make_project(db, ProjectStatus.active)
    async with db.session() as s:
        server = (await s.exec(select(Server))).first()
        assert server is not None
        s.add(
            Deployment(
                project_id=project.id or 0,
                commit_sha="a" * 40,
                server_id=server.id or 0,
                port=8100,
                status=DeploymentStatus.succeeded,
                idempotency_key="k",
                approved_by="token:ann",
            )
        )
    status = json.loads(await get_project_status(db, "hello-api"))
    assert status["live_deploy_approved_by"] == "token:ann"
    assert status["last_deployment"]["approved_by"] == "token:ann"
