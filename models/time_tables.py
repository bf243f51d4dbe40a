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
