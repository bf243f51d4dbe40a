"""GitHubForge against what real GitHub answers: lost create answers, control characters, renames and transfers
(301), long Retry-After, redirects to another host, SSO and 451, and the headers of every request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.forge.base import ForgeError, ForgeRateLimited, RepoTransferred, clean_description, ensure_repo
from infra.forge.github import GitHubForge
from infra.forge.github_http import USER_AGENT
from tests.fixtures.fake_github import FakeGitHub

TOKEN = "ghp_answersSECRET0123456789abcdef"
ORG = "acme"
CREATE = f"/orgs/{ORG}/repos"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, org=ORG) as server:
        yield server


def forge_for(gh: FakeGitHub, *, timeout_s: float = 5, pause_file: Path | None = None) -> GitHubForge:
    stored = {"pause_file": pause_file} if pause_file else {}
    return GitHubForge(
        token=TOKEN, org=ORG, base_url=gh.base_url, retries=3, backoff_s=0, timeout_s=timeout_s, **stored
    )


# ---- 1. a create retried into "already exists" ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["502", "drop", "slow"])
def test_a_create_whose_answer_was_lost_returns_the_repository_it_created(gh: FakeGitHub, mode: str) -> None:
    gh.lose_answer_next(mode, path=CREATE, seconds=3)  # the POST takes effect; its answer never arrives

    info = forge_for(gh, timeout_s=1).create_repo("hello-api", "A test service")

    stored = gh.repos[f"{ORG}/hello-api"]
    assert (info.id, info.full_name, info.clone_url) == (stored["id"], "acme/hello-api", stored["clone_url"])
    assert len(gh.repos) == 1
    assert gh.count("POST", CREATE) == 2  # the lost one, then the one answered 422 "already exists"


def test_a_repository_that_existed_before_the_call_is_a_conflict_even_after_a_lost_answer(gh: FakeGitHub) -> None:
    old = gh.add_repo("hello-api", "A test service")
    old["created_at"] = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    gh.fail_next(502, path=CREATE)  # this 502 created nothing: the retry meets the old repository

    with pytest.raises(ForgeError, match="repository exists: acme/hello-api was not created by this request") as exc:
        forge_for(gh).create_repo("hello-api", "A test service")

    assert "before this request" in str(exc.value)
    assert gh.count("POST", CREATE) == 2


def test_someone_elses_repository_created_meanwhile_is_a_conflict(gh: FakeGitHub) -> None:
    gh.add_repo("hello-api", "another team's service")
    gh.fail_next(502, path=CREATE)
    with pytest.raises(ForgeError, match="description differs"):
        forge_for(gh).create_repo("hello-api", "A test service")


def test_already_exists_on_the_first_answer_is_a_conflict_without_a_retry(gh: FakeGitHub) -> None:
    gh.add_repo("hello-api", "A test service")  # same description, just created: still not ours
    with pytest.raises(ForgeError, match="repository exists: acme/hello-api existed before this request"):
        forge_for(gh).create_repo("hello-api", "A test service")
    assert gh.count("POST", CREATE) == 1


# ---- 2. the description -------------------------------------------------------------------------------------------
def test_a_models_multi_line_description_is_sent_as_one_clean_line(gh: FakeGitHub) -> None:
    text = "A service that\n\tgreets people.\r\nIt\x07 answers\x00 on /hello.\u200b " + "Long text. " * 60

    forge_for(gh).create_repo("hello-api", text)

    sent = gh.repos[f"{ORG}/hello-api"]["description"]
    assert sent.startswith("A service that greets people. It answers on /hello. Long text.")
    assert len(sent) <= 350 and sent.endswith("…")
    assert not any(ord(c) < 32 or ord(c) == 0x7F or c == "\u200b" for c in sent)


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("", ""),
        ("  one  line  ", "one line"),
        ("two\nlines\r\n", "two lines"),
        ("tab\there", "tab here"),
        ("bell\x07 nul\x00 del\x7f esc\x1b[31m", "bell nul del esc[31m"),
        ("zero\u200bwidth \u2028separator", "zerowidth separator"),
        ("\n\t\x01", ""),
        ("é ü 日本", "é ü 日本"),
    ],
)
def test_clean_description(text: str, clean: str) -> None:
    assert clean_description(text) == clean


def test_clean_description_cuts_at_a_word_within_the_limit() -> None:
    cut = clean_description("word " * 200, limit=50)
    assert len(cut) <= 50 and cut.endswith("word…")
    assert clean_description("x" * 500, limit=50) == "x" * 49 + "…"


# ---- 3. renamed and transferred repositories (301) ------------------------------------------------------------------
def test_get_repo_follows_a_rename_and_says_so(gh: FakeGitHub) -> None:
    repo = gh.add_repo("old-name")
    gh.rename("old-name", "new-name")

    info = forge_for(gh).get_repo("old-name")

    assert info is not None
    assert (info.id, info.full_name, info.moved_from) == (repo["id"], "acme/new-name", "acme/old-name")
    assert gh.count_status(301, "/repos/acme/old-name") == 1


def test_get_repo_of_a_transferred_repository_raises_repo_transferred(gh: FakeGitHub) -> None:
    repo = gh.add_repo("hello-api")
    gh.transfer("hello-api", "elsewhere")

    with pytest.raises(RepoTransferred) as exc:
        forge_for(gh).get_repo("hello-api")

    assert (exc.value.asked, exc.value.info.full_name, exc.value.info.id) == (
        "acme/hello-api",
        "elsewhere/hello-api",
        repo["id"],
    )
    assert isinstance(exc.value, ForgeError)


@pytest.mark.parametrize("moved", ["renamed", "transferred"])
def test_ensure_repo_creates_the_name_a_moved_repository_left(gh: FakeGitHub, moved: str) -> None:
    old = gh.add_repo("hello-api")
    if moved == "renamed":
        gh.rename("hello-api", "other-name")
    else:
        gh.transfer("hello-api", "elsewhere")

    info = ensure_repo(forge_for(gh), "hello-api", "A test service")

    assert info.full_name == "acme/hello-api" and info.id != old["id"] and info.moved_from is None
    assert gh.count("POST", CREATE) == 1
    assert forge_for(gh).get_repo("hello-api") == info  # the new repository ended the redirect


def test_archive_refuses_a_transferred_repository(gh: FakeGitHub) -> None:
    gh.add_repo("hello-api")
    gh.transfer("hello-api", "elsewhere")
    with pytest.raises(RepoTransferred):
        forge_for(gh).archive_repo("hello-api")
    assert gh.count("PATCH") == 0 and gh.repos["elsewhere/hello-api"]["archived"] is False


# ---- 7. Retry-After -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [403, 429])
def test_a_long_retry_after_raises_at_once_and_pauses_the_forge(gh: FakeGitHub, status: int) -> None:
    gh.add_repo("hello-api")
    gh.rate_limit_next("secondary", status=status, retry_after=90, path="/repos/acme/hello-api")
    forge = forge_for(gh)

    started = time.monotonic()
    with pytest.raises(ForgeRateLimited) as exc:
        forge.get_repo("hello-api")

    assert time.monotonic() - started < 3, "no sleep inside the request"
    assert 80 < (exc.value.until - datetime.now(UTC)).total_seconds() <= 91
    with pytest.raises(ForgeRateLimited):
        forge.get_repo("hello-api")
    assert len(gh.requests) == 1, "no request while paused"


def test_the_pause_is_stored_for_every_process_of_the_data_dir(gh: FakeGitHub, tmp_path: Path) -> None:
    gh.rate_limit_next("secondary", status=429, retry_after=90)
    pause = tmp_path / "data" / "github-pause.json"
    with pytest.raises(ForgeRateLimited):
        forge_for(gh, pause_file=pause).get_repo("hello-api")
    with pytest.raises(ForgeRateLimited, match="no request to GitHub before"):  # another process, the same data dir
        forge_for(gh, pause_file=pause).create_repo("other-api", "")
    assert len(gh.requests) == 1
    assert forge_for(gh).get_repo("hello-api") is None  # a forge of another data dir is not paused


def test_a_short_retry_after_is_waited_inside_the_call(gh: FakeGitHub) -> None:
    gh.add_repo("hello-api")
    gh.rate_limit_next("secondary", status=429, retry_after=1, path="/repos/acme/hello-api")
    started = time.monotonic()
    assert forge_for(gh).get_repo("hello-api") is not None
    assert 1 <= time.monotonic() - started < 5
    assert gh.count("GET", "/repos/acme/hello-api") == 2


# ---- 9. a redirect to another host ----------------------------------------------------------------------------------
def test_a_redirect_to_another_host_is_a_forge_error(gh: FakeGitHub) -> None:
    elsewhere = gh.base_url.replace("127.0.0.1", "localhost") + "/repositories/1"
    gh.redirect_next(elsewhere, path="/repos/acme/hello-api")
    with pytest.raises(ForgeError, match="redirected to another host or scheme") as exc:
        forge_for(gh).get_repo("hello-api")
    assert "ORCH_GITHUB_BASE_URL" in str(exc.value) and TOKEN not in str(exc.value)


# ---- 451 and SSO on the forge ---------------------------------------------------------------------------------------
def test_sso_enforcement_names_where_to_authorize_the_token(gh: FakeGitHub) -> None:
    gh.sso_next(path="/repos/acme/hello-api")
    with pytest.raises(ForgeError, match=r"authorize the token for SAML SSO at https://github.com/orgs/acme/sso\?"):
        forge_for(gh).get_repo("hello-api")
    assert len(gh.requests) == 1


def test_a_blocked_repository_carries_githubs_reason(gh: FakeGitHub) -> None:
    gh.block_next(path="/repos/acme/hello-api")
    with pytest.raises(ForgeError, match="legal reasons .*Repository access blocked .*reason: dmca"):
        forge_for(gh).get_repo("hello-api")


# ---- 10. the headers of every request -------------------------------------------------------------------------------
def test_every_forge_request_sends_githubs_media_type_api_version_and_this_projects_agent(gh: FakeGitHub) -> None:
    forge = forge_for(gh)
    ensure_repo(forge, "hello-api", "A test service")  # GET repo (404), GET org, POST repo
    forge.archive_repo("hello-api")  # GET repo, PATCH repo

    assert [(e.method, e.path) for e in gh.exchanges] == [
        ("GET", "/repos/acme/hello-api"),
        ("GET", "/orgs/acme"),
        ("POST", CREATE),
        ("GET", "/repos/acme/hello-api"),
        ("PATCH", "/repos/acme/hello-api"),
    ]
    for e in gh.exchanges:
        assert e.headers["accept"] == "application/vnd.github+json", (e.method, e.path)
        assert e.headers["x-github-api-version"] == "2022-11-28", (e.method, e.path)
        assert e.headers["user-agent"] == USER_AGENT and USER_AGENT.startswith("orchestrator/"), (e.method, e.path)
