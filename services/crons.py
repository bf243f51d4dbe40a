"""User crons: a message posted to a project's own thread on a schedule (as LangGraph Platform's crons do).

Schedules are crontab expressions in UTC: 5 fields (``minute hour day month day_of_week``, e.g. ``0 2 * * *``), or 6
fields with SECONDS FIRST (``second minute hour day month day_of_week``, as Quartz and Spring write it, e.g.
``*/2 * * * * *`` every two seconds). Day-of-week numbers follow crontab (0 and 7 are Sunday); names (``mon-fri``)
work too. Next fire times come from APScheduler 3's ``CronTrigger``.

Why our own table and not APScheduler's ``SQLAlchemyJobStore``: that store is synchronous (it would block the
sync service's event loop on every scheduler wake-up), pickles each job's callable and arguments (a rename of a
function breaks every stored job; a row of pickled bytes cannot be listed by the CLI or the API without importing
the scheduler), and its ``next_run_time`` update is not a claim, so two schedulers over one store would both run a
job. The ``cron_job`` table is the persistent store instead: the CLI and the API write rows, and the sync service's
APScheduler polls it (``cron_poll_interval_s``) and fires what is due.

Once per fire: a fire is claimed by one atomic UPDATE that expects the ``fire_seq`` it read (see :func:`claim_fire`);
whoever's UPDATE changes the row fires, any other reader changes nothing and skips. Coalescing: a claim moves
``next_fire_at`` to the first time AFTER now, so fires missed while the service was down become one fire.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db import Database
from models.cron_tables import CronJob
from models.names import SLUG_RE
from models.tables import Project, utcnow
from services.identities import record

SUBJECT = "cron"
"""``Event.subject_type`` of a cron's trail."""
MAX_MESSAGE = 4000
_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DOW_NUMBER = re.compile(r"(?<![/\d])([0-7])(?!\d)")


class CronError(ValueError):
    """A cron request that cannot be done (bad schedule, name or message, unknown project); nothing was written."""


class UnknownCronProject(CronError):
    """The project named for a new cron does not exist."""


class CronNameTaken(CronError):
    """Another cron has that name."""


class UnknownCron(LookupError):
    """No cron has that name."""


@dataclass(frozen=True)
class CronView:
    """A cron as the CLI and the API show it; times are aware UTC datetimes (``next_fire_at`` None while paused)."""

    name: str
    project: str | None
    schedule: str
    message: str
    enabled: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    last_outcome: str | None
    fires: int
    created_by: str


def parse_schedule(expr: str) -> CronTrigger:
    """The trigger of a 5- or 6-field crontab expression (6: seconds first), in UTC.

    Raises:
        CronError: a wrong number of fields or a field APScheduler refuses (the message says which).
    """
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise CronError(
            f"schedule {expr!r} has {len(fields)} fields; give 5 (minute hour day month day_of_week, e.g. "
            "'0 2 * * *') or 6 with seconds first (e.g. '*/10 * * * * *')"
        )
    second = fields[0] if len(fields) == 6 else "0"
    minute, hour, day, month, dow = fields[-5:]
    dow = _DOW_NUMBER.sub(lambda m: _WEEKDAYS[int(m.group(1))], dow)
    try:
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow, timezone=UTC)
    except ValueError as exc:
        raise CronError(f"schedule {expr!r} is not valid: {exc}") from exc


def next_fire(expr: str, after: datetime) -> datetime:
    """The first fire time of ``expr`` strictly after ``after`` (aware UTC).

    Raises:
        CronError: a bad expression, or one that never fires again (e.g. February 30th).
    """
    start = _aware(after).replace(microsecond=0) + timedelta(seconds=1)  # fire times are whole seconds
    nxt = parse_schedule(expr).get_next_fire_time(None, start)
    if nxt is None:
        raise CronError(f"schedule {expr!r} never fires")
    return nxt.astimezone(UTC)


