"""The domain event journal: appending to it, reading it in id order, following it live, and pruning it.

One table (``domain_event``, :class:`models.time_tables.DomainEvent`) tells of everything worth watching: audit trail
rows (``audit``, appended by :mod:`core.audit_journal` on every flush), the notification events of
:mod:`services.notifications` (``deploy.succeeded``, ``incident.opened``...) and the sync service's pass summaries
(``sync.pass``). ``GET /events`` (as Server-Sent Events) and ``orchestrator events --follow`` follow it by id.

Following is polling, not PostgreSQL's LISTEN/NOTIFY: SQLite, the embedded default, has no notification channel, and
a poll of an indexed ``id > cursor`` query every half second costs little and works the same on both databases.

The gap rule (:class:`GapGuard`): ids are handed out at INSERT, not at commit. On PostgreSQL two transactions may take
ids 7 and 8 and commit 8 first, so a reader that moved its cursor to 8 would never see 7. A follower therefore hands
out rows in id order only while every lower id is accounted for; a missing id (a *hole*) holds back what is above
it until either the hole fills, or the hole has been known for ``grace_s`` seconds (its transaction rolled back, or
is so long that a live follower cannot wait for it), or the row above it was stamped more than ``stale_s`` seconds
ago (an old hole, met when resuming from an old id). A row that commits later than that is not streamed live (it is
still in the journal, and ``orchestrator events --after`` lists it). On SQLite writers are serialized and an id is
never visible before the rows below it, so holes only come from rows deleted by retention, which are old.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db import Database
from models.tables import utcnow
from models.time_tables import DomainEvent

log = logging.getLogger(__name__)

SYNC_PASS = "sync.pass"
"""The journal kind of a sync worker's pass summary."""
KIND_PATTERN = r"^[a-z][a-z_.]{0,63}$"
"""What a kind filter (a prefix of kinds such as ``deploy.`` or ``audit``) may look like."""
POLL_S = 0.5
"""Seconds between two reads of the journal while following it."""
GRACE_S = 10.0
"""How long a follower waits for a hole in the ids to fill (see the module docstring)."""
STALE_S = 60.0
"""A hole below a row stamped longer ago than this is not waited for at all."""
BATCH = 500
"""Rows read at most per poll."""
PRUNE_EVERY_S = 600.0
"""A process prunes the journal at most this often (seconds)."""
_last_prune: dict[str, float] = {}
"""When this process last pruned each database (``time.monotonic()``), by URL."""
_SUBJECT_KEYS = (("incident_id", "incident"), ("deployment_id", "deployment"), ("project_id", "project"))


def event_dict(row: DomainEvent) -> dict[str, Any]:
    """A journal row as the stream and ``--json`` show it: id, kind, subject, thread, actor, data, ISO time."""
    return {
        "id": row.id,
        "kind": row.kind,
        "subject_type": row.subject_type,
        "subject_id": row.subject_id,
        "thread_id": row.thread_id,
        "actor": row.actor,
        "data": row.data,
        "created_at": row.created_at.isoformat(),
    }


def matches(row: DomainEvent, kind_prefix: str | None) -> bool:
    """Whether ``row``'s kind starts with ``kind_prefix`` (None matches every row)."""
    return kind_prefix is None or row.kind.startswith(kind_prefix)


