"""github_sync: keep the projects equal to the repositories of the GitHub organization ``settings.github_org``.

A pass is FETCH (:mod:`sync_workers.github_fetch`, HTTP only) then RECONCILE (:mod:`sync_workers.github_reconcile`
and :mod:`sync_workers.github_cursor`, database only), keyed by GitHub's immutable repository id, never by name:

1. :func:`~sync_workers.github_fetch.fetch_listing` lists ``GET /orgs/{org}/repos?per_page=100&type=all``,
   following ``Link: rel="next"``, conditionally (each page's ETag is sent back; a 304 stands for the stored page).
2. :func:`~sync_workers.github_reconcile.reconcile_listing` upserts: a new id becomes a ``discovered`` project
   (``setup_required``, an Event); a known id gets its name, URLs, default branch, archived flag and description
   refreshed (a rename keeps the project); a project whose repository is listed again has its ``repo_missing``
   incident resolved.
3. Only after a COMPLETE listing, each known repository absent from it is confirmed by id
   (:func:`~sync_workers.github_fetch.confirm_absent`, ``GET /repositories/{id}`` through PyGithub): a 404 moves
   the project to ``missing`` with a critical ``repo_missing`` incident. An answer under another owner (GitHub
   follows a transfer) moves it to ``missing`` too, clears its clone URL and opens ``repo_transferred``. A 451 or a
   403 that is no rate limit (SSO enforcement, missing scope) opens ``repo_inaccessible`` with GitHub's message and
   the ``X-GitHub-SSO`` URL, and holds that repository's next check back (15 minutes, doubling, at most a day).
   Any other answer leaves it alone. Only GitHub's (positive) ids are confirmed, never the local forge's.

Mass-missing cap. A token that loses access to private repositories still gets a complete listing, without them,
and ``GET /repositories/{id}`` answers 404 for what it cannot see: every such project would go missing at once.
So at most ``settings.sync_max_missing_per_pass`` projects go missing in one pass. Confirmations stop at the
first 404 past the cap (at most cap + 1 of them per pass); if more than the cap answered 404, NONE is marked
missing, each counts as a transient failure, and ONE critical ``mass_missing`` incident of the org (subject
``org`` 0) opens, or has its message refreshed, saying how many answered 404 and to check the token's access. The
same hold (without the incident) applies when the cap is not reached but the repositories left without an answer
(a rate limit stopped the confirmations, or one failed) could exceed it. A later pass with a complete listing
whose 404s are within the cap resolves ``mass_missing`` (and marks them missing).

Failures. A connection error, a timeout, a 5xx or a rate limit during the listing is transient: nothing is marked
missing and no status changes; ``SyncCursor("github_sync").consecutive_failures`` is incremented atomically and a
``github_unreachable`` warning incident opens once it reaches ``settings.sync_failure_threshold``. A complete
listing resets the count and resolves that incident. A rate-limit answer (403/429 with ``X-RateLimit-Remaining: 0``
or ``Retry-After``) stores ``paused_until`` in that cursor, and so does a good answer with ``X-RateLimit-Remaining:
0`` (the next request would be refused; absent repositories are then confirmed after the pause); a pass starting
before then makes no request. Nothing in a pass sleeps on a rate limit, so other workers never wait on this one.
A refusal (401, unknown org) is a pass error.

Circuit breaker. The listing and the confirmations each go through GitHub's breaker (:mod:`sync_workers.github_guard`):
once ``settings.breaker_failures`` passes in a row failed, a pass makes no request until ``settings.breaker_cooldown_s``
has passed; it records a transient failure whose note is the breaker's "GitHub unavailable since ..., next try at
...", and ``github_unreachable`` counts it as before. The first pass after the cool-down is the trial.

The token is sent in headers only; every message built here is scrubbed of it.
"""

from __future__ import annotations

import time

from sqlmodel.ext.asyncio.session import AsyncSession

from models.tables import utcnow
from sync_workers.base import PassSummary, SyncContext
from sync_workers.github_cursor import held_back, load_state, record_outcome
from sync_workers.github_fetch import scrub
from sync_workers.github_guard import confirm_guarded, list_guarded
from sync_workers.github_reconcile import apply_confirmations, missing_verdict, reconcile_listing, record_mass_missing
from sync_workers.github_types import WORKER, Absent, Confirmation, Listing

