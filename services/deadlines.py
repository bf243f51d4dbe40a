"""Deadlines of pending interrupts: what each kind of question waits for, what is done when nobody answers.

Every interrupt payload carries ``deadline`` (ISO 8601 UTC, or None) and ``on_deadline`` (the default outcome in
words), filled by :func:`deadline_fields` when the question is asked. When a run stops at a question, :func:`track`
writes one ``InterruptDeadline`` row per pending interrupt; the sync's ``deadlines`` worker
(:mod:`sync_workers.deadlines`) sends the reminders and, once the deadline has passed, resumes the thread with the
row's default answer as ``system:deadline``.

| kind | setting (seconds, 0: none) | default answer | ``on_deadline`` |
|---|---|---|---|
| deploy_approval | ``deadline_deploy_approval_s`` (24 h) | reject, "no answer within 24 h" | ``reject`` |
| engineering_guidance | ``deadline_guidance_s`` (24 h) | ``stop`` | ``stop`` |
| budget_exhausted | ``deadline_budget_s`` (24 h) | stop (the budget is not extended) | ``stop`` |
| waiting_for_resources | ``deadline_resources_s`` (none) | retry the resource search | ``retry`` |

Every state change of a row is one atomic ``UPDATE ... WHERE status = ...`` whose row count says whether this caller
won, so two sync processes never send a reminder twice nor answer the same question twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import String, cast, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from core.db import Database
from core.settings import Settings
from models.tables import ThreadRecord, utcnow
from models.time_tables import InterruptDeadline

PENDING, ANSWERED, TIMED_OUT = "pending", "answered", "timed_out"


@dataclass(frozen=True)
class Policy:
    """What one kind of question does at its deadline.

    ``setting``: the Settings field with the seconds it waits; ``answer``: the default answer's kind
    (``approve|reject|text``, as ``runtime.answers.Answer``); ``text``: its text (``{within}`` is replaced by the
    wait in words); ``then``: the outcome in one word (the payload's ``on_deadline``); ``done``: the outcome in a
    sentence for the notice; ``what``: the question's name in words.
    """

    setting: str
    answer: str
    text: str
    then: str
    done: str
    what: str


POLICIES: dict[str, Policy] = {
    "deploy_approval": Policy(
        "deadline_deploy_approval_s",
        "reject",
        "no answer within {within}",
        "reject",
        "it was rejected",
        "deploy approval",
    ),
    "engineering_guidance": Policy(
        "deadline_guidance_s", "text", "stop", "stop", "the work was stopped", "guidance request"
    ),
    "budget_exhausted": Policy(
        "deadline_budget_s", "reject", "no answer within {within}", "stop", "the work was stopped", "budget question"
    ),
    "waiting_for_resources": Policy(
        "deadline_resources_s",
        "text",
        "no server within {within}; looking again",
        "retry",
        "the resource search was retried",
        "wait for a server",
    ),
}
"""The default outcome of each interrupt kind (an unknown kind has no deadline)."""


def human_duration(seconds: float) -> str:
    """``seconds`` in words: ``24 h``, ``1 h 30 min``, ``10 min``, ``3 s``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{secs} s" if secs else ""]
    return " ".join(p for p in parts if p) or "0 s"


def wait_of(settings: Settings, kind: str) -> float:
    """Seconds a question of ``kind`` waits for an answer; 0 means no deadline (also for an unknown kind)."""
    policy = POLICIES.get(kind)
    return float(getattr(settings, policy.setting)) if policy else 0.0


class DeadlineFields(TypedDict):
    """The deadline fields of an interrupt payload."""

    deadline: str | None
    on_deadline: str | None


def deadline_fields(settings: Settings, kind: str, now: datetime | None = None) -> DeadlineFields:
    """The payload's ``deadline`` (ISO 8601 UTC, whole seconds) and ``on_deadline`` for a question asked ``now``.

    Both None when the kind has no deadline (its setting is 0). Pure: an interrupting node that re-runs on resume
    may call it again.
    """
    wait = wait_of(settings, kind)
    if wait <= 0:
        return {"deadline": None, "on_deadline": None}
    at = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0) + timedelta(seconds=wait)
    return {"deadline": at.isoformat(), "on_deadline": POLICIES[kind].then}


