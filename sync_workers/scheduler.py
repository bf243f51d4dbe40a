"""The sync service's entry points: every worker once (``run_once``), or on APScheduler intervals (``run_forever``).

The caller holds the :class:`sync_workers.lock.SyncLock` (``orchestrator sync`` does), so only one process runs
workers at a time.

Stopping is clean at any moment: each write a worker makes (an upsert, a status transition with its Event, an
incident) is its own short transaction, so a pass that is stopped or crashes between two writes leaves every row
either fully written or untouched, never half-written, and the next pass picks up from what the database says.
``run_forever`` goes further and lets in-flight passes finish before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime

from core.db import Database
from core.settings import Settings
from services.journal import journal_pass
from services.leases import ensure_default_server
from sync_workers import crons, deadlines, github_sync, health_checker, provisioner_trigger, server_sync, webhook_sender
from sync_workers.base import PassSummary, SyncContext

log = logging.getLogger(__name__)

Worker = Callable[[SyncContext], Awaitable[PassSummary]]

WORKERS: dict[str, Worker] = {
    "github_sync": github_sync.run_pass,
    "server_sync": server_sync.run_pass,
    "health_checker": health_checker.run_pass,
    "provisioner_trigger": provisioner_trigger.run_pass,
    "deadlines": deadlines.run_pass,
    "webhook_sender": webhook_sender.run_pass,
}
"""Every worker by name, in the order ``run_once`` runs them."""

SKIPPED = "skipped: "
"""Prefix of the note of a worker that did not run (see :func:`skip_reason`)."""
STOPPED = "the sync was asked to stop"
"""Why ``run_once`` skipped the workers left after a stop request."""


def skip_reason(name: str, settings: Settings) -> str | None:
    """Why ``name`` does not run with these settings, or None if it does."""
    if name == "github_sync" and not (settings.github_token and settings.github_org):
        return "no GitHub configured (set ORCH_GITHUB_TOKEN and ORCH_GITHUB_ORG)"
    return None


def interval_s(name: str, settings: Settings) -> tuple[float, float | None]:
    """``(interval, jitter)`` in seconds of a worker's schedule; only github_sync is jittered."""
    return {
        "github_sync": (settings.github_sync_interval_s, settings.sync_jitter_s or None),
        "server_sync": (settings.server_sync_interval_s, None),
        "health_checker": (settings.health_check_interval_s, None),
        "provisioner_trigger": (settings.provisioner_interval_s, None),
        "deadlines": (settings.deadline_interval_s, None),
        "webhook_sender": (settings.webhook_send_interval_s, None),
    }[name]


def check_names(only: list[str] | None) -> list[str]:
    """The workers to run, in ``WORKERS`` order.

    Raises:
        ValueError: an unknown worker name (the message lists the known ones).
    """
    unknown = sorted(set(only or ()) - set(WORKERS))
    if unknown:
        raise ValueError(f"unknown worker(s) {', '.join(unknown)}; choose from {', '.join(WORKERS)}")
    return [name for name in WORKERS if only is None or name in only]


def describe(summary: PassSummary) -> str:
    """The summary's line for people; a skipped worker says why instead of "no changes"."""
    skipped = [n for n in summary.notes if n.startswith(SKIPPED)]
    if skipped:
        return f"{summary.worker}: {skipped[0]}"
    return summary.line()


async def run_worker(name: str, ctx: SyncContext) -> PassSummary:
    """One pass of one worker; any exception it raises becomes an error of its summary (never propagates)."""
    reason = skip_reason(name, ctx.settings)
    if reason is not None:
        return PassSummary(worker=name, notes=[SKIPPED + reason])
    started = time.perf_counter()
    try:
        summary = await WORKERS[name](ctx)
    except Exception as exc:
        log.exception("sync worker %s failed", name)
        summary = PassSummary(worker=name, errors=[f"{type(exc).__name__}: {exc}"])
    if not summary.duration_s:
        summary.duration_s = time.perf_counter() - started
    await journal_pass(ctx.db, asdict(summary), retention_days=ctx.settings.event_retention_days)
    return summary


async def _open_context(settings: Settings) -> SyncContext:
    """Data dir, tables and the embedded localhost server (as every process does), and the context."""
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    await ensure_default_server(db, settings)
    return SyncContext(settings=settings, db=db)


async def run_once(
    settings: Settings,
    *,
    only: list[str] | None = None,
    stop: asyncio.Event | None = None,
    on_start: Callable[[str], None] | None = None,
    on_summary: Callable[[PassSummary], None] | None = None,
) -> list[PassSummary]:
    """Run each worker (all, or those named in ``only``) once and return their summaries.

    Sequentially, in ``WORKERS`` order, on purpose: a pass then sees what the previous workers just established
    (server_sync marks a server ready, and the same ``--once`` run's provisioner_trigger resumes the projects that
    waited for it), the output is deterministic, and the wall time of a ``--once`` run (a cron job, a test) matters
    less than that. ``run_forever`` runs them concurrently on their own intervals.

    Args:
        settings: the process settings.
        only: worker names to run (default all); see :func:`check_names`.
        stop: when set, the workers not started yet are skipped (the one running finishes its pass).
        on_start: called with a worker's name as its pass starts (the CLI shows progress).
        on_summary: called with each summary as soon as its pass ends.

    Raises:
        ValueError: an unknown worker name in ``only``.
    """
    names = check_names(only)
    ctx = await _open_context(settings)
    summaries: list[PassSummary] = []
    try:
        for name in names:
            if stop is not None and stop.is_set():
                summary = PassSummary(worker=name, notes=[SKIPPED + STOPPED])
            else:
                if on_start is not None and skip_reason(name, settings) is None:
                    on_start(name)
                summary = await run_worker(name, ctx)
            summaries.append(summary)
            if on_summary is not None:
                on_summary(summary)
    finally:
        await ctx.db.dispose()
    return summaries


