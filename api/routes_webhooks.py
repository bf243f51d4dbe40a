"""Webhook routes: outgoing webhooks and their delivery log (admins), and GitHub's deliveries in.

``POST /webhooks/github`` carries no API key: GitHub cannot send one. It declares the :data:`api.auth.Public` rule
and authenticates each request by its ``X-Hub-Signature-256`` instead (HMAC-SHA256 of the raw body under
``ORCH_GITHUB_WEBHOOK_SECRET``, compared in constant time), as GitHub documents:
https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries. A request without a valid signature
gets 401 and changes nothing; a replayed ``X-GitHub-Delivery`` is answered and not acted on again.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Header, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from api.auth import Admin, Public
from api.deps import RuntimeDep
from api.github_reconciler import repository_reconciler
from api.routes import CHANGE, EDGE, errors
from core.db import Database
from core.settings import Settings
from infra.webhooks import signature_matches
from models.notification_tables import GithubDelivery
from services.notifications import (
    EVENTS,
    MAX_SECRET_CHARS,
    DeliveryInfo,
    WebhookInfo,
    WebhookInputError,
    add_webhook,
    list_deliveries,
    list_webhooks,
    remove_webhook,
    start_delivery,
)

log = logging.getLogger(__name__)
router = APIRouter(responses=EDGE)

REPOSITORY_ACTIONS = frozenset({"created", "renamed", "transferred", "archived", "unarchived", "deleted", "edited"})
"""``repository`` event actions that reconcile the repository (others are answered and ignored)."""
_SIGNATURE_CHALLENGE = {"WWW-Authenticate": 'HMAC-SHA256 realm="github-webhooks", header="X-Hub-Signature-256"'}


URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/\S*)?$"
"""The webhook URLs the API takes, stated in the schema so a request it allows is never refused for its URL."""
EVENT_PATTERN = "^(" + "|".join(re.escape(name) for name in ("all", *EVENTS)) + ")$"


class WebhookIn(BaseModel):
    """A new outgoing webhook; the secret is write-only (never answered back)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2048,
        pattern=URL_PATTERN,
        description="where events are POSTed: http(s), a host name or IPv4 address, no credentials",
    )
    # The limits are stated in the schema but checked by add_webhook, whose refusal never quotes the value: a
    # validation error of the model would echo the secret back in its 422.
    secret: str = Field(
        description="the HMAC-SHA256 key, up to 256 characters, not blank; never shown again (nor echoed in a 422)",
        json_schema_extra={"minLength": 1, "maxLength": MAX_SECRET_CHARS, "pattern": r"\S"},
    )
    events: list[Annotated[str, Field(pattern=EVENT_PATTERN)]] = Field(
        min_length=1, description="event names, or ['all']"
    )
    format: Literal["json", "slack"] = "json"


class WebhookPublic(BaseModel):
    """A webhook as shown: no secret."""

    id: int
    url: str
    events: list[str]
    format: str
    created_by: str
    created_at: datetime


class DeliveryPublic(BaseModel):
    """One delivery of the log."""

    delivery_id: str
    webhook_id: int
    event: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


def _webhook(info: WebhookInfo) -> WebhookPublic:
    return WebhookPublic(**info.__dict__)


def _delivery(info: DeliveryInfo) -> DeliveryPublic:
    return DeliveryPublic(**info.__dict__)


@router.get("/webhooks", responses=errors(401, 403))
async def get_webhooks(rt: RuntimeDep, who: Admin) -> list[WebhookPublic]:
    """Every outgoing webhook, oldest first (never a secret)."""
    return [_webhook(w) for w in await list_webhooks(rt.db)]


@router.post("/webhooks", status_code=status.HTTP_201_CREATED, responses=CHANGE)
async def post_webhook(body: WebhookIn, rt: RuntimeDep, who: Admin) -> WebhookPublic:
    """Add an outgoing webhook (422 naming the problem: URL, event names, secret)."""
    try:
        info = await add_webhook(
            rt.db, rt.settings, url=body.url, secret=body.secret, events=body.events, fmt=body.format, actor=who.name
        )
    except WebhookInputError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return _webhook(info)


