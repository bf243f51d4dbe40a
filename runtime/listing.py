"""The thread index: each thread's pending interrupts and run state, written when a run starts and ends.

Listings read the ``thread`` table alone, one page at a time, newest first; no checkpoint is opened (LangGraph has no
cross-thread listing, and reading each thread's checkpoint costs a query per thread). Archived threads
(``archived_at`` set, :func:`archive`) are left out unless asked for. This module imports neither LangGraph nor
litellm, so ``orchestrator threads`` starts quickly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import and_, or_, update
from sqlmodel import col, select

from core.db import Database
from models.tables import ThreadRecord, utcnow
from runtime.errors import RuntimeInputError

MAX_PAGE = 500
"""The largest page a listing returns."""


@dataclass(frozen=True)
class Pending:
    """One pending interrupt: its id and typed payload (``payload["kind"]`` names the question)."""

    id: str
    payload: dict[str, Any]


@dataclass
class ThreadView:
    """A thread for listings."""

    id: str
    title: str
    updated_at: str
    pending: list[Pending] = field(default_factory=list)
    stopped_mid_run: bool = False
    """The last run stopped between supersteps (a crash or kill): ``continue_run`` finishes it."""
    archived_at: str | None = None
    """When the thread was archived (ISO 8601, UTC); None: not archived."""


@dataclass
class ThreadPage:
    """One page of a listing: its threads, newest first, and the cursor of the next page (None: the last page).

    ``unindexed`` names the threads of the page whose index was never written (from before the index): their
    ``pending`` is empty here until :meth:`runtime.threads.OrchestratorRuntime.threads` reads their checkpoint.
    """

    threads: list[ThreadView]
    next_cursor: str | None = None
    unindexed: list[str] = field(default_factory=list)


CURSOR_PATTERN = r"^[0-9]{1,17}~[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""A cursor: the last listed thread's ``updated_at`` in microseconds since the epoch (UTC), ``~``, and its id.

Every string of this shape is a position in the newest-first order (a page after it, perhaps empty)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(row: ThreadRecord) -> str:
    """The cursor of the page after ``row`` (see :data:`CURSOR_PATTERN`); a naive ``updated_at`` is taken as UTC."""
    when = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
    return f"{(when - _EPOCH) // timedelta(microseconds=1)}~{row.id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """``(updated_at, id)`` of a cursor of :data:`CURSOR_PATTERN`'s shape.

    Raises:
        RuntimeInputError: another shape (the message says to pass a page's ``next_cursor``).
    """
    if re.fullmatch(CURSOR_PATTERN, cursor) is None:
        raise RuntimeInputError(
            f"bad cursor {cursor[:40]!r}: pass the next_cursor of a previous page, or none for the first"
        )
    micros, _, thread_id = cursor.partition("~")
    return _EPOCH + timedelta(microseconds=int(micros)), thread_id


def _view(row: ThreadRecord) -> ThreadView:
    pending = [Pending(id=p["id"], payload=dict(p["payload"])) for p in row.pending or []]
    return ThreadView(
        id=row.id,
        title=row.title,
        updated_at=row.updated_at.isoformat(),
        pending=pending,
        stopped_mid_run=row.stopped_mid_run and not pending,
        archived_at=_utc(row.archived_at).isoformat() if row.archived_at else None,
    )


def _utc(when: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written in UTC."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def list_threads(
    db: Database,
    *,
    owner: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    archived: bool = False,
) -> ThreadPage:
    """A page of threads (only ``owner``'s if given), newest first, from the index alone.

    Args:
        db: the database holding the ``thread`` table.
        owner: only this identity's threads; None for everyone's.
        limit: the page size, 1 to :data:`MAX_PAGE`; None for every thread (no next page).
        cursor: the ``next_cursor`` of the previous page; None for the first page.
        archived: archived threads too (their ``archived_at`` says so); False leaves them out.

    Raises:
        RuntimeInputError: a limit out of range, or a cursor not made by this listing.
    """
    if limit is not None and not 1 <= limit <= MAX_PAGE:
        raise RuntimeInputError(f"limit must be 1 to {MAX_PAGE}; got {limit}")
    newest = (col(ThreadRecord.updated_at).desc(), col(ThreadRecord.id).desc())
    query = select(ThreadRecord).order_by(*newest)
    if owner is not None:
        query = query.where(ThreadRecord.owner == owner)
    if not archived:
        query = query.where(col(ThreadRecord.archived_at).is_(None))
    if cursor is not None:
        when, after = decode_cursor(cursor)
        query = query.where(
            or_(
                col(ThreadRecord.updated_at) < when,
                and_(col(ThreadRecord.updated_at) == when, col(ThreadRecord.id) < after),
            )
        )
    if limit is not None:
        query = query.limit(limit + 1)
    async with db.session() as s:
        rows = list((await s.exec(query)).all())
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit is not None else rows
    return ThreadPage(
        threads=[_view(r) for r in rows],
        next_cursor=encode_cursor(rows[-1]) if more else None,
        unindexed=[r.id for r in rows if r.pending is None],
    )


async def write_index(db: Database, thread_id: str, *, pending: list[Pending], stopped_mid_run: bool) -> None:
    """Record a thread's pending interrupts and run state (when a run starts, ends, or a listing indexes it).

    Payloads are stored as JSON (dates as ISO strings, enums as their values). Does not move ``updated_at`` (a
    listing that indexes an old thread must not make it the newest). A thread with no record is left alone.
    """
    async with db.session() as s:
        row = await s.get(ThreadRecord, thread_id)
        if row is None:
            return
        row.pending = [{"id": p.id, "payload": to_jsonable_python(p.payload)} for p in pending]
        row.stopped_mid_run = stopped_mid_run
        s.add(row)


async def touch(db: Database, thread_id: str, *, title: str | None = None, owner: str | None = None) -> None:
    """Create the thread's record (titled, owned; nothing pending) or move its ``updated_at`` to now."""
    async with db.session() as s:
        row = await s.get(ThreadRecord, thread_id)
        if row is None:
            row = ThreadRecord(id=thread_id, title=(title or "")[:80], owner=owner, pending=[])
        elif title and not row.title:
            row.title = title[:80]
        row.updated_at = utcnow()
        s.add(row)


async def thread_record(db: Database, thread_id: str) -> ThreadRecord | None:
    """The thread's index row (None: no record)."""
    async with db.session() as s:
        return await s.get(ThreadRecord, thread_id)


async def start_run(db: Database, thread_id: str, *, base: str, model: str) -> None:
    """Mark a run as started: nothing pending, mid-run, the checkpoint it starts from, the model it uses.

    ``base`` is the checkpoint id (``""``: the thread had no checkpoint), which a ``rollback`` double text returns
    to. A thread with no record is left alone.
    """
    async with db.session() as s:
        row = await s.get(ThreadRecord, thread_id)
        if row is None:
            return
        row.pending, row.stopped_mid_run, row.run_abandoned_at = [], True, None
        row.run_base_checkpoint, row.model = base, model[:200]
        s.add(row)


async def take_notice(db: Database, thread_id: str) -> str | None:
    """The thread's notice (what happened while nobody watched), cleared as it is read; None if there is none.

    The clear is a compare-and-set (``UPDATE ... WHERE notice = <what was read>``): a notice written in between by
    another process is kept for the next turn, never lost.
    """
    async with db.session() as s:
        row = await s.get(ThreadRecord, thread_id)
        notice = row.notice if row is not None else None
        if not notice:
            return None
        await s.exec(
            update(ThreadRecord)
            .where(col(ThreadRecord.id) == thread_id, col(ThreadRecord.notice) == notice)
            .values(notice=None)
        )
        return notice


async def archive(db: Database, thread_id: str) -> bool:
    """Mark the thread archived now (listings leave it out; its checkpoints stay); False if it already was.

    A thread with a checkpoint but no record (from before the index) gets one. ``updated_at`` does not move. The
    mark is a compare-and-set (``UPDATE ... WHERE archived_at IS NULL``): two archives at once set it once.
    """
    async with db.session() as s:
        if await s.get(ThreadRecord, thread_id) is None:
            s.add(ThreadRecord(id=thread_id))
            await s.flush()
        done = await s.exec(
            update(ThreadRecord)
            .where(col(ThreadRecord.id) == thread_id, col(ThreadRecord.archived_at).is_(None))
            .values(archived_at=utcnow())
        )
        return bool(done.rowcount)


async def abandon_run(db: Database, thread_id: str) -> None:
    """Record that the thread's stopped run is abandoned: nothing pending, not mid-run, abandoned now.

    :func:`runtime.multitask.was_cancelled` reads it back, and ``run_abandoned_at`` keeps that run from being
    continued (:func:`run_abandoned`). A thread with no record (from before the index) gets one.
    """
    async with db.session() as s:
        row = await s.get(ThreadRecord, thread_id) or ThreadRecord(id=thread_id)
        row.pending, row.stopped_mid_run, row.run_abandoned_at = [], False, utcnow()
        s.add(row)


def run_abandoned(record: ThreadRecord | None) -> bool:
    """Whether the thread's stopped run was cancelled (:func:`abandon_run`) and no run started since."""
    return record is not None and record.run_abandoned_at is not None
