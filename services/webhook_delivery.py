"""Sending the recorded webhook deliveries: claimed, signed, retried, recorded; at least once, never lost.

:func:`services.notifications.enqueue` records a ``WebhookDelivery`` row (``pending``) with each event. A sender
claims a row before sending it, with one atomic UPDATE (``pending`` -> ``sending``, :func:`_claim`), so two senders
(two sync processes, the API and ``orchestrator webhooks send``) never both take it. Each attempt is signed
(``X-Hub-Signature-256``, GitHub's scheme:
https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries), retried with exponential backoff
(tenacity), and the row ends ``delivered``, or ``failed`` with its last error and HTTP status.

Senders that die. A claim also writes a lease, a ``SyncCursor`` row keyed ``webhook_sending:<row id>`` whose
``updated_at`` the sender renews before every attempt and which is deleted with the outcome. A sender stopped
cleanly puts its row back to ``pending``; one that is killed mid-send leaves the row ``sending`` with a lease that
ages. :func:`deliver_pending` with ``stuck_after_s`` (the sync's webhook_sender,
``ORCH_WEBHOOK_SENDING_TIMEOUT_S``) takes over a row whose lease is older than that (again one atomic UPDATE, so one
sender wins) and sends it again, with the SAME delivery id.

Delivery is therefore at least once: a sender killed after the receiver got the request but before the outcome was
written, or one so slow that its lease expired, means the receiver may see one delivery twice. Receivers
de-duplicate by ``X-Orchestrator-Delivery`` (the same id on every attempt and every re-send), as GitHub advises for
its own ``X-GitHub-Delivery``:
https://docs.github.com/en/webhooks/using-webhooks/best-practices-for-using-webhooks#use-the-x-github-delivery-header
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from core.db import Database
from core.settings import Settings
from infra.webhooks import DeliveryFailed, post_signed
from models.notification_tables import Webhook, WebhookDelivery
from models.tables import SyncCursor, utcnow
from services.secrets import decrypt_value, load_keys

if TYPE_CHECKING:
    import httpx  # imported by a pass that sends (~90 ms): the API's start-up does not pay for it

log = logging.getLogger(__name__)

LEASE_PREFIX = "webhook_sending:"
"""The ``SyncCursor.key`` prefix of the lease a sender holds on a ``sending`` delivery (then its row id)."""
_TASKS: set[asyncio.Task[int]] = set()
"""Background deliveries in flight (kept referenced until they end)."""


def lease_key(row_id: int) -> str:
    """The ``SyncCursor`` key of the lease on delivery row ``row_id``."""
    return f"{LEASE_PREFIX}{row_id}"


def slack_text(payload: dict[str, Any]) -> str:
    """One line for a chat channel: the event and its most telling details."""
    data = payload.get("data", {})
    keys = ("kind", "severity", "status", "commit", "url", "thread_id", "message", "summary", "error")
    details = ", ".join(f"{k}: {data[k]}" for k in keys if data.get(k) not in (None, ""))
    return f"[orchestrator] {payload.get('event')}" + (f" — {details}" if details else "")


def body_of(payload: dict[str, Any], fmt: str) -> bytes:
    """The exact bytes sent: the payload as JSON, or Slack's ``{"text": ...}`` for the ``slack`` format."""
    doc = {"text": slack_text(payload), "delivery_id": payload.get("delivery_id")} if fmt == "slack" else payload
    return json.dumps(doc, sort_keys=True, default=str).encode()


