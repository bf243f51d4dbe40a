"""RECONCILE for github_sync: the projects against a listing (database only, no HTTP).

Keyed by GitHub's immutable repository id, never by name.

:func:`reconcile_listing` upserts (a new id becomes a ``discovered`` project, a known id is refreshed, a rename
keeps the project) and returns the known repositories a complete listing left out; once they are confirmed by id,
:func:`apply_confirmations` moves those that answered 404 to ``missing``, within the per-pass cap
``settings.sync_max_missing_per_pass`` (see :mod:`sync_workers.github_sync`), records a repository transferred out
of the org (``missing``, its clone URL cleared, a ``repo_transferred`` incident) and opens ``repo_inaccessible``
for one GitHub refuses to show (451, SSO, scope), whose next check then backs off.

Only GitHub's ids (positive) are ever confirmed: a project whose id is the local forge's (negative) is not GitHub's
business.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import bindparam, insert, update
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.enums import ProjectStatus
from models.names import validate_slug
from models.tables import Event, Incident, Project, utcnow
from models.transitions import StaleStatus, transition_project
from services.incidents import open_incident, resolve_incident
from sync_workers.base import PassSummary
from sync_workers.github_cursor import back_off, clear_backoff, store_pages
from sync_workers.github_types import WORKER, Absent, Confirmation, Listing, RepoSummary

log = logging.getLogger(__name__)
ACTOR = f"system:{WORKER}"
"""How the trail names this worker's changes."""
KNOWN_COLUMNS = tuple(
    col(c)
    for c in (Project.id, Project.name, Project.status, Project.github_repo_id, Project.repo_full_name,
              Project.repo_url, Project.clone_url, Project.default_branch, Project.archived, Project.description)
)  # fmt: skip
"""What reconciliation reads of every project (plain rows: building 10,000 ORM objects costs seconds)."""
Verdict = Literal["apply", "over_cap", "undecided"]
LISTED_RESOLVES = ("repo_missing", "repo_transferred", "repo_inaccessible")
"""The incidents of a project that end when its repository is listed in the org again."""


# ---- upserts -----------------------------------------------------------------------------------------------------
async def reconcile_listing(session: AsyncSession, listing: Listing, *, org: str, summary: PassSummary) -> list[Absent]:
    """Store the fresh pages and upsert the listed repositories; return the absent ones if the listing is complete.

    Idempotent: running it twice on the same listing changes nothing the second time but ``last_synced_at``.
    Upserts only (no status change) on an incomplete listing. Set-based Core statements (one executemany each),
    not ORM objects: 10,000 repositories are one pass's work, not a loop of row writes.

    Returns:
        The known, non-missing projects whose repository id was not listed (empty unless ``listing.complete``).
    """
    await store_pages(session, listing)
    listed = {r.id: r for r in listing.repos}  # a repository seen twice (pages shifted mid-listing) counts once
    conn = await session.connection()
    rows: Sequence[Any] = (await conn.execute(sa_select(*KNOWN_COLUMNS))).all()  # Row objects
    by_repo_id = {p.github_repo_id: p for p in rows if p.github_repo_id is not None}
    now = utcnow()
    await _create_projects(session, [r for i, r in listed.items() if i not in by_repo_id], rows, org, now, summary)
    await _update_projects(session, [(by_repo_id[i], r) for i, r in listed.items() if i in by_repo_id], now, summary)
    await _resolve_listed_incidents(session, {by_repo_id[i].id: i for i in listed if i in by_repo_id})
    if not listing.complete:
        return []
    return [
        Absent(p.id, p.name, p.github_repo_id, p.repo_full_name or str(p.github_repo_id))
        for p in rows
        if p.github_repo_id is not None
        and p.github_repo_id > 0  # GitHub's ids are positive; the local forge's negative ones are not asked about
        and p.github_repo_id not in listed
        and p.status != ProjectStatus.missing
    ]


