"""crons: post each due user cron's message to its project's own thread (see :mod:`services.crons`).

A pass reads the enabled crons whose ``next_fire_at`` has come, claims each fire with one atomic UPDATE (so a fire is
posted once even when two schedulers read the same row), then starts a turn on the project's thread
(``Project.thread_id``) through :class:`runtime.threads.OrchestratorRuntime`, as ``system:cron``. The sync service
runs a pass every ``cron_poll_interval_s`` on its APScheduler (:func:`sync_workers.scheduler.run_forever`), and the
first pass right at start: a cron whose fires were missed while the service was down fires once then, and its next
fire time moves to the first one after now.

Each fire is on the trail (``Event``, subject ``cron``): ``cron_fired`` (posted), ``cron_skipped`` (the project is
gone, has no thread yet, or its thread is busy: a run going or a question pending; the fire is not retried) or
``cron_failed`` (the run raised). Turns run one after another within a pass; a pass that runs long delays the next,
whose missed fires then coalesce the same way.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from models.cron_tables import CronJob
from models.enums import AccessRole
from models.tables import utcnow
from runtime.threads import OrchestratorRuntime, ThreadStateConflict
from services.crons import claim_fire, due_crons, project_thread, record_fire
from services.identities import Identity
from sync_workers.base import PassSummary, SyncContext

WORKER = "crons"
IDENTITY = Identity(name="system:cron", role=AccessRole.approver)
"""Who posts the messages, as the trail names it: it must reach threads other identities own (an approver sees them
all), and it only ever posts the messages people scheduled."""
log = logging.getLogger(__name__)


async def run_pass(
    ctx: SyncContext, runtime: OrchestratorRuntime | None = None, *, now: datetime | None = None
) -> PassSummary:
    """Fire every due cron once.

    Args:
        ctx: the sync context (settings, database).
        runtime: an open runtime to post with; None opens one for this pass when a fire was claimed.
        now: the current time (aware UTC; tests); default now.

    Returns:
        The pass summary: ``updated`` counts fires claimed, ``resumed`` the messages posted; a fire whose run
        raised is in ``errors``, a skipped one in ``notes``.
    """
    started = time.perf_counter()
    summary = PassSummary(worker=WORKER)
    now = now or utcnow()
    async with ctx.db.session() as s:
        due = await due_crons(s, now=now)
    claimed = [cron for cron in due if await claim_fire(ctx.db, cron=cron, now=now)]
    summary.updated = len(claimed)
    if claimed:
        if runtime is not None:
            for cron in claimed:
                await _fire(ctx, runtime, cron, summary)
        else:
            async with OrchestratorRuntime(ctx.settings) as rt:
                for cron in claimed:
                    await _fire(ctx, rt, cron, summary)
    summary.duration_s = time.perf_counter() - started
    return summary


class CronFirer:
    """Passes sharing one runtime, opened at the first due cron and kept until :meth:`close`.

    The sync service keeps one for its life: the graph is compiled and the checkpoints opened once, not per fire.
    """

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self._runtime: OrchestratorRuntime | None = None

    async def run_pass(self) -> PassSummary:
        """One pass (see :func:`run_pass`) with the shared runtime."""
        async with self.ctx.db.session() as s:
            if not await due_crons(s, now=utcnow()):
                return PassSummary(worker=WORKER)  # the common case, every poll: no runtime needed
        if self._runtime is None:
            runtime = OrchestratorRuntime(self.ctx.settings)
            await runtime.__aenter__()
            self._runtime = runtime
        return await run_pass(self.ctx, self._runtime)

    async def close(self) -> None:
        """Close the runtime, if one was opened."""
        if self._runtime is not None:
            runtime, self._runtime = self._runtime, None
            await runtime.__aexit__(None, None, None)


async def _fire(ctx: SyncContext, rt: OrchestratorRuntime, cron: CronJob, summary: PassSummary) -> None:
    """Post one claimed fire; the trail's reason starts with the fire's scheduled time (its slot)."""
    assert cron.id is not None and cron.next_fire_at is not None
    cron_id, message = cron.id, cron.message
    name = f"{cron.name} (fire of {cron.next_fire_at.astimezone(UTC).isoformat()})"
    target = await project_thread(ctx.db, project_id=cron.project_id)
    thread_id = target[1] if target else None
    if target is None or thread_id is None:
        why = "its project no longer exists" if target is None else f"project {target[0]} has no thread yet"
        await _outcome(ctx, cron_id, name, "skipped", why, None, summary)
        return
    try:
        async for _ev in rt.start_turn(message, thread_id, actor=IDENTITY):
            pass
    except ThreadStateConflict as exc:  # busy: a run going, a question pending, a run stopped mid-way
        await _outcome(ctx, cron_id, name, "skipped", f"thread busy: {exc}", thread_id, summary)
        return
    except Exception as exc:
        log.exception("cron %s: posting to thread %s failed", name, thread_id)
        await _outcome(ctx, cron_id, name, "failed", f"{type(exc).__name__}: {exc}", thread_id, summary)
        return
    await _outcome(ctx, cron_id, name, "posted", f"posted {message[:200]!r}", thread_id, summary)


async def _outcome(
    ctx: SyncContext,
    cron_id: int,
    name: str,
    outcome: str,
    reason: str,
    thread_id: str | None,
    summary: PassSummary,
) -> None:
    await record_fire(
        ctx.db,
        cron_id=cron_id,
        outcome=outcome,
        reason=reason,
        actor=IDENTITY.name,
        thread_id=thread_id,
        label=f"{name}: ",
    )
    if outcome == "posted":
        summary.resumed += 1
        summary.notes.append(f"cron {name} posted to thread {thread_id}")
    elif outcome == "skipped":
        summary.notes.append(f"cron {name} skipped: {reason}")
    else:
        summary.errors.append(f"cron {name}: {reason}")