def json_safe(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as JSON will store it (a datetime or other odd value becomes its string), so writing never fails."""
    safe: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return safe


def notification_row(event: str, data: dict[str, Any]) -> DomainEvent:
    """The journal row of a notification event: its subject is the incident, deployment or project ``data`` names.

    Args:
        event: the event's name (``deploy.succeeded``...), which becomes the row's kind.
        data: the event's details, as the webhooks get them (never a secret).
    """
    subject_type, subject_id = None, None
    for key, name in _SUBJECT_KEYS:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            subject_type, subject_id = name, value
            break
    thread = data.get("thread_id")
    actor = data.get("actor")
    return DomainEvent(
        kind=event,
        subject_type=subject_type,
        subject_id=subject_id,
        thread_id=thread[:64] if isinstance(thread, str) else None,
        actor=actor[:200] if isinstance(actor, str) else None,
        data=json_safe(data),
    )


async def record_pass(db: Database, worker: str, summary: dict[str, Any]) -> None:
    """Append a ``sync.pass`` row for one pass of ``worker``; ``summary`` is its PassSummary's fields."""
    data = json_safe({**summary, "worker": worker})
    async with db.session() as s:
        s.add(DomainEvent(kind=SYNC_PASS, subject_type="worker", actor=f"system:{worker}", data=data))


async def prune(db: Database, *, older_than_days: int, now: datetime | None = None) -> int:
    """Delete journal rows stamped more than ``older_than_days`` days before ``now``; returns how many.

    The newest row is always kept, even when old: SQLite hands out ``max(id) + 1`` (the table has no AUTOINCREMENT),
    so emptying the table would hand out ids a follower has already seen.
    """
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    async with db.session() as s:
        newest = (await s.exec(select(func.max(DomainEvent.id)))).one()
        if newest is None:
            return 0
        stmt = delete(DomainEvent).where(col(DomainEvent.created_at) < cutoff, col(DomainEvent.id) < newest)
        result = await s.exec(stmt)  # type: ignore[call-overload]
        return int(result.rowcount or 0)


async def prune_now_and_then(db: Database, *, older_than_days: int) -> int:
    """:func:`prune`, at most once per :data:`PRUNE_EVERY_S` per database in this process; returns rows deleted."""
    now = time.monotonic()
    last = _last_prune.get(db.url)
    if last is not None and now - last < PRUNE_EVERY_S:
        return 0
    _last_prune[db.url] = now
    return await prune(db, older_than_days=older_than_days)


async def latest_id(db: Database) -> int:
    """The highest id in the journal (0 when empty): where a follower starts that wants only what comes next."""
    async with db.session() as s:
        return int((await s.exec(select(func.max(DomainEvent.id)))).one() or 0)


async def read_after(session: AsyncSession, after: int, *, limit: int = BATCH) -> list[DomainEvent]:
    """Up to ``limit`` rows with ids above ``after``, in id order."""
    stmt = select(DomainEvent).where(col(DomainEvent.id) > after).order_by(col(DomainEvent.id)).limit(limit)
    return list((await session.exec(stmt)).all())


async def recent(db: Database, *, limit: int, kind: str | None = None, up_to: int | None = None) -> list[DomainEvent]:
    """The newest ``limit`` rows (of kinds starting with ``kind``, ids up to ``up_to``), oldest first."""
    stmt = select(DomainEvent).order_by(col(DomainEvent.id).desc()).limit(limit)
    if kind is not None:
        stmt = stmt.where(col(DomainEvent.kind).startswith(kind, autoescape=True))
    if up_to is not None:
        stmt = stmt.where(col(DomainEvent.id) <= up_to)
    async with db.session() as s:
        rows = list((await s.exec(stmt)).all())
    return rows[::-1]


async def page_after(db: Database, *, after: int, batch: int = BATCH) -> AsyncIterator[DomainEvent]:
    """Every row with an id above ``after`` as of now, in id order, read ``batch`` rows at a time."""
    cursor = after
    while True:
        async with db.session() as s:
            rows = await read_after(s, cursor, limit=batch)
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        cursor = rows[-1].id or cursor


@dataclass
class GapGuard:
    """Which of the rows read above a cursor may be handed out now, so that none is sent twice or skipped early.

    ``cursor``: every id up to it was handed out or given up on; the next read asks for ids above it. See the
    module docstring for the rule; ``grace_s`` and ``stale_s`` are its two limits, in seconds.
    """

    cursor: int
    grace_s: float = GRACE_S
    stale_s: float = STALE_S
    skipped: int = 0
    """Ids given up on so far (holes never filled)."""
    _seen: list[tuple[int, float]] = field(default_factory=list)
    """(highest id read, monotonic time it was first read), ascending: when each hole became known."""

    def release(self, rows: Sequence[DomainEvent], *, now: float, wall: datetime) -> list[DomainEvent]:
        """The rows to hand out now, in id order; the cursor moves past them.

        Args:
            rows: what a read of ids above :attr:`cursor` returned (any order; ids at or below it are ignored).
            now: ``time.monotonic()`` of the read.
            wall: the UTC time of the read (compared with the rows' ``created_at``).
        """
        fresh = sorted((r for r in rows if (r.id or 0) > self.cursor), key=lambda r: r.id or 0)
        if fresh and (not self._seen or (fresh[-1].id or 0) > self._seen[-1][0]):
            self._seen.append((fresh[-1].id or 0, now))
        out: list[DomainEvent] = []
        for row in fresh:
            row_id = row.id or 0
            if row_id > self.cursor + 1:
                if not self._hole_settled(row, now=now, wall=wall):
                    break
                self.skipped += row_id - self.cursor - 1
                log.debug("journal ids %d..%d never appeared; moving on", self.cursor + 1, row_id - 1)
            out.append(row)
            self.cursor = row_id
        self._seen = [(i, t) for i, t in self._seen if i > self.cursor]
        return out

    def _hole_settled(self, above: DomainEvent, *, now: float, wall: datetime) -> bool:
        """Whether the ids missing just below ``above`` are given up on (known ``grace_s``, or ``above`` is stale)."""
        noticed = next(t for i, t in self._seen if i >= (above.id or 0))
        return now - noticed >= self.grace_s or (wall - above.created_at).total_seconds() >= self.stale_s


async def follow(
    db: Database,
    *,
    after: int,
    poll_s: float = POLL_S,
    grace_s: float = GRACE_S,
    stale_s: float = STALE_S,
    batch: int = BATCH,
) -> AsyncGenerator[list[DomainEvent]]:
    """Follow the journal from ``after`` forever, yielding after each read the rows now safe to hand out.

    A yield is often empty (nothing new): callers use it to send keep-alives or to check whether to stop. Reads
    follow each other without a pause while full batches come back and all of them are handed out.

    Args:
        db: the orchestrator's database.
        after: the last id the caller already has (0: from the beginning).
        poll_s: seconds between reads when caught up.
        grace_s: see :class:`GapGuard`.
        stale_s: see :class:`GapGuard`.
        batch: rows per read.
    """
    guard = GapGuard(after, grace_s=grace_s, stale_s=stale_s)
    while True:
        async with db.session() as s:
            rows = await read_after(s, guard.cursor, limit=batch)
        ready = guard.release(rows, now=time.monotonic(), wall=utcnow())
        yield ready
        if len(rows) < batch or len(ready) < len(rows):
            await asyncio.sleep(poll_s)


async def journal_pass(db: Database, summary: dict[str, Any], *, retention_days: int) -> None:
    """After a sync pass: append its ``sync.pass`` row, and now and then prune rows past ``retention_days``.

    ``summary`` is the pass's PassSummary as a dict (``worker`` names it). A failure here is logged, never raised:
    the pass itself is done, and the journal is not worth failing it for.
    """
    worker = str(summary.get("worker", "?"))
    try:
        await record_pass(db, worker, {**summary, "ok": not summary.get("errors")})
        pruned = await prune_now_and_then(db, older_than_days=retention_days)
        if pruned:
            log.info("domain event journal: %d row(s) older than %d days pruned", pruned, retention_days)
    except Exception:
        log.exception("could not journal the pass of %s", worker)
