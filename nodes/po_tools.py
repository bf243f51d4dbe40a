"""The PO's tools: answers come from the database, the source of truth. Each returns JSON text for a ToolMessage."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select

from core.db import Database
from models.enums import ProjectStatus
from models.names import validate_slug
from models.tables import Deployment, Event, Project, Server
from models.transitions import transition_project
from services.budgets import BudgetLimits, budget_of, open_budget
from services.live import live_deployment, project_url
from services.secrets import missing_secrets, secret_set_commands


class BudgetOverride(BaseModel):
    """Limits the person asked for this project run (each one replaces the default; omit the others)."""

    model_config = ConfigDict(extra="forbid")

    tokens: int | None = Field(default=None, gt=0)
    cost_usd: float | None = Field(default=None, gt=0)
    calls: int | None = Field(default=None, gt=0)
    seconds: float | None = Field(default=None, gt=0)


class CreateProjectIntent(BaseModel):
    """Start a NEW project: its safe name, a summary and concrete requirements."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="lower-case slug, e.g. hello-api")
    summary: str
    requirements: list[str] = Field(default_factory=list)
    budget: BudgetOverride | None = Field(
        default=None, description="only when the person names a budget (tokens, cost in USD, model calls, seconds)"
    )


class UpdateProjectIntent(BaseModel):
    """Change an EXISTING project (live, verified, or found on GitHub): what to change, in concrete terms."""

    model_config = ConfigDict(extra="forbid")

    name: str
    change: str = Field(min_length=3, description="what the person wants changed, e.g. 'add a /version endpoint'")


class DeployProjectIntent(BaseModel):
    """Deploy a VERIFIED project this conversation built but did not deploy (e.g. after a rejected deploy)."""

    model_config = ConfigDict(extra="forbid")

    name: str


class GetProjectStatus(BaseModel):
    """Detailed status of one project by name."""

    model_config = ConfigDict(extra="forbid")

    name: str


class ListProjects(BaseModel):
    """Summary of every project."""

    model_config = ConfigDict(extra="forbid")


class FixIncident(BaseModel):
    """Dispatch the recovery for an open incident: re-link a repository, re-check or re-provision a server, redeploy."""

    model_config = ConfigDict(extra="forbid")

    incident_id: int


TOOLS: dict[str, type[BaseModel]] = {
    "create_project_intent": CreateProjectIntent,
    "update_project_intent": UpdateProjectIntent,
    "deploy_project_intent": DeployProjectIntent,
    "get_project_status": GetProjectStatus,
    "list_projects": ListProjects,
    "fix_incident": FixIncident,
}


def openai_tools() -> list[dict[str, Any]]:
    """The tools in OpenAI function-calling format (what litellm sends to every provider)."""
    return [
        {
            "type": "function",
            "function": {"name": name, "description": model.__doc__ or name, "parameters": model.model_json_schema()},
        }
        for name, model in TOOLS.items()
    ]


async def list_projects(db: Database) -> str:
    """JSON list of ``{name, status, repo, port}`` for every project."""
    async with db.session() as s:
        rows = (await s.exec(select(Project).order_by(Project.name))).all()
    return json.dumps([{"name": p.name, "status": p.status, "repo": p.repo_full_name, "port": p.port} for p in rows])


