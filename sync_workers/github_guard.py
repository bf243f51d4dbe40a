"""GitHub's circuit breaker around github_sync's requests (the org listing, the confirmations by id).

The breaker is ``github`` (:mod:`core.breakers`), stored in the database and shared with the forge of every process
(:func:`infra.forge.factory.make_forge`). A listing with a transient failure (no connection, a timeout, a 5xx, a rate
limit), or confirmations with a ``failed`` or ``rate_limited`` answer, count as one failure; a complete answer, or
any other (a 404, a refusal), resets the count. While the breaker is open, nothing is sent and the caller gets the
refusal in words instead.
"""

from __future__ import annotations

from core.breakers import ServiceUnavailable
from core.settings import Settings
from sync_workers.base import PassSummary, SyncContext
from sync_workers.github_fetch import confirm_absent, fetch_listing, http_client, listing_url
from sync_workers.github_types import Absent, Confirmation, Listing, Page

BREAKER, BREAKER_LABEL = "github", "GitHub"
"""GitHub's circuit breaker, the one the forge uses too (:class:`infra.forge.github.GitHubForge`)."""


class _ListingFailed(Exception):
    """A listing with a transient failure, raised inside GitHub's breaker so that it counts."""

    def __init__(self, listing: Listing) -> None:
        super().__init__(listing.failure)
        self.listing = listing


class _ConfirmationsFailed(Exception):
    """Confirmations with a ``failed`` or ``rate_limited`` answer, raised inside GitHub's breaker so that they count."""

    def __init__(self, confirmations: list[Confirmation]) -> None:
        super().__init__("GitHub did not answer every confirmation")
        self.confirmations = confirmations


def _failed(exc: BaseException) -> bool:
    return isinstance(exc, _ListingFailed | _ConfirmationsFailed)


async def list_guarded(ctx: SyncContext, token: str, org: str, pages: dict[str, Page], *, timeout_s: float) -> Listing:
    """:func:`~sync_workers.github_fetch.fetch_listing` of ``org`` under GitHub's breaker.

    Returns:
        The listing; while the breaker is open, an incomplete one whose ``failure`` is the refusal ("GitHub
        unavailable since ..., next try at ..."), with no request made.
    """
    try:
        async with ctx.breakers.guard(BREAKER, BREAKER_LABEL, counts=_failed):
            async with http_client(token, timeout_s) as client:
                listing = await fetch_listing(client, listing_url(ctx.settings.github_base_url, org), pages)
            if listing.failure is not None:
                raise _ListingFailed(listing)
    except _ListingFailed as failed:
        return failed.listing
    except ServiceUnavailable as refused:
        return Listing(failure=str(refused))
    return listing


async def confirm_guarded(
    ctx: SyncContext,
    token: str,
    ask: list[Absent],
    summary: PassSummary,
    *,
    stop_after_gone: int | None = None,
    timeout_s: float,
    backoff_s: float,
) -> list[Confirmation]:
    """:func:`~sync_workers.github_fetch.confirm_absent` under GitHub's breaker (same arguments but ``ctx``).

    While the breaker is open no request is made: no confirmation, one transient failure counted in ``summary`` and
    the refusal noted ("GitHub unavailable since ..., next try at ...").
    """
    if not ask:
        return []
    settings: Settings = ctx.settings
    try:
        async with ctx.breakers.guard(BREAKER, BREAKER_LABEL, counts=_failed):
            done = await confirm_absent(
                settings,
                token,
                ask,
                stop_after_gone=stop_after_gone,
                timeout_s=timeout_s,
                backoff_s=backoff_s,
            )
            if any(c.outcome in ("failed", "rate_limited") for c in done):
                raise _ConfirmationsFailed(done)
    except _ConfirmationsFailed as failed:
        return failed.confirmations
    except ServiceUnavailable as refused:
        summary.transient_failures += 1
        summary.notes.append(f"{len(ask)} repositories not confirmed by id: {refused}")
        return []
    return done
