"""webhook_sender: send the outgoing webhook deliveries other processes recorded but did not send.

A process that makes an event (a CLI command, the API, a graph run) records its ``WebhookDelivery`` rows and sends
them from a background task; when it exits or crashes first, the rows stay ``pending`` (or ``sending``, if it died
mid-send). This worker, every ``settings.webhook_send_interval_s`` (``ORCH_WEBHOOK_SEND_INTERVAL_S``), sends them
with :func:`services.webhook_delivery.send_due`:

* each ``pending`` row is claimed with one atomic UPDATE before it is sent, so two senders (two sync processes, the
  API, ``orchestrator webhooks send``) never both send it;
* a ``sending`` row whose sender has not renewed its lease for ``settings.webhook_sending_timeout_s``
  (``ORCH_WEBHOOK_SENDING_TIMEOUT_S``) is taken over, again atomically, and sent again.

Delivery is at least once, with the same ``X-Orchestrator-Delivery`` id on every attempt and every re-send: a
receiver de-duplicates by it, as GitHub's documentation advises for ``X-GitHub-Delivery``
(https://docs.github.com/en/webhooks/using-webhooks/best-practices-for-using-webhooks#use-the-x-github-delivery-header).
"""

from __future__ import annotations

import time

from services.webhook_delivery import send_due
from sync_workers.base import PassSummary, SyncContext

WORKER = "webhook_sender"
BATCH = 100
"""The most deliveries one pass takes (pending ones, and stuck ones); the rest wait for the next pass."""


async def run_pass(ctx: SyncContext) -> PassSummary:
    """Send the pending deliveries and take over the stuck ones; a receiver's failure is no pass error.

    Args:
        ctx: settings (attempts, backoff, timeouts, the secrets key) and the database.

    Returns:
        The pass summary (worker ``webhook_sender``): ``requests`` deliveries taken, ``updated`` of them delivered,
        ``transient_failures`` of them not delivered (now ``failed`` with their last error); ``notes`` say how many
        were taken over from a sender that died.

    Raises:
        services.secrets.SecretsKeyError / SecretDecryptError: the secrets key cannot open a webhook's secret (the
        scheduler makes it a pass error).
    """
    t0 = time.monotonic()
    summary = PassSummary(worker=WORKER)
    counts = await send_due(ctx.db, ctx.settings, limit=BATCH, stuck_after_s=ctx.settings.webhook_sending_timeout_s)
    summary.requests, summary.updated = counts.taken, counts.delivered
    summary.transient_failures = counts.taken - counts.delivered
    if counts.retaken:
        summary.notes.append(f"{counts.retaken} delivery(ies) left sending by a sender that stopped: sent again")
    if summary.transient_failures:
        summary.notes.append(
            f"{summary.transient_failures} delivery(ies) not delivered: see `orchestrator webhooks deliveries`"
        )
    summary.duration_s = time.monotonic() - t0
    return summary
