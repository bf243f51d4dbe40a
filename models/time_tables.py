"""Tables of time and events: the domain event journal and the deadlines of pending interrupts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.tables import utcnow


class DomainEvent(SQLModel, table=True):
    """One entry of the domain event journal, streamed by ``GET /events`` and ``orchestrator events --follow``.

    Appended in the same transaction as the change it tells of (an audit trail row, an incident, a deploy, an
    approval, a sync pass summary), so a reader never sees an event for a change rolled back. ``id`` grows with
    every row and is the stream's ``id:`` field, which a client sends back as ``Last-Event-ID`` to resume.
    """

    __tablename__ = "domain_event"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True, max_length=64)
    """``audit``, one of ``services.notifications.EVENTS`` (``deploy.succeeded``...) or ``sync.pass``."""
    subject_type: str | None = Field(default=None, max_length=32)
    subject_id: int | None = None
    thread_id: str | None = Field(default=None, max_length=64)
    actor: str | None = Field(default=None, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """Details of the event (ids, names, statuses, messages; never a secret)."""
    created_at: datetime = Field(default_factory=utcnow, index=True)


class InterruptDeadline(SQLModel, table=True):
    """The deadline of one pending interrupt and what is done when it passes unanswered.

    Written when a run stops at the interrupt; the sync service's ``deadlines`` worker sends the reminders and, once
    ``deadline_at`` has passed, resumes the thread with ``default_answer`` as ``system:deadline``.
    """

    __tablename__ = "interrupt_deadline"
    __table_args__ = (UniqueConstraint("thread_id", "interrupt_id"),)

    id: int | None = Field(default=None, primary_key=True)
    thread_id: str = Field(index=True, max_length=64)
    interrupt_id: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    """The interrupt's ``kind`` (``deploy_approval``, ``engineering_guidance``...)."""
    deadline_at: datetime = Field(index=True)
    """UTC; when the default answer is given."""
    default_answer: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The answer given at the deadline, as ``{"kind": "approve|reject|text", "text": ...}``."""
    reminders_sent: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """The reminder points already sent, in seconds before the deadline."""
    status: str = Field(default="pending", max_length=16, index=True)
    """``pending``, ``answered`` (someone answered in time), ``timed_out`` (the default answer was given)."""
    created_at: datetime = Field(default_factory=utcnow)
    settled_at: datetime | None = None


class Run(SQLModel, table=True):
    """One run of a thread: a message, a resume or a continue, from its start to how it ended.

    ``id`` is the run id (``r-`` and 12 hex digits); node executions and model calls name it.
    """

    __tablename__ = "run"

    id: str = Field(primary_key=True, max_length=64)
    thread_id: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=16)
    """``message``, ``resume`` or ``continue``."""
    actor: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    started_at: datetime = Field(default_factory=utcnow, index=True)
    finished_at: datetime | None = None
    outcome: str | None = Field(default=None, max_length=16)
    """``done``, ``interrupted`` (stopped at a question), ``drained`` (stopped between supersteps), ``failed``,
    ``lost`` (its process ended before it did, see ``services.lost_runs.settle_lost_runs``); None while it runs."""
    error: str | None = None
    host: str | None = Field(default=None, max_length=255)
    """The machine whose process runs it (``socket.gethostname()``); None for runs stored before it was recorded."""
    pid: int | None = None
    """That process's id: once it is gone on ``host``, a run with no outcome is ``lost``."""


class NodeRun(SQLModel, table=True):
    """One node execution of a run: where in the graph (``path`` through subgraphs), when, how long, how it ended."""

    __tablename__ = "node_run"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(index=True, max_length=64)
    thread_id: str = Field(index=True, max_length=64)
    node: str = Field(max_length=128)
    path: str = Field(default="", max_length=512)
    """The parent subgraph nodes, joined by ``/`` (empty for a node of the top graph)."""
    started_at: datetime = Field(default_factory=utcnow)
    duration_ms: float = 0.0
    outcome: str = Field(default="ok", max_length=16)
    """``ok``, ``error`` or ``interrupted``."""
    error: str | None = None
