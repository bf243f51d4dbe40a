"""github_sync against FakeGitHub over real HTTP (httpx for the listing, PyGithub for the by-id confirmation) and a
real SQLite database."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import col, select

from core.db import Database
from core.settings import Settings
from models import Event, Incident, Project, ProjectStatus, SyncCursor
from models.tables import utcnow
from sync_workers.base import PassSummary, SyncContext
from sync_workers.github_reconcile import slug_for
from sync_workers.github_sync import WORKER, run_pass
from tests.fixtures.fake_github import ORG_ID, FakeGitHub

TOKEN = "ghp_syncSECRET0123456789abcdef"
ORG = "acme"
RETRIES = 2
THRESHOLD = 3
CAP = 2
BY_ID = r"/repositories/\d+"
LISTING = rf"/orgs/{ORG}/repos"
LATER_PAGES = rf"/organizations/{ORG_ID}/repos"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, org=ORG) as server:
        yield server


def sync_settings(settings: Settings, base_url: str, token: str = TOKEN) -> Settings:
    return settings.model_copy(
        update={
            "github_token": SecretStr(token),
            "github_org": ORG,
            "github_base_url": base_url,
            "github_retries": RETRIES,
            "sync_failure_threshold": THRESHOLD,
            "sync_max_missing_per_pass": CAP,
        }
    )


@pytest.fixture
async def ctx(settings: Settings, gh: FakeGitHub) -> AsyncIterator[SyncContext]:
    settings = sync_settings(settings, gh.base_url)
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    yield SyncContext(settings=settings, db=db)
    await db.dispose()


async def sync(ctx: SyncContext, timeout_s: float = 5.0) -> PassSummary:
    summary = await run_pass(ctx, timeout_s=timeout_s, backoff_s=0)
    assert TOKEN not in repr(summary)
    return summary


async def projects(ctx: SyncContext) -> dict[str, Project]:
    async with ctx.db.session() as s:
        return {p.name: p for p in (await s.exec(select(Project))).all()}


async def statuses(ctx: SyncContext) -> dict[int | None, str]:
    return {p.id: p.status for p in (await projects(ctx)).values()}


async def events(ctx: SyncContext) -> list[Event]:
    async with ctx.db.session() as s:
        return list((await s.exec(select(Event).order_by(col(Event.id)))).all())


async def incidents(ctx: SyncContext, kind: str) -> list[Incident]:
    async with ctx.db.session() as s:
        return list((await s.exec(select(Incident).where(Incident.kind == kind))).all())


async def worker_cursor(ctx: SyncContext) -> SyncCursor:
    async with ctx.db.session() as s:
        cursor = await s.get(SyncCursor, WORKER)
    assert cursor is not None
    return cursor


def listing_requests(gh: FakeGitHub) -> list[str]:
    return [e.path for e in gh.exchanges if e.path.endswith("/repos") and e.method == "GET"]


def by_id_requests(gh: FakeGitHub) -> int:
    return sum(1 for _, p in gh.requests if p.startswith("/repositories/"))


async def test_new_repos_become_discovered_projects_with_events(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repo("hello-api", "A test service")
    gh.add_repo("Hello_API")  # same slug: gets a suffix
    gh.add_repo("42.Weird Näme")

    summary = await sync(ctx)

    assert (summary.created, summary.updated, summary.missing, summary.transient_failures) == (3, 0, 0, 0)
    assert summary.ok and summary.requests == 1
    found = await projects(ctx)
    assert set(found) == {"hello-api", "hello-api-2", "repo-42-weird-name"}
    hello = found["hello-api"]
    stored = gh.repos["acme/hello-api"]
    assert hello.status == ProjectStatus.discovered and hello.setup_required
    assert (hello.github_repo_id, hello.repo_full_name) == (stored["id"], "acme/hello-api")
    assert (hello.repo_url, hello.clone_url) == (stored["html_url"], stored["clone_url"])
    assert (hello.default_branch, hello.archived, hello.description) == ("main", False, "A test service")
    assert hello.last_synced_at is not None
    assert found["hello-api-2"].repo_full_name == "acme/Hello_API"
    evs = await events(ctx)
    assert len(evs) == 3
    assert all(e.from_status is None and e.to_status == "discovered" for e in evs)
    assert all(e.reason == "found in GitHub org acme" for e in evs)
    assert {e.subject_id for e in evs} == {p.id for p in found.values()}


async def test_pass_is_idempotent_when_the_org_changes(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(3)
    await sync(ctx)
    gh.add_repo("newcomer")  # page 1 changes: answered 200, not 304
    summary = await sync(ctx)
    assert (summary.created, summary.updated, summary.not_modified) == (1, 0, 0)
    assert len(await projects(ctx)) == 4 and len(await events(ctx)) == 4


async def test_250_repos_are_listed_in_three_pages_following_link(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(250)
    summary = await sync(ctx)
    assert (summary.created, summary.requests, summary.not_modified) == (250, 3, 0)
    assert listing_requests(gh) == [LISTING, LATER_PAGES, LATER_PAGES]
    assert [e.query for e in gh.exchanges] == [
        "per_page=100&type=all",
        "per_page=100&type=all&page=2",
        "per_page=100&type=all&page=3",
    ]
    assert len(await projects(ctx)) == 250


async def test_unchanged_second_pass_is_served_by_304s(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(250)
    await sync(ctx)
    remaining = gh.rate_remaining
    first = len(gh.exchanges)

    summary = await sync(ctx)

    assert (summary.requests, summary.not_modified, summary.created, summary.updated) == (3, 3, 0, 0)
    second = gh.exchanges[first:]
    assert [e.status for e in second] == [304, 304, 304]
    assert all(e.if_none_match for e in second)
    assert gh.rate_remaining == remaining  # 304s are free
    assert len(await projects(ctx)) == 250


async def test_rename_keeps_the_same_project(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repo("hello-api")
    await sync(ctx)
    before = (await projects(ctx))["hello-api"]
    gh.rename("hello-api", "hello-service")

    summary = await sync(ctx)

    assert (summary.created, summary.updated, summary.missing) == (0, 1, 0)
    after = await projects(ctx)
    assert list(after) == ["hello-api"]  # the project keeps its name
    project = after["hello-api"]
    assert project.id == before.id and project.github_repo_id == before.github_repo_id
    assert project.repo_full_name == "acme/hello-service"
    assert project.clone_url == gh.repos["acme/hello-service"]["clone_url"]
    assert project.status == ProjectStatus.discovered
    assert gh.count("GET", f"/repositories/{project.github_repo_id}") == 0
    assert any("renamed acme/hello-api -> acme/hello-service" in n for n in summary.notes)


async def test_5xx_storm_changes_nothing_and_opens_an_incident_only_after_the_threshold(
    ctx: SyncContext, gh: FakeGitHub
) -> None:
    gh.add_repos(3)
    await sync(ctx)
    gh.delete("repo-00001")  # would be missing, were the listing complete
    before, events_before = await statuses(ctx), len(await events(ctx))
    gh.fail_next(502, count=THRESHOLD + 1)

    for n in range(1, THRESHOLD + 2):
        summary = await sync(ctx)
        assert (summary.transient_failures, summary.missing, summary.requests) == (1, 0, 1)
        assert summary.ok  # transient, not a worker error
        assert (await worker_cursor(ctx)).consecutive_failures == n
        opened = await incidents(ctx, "github_unreachable")
        assert len(opened) == (0 if n < THRESHOLD else 1)

    assert await statuses(ctx) == before
    assert len(await events(ctx)) == events_before
    assert gh.count("GET", "/repositories/10000002") == 0
    incident = (await incidents(ctx, "github_unreachable"))[0]
    assert (incident.severity, incident.subject_type, incident.subject_id) == ("warning", "org", 0)
    assert incident.resolved_at is None and TOKEN not in incident.message

    summary = await sync(ctx)  # GitHub is back: the listing completes
    assert summary.transient_failures == 0 and summary.missing == 1
    assert (await worker_cursor(ctx)).consecutive_failures == 0
    assert (await incidents(ctx, "github_unreachable"))[0].resolved_at is not None


async def test_5xx_mid_listing_marks_nothing_missing(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(250)
    await sync(ctx)
    gh.delete("repo-00000")  # on the last page
    before = await statuses(ctx)
    gh.fail_next(503, count=1, path=LATER_PAGES)

    summary = await sync(ctx)

    assert (summary.transient_failures, summary.missing) == (1, 0)
    assert await statuses(ctx) == before
    assert not any(p.startswith("/repositories/") for _, p in gh.requests)


async def test_deleted_repo_is_missing_in_one_pass_confirmed_by_id(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(3)
    await sync(ctx)
    gone = gh.delete("repo-00001")

    summary = await sync(ctx)

    assert (summary.missing, summary.transient_failures) == (1, 0)
    project = (await projects(ctx))["repo-00001"]
    assert project.status == ProjectStatus.missing
    assert gh.count("GET", f"/repositories/{gone['id']}") == 1  # by id, answered 404, not retried
    assert gh.count("GET", "/repos/acme/repo-00001") == 0  # never by name
    event = (await events(ctx))[-1]
    assert (event.subject_id, event.from_status, event.to_status) == (project.id, "discovered", "missing")
    assert event.reason == f"repository acme/repo-00001 (id {gone['id']}) answers 404"
    [incident] = await incidents(ctx, "repo_missing")
    assert (incident.severity, incident.subject_type, incident.subject_id) == ("critical", "project", project.id)
    assert "acme/repo-00001" in incident.message

    again = await sync(ctx)  # already missing: not confirmed again
    assert again.missing == 0 and gh.count("GET", f"/repositories/{gone['id']}") == 1

    gh.repos[gone["full_name"].lower()] = gone  # restored (GitHub keeps the id of a restored repository)
    await sync(ctx)
    [incident] = await incidents(ctx, "repo_missing")
    assert incident.resolved_at is not None
    assert (await projects(ctx))["repo-00001"].status == ProjectStatus.missing  # recovery moves it, not the sync


async def test_deleted_repo_whose_confirmation_answers_502_is_left_alone(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(3)
    await sync(ctx)
    gone = gh.delete("repo-00001")
    before = await statuses(ctx)
    gh.fail_next(502, count=10, path=BY_ID)

    summary = await sync(ctx)

    assert (summary.missing, summary.transient_failures) == (0, 1)
    assert await statuses(ctx) == before
    assert gh.count("GET", f"/repositories/{gone['id']}") == RETRIES + 1  # bounded retries
    assert await incidents(ctx, "repo_missing") == []


@pytest.mark.parametrize("deleted", [CAP + 1, CAP + 3])
async def test_more_404s_than_the_cap_mark_none_missing_and_open_mass_missing(
    ctx: SyncContext, gh: FakeGitHub, deleted: int
) -> None:
    gh.add_repos(8)
    await sync(ctx)
    for i in range(deleted):  # a token that lost access to these: listed without them, 404 by id
        gh.delete(f"repo-{i:05d}")
    before, events_before = await statuses(ctx), len(await events(ctx))

    summary = await sync(ctx)

    assert (summary.missing, summary.transient_failures) == (0, CAP + 1)
    assert by_id_requests(gh) == CAP + 1  # confirmations stop once the cap is exceeded
    assert await statuses(ctx) == before and len(await events(ctx)) == events_before
    assert await incidents(ctx, "repo_missing") == []
    [incident] = await incidents(ctx, "mass_missing")
    assert (incident.severity, incident.subject_type, incident.subject_id) == ("critical", "org", 0)
    assert f"at least {CAP + 1} repositories" in incident.message and "token's access" in incident.message
    assert incident.resolved_at is None and TOKEN not in incident.message

    again = await sync(ctx)  # still over the cap: the same incident, refreshed
    assert again.missing == 0 and await statuses(ctx) == before
    assert len(await incidents(ctx, "mass_missing")) == 1


async def test_404s_up_to_the_cap_are_all_marked_missing(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(8)
    await sync(ctx)
    for i in range(CAP):
        gh.delete(f"repo-{i:05d}")

    summary = await sync(ctx)

    assert (summary.missing, summary.transient_failures) == (CAP, 0)
    found = await projects(ctx)
    assert all(found[f"repo-{i:05d}"].status == ProjectStatus.missing for i in range(CAP))
    assert len(await incidents(ctx, "repo_missing")) == CAP
    assert await incidents(ctx, "mass_missing") == []


@pytest.mark.parametrize(("restored", "missing"), [(CAP + 1, 0), (1, CAP)])
async def test_a_later_pass_under_the_cap_resolves_mass_missing(
    ctx: SyncContext, gh: FakeGitHub, restored: int, missing: int
) -> None:
    gh.add_repos(8)
    await sync(ctx)
    gone = [gh.delete(f"repo-{i:05d}") for i in range(CAP + 1)]
    await sync(ctx)
    assert len(await incidents(ctx, "mass_missing")) == 1
    for repo in gone[:restored]:  # the token's access is back (all), or one repository came back
        gh.repos[repo["full_name"].lower()] = repo

    summary = await sync(ctx)

    assert (summary.missing, summary.transient_failures) == (missing, 0)
    [incident] = await incidents(ctx, "mass_missing")
    assert incident.resolved_at is not None
    assert sum(s == ProjectStatus.missing for s in (await statuses(ctx)).values()) == missing


async def test_404s_under_the_cap_wait_while_unconfirmed_ones_could_exceed_it(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(8)
    await sync(ctx)
    for i in range(CAP + 1):
        gh.delete(f"repo-{i:05d}")
    before = await statuses(ctx)
    gh.fail_next(502, count=RETRIES + 1, path=BY_ID)  # the first confirmation fails: CAP 404s, one unknown

    summary = await sync(ctx)

    assert (summary.missing, summary.transient_failures) == (0, CAP + 1)
    assert await statuses(ctx) == before
    assert await incidents(ctx, "mass_missing") == [] and await incidents(ctx, "repo_missing") == []


@pytest.mark.parametrize(("kind", "pause_s", "path"), [("primary", 60, None), ("secondary", 30, LATER_PAGES)])
async def test_rate_limit_pauses_the_worker(
    ctx: SyncContext, gh: FakeGitHub, kind: str, pause_s: int, path: str | None
) -> None:
    gh.add_repos(250)
    await sync(ctx)
    gh.delete("repo-00000")
    gh.rate_limit_next(kind, path=path)  # on the first page, or mid-listing

    limited = await sync(ctx)
    assert (limited.transient_failures, limited.missing) == (1, 0)
    assert any("paused until" in n for n in limited.notes)
    paused_until = (await worker_cursor(ctx)).paused_until
    assert paused_until is not None
    wait = (paused_until.replace(tzinfo=utcnow().tzinfo) - utcnow()).total_seconds()
    assert pause_s - 5 < wait <= pause_s + 1

    made = len(gh.requests)
    paused = await sync(ctx)
    assert len(gh.requests) == made and paused.requests == 0  # no request while paused
    assert paused.transient_failures == 0 and any(n.startswith("paused until") for n in paused.notes)

    async with ctx.db.session() as s:
        past = utcnow() - timedelta(seconds=1)
        await s.exec(update(SyncCursor).where(col(SyncCursor.key) == WORKER).values(paused_until=past))  # type: ignore[call-overload]
    resumed = await sync(ctx)
    assert resumed.requests > 0 and resumed.missing == 1
    assert (await worker_cursor(ctx)).consecutive_failures == 0


@pytest.mark.parametrize("kind", ["primary", "secondary"])
async def test_rate_limit_on_a_confirmation_pauses_without_sleeping_and_leaves_the_repo(
    ctx: SyncContext, gh: FakeGitHub, kind: str
) -> None:
    gh.add_repos(3)
    await sync(ctx)
    gone = gh.delete("repo-00001")
    before = await statuses(ctx)
    gh.rate_limit_next(kind, path=BY_ID)  # primary: reset in 60 s; secondary: Retry-After 30

    started = time.monotonic()
    summary = await sync(ctx)

    assert time.monotonic() - started < 5
    assert (summary.missing, summary.transient_failures) == (0, 1)
    assert await statuses(ctx) == before
    assert gh.count("GET", f"/repositories/{gone['id']}") == 1
    assert (await worker_cursor(ctx)).paused_until is not None
    assert (await sync(ctx)).requests == 0


async def test_a_listing_that_spends_the_last_request_pauses_before_the_next(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(3)
    await sync(ctx)
    gh.delete("repo-00001")
    gh.rate_remaining = 1  # the changed page is answered 200 with X-RateLimit-Remaining: 0

    summary = await sync(ctx)

    assert (summary.requests, summary.missing, summary.transient_failures) == (1, 0, 0)
    assert by_id_requests(gh) == 0 and gh.count_status(403) == 0  # nothing spent past the limit
    assert (await worker_cursor(ctx)).paused_until is not None
    assert (await sync(ctx)).requests == 0


async def test_default_pass_settings_confirm_a_deleted_repo(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(2)
    await run_pass(ctx)
    gh.delete("repo-00000")

    summary = await run_pass(ctx)  # the production timeout and backoff

    assert (summary.missing, summary.errors) == (1, [])
    assert ProjectStatus.missing in (await statuses(ctx)).values()


async def test_hanging_server_is_a_transient_failure(ctx: SyncContext, gh: FakeGitHub) -> None:
    gh.add_repos(3)
    await sync(ctx)
    gh.delete("repo-00001")
    gh.hang_next(3)
    started = time.monotonic()

    summary = await sync(ctx, timeout_s=0.3)

    assert time.monotonic() - started < 2
    assert (summary.transient_failures, summary.missing) == (1, 0)
    assert any("timed out" in n for n in summary.notes)
    assert (await worker_cursor(ctx)).consecutive_failures == 1


async def test_unreachable_github_is_transient(settings: Settings) -> None:
    with FakeGitHub(token=TOKEN, org=ORG) as gone:
        base_url = gone.base_url
    settings = sync_settings(settings, base_url)
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    summary = await run_pass(SyncContext(settings=settings, db=db), timeout_s=2, backoff_s=0)
    await db.dispose()
    assert (summary.transient_failures, summary.requests) == (1, 0) and summary.ok
    assert any("unreachable" in n for n in summary.notes)


async def test_bad_token_is_a_pass_error_without_the_token(
    ctx: SyncContext, gh: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "ghp_wrongSECRET9876543210"
    bad = SyncContext(settings=sync_settings(ctx.settings, gh.base_url, token=wrong), db=ctx.db)
    with caplog.at_level(logging.DEBUG):
        summary = await run_pass(bad, backoff_s=0)
    assert not summary.ok and "ORCH_GITHUB_TOKEN" in summary.errors[0]
    assert summary.transient_failures == 0
    assert wrong not in repr(summary) and wrong not in caplog.text


async def test_token_is_never_logged(ctx: SyncContext, gh: FakeGitHub, caplog: pytest.LogCaptureFixture) -> None:
    gh.add_repos(3)
    with caplog.at_level(logging.DEBUG):
        await sync(ctx)
        gh.delete("repo-00002")
        gh.fail_next(500, count=10, path=BY_ID)
        await sync(ctx)
        gh.fail_next(502)
        await sync(ctx)
    assert caplog.text and TOKEN not in caplog.text


async def test_repo_of_a_project_without_repository_is_left_to_that_project(ctx: SyncContext, gh: FakeGitHub) -> None:
    async with ctx.db.session() as s:
        s.add(Project(name="hello-api", status=ProjectStatus.provisioning))  # the PO is creating its repository
    gh.add_repo("hello-api")
    summary = await sync(ctx)
    assert summary.created == 0 and any("not adopted" in n for n in summary.notes)
    assert (await projects(ctx))["hello-api"].github_repo_id is None


async def test_without_token_and_org_the_pass_does_nothing(settings: Settings) -> None:
    summary = await run_pass(SyncContext(settings=settings, db=Database("sqlite+aiosqlite:///:memory:")))
    assert summary.ok and summary.requests == 0 and "skipped" in summary.notes[0]


@pytest.mark.parametrize(
    ("repo", "slug"),
    [
        ("hello-app", "hello-app"),
        ("Hello_API", "hello-api-2"),
        (".github", "github"),
        ("a", "repo-a"),
        ("123", "repo-123"),
        ("___", "repo"),
        ("Über--Cool..Tool", "uber-cool-tool"),
        ("x" * 60, "x" * 40),
    ],
)
def test_slug_for_gives_safe_unique_names(repo: str, slug: str) -> None:
    assert slug_for(repo, {"hello-api"}) == slug


def test_slug_for_suffix_fits_in_40_characters() -> None:
    taken = {"x" * 40}
    assert slug_for("x" * 60, taken) == "x" * 38 + "-2"
    assert "x" * 38 + "-2" in taken
