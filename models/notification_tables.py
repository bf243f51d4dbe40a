"""Tables of notifications: outgoing webhooks, their deliveries, and the GitHub deliveries received."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from models.tables import REPO_ID, utcnow


class Webhook(SQLModel, table=True):
    """An outgoing webhook: where events are POSTed, which ones, in which format.

    The signing secret is kept Fernet-encrypted (the project secrets' key, see services/secrets.py) and never leaves
    this table in clear except to sign a request body.
    """

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2048)
    secret_encrypted: str
    """A Fernet token (url-safe base64 text) of the HMAC secret."""
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Event names sent to this URL (see ``services.notifications.EVENTS``)."""
    format: str = Field(default="json", max_length=16)
    """``json`` (the event as a signed JSON document) or ``slack`` (``{"text": ...}``, also signed)."""
    created_by: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    """One event for one webhook: recorded with the event, sent later with retries, its outcome kept."""

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(unique=True, max_length=64)
    """A UUID sent as ``X-Orchestrator-Delivery``; the same on every attempt."""
    webhook_id: int = Field(foreign_key="webhook.id", index=True)
    event: str = Field(max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=16, index=True)
    """``pending``, ``sending``, ``delivered`` or ``failed``."""
    attempts: int = 0
    last_status: int | None = None
    """The HTTP status of the last attempt (None: no answer)."""
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class GithubDelivery(SQLModel, table=True):
    """A GitHub webhook delivery received (``X-GitHub-Delivery``): a replay of the same id is answered, not acted on."""

    delivery_id: str = Field(primary_key=True, max_length=64)
    event: str = Field(max_length=64)
    action: str | None = Field(default=None, max_length=64)
    repo_id: int | None = Field(default=None, sa_type=REPO_ID)
    received_at: datetime = Field(default_factory=utcnow)
