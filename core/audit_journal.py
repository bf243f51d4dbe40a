"""Every audit trail row also enters the domain event journal, in the same transaction, whoever writes it.

The trail (``models.tables.Event``) is written from many places (identities, status transitions, servers, the PO's
tools). Rather than each of them appending a journal row too, one SQLAlchemy ORM ``after_flush`` session event
(https://docs.sqlalchemy.org/en/20/orm/events.html#sqlalchemy.orm.SessionEvents.after_flush) inserts a
``DomainEvent(kind="audit")`` for each ``Event`` the flush has just inserted, on the flush's own connection: the
journal row commits or rolls back with the trail row, and a writer that forgets the journal cannot exist.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.orm import Session

from models.tables import Event
from models.time_tables import DomainEvent

AUDIT = "audit"
"""The journal kind of an audit trail row."""


def audit_row(trail: Event) -> dict[str, Any]:
    """The ``domain_event`` columns telling of one flushed audit trail row (its id is set by then).

    ``data`` holds ``event_id``, ``from_status``, ``to_status`` and ``reason``; subject, thread, actor and time are
    the trail row's own.
    """
    return {
        "kind": AUDIT,
        "subject_type": trail.subject_type,
        "subject_id": trail.subject_id,
        "thread_id": trail.thread_id,
        "actor": trail.actor,
        "data": {
            "event_id": trail.id,
            "from_status": trail.from_status,
            "to_status": trail.to_status,
            "reason": trail.reason,
        },
        "created_at": trail.created_at,
    }


def _journal_audit_rows(session: Session, _flush_context: Any) -> None:
    # In after_flush, ``session.new`` still lists what the flush inserted, ids assigned (SQLAlchemy docs above).
    trail = sorted((obj for obj in session.new if isinstance(obj, Event)), key=lambda e: e.id or 0)
    if not trail:
        return
    conn = session.connection()
    for row in trail:
        conn.execute(insert(DomainEvent).values(**audit_row(row)))


def install_audit_journal() -> None:
    """Listen to every ORM session's flushes (idempotent; :class:`core.db.Database` calls it)."""
    if not event.contains(Session, "after_flush", _journal_audit_rows):
        event.listen(Session, "after_flush", _journal_audit_rows)