async def run_forever(
    settings: Settings,
    *,
    stop: asyncio.Event,
    only: list[str] | None = None,
    on_summary: Callable[[PassSummary], None] | None = None,
    cancel: asyncio.Event | None = None,
) -> None:
    """Run the workers on APScheduler's ``AsyncIOScheduler`` until ``stop`` is set (SIGTERM and SIGINT set it).

    Each worker is one interval job (github_sync every ``github_sync_interval_s`` plus up to ``sync_jitter_s`` of
    jitter; server_sync, health_checker and provisioner_trigger on their own intervals), first run right away,
    ``max_instances=1`` (a pass never overlaps the same worker's previous one) and ``coalesce=True`` (runs missed
    while a pass overran collapse into one). ``misfire_grace_time=None``: a run delayed by a busy loop still runs,
    late, instead of being dropped with a warning. Different workers run concurrently on the event loop.

    On stop: the scheduler is paused (no new pass starts), the in-flight passes finish, then
    ``scheduler.shutdown(wait=True)``. The explicit wait is needed because APScheduler 3's ``AsyncIOExecutor``
    cannot honour ``wait=True``: its ``shutdown`` CANCELS running coroutine jobs. Since every write is its own
    transaction (see the module docstring), even a cancelled pass would leave nothing half-written; waiting just
    finishes the pass's work.

    Without ``only`` (the whole service), user crons fire too: a ``crons`` interval job every
    ``cron_poll_interval_s`` fires the due ones (:mod:`sync_workers.crons`); its summary is reported only when a
    fire happened.

    Args:
        settings: the process settings.
        stop: set it to stop; the signal handlers set it too.
        only: worker names to schedule (default all that are not skipped).
        on_summary: called with each pass's summary (the CLI prints it); every summary is also logged.
        cancel: when it is set at stop time (the sync lock was lost: another process may be running workers now),
            in-flight passes are cancelled instead of finished; each write being its own transaction, nothing is
            left half-written.

    Raises:
        ValueError: an unknown worker name in ``only``.
    """
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    names = check_names(only)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    ctx = await _open_context(settings)
    inflight: set[asyncio.Task[object]] = set()

    async def job(name: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        inflight.add(task)
        try:
            summary = await run_worker(name, ctx)
            log.info("%s", describe(summary))
            if on_summary is not None:
                on_summary(summary)
        finally:
            inflight.discard(task)

    firer = crons.CronFirer(ctx) if only is None else None

    async def cron_job() -> None:
        assert firer is not None
        task = asyncio.current_task()
        assert task is not None
        inflight.add(task)
        try:
            summary = await firer.run_pass()
        except Exception as exc:
            log.exception("sync worker crons failed")
            summary = PassSummary(worker=crons.WORKER, errors=[f"{type(exc).__name__}: {exc}"])
        finally:
            inflight.discard(task)
        if summary.updated or summary.errors:
            log.info("%s", describe(summary))
            if on_summary is not None:
                on_summary(summary)

    scheduler = AsyncIOScheduler(timezone=UTC)
    try:
        if firer is not None:
            scheduler.add_job(
                cron_job,
                "interval",
                id=crons.WORKER,
                name=crons.WORKER,
                seconds=settings.cron_poll_interval_s,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=datetime.now(UTC),
            )
        for name in names:
            reason = skip_reason(name, settings)
            if reason is not None:
                skipped = PassSummary(worker=name, notes=[SKIPPED + reason])
                log.info("%s", describe(skipped))
                if on_summary is not None:
                    on_summary(skipped)
                continue
            seconds, jitter = interval_s(name, settings)
            scheduler.add_job(
                job,
                "interval",
                args=[name],
                id=name,
                name=name,
                seconds=seconds,
                jitter=jitter,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=datetime.now(UTC),
            )
        scheduler.start()
        await stop.wait()
        scheduler.pause()
        if inflight and cancel is not None and cancel.is_set():
            log.warning("stopping: cancelling %d in-flight pass(es), the sync lock is lost", len(inflight))
            for task in inflight:
                task.cancel()
            await asyncio.wait(set(inflight))
        elif inflight:
            log.info("stopping: waiting for %d in-flight pass(es)", len(inflight))
            await asyncio.wait(set(inflight))
        scheduler.shutdown(wait=True)
        await asyncio.sleep(0)  # AsyncIOScheduler.shutdown runs on the loop's next turn (call_soon_threadsafe)
    finally:
        if scheduler.running:
            with contextlib.suppress(Exception):
                scheduler.shutdown(wait=False)
                await asyncio.sleep(0)
        for sig in signals:
            loop.remove_signal_handler(sig)
        if firer is not None:
            await firer.close()
        await ctx.db.dispose()
