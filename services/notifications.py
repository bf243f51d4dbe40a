"""Notifications out: outgoing webhooks, the deliveries recorded with each event, and their sending with retries.

An event (:data:`EVENTS`) is recorded by :func:`enqueue` as one ``WebhookDelivery`` row per webhook that wants it, in
the caller's transaction, so an event and its deliveries commit together and nothing is sent for a change rolled
back. Sending is never the caller's wait: :func:`start_delivery` sends the pending rows from a background task,
:func:`deliver_pending` does the same for ``orchestrator webhooks send``, and the sync's webhook_sender worker sends
what a process left behind (it exited, or died mid-send); see :mod:`services.webhook_delivery` (signed with
GitHub's scheme, retried with backoff, at least once, the same ``X-Orchestrator-Delivery`` id on every re-send).

A webhook's secret is Fernet-encrypted with the project secrets' key (:func:`services.secrets.load_keys`); listings,
the API and logs show the URL, the events and the format, never the secret.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db import Database
from core.settings import Settings
from models.notification_tables import Webhook, WebhookDelivery
from models.tables import Incident, utcnow
from services.identities import record
from services.journal import notification_row
from services.secrets import encrypt_value, load_keys
from services.webhook_delivery import body_of as body_of
from services.webhook_delivery import deliver_pending as deliver_pending
from services.webhook_delivery import slack_text as slack_text
from services.webhook_delivery import start_delivery as start_delivery

log = logging.getLogger(__name__)

APPROVAL_REQUESTED = "approval.requested"
APPROVAL_REMINDED = "approval.reminded"
APPROVAL_TIMED_OUT = "approval.timed_out"
INCIDENT_OPENED = "incident.opened"
INCIDENT_RESOLVED = "incident.resolved"
DEPLOY_SUCCEEDED = "deploy.succeeded"
DEPLOY_FAILED = "deploy.failed"
DEPLOY_ROLLED_BACK = "deploy.rolled_back"
RUN_FAILED = "run.failed"
EVENTS: tuple[str, ...] = (
    APPROVAL_REQUESTED,
    APPROVAL_REMINDED,
    APPROVAL_TIMED_OUT,
    INCIDENT_OPENED,
    INCIDENT_RESOLVED,
    DEPLOY_SUCCEEDED,
    DEPLOY_FAILED,
    DEPLOY_ROLLED_BACK,
    RUN_FAILED,
)
"""Every event a webhook may subscribe to."""
Format = Literal["json", "slack"]
FORMATS: tuple[str, ...] = ("json", "slack")
MAX_SECRET_CHARS = 256
"""The longest webhook secret (characters, so at most 1024 bytes of UTF-8): the API's schema states the same."""


class WebhookInputError(ValueError):
    """A bad URL, secret, event name or format, or an unknown webhook; nothing was changed."""


@dataclass(frozen=True)
class WebhookInfo:
    """What may be shown of a webhook (never its secret)."""

    id: int
    url: str
    events: list[str]
    format: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class DeliveryInfo:
    """One delivery as the log shows it: ids, event, status, attempts, the last HTTP status and error."""

    delivery_id: str
    webhook_id: int
    event: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


def _info(row: Webhook) -> WebhookInfo:
    assert row.id is not None
    return WebhookInfo(row.id, row.url, list(row.events), row.format, row.created_by, row.created_at)


def check_events(events: Iterable[str]) -> list[str]:
    """``events`` deduplicated in :data:`EVENTS` order; ``all`` stands for every event.

    Raises:
        WebhookInputError: none given, or an unknown name (the message lists the known ones).
    """
    wanted = {e.strip() for e in events if e.strip()}
    if "all" in wanted:
        return list(EVENTS)
    unknown = sorted(wanted - set(EVENTS))
    if unknown or not wanted:
        raise WebhookInputError(f"unknown or no event(s) {', '.join(unknown)}; choose from all, {', '.join(EVENTS)}")
    return [e for e in EVENTS if e in wanted]


