"""Who may answer which question, and the answer on the record.

The rules follow AWX (approval nodes gated by a role) and GitHub environments (required reviewers, "prevent
self-review": https://docs.github.com/en/actions/managing-workflow-runs-and-deployments/managing-deployments/
managing-environments-for-deployment#required-reviewers): a deploy approval or a guidance request needs the approver
role; a retry of a resource wait needs only an operator; with ``ORCH_APPROVAL_SEPARATE_APPROVER`` on, whoever asked
for a project or for its latest change cannot approve its deploy.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db import Database
from core.settings import Settings
from models.enums import AccessRole
from models.tables import Project
from services.identities import Identity, record

ANSWER_ROLES: dict[str, AccessRole] = {
    "deploy_approval": AccessRole.approver,
    "engineering_guidance": AccessRole.approver,
    "waiting_for_resources": AccessRole.operator,
    "budget_exhausted": AccessRole.approver,
}
"""The role an answer to each interrupt kind needs; an unknown kind needs an approver."""

_ACTIONS = {
    ("deploy_approval", "approve"): "deploy_approved",
    ("deploy_approval", "reject"): "deploy_rejected",
    ("deploy_approval", "feedback"): "deploy_feedback",
    ("engineering_guidance", None): "guidance_given",
    ("waiting_for_resources", None): "resources_retried",
    ("budget_exhausted", "extend"): "budget_extension_answered",
    ("budget_exhausted", "stop"): "budget_stopped",
}


class AnswerRefused(PermissionError):
    """The identity may not give this answer; the message names the role or the rule. Nothing was changed."""


def needed_role(kind: str) -> AccessRole:
    """The role an answer to an interrupt of ``kind`` needs."""
    return ANSWER_ROLES.get(kind, AccessRole.approver)


async def check_answer(
    db: Database, settings: Settings, payload: dict[str, Any], value: dict[str, Any], who: Identity
) -> None:
    """Refuse an answer its giver may not give.

    Args:
        db: the database (the project's ``requested_by``).
        settings: ``approval_separate_approver``.
        payload: the pending interrupt's payload (``kind``, ``project``).
        value: the typed answer (a ``DeployDecision`` dump for a deploy approval).
        who: the identity answering.

    Raises:
        AnswerRefused: the role is too low, or the separate-approver rule forbids it.
    """
    kind = str(payload.get("kind", ""))
    role = needed_role(kind)
    if not who.may(role):
        raise AnswerRefused(f"answering a {kind} question needs the {role.value} role; {who.name} has {who.role.value}")
    if kind == "deploy_approval" and value.get("decision") == "approve" and settings.approval_separate_approver:
        async with db.session() as s:
            project = await _project(s, payload)
        if project is not None and project.requested_by == who.name:
            raise AnswerRefused(
                f"{who.name} asked for {project.name} or its latest change and cannot approve its deploy "
                "(ORCH_APPROVAL_SEPARATE_APPROVER is on): another approver must answer"
            )


async def record_answer(
    db: Database, payload: dict[str, Any], value: dict[str, Any], who: Identity, thread_id: str
) -> None:
    """Write the answer to the trail, on the project it concerns; feedback makes ``who`` its change's requester."""
    kind = str(payload.get("kind", ""))
    decision = value.get("decision") if kind == "deploy_approval" else value.get("action")
    action = _ACTIONS.get((kind, decision), f"{kind}_answered")
    text = value.get("reason") or value.get("feedback") or value.get("answer") or ""
    async with db.session() as s:
        project = await _project(s, payload)
        if project is None or project.id is None:
            return
        why = f"{action.replace('_', ' ')} on {project.name}" + (f": {text[:200]}" if text else "")
        await record(
            s,
            subject_type="project",
            subject_id=project.id,
            action=action,
            reason=why,
            actor=who.name,
            thread_id=thread_id,
        )
        if action == "deploy_feedback":
            project.requested_by = who.name
            s.add(project)


async def _project(session: AsyncSession, payload: dict[str, Any]) -> Project | None:
    """The project an interrupt is about: by ``project_id`` when the payload has one, else by name."""
    if payload.get("project_id"):
        found: Project | None = await session.get(Project, int(payload["project_id"]))
        return found
    name = str(payload.get("project", ""))
    return (await session.exec(select(Project).where(Project.name == name))).first()