def default_answer(settings: Settings, kind: str) -> dict[str, str]:
    """The answer given at the deadline, ``{"kind": "approve|reject|text", "text": ...}``.

    Raises:
        KeyError: ``kind`` has no policy.
    """
    policy = POLICIES[kind]
    return {"kind": policy.answer, "text": policy.text.format(within=human_duration(wait_of(settings, kind)))}


def parse_deadline(value: object) -> datetime | None:
    """A payload's ``deadline`` as an aware UTC datetime; None for None or a value that is not ISO 8601."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return aware(parsed)


def aware(value: datetime) -> datetime:
    """A datetime in UTC; SQLite hands them back naive (they were written in UTC)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


async def track(
    db: Database, settings: Settings, thread_id: str, pending: Sequence[tuple[str, dict[str, Any]]]
) -> list[InterruptDeadline]:
    """Record the deadlines of a thread's pending interrupts when a run stops; settle those no longer pending.

    Idempotent: an interrupt already tracked keeps its first deadline. A payload whose deadline differs from the
    kept one (its node re-ran, e.g. after a sibling branch was resumed) is corrected in place, and so is the thread
    index, so every listing shows the deadline that is enforced. Rows of this thread whose interrupt is not pending
    any more become ``answered`` (a ``timed_out`` row stays as it is).

    Args:
        db: the database.
        settings: the deadlines' settings (the default answers' wording).
        thread_id: the thread whose run just stopped.
        pending: its pending interrupts as ``(interrupt id, payload)``; payloads without a deadline are not tracked.

    Returns:
        The rows of the interrupts pending now that have a deadline.
    """
    for attempt in range(2):
        try:
            return await _track(db, settings, thread_id, pending)
        except IntegrityError:  # another writer tracked the same interrupt first: read its row instead
            if attempt:
                raise
    raise AssertionError("unreachable")


async def _track(
    db: Database, settings: Settings, thread_id: str, pending: Sequence[tuple[str, dict[str, Any]]]
) -> list[InterruptDeadline]:
    kept: list[InterruptDeadline] = []
    corrected = False
    async with db.session() as s:
        query = select(InterruptDeadline).where(InterruptDeadline.thread_id == thread_id)
        rows = {r.interrupt_id: r for r in (await s.exec(query)).all()}
        for interrupt_id, payload in pending:
            kind = str(payload.get("kind", ""))
            when = parse_deadline(payload.get("deadline"))
            row = rows.get(interrupt_id)
            if row is None:
                if when is None or kind not in POLICIES:
                    continue
                row = InterruptDeadline(
                    thread_id=thread_id,
                    interrupt_id=interrupt_id,
                    kind=kind,
                    deadline_at=when,
                    default_answer=default_answer(settings, kind),
                )
                s.add(row)
            elif when != aware(row.deadline_at):
                payload["deadline"] = aware(row.deadline_at).isoformat()
                payload["on_deadline"] = POLICIES[row.kind].then if row.kind in POLICIES else payload.get("on_deadline")
                corrected = True
            kept.append(row)
        await s.exec(  # type: ignore[call-overload]
            update(InterruptDeadline)
            .where(
                col(InterruptDeadline.thread_id) == thread_id,
                col(InterruptDeadline.status) == PENDING,
                col(InterruptDeadline.interrupt_id).not_in([i for i, _ in pending]),
            )
            .values(status=ANSWERED, settled_at=utcnow())
        )
        if corrected:
            await _correct_index(s, thread_id, pending)
    return kept