async def add_cron(
    session: AsyncSession,
    *,
    project: str,
    schedule: str,
    message: str,
    actor: str,
    name: str | None = None,
    now: datetime | None = None,
) -> CronView:
    """Create an enabled cron posting ``message`` to ``project``'s thread; on the trail as ``cron_added``.

    Args:
        session: the caller's session (committed by the caller).
        project: the project's name.
        schedule: see the module docstring.
        message: the text posted, 1 to 4000 characters.
        actor: who adds it (``cli:alice``, ``token:ci``).
        name: a slug naming the cron (default ``cron-`` and 8 hex digits).
        now: the current time (tests); default now.

    Raises:
        CronError: a bad schedule, an empty or long message, a bad name; its subclasses UnknownCronProject
            (no such project) and CronNameTaken (the name is taken).
    """
    text = message.strip()
    if not text or len(text) > MAX_MESSAGE:
        raise CronError(f"the message must have 1 to {MAX_MESSAGE} characters")
    name = name or f"cron-{secrets.token_hex(4)}"
    if not SLUG_RE.match(name):
        raise CronError(f"cron name {name!r} is not a slug: 3-40 of a-z, 0-9 and '-', starting with a letter")
    row = (await session.exec(select(Project).where(Project.name == project))).first()
    if row is None or row.id is None:
        raise UnknownCronProject(f"unknown project {project!r}: `orchestrator projects` lists them")
    if (await session.exec(select(CronJob).where(CronJob.name == name))).first() is not None:
        raise CronNameTaken(f"a cron named {name!r} exists; pick another name")
    first = next_fire(schedule, now or utcnow())
    cron = CronJob(
        name=name,
        project_id=row.id,
        schedule=" ".join(schedule.split()),
        message=text,
        next_fire_at=first,
        created_by=actor,
    )
    session.add(cron)
    await session.flush()
    assert cron.id is not None
    await record(
        session,
        subject_type=SUBJECT,
        subject_id=cron.id,
        action="cron_added",
        actor=actor,
        reason=f"{name}: {cron.schedule} on project {project}, next {first.isoformat()}",
    )
    return _view(cron, project)


async def list_crons(session: AsyncSession, *, project: str | None = None) -> list[CronView]:
    """Every cron (only ``project``'s if given), by name, with its next fire time."""
    query = select(CronJob, Project.name).join(Project, col(Project.id) == col(CronJob.project_id), isouter=True)
    if project is not None:
        query = query.where(Project.name == project)
    rows = (await session.exec(query.order_by(col(CronJob.name)))).all()
    return [_view(cron, pname) for cron, pname in rows]


async def get_cron(session: AsyncSession, *, name: str) -> CronJob:
    """The cron row named ``name``.

    Raises:
        UnknownCron: no such cron.
    """
    cron = (await session.exec(select(CronJob).where(CronJob.name == name))).first()
    if cron is None:
        raise UnknownCron(f"unknown cron {name!r}: `orchestrator cron list` shows them")
    return cron


async def set_enabled(
    session: AsyncSession, *, name: str, enabled: bool, actor: str, now: datetime | None = None
) -> CronView:
    """Pause (``enabled`` False: no fires, ``next_fire_at`` None) or resume a cron; ``cron_paused``/``cron_resumed``.

    A resumed cron fires next at its first time after now: the times it was paused for are not made up.

    Raises:
        UnknownCron: no such cron.
    """
    cron = await get_cron(session, name=name)
    if cron.enabled != enabled:
        cron.enabled = enabled
        cron.next_fire_at = next_fire(cron.schedule, now or utcnow()) if enabled else None
        cron.updated_at = utcnow()
        session.add(cron)
        assert cron.id is not None
        await record(
            session,
            subject_type=SUBJECT,
            subject_id=cron.id,
            actor=actor,
            action="cron_resumed" if enabled else "cron_paused",
            reason=f"{name} ({cron.schedule})",
        )
    return _view(cron, await _project_name(session, cron.project_id))


