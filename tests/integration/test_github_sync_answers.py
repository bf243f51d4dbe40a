"""github_sync and the incident re-link against what real GitHub answers: transfers, 451 and SSO on the by-id check,
64-bit ids on PostgreSQL, a rate limit reaching 0 mid-listing, redirects, the headers of every request, and
local-forge ids that must never meet GitHub's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import col, select

from core.db import Database
from core.settings import Settings
from infra.forge.github import GitHubForge
from infra.forge.github_http import USER_AGENT
from infra.forge.local import LocalForge
from models import Deployment, Event, Incident, Project, ProjectStatus, Server, SyncCursor
from models.enums import DeploymentStatus, ServerStatus
from models.tables import utcnow
from services.recovery import recover
from sync_workers.base import PassSummary, SyncContext
from sync_workers.github_cursor import backoff_key
from sync_workers.github_sync import WORKER, run_pass
from tests.fixtures.fake_github import ORG_ID, FakeGitHub

TOKEN = "ghp_syncAnswersSECRET0123456789"
ORG = "acme"
BY_ID = r"/repositories/\d+"
LISTING = f"/orgs/{ORG}/repos"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, org=ORG) as server:
        yield server


def github_settings(settings: Settings, gh: FakeGitHub) -> Settings:
    return settings.model_copy(
        update={
            "github_token": SecretStr(TOKEN),
            "github_org": ORG,
            "github_base_url": gh.base_url,
            "github_retries": 1,
            "sync_failure_threshold": 3,
            "sync_max_missing_per_pass": 2,
        }
    )


@pytest.fixture
async def ctx(settings: Settings, gh: FakeGitHub) -> AsyncIterator[SyncContext]:
    settings = github_settings(settings, gh)
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    yield SyncContext(settings=settings, db=db)
    await db.dispose()


async def sync(ctx: SyncContext) -> PassSummary:
    summary = await run_pass(ctx, timeout_s=5, backoff_s=0)
    assert TOKEN not in repr(summary)
    return summary


async def project(ctx: SyncContext, name: str) -> Project:
    async with ctx.db.session() as s:
        found = (await s.exec(select(Project).where(Project.name == name))).one()
    return found


async def incidents(ctx: SyncContext, kind: str) -> list[Incident]:
    async with ctx.db.session() as s:
        return list((await s.exec(select(Incident).where(Incident.kind == kind))).all())


async def events_of(ctx: SyncContext, pid: int | None) -> list[Event]:
    async with ctx.db.session() as s:
        return list((await s.exec(select(Event).where(Event.subject_id == pid).order_by(col(Event.id)))).all())


def by_id(gh: FakeGitHub, repo_id: int) -> int:
    return gh.count("GET", f"/repositories/{repo_id}")


# ---- 4. a repository transferred out of the org ---------------------------------------------------------------------
async def test_a_repository_transferred_out_of_the_org_is_recorded_and_never_deployed_from(
    ctx: SyncContext, gh: FakeGitHub
) -> None:
    gh.add_repos(3)
    await sync(ctx)
    before = await project(ctx, "repo-00001")
    moved = gh.transfer("repo-00001", "elsewhere")

    summary = await sync(ctx)

    after = await project(ctx, "repo-00001")
    assert after.status == ProjectStatus.missing and summary.missing == 1
    assert after.clone_url is None, "GitHub redirects the old clone URL to the new owner: nothing may deploy from it"
    assert after.github_repo_id == before.github_repo_id == moved["id"]
    [event] = (await events_of(ctx, after.id))[1:]
    assert (event.from_status, event.to_status) == ("discovered", "missing")
    assert "transferred out of org acme to elsewhere/repo-00001" in event.reason
    [incident] = await incidents(ctx, "repo_transferred")
    assert (incident.severity, incident.subject_id, incident.resolved_at) == ("critical", after.id, None)
    assert "elsewhere/repo-00001" in incident.message and "not deployed" in incident.message

    again = await sync(ctx)  # recorded once: no new request by id, no new event
    assert by_id(gh, moved["id"]) == 1 and again.missing == 0
    assert len(await events_of(ctx, after.id)) == 2


async def test_a_repository_transferred_back_ends_its_incident(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(2)
    await sync(ctx)
    gh.transfer("repo-00001", "elsewhere")
    await sync(ctx)
    repo = gh.repos.pop("elsewhere/repo-00001")  # transferred back under its old name
    gh.add_repo("placeholder")  # (the listing changes either way)
    repo.update({k: v.replace("elsewhere/", "acme/") for k, v in repo.items() if isinstance(v, str)})
    repo["owner"] = gh.repos["acme/placeholder"]["owner"]
    gh.repos["acme/repo-00001"] = repo

    await sync(ctx)

    [incident] = await incidents(ctx, "repo_transferred")
    assert incident.resolved_at is not None
    assert (await project(ctx, "repo-00001")).clone_url == repo["clone_url"]


# ---- 5. 451 and SSO on the by-id check ------------------------------------------------------------------------------
@pytest.mark.parametrize("refusal", ["451", "sso"])
async def test_a_refused_by_id_check_is_an_incident_with_githubs_message_and_backs_off(
    ctx: SyncContext, gh: FakeGitHub, refusal: str
) -> None:
    gh.add_repos(3)
    await sync(ctx)
    gone = gh.delete("repo-00001")  # not listed any more; by id GitHub refuses to say more
    (gh.block_next if refusal == "451" else gh.sso_next)(count=2, path=BY_ID)

    first = await sync(ctx)

    assert (first.transient_failures, first.missing) == (0, 0) and first.ok
    [incident] = await incidents(ctx, "repo_inaccessible")
    pid = (await project(ctx, "repo-00001")).id
    assert (incident.subject_id, incident.resolved_at) == (pid, None)
    if refusal == "451":
        assert incident.severity == "critical"
        assert "451 Repository access blocked (reason: dmca, html_url: https://github.com/github/dmca/" in (
            incident.message
        )
    else:
        assert incident.severity == "warning"
        assert "Resource protected by organization SAML enforcement" in incident.message
        assert "https://github.com/orgs/acme/sso?authorization_request=" in incident.message
    assert (await project(ctx, "repo-00001")).status == ProjectStatus.discovered

    second = await sync(ctx)  # backing off: not asked again
    assert by_id(gh, gone["id"]) == 1 and second.transient_failures == 0
    async with ctx.db.session() as s:
        held = await s.get(SyncCursor, backoff_key(gone["id"]))
        assert held is not None and held.paused_until is not None and held.consecutive_failures == 1
        first_hold = held.paused_until.replace(tzinfo=utcnow().tzinfo) - utcnow()
        assert timedelta(minutes=14) < first_hold <= timedelta(minutes=15)
        await s.exec(  # type: ignore[call-overload]
            update(SyncCursor)
            .where(col(SyncCursor.key) == held.key)
            .values(paused_until=utcnow() - timedelta(seconds=1))
        )

    await sync(ctx)  # the hold is over: asked again, refused again, held twice as long
    assert by_id(gh, gone["id"]) == 2
    async with ctx.db.session() as s:
        held = await s.get(SyncCursor, backoff_key(gone["id"]))
    assert held is not None and held.consecutive_failures == 2 and held.paused_until is not None
    assert timedelta(minutes=29) < held.paused_until.replace(tzinfo=utcnow().tzinfo) - utcnow()
    assert len(await incidents(ctx, "repo_inaccessible")) == 1  # the same incident, refreshed

    async with ctx.db.session() as s:
        await s.exec(update(SyncCursor).where(col(SyncCursor.key) == held.key).values(paused_until=None))  # type: ignore[call-overload]
    last = await sync(ctx)  # GitHub answers again: 404, so missing; the refusal is over
    assert last.missing == 1
    [incident] = await incidents(ctx, "repo_inaccessible")
    assert incident.resolved_at is not None
    async with ctx.db.session() as s:
        assert await s.get(SyncCursor, backoff_key(gone["id"])) is None


# ---- 6. 64-bit repository ids on PostgreSQL --------------------------------------------------------------------------
async def test_a_repository_id_above_2_to_the_31_is_stored_and_confirmed_on_postgres(
    pg_settings: Settings, gh: FakeGitHub
) -> None:
    big = 2**31 + 12_345
    gh.add_repo("big-id", repo_id=big)
    gh.add_repo("small-id")
    db = Database(pg_settings.database_url or "")
    await db.migrate()
    ctx = SyncContext(settings=github_settings(pg_settings, gh), db=db)
    try:
        first = await sync(ctx)
        assert first.ok and first.created == 2, first
        assert (await project(ctx, "big-id")).github_repo_id == big
        gh.delete("big-id")
        second = await sync(ctx)
        assert second.ok and second.missing == 1, second
        assert (await project(ctx, "big-id")).status == ProjectStatus.missing
        assert by_id(gh, big) == 1
    finally:
        await db.dispose()


# ---- 8. the rate limit reaching 0 mid-listing ------------------------------------------------------------------------
async def test_a_listing_stops_at_the_page_that_spent_the_rate_limit(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(250)
    gh.rate_remaining = 2  # page 2 is answered with X-RateLimit-Remaining: 0

    summary = await sync(ctx)

    assert [e.path for e in gh.exchanges] == [LISTING, f"/organizations/{ORG_ID}/repos"]
    assert gh.count_status(403) == 0, "nothing asked past the limit"
    assert (summary.requests, summary.transient_failures, summary.missing) == (2, 0, 0)
    async with ctx.db.session() as s:
        worker = await s.get(SyncCursor, WORKER)
    assert worker is not None and worker.paused_until is not None
    assert (await sync(ctx)).requests == 0  # paused


# ---- 9. redirects ----------------------------------------------------------------------------------------------------
async def test_the_listing_follows_a_same_host_redirect(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(3)
    gh.redirect_next(f"/organizations/{ORG_ID}/repos?per_page=100&type=all", path=LISTING)  # a renamed org

    summary = await sync(ctx)

    assert summary.ok and summary.created == 3 and summary.requests == 2
    assert [e.status for e in gh.exchanges] == [301, 200]


async def test_the_listing_refuses_a_redirect_to_another_host(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(3)
    elsewhere = gh.base_url.replace("127.0.0.1", "localhost") + f"/orgs/{ORG}/repos"
    gh.redirect_next(elsewhere, path=LISTING)

    summary = await sync(ctx)

    assert not summary.ok and summary.created == 0 and len(gh.exchanges) == 1
    assert "redirected" in summary.errors[0] and "another scheme or host" in summary.errors[0]
    assert "ORCH_GITHUB_BASE_URL" in summary.errors[0]


async def test_a_by_id_redirect_to_another_host_is_a_clear_pass_error(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(3)
    await sync(ctx)
    gh.delete("repo-00001")
    gh.redirect_next(gh.base_url.replace("127.0.0.1", "localhost") + "/repositories/1", path=BY_ID)

    summary = await sync(ctx)  # raises nothing

    assert len(summary.errors) == 1 and "another host or scheme" in summary.errors[0]
    assert summary.missing == 0 and (await project(ctx, "repo-00001")).status == ProjectStatus.discovered


# ---- 10. headers -----------------------------------------------------------------------------------------------------
async def test_every_sync_request_sends_githubs_media_type_api_version_and_this_projects_agent(
    ctx: SyncContext, gh: FakeGitHub
) -> None:
    gh.add_repos(3)
    await sync(ctx)
    gh.delete("repo-00001")
    await sync(ctx)  # the listing (httpx) and one confirmation by id (PyGithub)

    assert any(e.path.startswith("/repositories/") for e in gh.exchanges)
    for e in gh.exchanges:
        assert e.headers["accept"] == "application/vnd.github+json", (e.method, e.path)
        assert e.headers["x-github-api-version"] == "2022-11-28", (e.method, e.path)
        assert e.headers["user-agent"] == USER_AGENT, (e.method, e.path)


# ---- 12. local-forge ids never meet GitHub's -------------------------------------------------------------------------
async def test_a_local_forge_project_is_never_confirmed_nor_matched_on_github(ctx: SyncContext, gh: FakeGitHub) -> None:
    local = LocalForge(ctx.settings.data_dir / "forge").create_repo("hello-api", "made before GitHub was set up")
    assert local.id < 0
    async with ctx.db.session() as s:
        s.add(
            Project(
                name="hello-api", status=ProjectStatus.initialized, github_repo_id=local.id,
                repo_full_name=local.full_name, clone_url=local.clone_url,
            )
        )  # fmt: skip
    gh.add_repo("someone-elses", repo_id=abs(local.id))  # GitHub's repository with the same number
    gh.add_repo("other")

    summary = await sync(ctx)

    kept = await project(ctx, "hello-api")
    assert (kept.status, kept.github_repo_id, kept.clone_url) == (ProjectStatus.initialized, local.id, local.clone_url)
    assert kept.repo_full_name == "local/hello-api"
    assert by_id(gh, abs(local.id)) == 0 and summary.missing == 0
    assert summary.created == 2  # GitHub's repository of that number is a project of its own


# ---- 3. the incident re-link and GitHub's 301 ------------------------------------------------------------------------
async def seed_missing(ctx: SyncContext, repo_id: int) -> tuple[int, int]:
    async with ctx.db.session() as s:
        row = Project(
            name="hello-api", status=ProjectStatus.missing, github_repo_id=repo_id, repo_full_name="acme/hello-api"
        )
        s.add(row)
        await s.flush()
        incident = Incident(
            kind="repo_missing", severity="critical", subject_type="project", subject_id=row.id or 0, message="gone"
        )
        s.add(incident)
        await s.flush()
        return row.id or 0, incident.id or 0


def forge_of(gh: FakeGitHub) -> GitHubForge:
    return GitHubForge(token=TOKEN, org=ORG, base_url=gh.base_url, retries=1, backoff_s=0, timeout_s=5)


async def test_relink_refuses_a_repository_transferred_out_of_the_org(ctx: SyncContext, gh: FakeGitHub) -> None:
    repo = gh.add_repo("hello-api")
    gh.transfer("hello-api", "elsewhere")
    pid, incident_id = await seed_missing(ctx, repo["id"])

    outcome = await recover(ctx.settings, ctx.db, forge_of(gh), incident_id, "t-fix", actor="cli:test")

    assert outcome["resolved"] is False and "elsewhere/hello-api" in outcome["outcome"]
    row = await project(ctx, "hello-api")
    assert (row.status, row.repo_full_name) == (ProjectStatus.missing, "acme/hello-api")
    [transferred] = await incidents(ctx, "repo_transferred")
    assert transferred.subject_id == pid and transferred.resolved_at is None


async def test_relink_records_a_rename_of_the_projects_own_repository(ctx: SyncContext, gh: FakeGitHub) -> None:
    repo = gh.add_repo("hello-api")
    gh.rename("hello-api", "hello-service")
    pid, incident_id = await seed_missing(ctx, repo["id"])

    outcome = await recover(ctx.settings, ctx.db, forge_of(gh), incident_id, "t-fix", actor="cli:test")

    assert outcome["resolved"] is True, outcome
    row = await project(ctx, "hello-api")
    assert (row.status, row.repo_full_name, row.github_repo_id) == (
        ProjectStatus.initialized,
        "acme/hello-service",
        repo["id"],
    )
    renamed = [e for e in await events_of(ctx, pid) if e.to_status == "repo_renamed"]
    assert [e.reason for e in renamed] == [
        f"repository acme/hello-api was renamed to acme/hello-service (id {repo['id']})"
    ]


async def test_relink_refuses_another_repository_renamed_from_the_name(ctx: SyncContext, gh: FakeGitHub) -> None:
    other = gh.add_repo("hello-api")
    gh.rename("hello-api", "someone-else")
    _, incident_id = await seed_missing(ctx, other["id"] + 1000)

    outcome = await recover(ctx.settings, ctx.db, forge_of(gh), incident_id, "t-fix", actor="cli:test")

    assert outcome["resolved"] is False and "redirects to acme/someone-else" in outcome["outcome"]
    assert (await project(ctx, "hello-api")).github_repo_id == other["id"] + 1000


async def test_a_transferred_projects_service_is_not_redeployed_from_the_old_url(
    ctx: SyncContext, gh: FakeGitHub
) -> None:
    gh.add_repos(2)
    await sync(ctx)
    gh.transfer("repo-00001", "elsewhere")
    await sync(ctx)
    row = await project(ctx, "repo-00001")
    async with ctx.db.session() as s:
        server = Server(name="local", address="127.0.0.1", connection="local", status=ServerStatus.ready)
        s.add(server)
        await s.flush()
        s.add(
            Deployment(
                project_id=row.id or 0, commit_sha="a" * 40, server_id=server.id or 0, port=8100,
                status=DeploymentStatus.succeeded, idempotency_key="k-1", verification="signed",
            )
        )  # fmt: skip
        unhealthy = Incident(
            kind="service_unhealthy", severity="critical", subject_type="project", subject_id=row.id or 0, message="x"
        )
        s.add(unhealthy)
        await s.flush()

    outcome = await recover(ctx.settings, ctx.db, forge_of(gh), unhealthy.id or 0, "t-fix", actor="cli:test")

    assert outcome["resolved"] is False and "nothing is deployed from its old URL" in outcome["outcome"]
    assert not (ctx.settings.data_dir / "workspaces" / "repo-00001").exists(), "git was never asked"