def _check_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise WebhookInputError(f"webhook URL {url!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookInputError(f"webhook URL {url!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise WebhookInputError("put no credentials in the webhook URL: the secret signs each request instead")
    return url


async def add_webhook(
    db: Database, settings: Settings, *, url: str, secret: str, events: Iterable[str], fmt: str, actor: str
) -> WebhookInfo:
    """Store a webhook, its secret encrypted; the trail gets ``webhook_added`` (URL and events, no secret).

    Args:
        db: the orchestrator's database.
        settings: where the secrets key is.
        url: an ``http``/``https`` URL without credentials.
        secret: the HMAC key, 1 to 256 characters, not blank (surrounding blanks are dropped).
        events: names from :data:`EVENTS` (or ``all``).
        fmt: ``json`` or ``slack``.
        actor: who adds it.

    Raises:
        WebhookInputError: a bad URL, secret, event or format.
        services.secrets.SecretsKeyError: the secrets key is unusable.
    """
    wanted = check_events(events)
    if fmt not in FORMATS:
        raise WebhookInputError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not secret.strip() or len(secret) > MAX_SECRET_CHARS:
        raise WebhookInputError(f"the secret must be 1 to {MAX_SECRET_CHARS} characters, not blank; nothing was stored")
    secret = secret.strip()
    token = encrypt_value(load_keys(settings), secret)
    row = Webhook(url=_check_url(url), secret_encrypted=token, events=wanted, format=fmt, created_by=actor)
    async with db.session() as s:
        s.add(row)
        await s.flush()
        assert row.id is not None
        why = f"webhook {row.id} to {url} for {', '.join(wanted)} ({fmt})"
        await record(s, subject_type="webhook", subject_id=row.id, action="webhook_added", reason=why, actor=actor)
    return _info(row)


async def list_webhooks(db: Database) -> list[WebhookInfo]:
    """Every webhook, oldest first (no secret)."""
    async with db.session() as s:
        rows = (await s.exec(select(Webhook).order_by(col(Webhook.id)))).all()
    return [_info(r) for r in rows]


async def remove_webhook(db: Database, webhook_id: int, *, actor: str) -> bool:
    """Delete a webhook and its delivery log; returns whether it existed (a removal goes on the trail)."""
    async with db.session() as s:
        row = await s.get(Webhook, webhook_id)
        if row is None:
            return False
        for d in (await s.exec(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))).all():
            await s.delete(d)
        await s.flush()
        await s.delete(row)
        why = f"webhook {webhook_id} to {row.url} removed"
        await record(
            s, subject_type="webhook", subject_id=webhook_id, action="webhook_removed", reason=why, actor=actor
        )
    return True


async def enqueue(session: AsyncSession, event: str, data: dict[str, Any]) -> int:
    """Record ``event`` for every webhook subscribed to it, in the caller's transaction; returns how many rows.

    The event also enters the domain event journal (``GET /events``), subscribed webhooks or not.

    Args:
        session: the caller's session (the rows commit or roll back with the event itself).
        event: a name from :data:`EVENTS`.
        data: JSON-serializable details of the event (ids, names, messages; never a secret).

    Raises:
        ValueError: ``event`` is not in :data:`EVENTS`.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    session.add(notification_row(event, data))
    hooks = [h for h in (await session.exec(select(Webhook))).all() if event in h.events]
    for hook in hooks:
        delivery_id = str(uuid.uuid4())
        payload = {"event": event, "delivery_id": delivery_id, "created_at": utcnow().isoformat(), "data": data}
        session.add(WebhookDelivery(delivery_id=delivery_id, webhook_id=hook.id or 0, event=event, payload=payload))
    return len(hooks)


async def notify(db: Database, event: str, data: dict[str, Any]) -> int:
    """:func:`enqueue` in a transaction of its own (for a caller without a session)."""
    async with db.session() as s:
        return await enqueue(s, event, data)


def incident_data(incident: Incident) -> dict[str, Any]:
    """An incident as an event's ``data``: id, kind, severity, subject, message, times."""
    return {
        "incident_id": incident.id,
        "kind": incident.kind,
        "severity": incident.severity,
        "subject_type": incident.subject_type,
        "subject_id": incident.subject_id,
        "message": incident.message,
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
    }


async def incident_event(session: AsyncSession, incident: Incident, *, opened: bool) -> int:
    """Record ``incident.opened`` (``opened``) or ``incident.resolved`` for ``incident`` (flushed for its id)."""
    await session.flush()
    return await enqueue(session, INCIDENT_OPENED if opened else INCIDENT_RESOLVED, incident_data(incident))


async def deploy_event(session: AsyncSession, deployment: Any, *, project_id: int) -> int:
    """Record ``deploy.succeeded``, ``deploy.failed`` or ``deploy.rolled_back`` from a finished Deployment row.

    Args:
        session: the transaction that writes the outcome.
        deployment: the ``Deployment`` (or a row with ``id``, ``status``, ``commit_sha``, ``url``, ``summary``).
        project_id: its project.
    """
    status = str(getattr(deployment.status, "value", deployment.status))
    event = {"succeeded": DEPLOY_SUCCEEDED, "rolled_back": DEPLOY_ROLLED_BACK}.get(status, DEPLOY_FAILED)
    data = {
        "deployment_id": deployment.id,
        "project_id": project_id,
        "status": status,
        "commit": deployment.commit_sha,
        "url": deployment.url,
        "summary": (deployment.summary or "")[:2000],
    }
    return await enqueue(session, event, data)


async def approval_requested(db: Database, thread_id: str, pending: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Record ``approval.requested`` for each interrupt ``(id, payload)`` a run stopped at; returns rows recorded."""
    pending = list(pending)
    if not pending:
        return 0
    count = 0
    async with db.session() as s:
        for interrupt_id, payload in pending:
            data = {"thread_id": thread_id, "interrupt_id": interrupt_id, "kind": payload.get("kind"), **payload}
            count += await enqueue(s, APPROVAL_REQUESTED, data)
    return count


async def approval_deadline_event(
    session: AsyncSession, *, timed_out: bool, thread_id: str, interrupt_id: str, payload: dict[str, Any]
) -> int:
    """Record ``approval.reminded`` (a deadline is near) or ``approval.timed_out`` (it passed) for one interrupt.

    For the code that watches approval deadlines; the rows commit with the caller's transaction.
    """
    event = APPROVAL_TIMED_OUT if timed_out else APPROVAL_REMINDED
    return await enqueue(session, event, {"thread_id": thread_id, "interrupt_id": interrupt_id, **payload})


async def run_failed(db: Database, *, thread_id: str, error: str, project_id: int | None = None) -> int:
    """Record ``run.failed`` for a run that stopped on an error (``error``: the exception's type and message)."""
    return await notify(db, RUN_FAILED, {"thread_id": thread_id, "project_id": project_id, "error": error[:2000]})


async def list_deliveries(db: Database, *, limit: int = 50) -> list[DeliveryInfo]:
    """The newest ``limit`` deliveries, newest first."""
    async with db.session() as s:
        stmt = select(WebhookDelivery).order_by(col(WebhookDelivery.id).desc()).limit(limit)
        rows = (await s.exec(stmt)).all()
    return [
        DeliveryInfo(
            r.delivery_id, r.webhook_id, r.event, r.status, r.attempts, r.last_status, r.last_error, r.created_at,
            r.finished_at,
        )
        for r in rows
    ]  # fmt: skip
