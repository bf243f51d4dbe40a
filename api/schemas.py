"""Request bodies and public response shapes of the API (no secrets, no clone URLs, no server facts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from models.enums import ProjectStatus, ServerStatus
from models.tables import Project, Server
from nodes.po_tools import project_url
from runtime.threads import Answer


class ErrorOut(BaseModel):
    """What every refused request answers."""

    detail: str


class HealthOut(BaseModel):
    """Liveness of the API process."""

    status: Literal["ok"] = "ok"


class ThreadCreated(BaseModel):
    """A new thread id; nothing has run on it yet."""

    thread_id: str


class MessageIn(BaseModel):
    """A person's message to the PO."""

    text: str


class ResumeIn(BaseModel):
    """An answer to a pending interrupt.

    ``approve``; ``reject`` with ``text`` as the reason; ``answer`` with ``text`` as feedback or guidance.
    ``interrupt_id`` is needed only when several questions are pending.
    """

    action: Literal["approve", "reject", "answer"]
    text: str | None = None
    interrupt_id: str | None = None

    def to_answer(self) -> Answer:
        """The runtime's ``Answer`` for this body (``answer`` is the runtime's ``text`` kind)."""
        return Answer(kind="text" if self.action == "answer" else self.action, text=self.text)


class PendingPublic(BaseModel):
    """A pending interrupt: its id and typed payload (``payload["kind"]`` names the question)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    payload: dict[str, Any]


class ThreadPublic(BaseModel):
    """A thread with its pending interrupts; ``stopped_mid_run``: POST ``/threads/{id}/continue`` finishes it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str
    updated_at: str
    pending: list[PendingPublic]
    stopped_mid_run: bool


class SecretNamePublic(BaseModel):
    """One stored secret as the API shows it: its name and when it was last set (never its value)."""

    name: str
    updated_at: datetime


class ProjectSecretsPublic(BaseModel):
    """A project's secrets: the stored names, and the names its design requires that are not stored yet."""

    project: str
    secrets: list[SecretNamePublic]
    missing: list[str]


class ProjectPublic(BaseModel):
    """A project as the API shows it; ``url`` is its health URL once it has a server and a port."""

    name: str
    description: str
    status: ProjectStatus
    repo_full_name: str | None
    repo_url: str | None
    default_branch: str
    server: str | None
    port: int | None
    url: str | None
    setup_required: bool
    last_synced_at: datetime | None
    thread_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, project: Project, server: Server | None) -> ProjectPublic:
        """Build from a project row and its server row (None when it has none)."""
        fields = project.model_dump(include=set(cls.model_fields) - {"server", "url"})
        return cls(**fields, server=server.name if server else None, url=project_url(project, server))


class ServerPublic(BaseModel):
    """A server as the API shows it (no facts: they may carry the host's environment)."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    address: str
    ssh_port: int
    ssh_user: str
    connection: str
    status: ServerStatus
    port_range_start: int
    port_range_end: int
    fail_count: int
    last_seen_at: datetime | None
    created_at: datetime