DEFAULT_TIMEOUT_S = 15.0


async def run_pass(ctx: SyncContext, *, timeout_s: float = DEFAULT_TIMEOUT_S, backoff_s: float = 0.5) -> PassSummary:
    """Run one github_sync pass: list the org (conditionally), reconcile, confirm absent repositories by id.

    Args:
        ctx: settings (token, org, base URL, retries, failure threshold, missing cap) and the database.
        timeout_s: connect/read timeout of every HTTP request, in seconds.
        backoff_s: PyGithub's retry backoff factor for the by-id confirmation (0 in tests).

    Returns:
        The pass summary: created/updated/missing projects, transient failures, requests made (listing pages plus
        one per by-id confirmation; PyGithub's own retries inside a confirmation are not counted) and requests
        answered 304. Without a token and an org the pass does nothing (the local forge is in use) and says so.
    """
    started, summary = time.monotonic(), PassSummary(worker=WORKER)
    settings = ctx.settings
    if not (settings.github_token and settings.github_org):
        summary.notes.append("skipped: ORCH_GITHUB_TOKEN and ORCH_GITHUB_ORG are not both set (local forge)")
        return summary
    token = settings.github_token.get_secret_value()
    try:
        await _run(ctx, summary, token, settings.github_org, timeout_s=timeout_s, backoff_s=backoff_s)
    finally:
        summary.notes = [scrub(n, token) for n in summary.notes]
        summary.errors = [scrub(e, token) for e in summary.errors]
        summary.duration_s = time.monotonic() - started
    return summary


async def _run(
    ctx: SyncContext, summary: PassSummary, token: str, org: str, *, timeout_s: float, backoff_s: float
) -> None:
    """FETCH the listing, RECONCILE it, confirm the absent repositories, then RECONCILE their answers."""
    settings = ctx.settings
    async with ctx.db.session() as s:
        paused_until, pages = await load_state(s)
    if paused_until is not None and paused_until > utcnow():
        summary.notes.append(f"paused until {paused_until.isoformat(timespec='seconds')} (GitHub rate limit)")
        return
    listing = await list_guarded(ctx, token, org, pages, timeout_s=timeout_s)
    summary.requests, summary.not_modified = listing.requests, listing.not_modified
    async with ctx.db.session() as s:
        absent = await reconcile_listing(s, listing, org=org, summary=summary)
        waiting = await held_back(s, [a.repo_id for a in absent])
    cap = settings.sync_max_missing_per_pass
    confirmations: list[
        Confirmation
    ] = []  # the listing spent the rate limit: the absent ones are asked about after the pause
    if listing.paused_until is None:
        ask = [a for a in absent if a.repo_id not in waiting]
        confirmations = await confirm_guarded(
            ctx, token, ask, summary, stop_after_gone=cap + 1, timeout_s=timeout_s, backoff_s=backoff_s
        )
    summary.requests += len(confirmations)
    confirmations += [Confirmation(a, "waiting", "held back") for a in absent if a.repo_id in waiting]
    pauses = [p for p in [listing.paused_until, *(c.paused_until for c in confirmations)] if p is not None]
    async with ctx.db.session() as s:
        await _apply(s, listing, absent, confirmations, cap=cap, org=org, summary=summary)
        await record_outcome(s, settings, listing, max(pauses, default=None), summary)


async def _apply(
    session: AsyncSession,
    listing: Listing,
    absent: list[Absent],
    confirmations: list[Confirmation],
    *,
    cap: int,
    org: str,
    summary: PassSummary,
) -> None:
    """Apply the answers by id within the mass-missing cap (nothing to decide after an incomplete listing)."""
    if not listing.complete:
        return
    verdict = missing_verdict(len(absent), confirmations, cap)
    await apply_confirmations(session, confirmations, summary, hold=verdict != "apply")
    gone = sum(c.outcome == "gone" for c in confirmations)
    await record_mass_missing(session, verdict, gone=gone, absent=len(absent), cap=cap, org=org, summary=summary)
