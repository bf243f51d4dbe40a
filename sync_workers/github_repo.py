"""github_sync for ONE repository, by id: what a GitHub webhook (``repository``, ``push``) asks to refresh at once.

The same code as the polling pass (:mod:`sync_workers.github_sync`), narrowed to one id: FETCH is
:func:`~sync_workers.github_fetch.confirm_absent` (``GET /repositories/{id}``), RECONCILE is
:func:`~sync_workers.github_reconcile.reconcile_listing` for a repository GitHub shows in the org (a new id becomes
a ``discovered`` project, a rename, an archive or a new default branch refreshes the known one) and
:func:`~sync_workers.github_reconcile.apply_confirmations` for one gone (404: ``missing``), transferred out of the
org, or refused to the token. Polling stays the source of truth: an event lost or refused here is healed by the next
pass, which makes the same decisions.
"""

from __future__ import annotations

import time

from sqlmodel import select

from models.tables import Project
from sync_workers.base import PassSummary, SyncContext
from sync_workers.github_fetch import scrub
from sync_workers.github_guard import confirm_guarded
from sync_workers.github_reconcile import apply_confirmations, reconcile_listing
from sync_workers.github_types import WORKER, Absent, Listing

DEFAULT_TIMEOUT_S = 15.0


async def reconcile_repository(
    ctx: SyncContext, repo_id: int, *, timeout_s: float = DEFAULT_TIMEOUT_S, backoff_s: float = 0.5
) -> PassSummary:
    """Refresh the project of GitHub repository ``repo_id`` (or adopt the repository) from GitHub's answer now.

    Args:
        ctx: settings (token, org, base URL, retries, missing cap) and the database.
        repo_id: GitHub's immutable repository id (positive).
        timeout_s: connect/read timeout of the request, in seconds.
        backoff_s: PyGithub's retry backoff factor (0 in tests).

    Returns:
        A summary like a pass's (``created``/``updated``/``missing``, notes, errors). Without a token and an org it
        does nothing and says so; a repository of another owner that no project knows is left alone (noted); a
        transient failure (5xx, timeout, rate limit) is counted and left to the next pass.
    """
    started, summary = time.monotonic(), PassSummary(worker=f"{WORKER}:repository")
    settings = ctx.settings
    if not (settings.github_token and settings.github_org) or repo_id <= 0:
        summary.notes.append("skipped: no GitHub configured, or not a GitHub repository id")
        return summary
    token, org = settings.github_token.get_secret_value(), settings.github_org
    async with ctx.db.session() as s:
        project = (await s.exec(select(Project).where(Project.github_repo_id == repo_id))).first()
    known = project is not None and project.id is not None
    absent = Absent(
        project.id or 0 if project else 0,
        project.name if project else "",
        repo_id,
        (project.repo_full_name if project else None) or str(repo_id),
    )
    try:
        answers = await confirm_guarded(ctx, token, [absent], summary, timeout_s=timeout_s, backoff_s=backoff_s)
        async with ctx.db.session() as s:
            for c in answers:
                if c.outcome == "present" and c.repo is not None:
                    await reconcile_listing(s, Listing(repos=[c.repo]), org=org, summary=summary)
                elif known:
                    await apply_confirmations(s, [c], summary, hold=settings.sync_max_missing_per_pass < 1)
                else:
                    summary.notes.append(f"repository {repo_id}: {c.outcome} ({c.detail}); no project knows it")
    finally:
        summary.notes = [scrub(n, token) for n in summary.notes]
        summary.errors = [scrub(e, token) for e in summary.errors]
        summary.duration_s = time.monotonic() - started
    return summary
