"""Benchmark of github_sync on a 10,000-repository org served by FakeGitHub on 127.0.0.1 (``make bench``).

Prints, for a first pass (every repository new) and an unchanged second pass: HTTP requests made (the floor is
10,000 / 100 per page = 100) and how many were answered 304 (goal: all of them on the second pass), wall time of
each pass, and the wall time of the database upserts alone (``reconcile_listing`` on an already fetched listing).
Not a test: no pass/fail.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from core.db import Database  # noqa: E402
from core.settings import Settings  # noqa: E402
from sync_workers.base import PassSummary, SyncContext  # noqa: E402
from sync_workers.github_fetch import PER_PAGE, fetch_listing, http_client, listing_url  # noqa: E402
from sync_workers.github_reconcile import reconcile_listing  # noqa: E402
from sync_workers.github_sync import run_pass  # noqa: E402
from tests.fixtures.fake_github import FakeGitHub  # noqa: E402

REPOS = 10_000
TOKEN = "ghp_benchSECRET"


async def _context(data: Path, base_url: str) -> SyncContext:
    settings = Settings(data_dir=data, github_token=SecretStr(TOKEN), github_org="acme", github_base_url=base_url)
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    return SyncContext(settings=settings, db=db)


async def _passes(ctx: SyncContext) -> tuple[PassSummary, float, PassSummary, float]:
    t0 = time.perf_counter()
    first = await run_pass(ctx)
    t1 = time.perf_counter()
    second = await run_pass(ctx)
    t2 = time.perf_counter()
    return first, t1 - t0, second, t2 - t1


async def _upserts_alone(ctx: SyncContext) -> tuple[float, float]:
    """Fetch the listing once, then time ``reconcile_listing`` on a fresh DB: all new, then all unchanged."""
    async with http_client(TOKEN, 15) as client:
        listing = await fetch_listing(client, listing_url(ctx.settings.github_base_url, "acme"), {})
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        async with ctx.db.session() as s:
            await reconcile_listing(s, listing, org="acme", summary=PassSummary(worker="bench"))
        times.append(time.perf_counter() - t0)
    return times[0], times[1]


async def _bench(root: Path, gh: FakeGitHub) -> None:
    ctx = await _context(root / "passes", gh.base_url)
    first, t_first, second, t_second = await _passes(ctx)
    await ctx.db.dispose()
    assert first.ok and second.ok, (first.line(), second.line())
    ctx = await _context(root / "upserts", gh.base_url)
    up_new, up_same = await _upserts_alone(ctx)
    await ctx.db.dispose()

    floor = -(-REPOS // PER_PAGE)
    print(f"github_sync       {REPOS} repositories, {PER_PAGE} per page (floor {floor} requests)")
    print(
        f"  first pass      {first.requests:5d} requests, {first.not_modified:3d} answered 304, "
        f"{first.created} created, {t_first:6.2f} s"
    )
    print(
        f"  second pass     {second.requests:5d} requests, {second.not_modified:3d} answered 304, "
        f"{second.created + second.updated} changed, {t_second:6.2f} s"
    )
    print(f"  upserts alone   {up_new:6.2f} s all new, {up_same:6.2f} s all unchanged (no HTTP)")
    print(
        f"  ratios          second/first: requests {second.requests / first.requests:.2f}, "
        f"answered 304 {second.not_modified / max(second.requests, 1):.0%}, wall {t_second / t_first:.2f}; "
        f"upserts share of first pass {up_new / t_first:.0%}"
    )


def main() -> None:
    """Run the benchmark and print its figures."""
    with FakeGitHub(token=TOKEN, org="acme") as gh, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gh.add_repos(REPOS)
        print(f"github_sync       seeding {REPOS} repositories on FakeGitHub: {time.perf_counter() - t0:.2f} s")
        asyncio.run(_bench(Path(tmp), gh))


if __name__ == "__main__":
    main()