async def _correct_index(s: Any, thread_id: str, pending: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Write the kept deadlines into the thread index's payloads (a listing reads only the index)."""
    record = await s.get(ThreadRecord, thread_id)
    if record is None or not record.pending:
        return
    by_id = dict(pending)
    entries = []
    for entry in record.pending:
        payload = by_id.get(entry.get("id"))
        if payload is not None:
            fixed = {k: payload.get(k) for k in ("deadline", "on_deadline")}
            entry = {**entry, "payload": {**entry.get("payload", {}), **fixed}}
        entries.append(entry)
    record.pending = entries
    s.add(record)


async def pending_deadlines(db: Database) -> list[InterruptDeadline]:
    """Every row still ``pending``, soonest deadline first."""
    async with db.session() as s:
        query = select(InterruptDeadline).where(InterruptDeadline.status == PENDING)
        return list((await s.exec(query.order_by(col(InterruptDeadline.deadline_at)))).all())


def due_reminders(row: InterruptDeadline, points: Sequence[int], now: datetime) -> list[int]:
    """The reminder points (seconds before the deadline) that have come and were not sent; none once it passed."""
    deadline = aware(row.deadline_at)
    if now >= deadline:
        return []
    sent = set(row.reminders_sent or [])
    return [p for p in points if p not in sent and now >= deadline - timedelta(seconds=p)]


async def claim_reminder(session: Any, row: InterruptDeadline, points: Sequence[int]) -> bool:
    """Mark ``points`` sent on a pending row, in ``session``'s transaction; False if another sender changed it first.

    The UPDATE matches the row's ``reminders_sent`` as read (as its JSON text), so of two senders that read the
    same row only one wins.
    """
    before = list(row.reminders_sent or [])
    after = sorted(set(before) | set(points), reverse=True)
    result = await session.exec(
        update(InterruptDeadline)
        .where(
            col(InterruptDeadline.id) == row.id,
            col(InterruptDeadline.status) == PENDING,
            cast(col(InterruptDeadline.reminders_sent), String) == json.dumps(before),
        )
        .values(reminders_sent=after)
    )
    return bool(result.rowcount)


async def claim_timeout(db: Database, row_id: int, now: datetime) -> bool:
    """Take a pending row whose deadline has passed (``pending`` -> ``timed_out``); False if it was not that."""
    async with db.session() as s:
        result = await s.exec(  # type: ignore[call-overload]
            update(InterruptDeadline)
            .where(
                col(InterruptDeadline.id) == row_id,
                col(InterruptDeadline.status) == PENDING,
                col(InterruptDeadline.deadline_at) <= now,
            )
            .values(status=TIMED_OUT, settled_at=now)
        )
        return bool(result.rowcount)


async def release(db: Database, row_id: int) -> None:
    """Give a claimed row back (``timed_out`` -> ``pending``): its thread was busy, the next pass tries again."""
    async with db.session() as s:
        await s.exec(  # type: ignore[call-overload]
            update(InterruptDeadline)
            .where(col(InterruptDeadline.id) == row_id, col(InterruptDeadline.status) == TIMED_OUT)
            .values(status=PENDING, settled_at=None)
        )


async def settle_answered(db: Database, row_id: int) -> None:
    """Mark a row ``answered``: its interrupt is not pending any more (someone answered it, or its thread is gone)."""
    async with db.session() as s:
        await s.exec(  # type: ignore[call-overload]
            update(InterruptDeadline)
            .where(col(InterruptDeadline.id) == row_id)
            .values(status=ANSWERED, settled_at=utcnow())
        )


def notice_text(row: InterruptDeadline, payload: dict[str, Any], *, by: str) -> str:
    """What the person is told on the thread's next turn about a question answered at its deadline by ``by``.

    E.g. "The deploy approval of hello-api asked at 2026-12-07 01:22:53 UTC had no answer by its deadline
    (2026-12-08 01:22:53 UTC); it was rejected by system:deadline (no answer within 24 h)."
    """
    policy = POLICIES.get(row.kind)
    what = policy.what if policy else row.kind.replace("_", " ")
    done = policy.done if policy else "the default answer was given"
    project = payload.get("project") or "the project"
    asked, deadline = aware(row.created_at), aware(row.deadline_at)
    why = (row.default_answer or {}).get("text") or ""
    text = (
        f"The {what} of {project} asked at {asked:%Y-%m-%d %H:%M:%S} UTC had no answer by its deadline "
        f"({deadline:%Y-%m-%d %H:%M:%S} UTC); {done} by {by}"
    )
    return text + (f" ({why})." if why and why != "stop" else ".")


async def write_notice(session: Any, thread_id: str, text: str) -> None:
    """Add ``text`` to the thread's notice (said on its next turn, then cleared), in ``session``'s transaction."""
    record = await session.get(ThreadRecord, thread_id)
    if record is None:
        return
    record.notice = f"{record.notice}\n{text}" if record.notice else text
    session.add(record)