async def delete_cron(session: AsyncSession, *, name: str, actor: str) -> None:
    """Delete a cron; on the trail as ``cron_deleted`` (its earlier events stay).

    Raises:
        UnknownCron: no such cron.
    """
    cron = await get_cron(session, name=name)
    assert cron.id is not None
    await record(
        session,
        subject_type=SUBJECT,
        subject_id=cron.id,
        action="cron_deleted",
        actor=actor,
        reason=f"{name} ({cron.schedule}): {cron.message[:200]}",
    )
    await session.delete(cron)


async def due_crons(session: AsyncSession, *, now: datetime) -> list[CronJob]:
    """Enabled crons whose ``next_fire_at`` is at or before ``now``, soonest first."""
    query = (
        select(CronJob)
        .where(col(CronJob.enabled), col(CronJob.next_fire_at) <= now)
        .order_by(col(CronJob.next_fire_at), col(CronJob.id))
    )
    return list((await session.exec(query)).all())


async def claim_fire(db: Database, *, cron: CronJob, now: datetime) -> bool:
    """Claim ``cron``'s due fire: True for exactly one caller per fire, however many schedulers read the row.

    One UPDATE, in its own transaction, that expects the ``fire_seq`` read with the row and that the cron is still
    enabled; it moves ``next_fire_at`` to the first time after ``now`` (missed fires coalesce into this one).
    """
    try:
        following = next_fire(cron.schedule, now)
    except CronError:
        following = None
    stmt = (
        update(CronJob)
        .where(col(CronJob.id) == cron.id, col(CronJob.fire_seq) == cron.fire_seq, col(CronJob.enabled))
        .values(
            fire_seq=cron.fire_seq + 1,
            next_fire_at=following,
            enabled=following is not None,
            last_fired_at=now,
            updated_at=now,
        )
    )
    async with db.session() as s:
        result = await s.exec(stmt)
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def project_thread(db: Database, *, project_id: int) -> tuple[str, str | None] | None:
    """``(project name, its thread id or None)``, or None when the project no longer exists."""
    async with db.session() as s:
        project = await s.get(Project, project_id)
    return None if project is None else (project.name, project.thread_id)


async def record_fire(
    db: Database, *, cron_id: int, outcome: str, reason: str, actor: str, thread_id: str | None, label: str = ""
) -> None:
    """Keep a fire's outcome on the cron (``last_outcome``) and on the trail (``cron_fired``/``cron_skipped``...).

    Args:
        db: the database (one short transaction of its own).
        cron_id: the cron's id.
        outcome: ``posted``, ``skipped`` or ``failed``.
        reason: what happened (the skip's cause, the error).
        actor: who fired (``system:cron``).
        thread_id: the thread posted to, if any.
        label: put before the reason on the trail only (which fire it was: the cron's name and scheduled time).
    """
    last = outcome if outcome == "posted" else f"{outcome}: {reason}"
    async with db.session() as s:
        await s.exec(update(CronJob).where(col(CronJob.id) == cron_id).values(last_outcome=last[:500]))
        action = {"posted": "cron_fired"}.get(outcome, f"cron_{outcome}")
        await record(
            s,
            subject_type=SUBJECT,
            subject_id=cron_id,
            action=action,
            reason=f"{label}{reason}"[:1000],
            actor=actor,
            thread_id=thread_id,
        )


async def _project_name(session: AsyncSession, project_id: int) -> str | None:
    project = await session.get(Project, project_id)
    return None if project is None else project.name


def _view(cron: CronJob, project: str | None) -> CronView:
    return CronView(
        name=cron.name,
        project=project,
        schedule=cron.schedule,
        message=cron.message,
        enabled=cron.enabled,
        next_fire_at=_aware(cron.next_fire_at) if cron.next_fire_at else None,
        last_fired_at=_aware(cron.last_fired_at) if cron.last_fired_at else None,
        last_outcome=cron.last_outcome,
        fires=cron.fire_seq,
        created_by=cron.created_by,
    )


def _aware(value: datetime) -> datetime:
    """SQLite may hand datetimes back naive; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