async def get_project_status(db: Database, name: str) -> str:
    """JSON with the project's status, repo, server, last deployment, last five events and missing secrets; or an error.

    Missing secrets are names only, with the ``orchestrator secret-set`` commands that set them.
    """
    async with db.session() as s:
        project = (await s.exec(select(Project).where(Project.name == name))).first()
        if project is None:
            return json.dumps({"error": f"no project named {name!r}"})
        server = await s.get(Server, project.server_id) if project.server_id else None
        deploy = (
            await s.exec(
                select(Deployment).where(Deployment.project_id == project.id).order_by(col(Deployment.id).desc())
            )
        ).first()
        events = (
            await s.exec(
                select(Event)
                .where(Event.subject_type == "project", Event.subject_id == project.id)
                .order_by(col(Event.id).desc())
                .limit(5)
            )
        ).all()
        live = await live_deployment(s, project.id or 0)
        budget = await budget_of(s, project.id or 0)
    missing = await missing_secrets(db, project.id or 0)
    return json.dumps(
        {
            "name": project.name,
            "status": project.status,
            "repo": project.repo_full_name,
            "server": server.name if server else None,
            "port": project.port,
            "url": project_url(project, server),
            "last_deployment": (
                {
                    "commit": deploy.commit_sha,
                    "status": deploy.status,
                    "summary": deploy.summary,
                    "approved_by": deploy.approved_by,
                }
                if deploy
                else None
            ),
            "live_deploy_approved_by": live.approved_by if live else None,
            "recent_events": [
                f"{e.from_status} -> {e.to_status}: {e.reason}" + (f" (by {e.actor})" if e.actor else "")
                for e in events
            ],
            "setup_required": project.setup_required,
            "budget": {**budget.as_dict(), "summary": budget.describe()} if budget else None,
            "missing_secrets": missing,
            **({"set_missing_secrets_with": secret_set_commands(project.name, missing)} if missing else {}),
        }
    )


async def create_project(
    db: Database, args: CreateProjectIntent, thread_id: str, *, actor: str, budget: BudgetLimits
) -> Project:
    """Create the project in ``draft`` with its spec, its budget and its first Event.

    The budget is ``budget`` with the person's overrides from ``args.budget``; ``actor`` (who asked) is on the
    project and the Event.

    Raises:
        InvalidProjectName: the name is not a safe slug.
        ValueError: a project of that name exists.
    """
    validate_slug(args.name)
    async with db.session() as s:
        if (await s.exec(select(Project).where(Project.name == args.name))).first():
            raise ValueError(f"a project named {args.name!r} already exists: ask for its status or an update")
        project = Project(
            name=args.name,
            description=args.summary,
            status=ProjectStatus.draft,
            spec=args.model_dump(exclude={"budget"}),
            thread_id=thread_id,
            requested_by=actor,
        )
        s.add(project)
        await s.flush()
        assert project.id is not None
        s.add(
            Event(
                subject_type="project",
                subject_id=project.id,
                to_status="draft",
                reason="created from the conversation",
                thread_id=thread_id,
                actor=actor,
            )
        )
        override = args.budget.model_dump(exclude_none=True) if args.budget else {}
        await open_budget(s, project.id, replace(budget, **override))
    return project


UPDATABLE = {
    ProjectStatus.active,
    ProjectStatus.discovered,
    ProjectStatus.maintenance,
    ProjectStatus.verified,
    ProjectStatus.cancelled,
    ProjectStatus.undeployed,
}
"""Statuses an update can start from: live (-> maintenance), found by the sync (-> maintenance), under maintenance
already (a re-run of the tool step), or verified and not deployed, cancelled or undeployed (-> designing again)."""


async def start_update(db: Database, args: UpdateProjectIntent, thread_id: str, *, actor: str) -> Project:
    """Open an update of an existing project: ``active``/``discovered`` -> ``maintenance`` with its Event.

    ``actor`` becomes the project's ``requested_by``: with separate approvers on, they cannot approve its deploy.

    Raises:
        ValueError: no such project, or it is in the middle of other work (its status says which).
    """
    async with db.session() as s:
        project = (await s.exec(select(Project).where(Project.name == args.name))).first()
        if project is None:
            raise ValueError(f"no project named {args.name!r}: list the projects, or create it as a new one")
        if project.status not in UPDATABLE:
            raise ValueError(
                f"{args.name} is {project.status.value}: an update starts from a live, verified, discovered, "
                "cancelled or undeployed project; wait for the work in flight (or fix its incident, or cancel it) first"
            )
        if project.status in (ProjectStatus.active, ProjectStatus.discovered):
            assert project.id is not None
            await transition_project(
                s,
                project.id,
                ProjectStatus.maintenance,
                reason=f"update asked: {args.change[:160]}",
                thread_id=thread_id,
                actor=actor,
            )
        project.requested_by = actor
        s.add(project)
        await s.flush()
        await s.refresh(project)
    return project