async def _create_projects(
    session: AsyncSession,
    repos: list[RepoSummary],
    rows: Sequence[Any],
    org: str,
    now: datetime,
    summary: PassSummary,
) -> None:
    """New repository ids -> ``discovered`` projects with ``setup_required``, each with its first Event."""
    taken, claimed = {p.name for p in rows}, _claimed(rows)
    values = []
    for r in sorted(repos, key=lambda r: r.id):  # the oldest repository gets the plain name
        if r.name.lower() in claimed or r.full_name.lower() in claimed:
            summary.notes.append(f"{r.full_name} (id {r.id}) not adopted: a project of that name will link it")
            continue
        values.append(
            {
                "name": slug_for(r.name, taken),
                "description": r.description or "",
                "status": ProjectStatus.discovered,
                "setup_required": True,
                "last_synced_at": now,
                "created_at": now,
                "updated_at": now,
                **_repo_fields(r),
            }
        )
    if not values:
        return
    conn = await session.connection()
    created = await conn.execute(insert(Project).returning(col(Project.id), sort_by_parameter_order=True), values)
    reason = f"found in GitHub org {org}"
    events = [
        {"subject_type": "project", "subject_id": pid, "from_status": None, "to_status": "discovered",
         "reason": reason, "thread_id": None, "actor": ACTOR, "created_at": now}
        for pid in created.scalars().all()
    ]  # fmt: skip
    await conn.execute(insert(Event), events)
    summary.created += len(events)


def _claimed(rows: Sequence[Any]) -> set[str]:
    """Names (project names, lower-case full names) of repositories another flow will link by name.

    A repository the orchestrator is creating (a project of that name without a repository yet) or re-creating (a
    missing project's old full name) is claimed by that flow: adopting it here too would give the same repository id
    to two projects.
    """
    claimed = {p.name for p in rows if p.github_repo_id is None}
    return claimed | {(p.repo_full_name or "").lower() for p in rows if p.status == ProjectStatus.missing}


def _repo_fields(r: RepoSummary) -> dict[str, Any]:
    return {
        "github_repo_id": r.id,
        "repo_full_name": r.full_name,
        "repo_url": r.html_url,
        "clone_url": r.clone_url,
        "default_branch": r.default_branch or "main",
        "archived": r.archived,
    }


async def _update_projects(
    session: AsyncSession, pairs: list[tuple[Any, RepoSummary]], now: datetime, summary: PassSummary
) -> None:
    """Known ids: one executemany UPDATE for the changed projects, one per 500 for ``last_synced_at``."""
    changed = []
    for project, r in pairs:
        fields = {**_repo_fields(r), "description": r.description or ""}
        if any(getattr(project, k) != v for k, v in fields.items()):
            changed.append({"pid": project.id, **fields, "updated_at": now})
            if project.repo_full_name and project.repo_full_name != r.full_name:
                summary.notes.append(f"{project.name}: repository renamed {project.repo_full_name} -> {r.full_name}")
    conn = await session.connection()
    if changed:
        await conn.execute(update(Project).where(col(Project.id) == bindparam("pid")), changed)
    ids = [p.id for p, _ in pairs]
    for i in range(0, len(ids), 500):
        await conn.execute(update(Project).where(col(Project.id).in_(ids[i : i + 500])).values(last_synced_at=now))
    summary.updated += len(changed)


async def _resolve_listed_incidents(session: AsyncSession, repo_of: dict[Any, int]) -> None:
    """A repository listed again ends its project's incidents (``LISTED_RESOLVES``) and its by-id check's backoff.

    Its status is recovery's business.

    Args:
        session: the database session.
        repo_of: the repository id of each listed known project, by project id.
    """
    stmt = select(Incident.kind, Incident.subject_id).where(
        col(Incident.kind).in_(LISTED_RESOLVES), Incident.subject_type == "project", col(Incident.resolved_at).is_(None)
    )
    for kind, subject_id in (await session.exec(stmt)).all():
        if subject_id in repo_of:
            await resolve_incident(session, kind=kind, subject_type="project", subject_id=subject_id)
            if kind == "repo_inaccessible":
                await clear_backoff(session, [repo_of[subject_id]])