@router.delete(
    "/webhooks/{webhook_id:int}",  # only digits match, so /webhooks/deliveries and /webhooks/github stay apart
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 403, 404, 415),
)
async def delete_webhook(webhook_id: Annotated[int, Path(ge=1, le=2**63 - 1)], rt: RuntimeDep, who: Admin) -> Response:
    """Remove a webhook and its delivery log (404 if there is none)."""
    if not await remove_webhook(rt.db, webhook_id, actor=who.name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/webhooks/deliveries", responses=errors(401, 403, 422))
async def get_deliveries(
    rt: RuntimeDep, who: Admin, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[DeliveryPublic]:
    """The delivery log, newest first; also starts sending the pending ones in the background."""
    start_delivery(rt.db, rt.settings)
    return [_delivery(d) for d in await list_deliveries(rt.db, limit=limit)]


class GithubAnswer(BaseModel):
    """What a GitHub delivery got: ``pong``, ``accepted`` (reconciling now), ``duplicate`` or ``ignored``."""

    status: Literal["pong", "accepted", "duplicate", "ignored"]
    delivery: str
    repository_id: int | None = None


# Public: GitHub sends no API key. The route is authenticated by the body's HMAC signature, checked first thing.
@router.post("/webhooks/github", dependencies=[Public], responses=errors(400, 401, 415))
async def github_webhook(
    request: Request,
    rt: RuntimeDep,
    background: BackgroundTasks,
    response: Response,
    x_github_event: Annotated[str | None, Header()] = None,
    x_github_delivery: Annotated[str | None, Header(max_length=64)] = None,
    x_hub_signature_256: Annotated[str | None, Header()] = None,
) -> GithubAnswer:
    """A GitHub webhook delivery: signature checked, delivery id de-duplicated, ``ping`` answered.

    ``repository`` events (created, renamed, transferred, archived, deleted...) and ``push`` reconcile that one
    repository at once (after the answer, through the sync's own code); the polling pass stays the source of truth.

    Raises:
        HTTPException: 401 for a missing or wrong signature (or no ``ORCH_GITHUB_WEBHOOK_SECRET`` set); 400 for a
            missing ``X-GitHub-Event``/``X-GitHub-Delivery`` header or a body that is not a JSON object.
    """
    body = await request.body()
    secret = rt.settings.github_webhook_secret
    key = secret.get_secret_value().encode() if secret is not None else b""
    if not key or not signature_matches(key, body, x_hub_signature_256):
        why = "no ORCH_GITHUB_WEBHOOK_SECRET is set" if not key else "X-Hub-Signature-256 is missing or wrong"
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{why}: delivery refused", headers=_SIGNATURE_CHALLENGE)
    if not x_github_event or not x_github_delivery:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "X-GitHub-Event and X-GitHub-Delivery are required")
    payload = _json_object(body)
    repo_id = _repository_id(x_github_event, payload)
    if not await _first_time(rt.db, x_github_delivery, x_github_event, payload.get("action"), repo_id):
        return GithubAnswer(status="duplicate", delivery=x_github_delivery, repository_id=repo_id)
    if x_github_event == "ping":
        return GithubAnswer(status="pong", delivery=x_github_delivery)
    if repo_id is None:
        return GithubAnswer(status="ignored", delivery=x_github_delivery)
    background.add_task(_reconcile, rt.settings, rt.db, repo_id, x_github_delivery)
    response.status_code = status.HTTP_202_ACCEPTED
    return GithubAnswer(status="accepted", delivery=x_github_delivery, repository_id=repo_id)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not a JSON object")
    return payload


def _repository_id(event: str, payload: dict[str, Any]) -> int | None:
    """The repository id a ``repository`` (known action) or ``push`` event is about; None for anything else."""
    if event == "push" or (event == "repository" and payload.get("action") in REPOSITORY_ACTIONS):
        repo = payload.get("repository")
        repo_id = repo.get("id") if isinstance(repo, dict) else None
        return repo_id if isinstance(repo_id, int) and repo_id > 0 else None
    return None


async def _first_time(db: Database, delivery: str, event: str, action: Any, repo_id: int | None) -> bool:
    """Record the delivery id; False when it was recorded before (a replay or GitHub's redelivery)."""
    row = GithubDelivery(
        delivery_id=delivery, event=event[:64], action=str(action)[:64] if action else None, repo_id=repo_id
    )
    try:
        async with db.session() as s:
            s.add(row)
    except IntegrityError:
        return False
    return True


async def _reconcile(settings: Settings, db: Database, repo_id: int, delivery: str) -> None:
    """Reconcile ``repo_id`` with the reconciler the entry point gave (else the next polling pass does)."""
    reconciler = repository_reconciler()
    if reconciler is None:
        log.info("github delivery %s: repository %s is reconciled by the next github_sync pass", delivery, repo_id)
        return
    try:
        log.info("github delivery %s: %s", delivery, await reconciler(settings, db, repo_id))
    except Exception:  # the polling pass heals what this missed; the delivery itself was answered
        log.exception("github delivery %s: reconciling repository %s failed", delivery, repo_id)
