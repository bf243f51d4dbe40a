"""Outgoing webhooks on the wire: the body's HMAC-SHA256 signature and one signed POST.

The signature follows GitHub's scheme (``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``), so a
receiver can check it as GitHub's documentation shows:
https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx  # imported where a request is sent: the API's start-up does not pay for it

SIGNATURE_HEADER = "X-Hub-Signature-256"
DELIVERY_HEADER = "X-Orchestrator-Delivery"
EVENT_HEADER = "X-Orchestrator-Event"
USER_AGENT = "orchestrator-webhooks/1"


class DeliveryFailed(RuntimeError):
    """One attempt failed: no answer, or an answer other than 2xx. ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def signature(secret: bytes, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``body`` keyed by ``secret`` (GitHub's ``X-Hub-Signature-256``)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_matches(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret``, compared in constant time.

    Follows https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries (``hmac.compare_digest``
    over the whole ``sha256=...`` value). A missing header never matches.
    """
    if not header:
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.encode())


async def post_signed(
    client: httpx.AsyncClient, url: str, body: bytes, *, secret: bytes, event: str, delivery_id: str
) -> int:
    """POST ``body`` (JSON) to ``url``, signed; returns the HTTP status of a 2xx answer.

    Args:
        client: the HTTP client (its timeout applies, in seconds).
        url: the receiver.
        body: the exact bytes signed and sent.
        secret: the webhook's HMAC key.
        event: the event name, sent as ``X-Orchestrator-Event``.
        delivery_id: the delivery's id, sent as ``X-Orchestrator-Delivery`` (the same on every attempt).

    Raises:
        DeliveryFailed: no answer (connection refused, timeout) or a status outside 2xx; never includes the secret.
    """
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature(secret, body),
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: event,
    }
    import httpx

    try:
        answer = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"no answer from {url}: {type(exc).__name__}: {exc}") from None
    if not 200 <= answer.status_code < 300:
        raise DeliveryFailed(f"{url} answered {answer.status_code}: {answer.text[:200]}", answer.status_code)
    return answer.status_code