# ---- missing repositories ----------------------------------------------------------------------------------------
def missing_verdict(absent: int, confirmations: list[Confirmation], cap: int) -> Verdict:
    """Whether this pass's 404s may be marked missing under the per-pass cap.

    Args:
        absent: how many known repositories the complete listing left out.
        confirmations: the answers by id (possibly stopped early: rate limit, or the cap exceeded).
        cap: ``settings.sync_max_missing_per_pass``.

    Returns:
        ``over_cap`` when more than ``cap`` answered 404; ``undecided`` when not, but the repositories without an
        answer (not asked, or failed) could take it over; otherwise ``apply``.
    """
    outcomes: Counter[str] = Counter(c.outcome for c in confirmations)
    if outcomes["gone"] > cap:
        return "over_cap"
    unanswered = absent - sum(outcomes[o] for o in ("gone", "present", "transferred", "blocked", "waiting"))
    return "undecided" if outcomes["gone"] + unanswered > cap else "apply"


async def apply_confirmations(
    session: AsyncSession, confirmations: list[Confirmation], summary: PassSummary, *, hold: bool = False
) -> None:
    """A 404 -> ``missing`` plus a critical ``repo_missing`` incident; a failure is counted; the rest noted.

    A transfer out of the org -> ``missing`` with the transfer on the trail, the clone URL cleared (nothing deploys
    from the old URL, which GitHub redirects to the new owner) and a critical ``repo_transferred`` incident; it is
    never held by the cap (GitHub answered, with the repository). A ``blocked`` answer opens ``repo_inaccessible``
    with GitHub's message and holds the next check back (:func:`~sync_workers.github_cursor.back_off`); a
    ``refused`` one (a redirect to another host) is a pass error.

    Args:
        session: the database session.
        confirmations: the answers by id.
        summary: the pass summary, counted into.
        hold: mark nothing missing (the cap is or may be exceeded): a 404 counts as a transient failure.
    """
    for c in confirmations:
        a = c.absent
        if c.outcome in ("present", "gone", "transferred"):
            await _answered(session, a)
        if c.outcome == "present":
            summary.notes.append(f"{a.full_name} (id {a.repo_id}) is not in the org listing but {c.detail}")
        elif c.outcome == "gone" and not hold:
            await _mark_missing(session, a, summary)
        elif c.outcome == "transferred" and c.repo is not None:
            await _mark_transferred(session, a, c.repo, summary)
        elif c.outcome == "blocked":
            await _mark_inaccessible(session, a, c, summary)
        elif c.outcome == "refused":
            summary.errors.append(f"confirming {a.full_name} (id {a.repo_id}): {c.detail}; check ORCH_GITHUB_BASE_URL")
        elif c.outcome == "waiting":
            continue
        else:
            summary.transient_failures += 1
            why = "answers 404, held by the missing cap" if c.outcome == "gone" else c.detail
            log.warning("github_sync: could not confirm %s (id %s): %s", a.full_name, a.repo_id, why)


async def _answered(session: AsyncSession, a: Absent) -> None:
    """GitHub showed the repository again (or confirmed it gone): its refusal, if any, is over."""
    if await resolve_incident(session, kind="repo_inaccessible", subject_type="project", subject_id=a.project_id):
        await clear_backoff(session, [a.repo_id])


async def _mark_transferred(session: AsyncSession, a: Absent, repo: RepoSummary, summary: PassSummary) -> None:
    org = a.full_name.split("/")[0]
    why = f"repository {a.full_name} (id {a.repo_id}) was transferred out of org {org} to {repo.full_name}"
    try:
        await transition_project(session, a.project_id, ProjectStatus.missing, reason=why, actor=ACTOR)
    except StaleStatus:
        summary.notes.append(f"{a.project_name} changed status meanwhile; confirmed again next pass")
        return
    conn = await session.connection()
    await conn.execute(
        update(Project).where(col(Project.id) == a.project_id).values(clone_url=None, updated_at=utcnow())
    )
    message = (
        f"{why} ({repo.html_url}): project {a.project_name!r} is missing and is not deployed from its old URL. "
        f"Transfer it back to {org}, or re-create {a.full_name} and ask me to fix this incident"
    )
    await open_incident(
        session, kind="repo_transferred", severity="critical", subject_type="project", subject_id=a.project_id,
        message=message,
    )  # fmt: skip
    summary.notes.append(why)
    summary.missing += 1


