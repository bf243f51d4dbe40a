"""github_sync's own state in ``SyncCursor`` rows (database only): listing pages, pause, failure count.

The worker's row (key ``github_sync``) holds ``paused_until``, ``consecutive_failures`` and, in ``cached["pages"]``,
the URLs of the listing pages; each page has its own row (key = the page URL) with its ETag and its repositories,
which a 304 stands for. A repository whose by-id check was refused (451, or a 403 that is no rate limit) has a row
of its own (key :func:`backoff_key`) whose ``paused_until`` holds its next check back, doubling each time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.settings import Settings
from models.tables import SyncCursor, utcnow
from services.incidents import open_incident, resolve_incident
from sync_workers.base import PassSummary
from sync_workers.github_types import REPOS, WORKER, Listing, Page

log = logging.getLogger(__name__)
BACKOFF_FIRST_S = 900
"""The first hold on a refused repository's by-id check (15 minutes), doubled after each refusal..."""
BACKOFF_MAX_S = 86_400
"""...up to a day."""


async def load_state(session: AsyncSession) -> tuple[datetime | None, dict[str, Page]]:
    """The worker's pause, and the listing pages stored by earlier passes (by URL).

    The worker's own cursor (key ``github_sync``) lists the page URLs in ``cached["pages"]``: pages after the
    first are whatever the Link header named (``/organizations/{id}/repos`` on github.com), so no URL prefix finds
    them.
    """
    worker = await session.get(SyncCursor, WORKER)
    if worker is None:
        return None, {}
    urls = _page_urls(worker)
    cursors = (await session.exec(select(SyncCursor).where(col(SyncCursor.key).in_(urls)))).all() if urls else []
    pages = {}
    for cursor in cursors:
        cached = cursor.cached if isinstance(cursor.cached, dict) else {}
        try:
            repos = REPOS.validate_python(cached.get("repos", []))
        except ValidationError:
            continue  # unreadable: fetch the page again without If-None-Match
        pages[cursor.key] = Page(cursor.etag, repos, cached.get("next"))
    return (_aware(worker.paused_until) if worker.paused_until else None), pages


def _page_urls(worker: SyncCursor | None) -> list[str]:
    cached = worker.cached if worker is not None and isinstance(worker.cached, dict) else {}
    return [u for u in cached.get("pages", []) if isinstance(u, str)]


async def store_pages(session: AsyncSession, listing: Listing) -> None:
    """Upsert the pages answered 200; keep the worker's page list (and drop pages a complete listing no longer has)."""
    conn = await session.connection()
    await conn.execute(upsert_for(conn.dialect.name)(SyncCursor).values(key=WORKER).on_conflict_do_nothing())
    if listing.fresh:
        rows = [
            {"key": url, "etag": p.etag, "cached": {"repos": [r.model_dump() for r in p.repos], "next": p.next_url},
             "updated_at": utcnow(), "consecutive_failures": 0}
            for url, p in listing.fresh.items()
        ]  # fmt: skip
        stmt = upsert_for(conn.dialect.name)(SyncCursor)
        excluded = stmt.excluded
        updated = {"etag": excluded.etag, "cached": excluded.cached, "updated_at": excluded.updated_at}
        await conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=updated), rows)
    old = _page_urls(await session.get(SyncCursor, WORKER))
    urls = listing.visited if listing.complete else list(dict.fromkeys([*old, *listing.fresh]))
    if stale := set(old) - set(urls):  # pages past the end of a shrunken listing
        await conn.execute(delete(SyncCursor).where(col(SyncCursor.key).in_(stale)))
    await conn.execute(update(SyncCursor).where(col(SyncCursor.key) == WORKER).values(cached={"pages": urls}))


def upsert_for(dialect: str) -> Any:
    """The dialect's INSERT with ``on_conflict_do_*`` (an atomic upsert); SQLite and PostgreSQL are supported.

    Raises:
        NotImplementedError: for any other dialect.
    """
    if dialect == "sqlite":
        return sqlite.insert
    if dialect == "postgresql":
        return postgresql.insert
    raise NotImplementedError(f"github_sync needs SQLite or PostgreSQL for atomic upserts, not {dialect}")


