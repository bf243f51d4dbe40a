"""deadlines: remind before, and answer at, the deadline of every pending question (see :mod:`services.deadlines`).

One pass over the ``InterruptDeadline`` rows still ``pending``:

(a) reminders: for each point of ``deadline_reminders`` (seconds before the deadline) that has come and was not sent,
    one ``approval.reminded`` webhook event, the point recorded in ``reminders_sent`` by an atomic claim in the same
    transaction (so each point is sent once, even by two sync processes). Points that came together (the sync was
    down) are sent as one reminder; none is sent once the deadline has passed.
(b) deadlines: each row whose deadline has passed is claimed (``pending`` -> ``timed_out``, once across processes)
    and its thread resumed with the row's default answer through :class:`runtime.threads.OrchestratorRuntime`, as
    ``system:deadline``: the answer passes the same role check (:func:`services.approvals.check_answer`) and goes on
    the project's trail as any answer does. Then ``approval.timed_out`` is recorded and the thread's ``notice`` says
    what happened, for the person's next turn.

The webhook events are recorded here and sent by the sync's ``webhook_sender`` worker (right after this one in a
``--once`` run, every ``ORCH_WEBHOOK_SEND_INTERVAL_S`` in the service) or ``orchestrator webhooks send``: never by a
background task of a pass, which a ``--once`` process could cut short on exit.

A thread running elsewhere (its lock is held) gives its row back to ``pending`` for the next pass; a question
answered meanwhile (or a thread gone) settles its row as ``answered``; both are notes of the pass, not errors. The
sync runs every worker as it starts (``--once`` and the service alike), so a deadline that passed while the sync was
down is applied then.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from models.enums import AccessRole
from models.tables import ThreadRecord, utcnow
from models.time_tables import InterruptDeadline
from runtime.errors import RuntimeInputError, ThreadStateConflict, UnknownThread
from runtime.threads import Answer, OrchestratorRuntime
from services import deadlines
from services.identities import Identity
from services.notifications import approval_deadline_event
from sync_workers.base import PassSummary, SyncContext

WORKER = "deadlines"
IDENTITY = Identity(name="system:deadline", role=AccessRole.approver)
"""Who gives the default answers, as the trail names it: it must answer deploy approvals and guidance on any thread
(an approver's role), and it only ever gives the answers the deadlines' policy names."""
log = logging.getLogger(__name__)


async def run_pass(
    ctx: SyncContext, runtime: OrchestratorRuntime | None = None, *, now: datetime | None = None
) -> PassSummary:
    """Send the due reminders, then apply every passed deadline.

    Args:
        ctx: the sync context (settings, database).
        runtime: an open runtime to resume threads with; None opens one for this pass when a deadline has passed.
        now: the current time (aware UTC); default now.

    Returns:
        The pass summary: ``updated`` counts reminders sent and deadlines applied, ``resumed`` the threads resumed;
        a busy thread or a question answered meanwhile is a note, a failure of one row an error (the others still
        run).
    """
    started = time.perf_counter()
    summary = PassSummary(worker=WORKER)
    now = now or utcnow()
    rows = await deadlines.pending_deadlines(ctx.db)
    for row in rows:
        try:
            await _remind(ctx, row, now, summary)
        except Exception as exc:
            log.exception("reminder of %s/%s failed", row.thread_id, row.interrupt_id)
            summary.errors.append(f"reminder on thread {row.thread_id}: {type(exc).__name__}: {exc}")
    passed = [r for r in rows if deadlines.aware(r.deadline_at) <= now]
    if passed:
        if runtime is not None:
            await _apply_all(ctx, runtime, passed, now, summary)
        else:
            async with OrchestratorRuntime(ctx.settings) as rt:
                await _apply_all(ctx, rt, passed, now, summary)
    summary.duration_s = time.perf_counter() - started
    return summary


async def _remind(ctx: SyncContext, row: InterruptDeadline, now: datetime, summary: PassSummary) -> None:
    points = deadlines.due_reminders(row, ctx.settings.deadline_reminders, now)
    if not points:
        return
    payload = await _indexed_payload(ctx, row)
    if payload is None:
        return  # not pending in the thread index (being answered now): the run's end settles the row
    left = (deadlines.aware(row.deadline_at) - now).total_seconds()
    async with ctx.db.session() as s:
        if not await deadlines.claim_reminder(s, row, points):
            return
        data = {**payload, "reminder_s": min(points), "seconds_left": int(left)}
        await approval_deadline_event(
            s, timed_out=False, thread_id=row.thread_id, interrupt_id=row.interrupt_id, payload=data
        )
    summary.updated += 1
    summary.notes.append(
        f"reminded: {row.kind} of {payload.get('project') or '?'} on thread {row.thread_id}, deadline in "
        f"{deadlines.human_duration(left)} (then: {payload.get('on_deadline') or row.default_answer.get('kind')})"
    )


async def _indexed_payload(ctx: SyncContext, row: InterruptDeadline) -> dict[str, Any] | None:
    """The interrupt's payload as the thread index has it; None if the index does not list it as pending."""
    async with ctx.db.session() as s:
        record = await s.get(ThreadRecord, row.thread_id)
    for entry in (record.pending or []) if record else []:
        if entry.get("id") == row.interrupt_id:
            return dict(entry.get("payload") or {})
    return None


async def _apply_all(
    ctx: SyncContext, rt: OrchestratorRuntime, rows: list[InterruptDeadline], now: datetime, summary: PassSummary
) -> None:
    for row in rows:
        assert row.id is not None
        if not await deadlines.claim_timeout(ctx.db, row.id, now):
            continue  # another sync process took it, or it was settled meanwhile
        try:
            await _apply(ctx, rt, row, summary)
        except Exception as exc:
            log.exception("deadline of %s/%s failed", row.thread_id, row.interrupt_id)
            summary.errors.append(f"deadline on thread {row.thread_id}: {type(exc).__name__}: {exc}")


async def _apply(ctx: SyncContext, rt: OrchestratorRuntime, row: InterruptDeadline, summary: PassSummary) -> None:
    """Resume a claimed row's thread with its default answer; settle or give the row back if that cannot be done."""
    assert row.id is not None
    where = f"{row.kind} on thread {row.thread_id}"
    payload = await _live_payload(rt, row)
    if payload is None:
        await deadlines.settle_answered(ctx.db, row.id)
        summary.notes.append(f"{where}: no longer pending (answered before its deadline); nothing to do")
        return
    answer = Answer(row.default_answer["kind"], row.default_answer.get("text"))
    try:
        async for _ev in rt.resume(row.thread_id, answer, row.interrupt_id, actor=IDENTITY):
            pass
    except ThreadStateConflict as exc:
        if await _live_payload(rt, row) is None:
            await deadlines.settle_answered(ctx.db, row.id)
            summary.notes.append(f"{where}: answered meanwhile; nothing to do")
        else:
            await deadlines.release(ctx.db, row.id)
            summary.notes.append(f"{where}: {exc}; the deadline is applied on a later pass")
        return
    except RuntimeInputError as exc:  # refused before anything changed (a role, an answer of the wrong shape)
        await deadlines.release(ctx.db, row.id)
        summary.errors.append(f"{where}: the default answer was refused: {exc}")
        return
    except Exception as exc:  # the answer was given; the rest of the run failed (the trail says run_failed)
        log.exception("the run after the deadline of %s failed", where)
        summary.errors.append(f"{where}: answered, then the run failed: {type(exc).__name__}: {exc}")
    await _record(ctx, row, payload)
    summary.updated += 1
    summary.resumed += 1
    summary.notes.append(f"{where}: deadline passed; answered {answer.kind} as {IDENTITY.name}")


async def _live_payload(rt: OrchestratorRuntime, row: InterruptDeadline) -> dict[str, Any] | None:
    """The interrupt's payload if it is pending in the thread's checkpoint; None if not (or the thread is gone)."""
    try:
        pending = await rt.pending(row.thread_id)
    except UnknownThread:
        return None
    return next((dict(p.payload) for p in pending if p.id == row.interrupt_id), None)


async def _record(ctx: SyncContext, row: InterruptDeadline, payload: dict[str, Any]) -> None:
    """``approval.timed_out`` and the thread's notice, in one transaction."""
    async with ctx.db.session() as s:
        data = {**payload, "default_answer": row.default_answer, "answered_by": IDENTITY.name}
        await approval_deadline_event(
            s, timed_out=True, thread_id=row.thread_id, interrupt_id=row.interrupt_id, payload=data
        )
        await deadlines.write_notice(s, row.thread_id, deadlines.notice_text(row, payload, by=IDENTITY.name))