def _insert(session: AsyncSession) -> Any:
    """The dialect's INSERT with ``on_conflict_do_*`` (SQLite and PostgreSQL)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def _claim(db: Database, delivery_id: int) -> bool:
    """Take a pending delivery for this sender (``pending`` -> ``sending``, and its lease); False if another did."""
    async with db.session() as s:
        taken = await s.exec(  # type: ignore[call-overload]
            update(WebhookDelivery)
            .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.status) == "pending")
            .values(status="sending")
        )
        if not taken.rowcount:
            return False
        now = utcnow()
        lease = _insert(s)(SyncCursor).values(key=lease_key(delivery_id), updated_at=now)
        await s.exec(lease.on_conflict_do_update(index_elements=["key"], set_={"updated_at": now}))
        return True


async def _take_over(db: Database, row: WebhookDelivery, stuck_after_s: float) -> bool:
    """Take a ``sending`` delivery whose sender is gone (its lease not renewed for ``stuck_after_s``); atomic."""
    key, now = lease_key(row.id or 0), utcnow()
    cutoff = now - timedelta(seconds=stuck_after_s)
    async with db.session() as s:
        moved = await s.exec(  # type: ignore[call-overload]
            update(SyncCursor)
            .where(col(SyncCursor.key) == key, col(SyncCursor.updated_at) < cutoff)
            .values(updated_at=now)
        )
        if moved.rowcount:
            return True
        if await s.get(SyncCursor, key) is not None or row.created_at >= cutoff:
            return False  # a live sender renews it, or the row is too young to judge
        # claimed without a lease (before leases were kept): the row's age stands for the claim's
        added = await s.exec(_insert(s)(SyncCursor).values(key=key, updated_at=now).on_conflict_do_nothing())
        return bool(added.rowcount)


async def _renew(db: Database, row_id: int) -> None:
    async with db.session() as s:
        stmt = update(SyncCursor).where(col(SyncCursor.key) == lease_key(row_id)).values(updated_at=utcnow())
        await s.exec(stmt)  # type: ignore[call-overload]


async def _finish(db: Database, delivery_id: int, *, done: bool = True, **values: Any) -> None:
    """Record ``values`` on the delivery; ``done`` (an outcome, or back to pending) also drops its lease."""
    async with db.session() as s:
        stmt = update(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id).values(**values)
        await s.exec(stmt)  # type: ignore[call-overload]
        if done:
            await s.exec(delete(SyncCursor).where(col(SyncCursor.key) == lease_key(delivery_id)))  # type: ignore[call-overload]


async def _send_one(db: Database, settings: Settings, client: httpx.AsyncClient, row: WebhookDelivery) -> bool:
    """Send one claimed delivery with retries; record each attempt and the outcome. Returns whether delivered.

    Cancelled at any point after its claim (the process is ending), the delivery goes back to ``pending`` for the
    next sender, so it never waits out a lease.
    """
    try:
        return await _send_claimed(db, settings, client, row)
    except asyncio.CancelledError:
        await asyncio.shield(_finish(db, row.id or 0, status="pending"))
        raise


async def _send_claimed(db: Database, settings: Settings, client: httpx.AsyncClient, row: WebhookDelivery) -> bool:
    async with db.session() as s:
        hook = await s.get(Webhook, row.webhook_id)
    if hook is None:
        await _finish(db, row.id or 0, status="failed", last_error="the webhook was removed", finished_at=utcnow())
        return False
    secret = decrypt_value(load_keys(settings), hook.secret_encrypted, what=f"the secret of webhook {hook.id}").encode()
    body = body_of(row.payload, hook.format)
    attempts = AsyncRetrying(
        stop=stop_after_attempt(settings.webhook_attempts),
        wait=wait_exponential(multiplier=settings.webhook_retry_wait_s, max=60),
        retry=retry_if_exception_type(DeliveryFailed),
        reraise=True,
    )
    n = row.attempts
    try:
        async for attempt in attempts:
            with attempt:
                n += 1
                await _renew(db, row.id or 0)
                try:
                    status = await post_signed(
                        client, hook.url, body, secret=secret, event=row.event, delivery_id=row.delivery_id
                    )
                except DeliveryFailed as exc:
                    await _finish(
                        db, row.id or 0, done=False, attempts=n, last_status=exc.status, last_error=str(exc)[:1000]
                    )
                    raise
    except asyncio.CancelledError:  # the process is ending: the next sender takes the delivery up again
        await asyncio.shield(_finish(db, row.id or 0, status="pending", attempts=n))
        raise
    except DeliveryFailed as exc:
        log.warning("webhook delivery %s failed after %d attempt(s): %s", row.delivery_id, n, exc)
        await _finish(db, row.id or 0, status="failed", finished_at=utcnow(), last_error=str(exc)[:1000])
        return False
    await _finish(db, row.id or 0, status="delivered", attempts=n, last_status=status, finished_at=utcnow())
    return True


@dataclass(frozen=True)
class SendCounts:
    """What one :func:`send_due` call did."""

    taken: int
    """Deliveries this call claimed (pending) or took over (stuck in ``sending``) and tried to send."""
    retaken: int
    """Of ``taken``, those taken over from a sender that died mid-send."""
    delivered: int
    """Of ``taken``, those delivered; the others are ``failed`` now (or ``pending`` again if this process stopped)."""


async def send_due(
    db: Database, settings: Settings, *, limit: int = 100, stuck_after_s: float | None = None
) -> SendCounts:
    """Send up to ``limit`` pending deliveries, oldest first, each with retries (and the stuck ones, see below).

    Each row is claimed first (``pending`` -> ``sending``), so two senders never send the same delivery; a delivery
    that fails ``settings.webhook_attempts`` times is ``failed`` with its last error and HTTP status.

    Args:
        db: the orchestrator's database.
        settings: attempts, backoff, timeout, and the secrets key.
        limit: the most rows taken in this call (stuck ones and pending ones, each).
        stuck_after_s: also take over ``sending`` rows whose sender has not renewed its lease for this many seconds
            (it died mid-send) and send them again, same delivery id; None leaves them alone.

    Raises:
        services.secrets.SecretsKeyError / SecretDecryptError: the secrets key cannot open a webhook's secret.
    """
    stuck: list[WebhookDelivery] = []
    async with db.session() as s:
        if stuck_after_s is not None:
            sending = select(WebhookDelivery).where(WebhookDelivery.status == "sending")
            stuck = list((await s.exec(sending.order_by(col(WebhookDelivery.id)).limit(limit))).all())
        pending = select(WebhookDelivery).where(WebhookDelivery.status == "pending")
        rows = (await s.exec(pending.order_by(col(WebhookDelivery.id)).limit(limit))).all()
    retaken: list[WebhookDelivery] = []
    for row in stuck:
        if stuck_after_s is not None and await _take_over(db, row, stuck_after_s):
            log.warning("webhook delivery %s was left sending: sending it again", row.delivery_id)
            retaken.append(row)
    if not rows and not retaken:
        return SendCounts(0, 0, 0)
    taken = delivered = 0
    import httpx

    async with httpx.AsyncClient(timeout=settings.webhook_timeout_s, trust_env=False) as client:
        for row in retaken:
            taken += 1
            delivered += await _send_one(db, settings, client, row)
        for row in rows:
            if await _claim(db, row.id or 0):
                taken += 1
                delivered += await _send_one(db, settings, client, row)
    return SendCounts(taken, len(retaken), delivered)


async def deliver_pending(
    db: Database, settings: Settings, *, limit: int = 100, stuck_after_s: float | None = None
) -> int:
    """:func:`send_due`, returning how many deliveries were delivered (same arguments, same errors)."""
    return (await send_due(db, settings, limit=limit, stuck_after_s=stuck_after_s)).delivered


def start_delivery(db: Database, settings: Settings) -> asyncio.Task[int]:
    """Send the pending deliveries from a background task of the running loop; returns the task (not awaited).

    A delivery left pending (the process ended first) is sent by the next sender: the sync's webhook_sender within
    ``ORCH_WEBHOOK_SEND_INTERVAL_S``, or ``orchestrator webhooks send``.
    """
    task = asyncio.get_running_loop().create_task(deliver_pending(db, settings))
    _TASKS.add(task)
    task.add_done_callback(_done)
    return task


async def settle_deliveries(timeout_s: float = 5.0) -> None:
    """Give this process's background deliveries up to ``timeout_s`` seconds to end, then cancel the rest.

    Called before a process closes its database (:class:`runtime.threads.OrchestratorRuntime` on exit): a
    cancelled delivery goes back to ``pending`` (see :func:`_send_one`), so a short-lived CLI command never leaves a
    row ``sending`` until its lease runs out.
    """
    tasks = list(_TASKS)
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=timeout_s)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)


def _done(task: asyncio.Task[int]) -> None:
    _TASKS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("webhook deliveries stopped: %s", task.exception())