async def _mark_inaccessible(session: AsyncSession, a: Absent, c: Confirmation, summary: PassSummary) -> None:
    count, until = await back_off(session, a.repo_id)
    why = "blocked for legal reasons" if c.status == 451 else "refused to the token"
    message = (
        f"GitHub answers GET /repositories/{a.repo_id} ({a.full_name}, project {a.project_name!r}) with {c.detail}: "
        f"the repository is {why}. Checked again after {until:%Y-%m-%d %H:%M} UTC ({count} refusal(s) in a row)"
    )
    await open_incident(
        session, kind="repo_inaccessible", severity="critical" if c.status == 451 else "warning",
        subject_type="project", subject_id=a.project_id, message=message,
    )  # fmt: skip
    log.warning("github_sync: %s", message)
    summary.notes.append(message)


async def _mark_missing(session: AsyncSession, a: Absent, summary: PassSummary) -> None:
    why = f"repository {a.full_name} (id {a.repo_id}) answers 404"
    try:
        await transition_project(session, a.project_id, ProjectStatus.missing, reason=why, actor=ACTOR)
    except StaleStatus:
        summary.notes.append(f"{a.project_name} changed status meanwhile; confirmed again next pass")
        return
    message = f"{why} on GitHub since {utcnow():%Y-%m-%d %H:%M} UTC: project {a.project_name!r} is missing"
    await open_incident(
        session, kind="repo_missing", severity="critical", subject_type="project", subject_id=a.project_id,
        message=message,
    )  # fmt: skip
    summary.missing += 1


async def record_mass_missing(
    session: AsyncSession, verdict: Verdict, *, gone: int, absent: int, cap: int, org: str, summary: PassSummary
) -> None:
    """Open (or refresh) the critical ``mass_missing`` incident of the org when over the cap; resolve it under.

    Args:
        session: the database session.
        verdict: :func:`missing_verdict` of this pass (``undecided`` changes nothing).
        gone: repositories that answered 404 this pass.
        absent: known repositories the listing left out.
        cap: ``settings.sync_max_missing_per_pass``.
        org: the GitHub organization.
        summary: the pass summary, noted into.
    """
    if verdict == "apply":
        await resolve_incident(session, kind="mass_missing", subject_type="org", subject_id=0)
        return
    if verdict == "undecided":
        if gone:
            summary.notes.append(f"{gone} repositories answered 404, more are unconfirmed: none marked missing")
        return
    message = (
        f"at least {gone} repositories of GitHub org {org} answered 404 by id in one pass ({absent} known "
        f"repositories are absent from the listing), more than ORCH_SYNC_MAX_MISSING_PER_PASS={cap}: none was "
        "marked missing. Check the token's access to the organization: a token that lost access to private "
        "repositories lists the org without them and gets 404 for them."
    )
    log.warning("github_sync: %s", message)
    summary.notes.append(message)
    await open_incident(
        session, kind="mass_missing", severity="critical", subject_type="org", subject_id=0, message=message
    )


# ---- helpers -----------------------------------------------------------------------------------------------------
def slug_for(repo_name: str, taken: set[str]) -> str:
    """A safe, unused project name for a repository name; adds it to ``taken``.

    Lower-case ASCII, every run of other characters becomes one ``-``, a ``repo-`` prefix when it would not start
    with a letter or be too short, at most 40 characters, then ``-2``, ``-3``... until unused.

    Raises:
        InvalidProjectName: never for any input (checked by :func:`models.names.validate_slug` all the same).
    """
    ascii_name = unicodedata.normalize("NFKD", repo_name).encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")
    if not base[:1].isalpha() or len(base) < 3:
        base = f"repo-{base}".rstrip("-")
    base = base[:40].rstrip("-")
    name, n = base, 2
    while name in taken:
        suffix = f"-{n}"
        name, n = f"{base[: 40 - len(suffix)].rstrip('-')}{suffix}", n + 1
    taken.add(validate_slug(name))
    return name
