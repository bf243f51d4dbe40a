"""What the console's pages show, read through the same services and queries the JSON API uses.

Projects and their budgets come from :mod:`api.crud` and :mod:`services.budgets`, deployments from
:mod:`services.lifecycle`, secret names from :mod:`services.secrets`, threads and pending interrupts from the runtime's
thread index (:meth:`runtime.threads.OrchestratorRuntime.thread_page`), a conversation from the PO graph's checkpoint
(``graph.aget_state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api import crud
from api.schemas import ProjectPublic
from models.enums import ProjectStatus
from models.tables import Deployment, Event, Incident, Project
from runtime.listing import MAX_PAGE, Pending, ThreadView
from runtime.threads import OrchestratorRuntime
from services.approvals import needed_role
from services.budgets import budget_of
from services.identities import Identity

if TYPE_CHECKING:  # the message classes load with the PO graph (runtime.po_graph), not with the console
    from langchain_core.messages import BaseMessage

UNHEALTHY_KINDS = frozenset({"service_unhealthy"})
"""Open incidents of these kinds make an active project unhealthy (the sync's health checker opens them)."""
INBOX_PAGES = 20
"""The inbox reads at most this many pages of :data:`runtime.listing.MAX_PAGE` threads."""


@dataclass
class ProjectRow:
    """A project on the projects page: its public view, health in words, last deploy, open incidents."""

    project: ProjectPublic
    health: str
    last_deploy: Deployment | None
    incidents: list[Incident] = field(default_factory=list)


async def project_rows(session: AsyncSession) -> list[ProjectRow]:
    """Every project by name, with health, its newest deployment (of any outcome) and its open incidents."""
    rows = await crud.list_projects(session=session)
    newest = select(func.max(Deployment.id)).group_by(col(Deployment.project_id))
    deploys = (await session.exec(select(Deployment).where(col(Deployment.id).in_(newest)))).all()
    last = {d.project_id: d for d in deploys}
    incidents = (
        await session.exec(
            select(Incident).where(Incident.subject_type == "project", col(Incident.resolved_at).is_(None))
        )
    ).all()
    out = []
    for project, server, live in rows:
        pid = project.id or 0
        public = ProjectPublic.from_row(project, server, live, budget=await budget_of(session, pid))
        mine = [i for i in incidents if i.subject_id == pid]
        out.append(ProjectRow(public, health_of(project, mine), last.get(pid), mine))
    return out


def health_of(project: Project, open_incidents: list[Incident]) -> str:
    """``healthy``, ``unhealthy: <why>`` (an open health incident), or ``—`` for a project not serving."""
    if project.status not in (ProjectStatus.active, ProjectStatus.maintenance):
        return "—"
    bad = [i for i in open_incidents if i.kind in UNHEALTHY_KINDS]
    return f"unhealthy: {bad[0].message}" if bad else "healthy"


async def project_events(session: AsyncSession, project_id: int, limit: int = 200) -> list[Event]:
    """The project's audit trail, newest first (:func:`api.crud.list_events`, as ``GET /events`` reads it)."""
    rows = await crud.list_events(
        session=session, subject_type="project", subject_id=project_id, before=None, limit=limit
    )
    return list(rows)


def _config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


async def phases_of(rt: OrchestratorRuntime, thread_id: str | None) -> list[dict[str, Any]]:
    """The engineering phase rounds of a project's thread (``engineering.timeline`` in the PO state), oldest first."""
    if not thread_id:
        return []
    state = await (await rt.compiled()).aget_state(_config(thread_id))
    engineering = (state.values or {}).get("engineering") or {}
    return list(engineering.get("timeline") or [])


@dataclass(frozen=True)
class Said:
    """One line of a conversation: who (``you``, ``PO``, ``tool``) and the words."""

    who: str
    text: str


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: keep the text ones
        return "\n".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content).strip()
    return str(content)


def conversation_of(messages: list[BaseMessage]) -> list[Said]:
    """The PO thread's messages as lines: the person's words, the PO's words and tool calls, tool answers' sizes."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    out: list[Said] = []
    for msg in messages:
        if isinstance(msg, HumanMessage):
            out.append(Said("you", _text(msg.content)))
        elif isinstance(msg, AIMessage):
            if text := _text(msg.content):
                out.append(Said("PO", text))
            for call in msg.tool_calls:
                out.append(Said("tool", f"calls {call['name']}"))
        elif isinstance(msg, ToolMessage):  # tool answers carry database rows: only their size is shown
            size = len(_text(msg.content))
            out.append(Said("tool", f"{msg.name or 'tool'}: answered ({size} characters, not shown)"))
    return out


async def conversation(rt: OrchestratorRuntime, thread_id: str) -> list[Said]:
    """The thread's conversation, read from its latest checkpoint through the runtime's compiled PO graph."""
    state = await (await rt.compiled()).aget_state(_config(thread_id))
    return conversation_of(list((state.values or {}).get("messages") or []))


@dataclass(frozen=True)
class InboxItem:
    """A pending interrupt in the inbox: its thread, the interrupt, and whether the viewer may answer it."""

    thread: ThreadView
    pending: Pending
    may_answer: bool


async def inbox(rt: OrchestratorRuntime, who: Identity) -> list[InboxItem]:
    """Every pending interrupt on the threads ``who`` may see, newest thread first (from the thread index)."""
    owner = None if who.sees(None) else who.name
    items: list[InboxItem] = []
    cursor = None
    for _ in range(INBOX_PAGES):
        page = await rt.thread_page(owner, limit=MAX_PAGE, cursor=cursor)
        for view in page.threads:
            for p in view.pending:
                items.append(InboxItem(view, p, may_answer=who.may(needed_role(str(p.payload.get("kind", ""))))))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return items


def may_answer(who: Identity, payload: dict[str, Any]) -> bool:
    """Whether ``who``'s role may answer an interrupt with this payload (:func:`services.approvals.needed_role`)."""
    return who.may(needed_role(str(payload.get("kind", ""))))