async def record_outcome(
    session: AsyncSession, settings: Settings, listing: Listing, paused_until: datetime | None, summary: PassSummary
) -> None:
    """Store the pause and the consecutive-failure count; open or resolve ``github_unreachable``."""
    conn = await session.connection()
    await conn.execute(upsert_for(conn.dialect.name)(SyncCursor).values(key=WORKER).on_conflict_do_nothing())
    this = col(SyncCursor.key) == WORKER
    if paused_until is not None:
        await conn.execute(update(SyncCursor).where(this).values(paused_until=paused_until, updated_at=utcnow()))
        summary.notes.append(f"paused until {paused_until.isoformat(timespec='seconds')} (GitHub rate limit)")
    if listing.complete:
        await conn.execute(update(SyncCursor).where(this).values(consecutive_failures=0))
        await resolve_incident(session, kind="github_unreachable", subject_type="org", subject_id=0)
    elif listing.failure is not None:
        await _count_failure(session, settings, listing.failure, summary)
    if listing.error is not None:
        summary.errors.append(listing.error)


async def _count_failure(session: AsyncSession, settings: Settings, failure: str, summary: PassSummary) -> None:
    """One more consecutive failure (atomically); ``github_unreachable`` opens at the threshold."""
    summary.transient_failures += 1
    log.warning("github_sync: transient failure: %s", failure)
    conn = await session.connection()
    bumped = (
        update(SyncCursor)
        .where(col(SyncCursor.key) == WORKER)
        .values(consecutive_failures=col(SyncCursor.consecutive_failures) + 1)
    )
    count = (await conn.execute(bumped.returning(col(SyncCursor.consecutive_failures)))).scalar_one()
    summary.notes.append(f"{failure} ({count} in a row)")
    if count >= settings.sync_failure_threshold:
        message = f"GitHub org {settings.github_org} unreachable {count} times in a row; last: {failure}"
        await open_incident(
            session, kind="github_unreachable", severity="warning", subject_type="org", subject_id=0, message=message
        )


def _aware(value: datetime) -> datetime:
    """SQLite hands datetimes back naive: they were stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ---- backoff of refused by-id checks -----------------------------------------------------------------------------
def backoff_key(repo_id: int) -> str:
    """The ``SyncCursor`` key of a repository's by-id check backoff."""
    return f"{WORKER}:repositories/{repo_id}"


async def held_back(session: AsyncSession, repo_ids: Iterable[int]) -> set[int]:
    """The repositories among ``repo_ids`` whose by-id check is held back by a backoff that has not ended."""
    keys = {backoff_key(i): i for i in repo_ids}
    if not keys:
        return set()
    stmt = select(SyncCursor).where(col(SyncCursor.key).in_(keys))
    now = utcnow()
    return {keys[c.key] for c in (await session.exec(stmt)).all() if c.paused_until and _aware(c.paused_until) > now}


async def back_off(session: AsyncSession, repo_id: int) -> tuple[int, datetime]:
    """Count one more refusal of ``repo_id``'s by-id check (atomically) and hold the next one back.

    Returns:
        How many refusals in a row, and when the next check may run (``BACKOFF_FIRST_S * 2**(n-1)``, at most
        ``BACKOFF_MAX_S``).
    """
    conn = await session.connection()
    key = backoff_key(repo_id)
    await conn.execute(upsert_for(conn.dialect.name)(SyncCursor).values(key=key).on_conflict_do_nothing())
    bumped = (
        update(SyncCursor)
        .where(col(SyncCursor.key) == key)
        .values(consecutive_failures=col(SyncCursor.consecutive_failures) + 1, updated_at=utcnow())
        .returning(col(SyncCursor.consecutive_failures))
    )
    count = (await conn.execute(bumped)).scalar_one()
    until = utcnow() + timedelta(seconds=min(BACKOFF_FIRST_S * 2 ** (count - 1), BACKOFF_MAX_S))
    await conn.execute(update(SyncCursor).where(col(SyncCursor.key) == key).values(paused_until=until))
    return count, until


async def clear_backoff(session: AsyncSession, repo_ids: Iterable[int]) -> None:
    """Forget the backoff of these repositories (their by-id check was answered, or they are listed again)."""
    keys = [backoff_key(i) for i in repo_ids]
    if keys:
        conn = await session.connection()
        await conn.execute(delete(SyncCursor).where(col(SyncCursor.key).in_(keys)))
