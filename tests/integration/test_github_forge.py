"""GitHubForge against FakeGitHub, through PyGithub's real HTTP path (requests + urllib3 retries)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import requests
from github import GithubException

from core.forge.base import ForgeError, ForgeUnavailable, ensure_repo
from core.forge.github import GitHubForge
from models.names import InvalidProjectName
from tests.fixtures.fake_github import FakeGitHub

TOKEN = "ghp_fakeSECRET0123456789abcdef"
ORG = "acme"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, org=ORG) as server:
        yield server


def make_forge(gh: FakeGitHub, *, token: str = TOKEN, org: str = ORG, retries: int = 3) -> GitHubForge:
    return GitHubForge(token=token, org=org, base_url=gh.base_url, retries=retries, backoff_s=0, timeout_s=5)


def assert_no_token(exc: BaseException, token: str = TOKEN) -> None:
    """The token is in neither the message nor the repr of the exception or anything it was raised from."""
    seen: BaseException | None = exc
    while seen is not None:
        assert token not in str(seen)
        assert token not in repr(seen)
        seen = seen.__cause__ or seen.__context__


def test_create_returns_server_id_and_urls(gh: FakeGitHub) -> None:
    info = make_forge(gh).create_repo("hello-api", "A test service")
    stored = gh.repos["acme/hello-api"]
    assert info.id == stored["id"] == 10_000_001
    assert info.name == "hello-api"
    assert info.full_name == "acme/hello-api"
    assert info.html_url == stored["html_url"]
    assert info.clone_url == stored["clone_url"] == f"{gh.base_url}/acme/hello-api.git"
    assert info.default_branch == "main"
    assert stored["private"] is True
    assert stored["description"] == "A test service"
    assert gh.count("POST", "/orgs/acme/repos") == 1


def test_get_repo_finds_created_and_none_for_unknown(gh: FakeGitHub) -> None:
    forge = make_forge(gh)
    created = forge.create_repo("hello-api", "")
    assert forge.get_repo("hello-api") == created
    assert forge.get_repo("no-such-repo") is None
    assert gh.count("GET", "/repos/acme/no-such-repo") == 1  # a 404 is an answer, not retried


def test_ensure_repo_twice_creates_once(gh: FakeGitHub) -> None:
    forge = make_forge(gh)
    first = ensure_repo(forge, "hello-api", "x")
    second = ensure_repo(forge, "hello-api", "x")
    assert first == second
    assert gh.count("POST") == 1
    assert len(gh.repos) == 1


def test_duplicate_create_is_forge_error(gh: FakeGitHub) -> None:
    gh.add_repo("hello-api")
    with pytest.raises(ForgeError, match="repository exists") as excinfo:
        make_forge(gh).create_repo("hello-api", "")
    assert not isinstance(excinfo.value, ForgeUnavailable)
    assert len(gh.repos) == 1


def test_unknown_org_is_forge_error(gh: FakeGitHub) -> None:
    with pytest.raises(ForgeError, match="organization 'nope' not found or token cannot see it"):
        make_forge(gh, org="nope").create_repo("hello-api", "")
    assert gh.count("POST") == 0


@pytest.mark.parametrize("call", ["get", "create"])
def test_wrong_token_is_forge_error_without_the_token(gh: FakeGitHub, call: str) -> None:
    wrong = "ghp_wrongSECRET9876543210"
    forge = make_forge(gh, token=wrong)
    with pytest.raises(ForgeError, match="ORCH_GITHUB_TOKEN") as excinfo:
        forge.get_repo("hello-api") if call == "get" else forge.create_repo("hello-api", "")
    assert not isinstance(excinfo.value, ForgeUnavailable)
    assert_no_token(excinfo.value, wrong)
    assert wrong not in repr(forge)
    assert len(gh.requests) == 1  # 401 is not retried


def test_forbidden_is_forge_error_naming_what_to_check(gh: FakeGitHub) -> None:
    gh.fail_next(403)  # a 403 without a rate-limit message: GithubRetry raises at once instead of retrying
    with pytest.raises(ForgeError, match="ORCH_GITHUB_ORG=acme") as excinfo:
        make_forge(gh).create_repo("hello-api", "")
    assert not isinstance(excinfo.value, ForgeUnavailable)
    assert len(gh.requests) == 1


def test_short_502_burst_is_retried(gh: FakeGitHub) -> None:
    gh.fail_next(502, count=3)
    info = make_forge(gh, retries=3).create_repo("hello-api", "")
    assert info.id == gh.repos["acme/hello-api"]["id"]
    assert len(gh.requests) == 3 + 2  # GET /orgs/acme answered 502 three times, then GET and POST succeed


@pytest.mark.parametrize("call", ["get", "create"])
def test_long_502_burst_is_forge_unavailable(gh: FakeGitHub, call: str) -> None:
    retries = 2
    gh.fail_next(502, count=10)
    forge = make_forge(gh, retries=retries)
    with pytest.raises(ForgeUnavailable) as excinfo:
        forge.get_repo("hello-api") if call == "get" else forge.create_repo("hello-api", "")
    assert not isinstance(excinfo.value, requests.exceptions.RetryError | GithubException)
    assert len(gh.requests) == retries + 1
    assert_no_token(excinfo.value)


def test_unreachable_server_is_forge_unavailable() -> None:
    with FakeGitHub(token=TOKEN, org=ORG) as gone:
        base_url = gone.base_url
    forge = GitHubForge(token=TOKEN, org=ORG, base_url=base_url, retries=1, backoff_s=0, timeout_s=2)
    with pytest.raises(ForgeUnavailable, match="unavailable") as excinfo:
        forge.get_repo("hello-api")
    assert_no_token(excinfo.value)


@pytest.mark.parametrize("name", ["Hello", "a", "bad--name", "x/../y", "trailing-", ""])
def test_invalid_name_raises_before_any_request(gh: FakeGitHub, name: str) -> None:
    forge = make_forge(gh)
    with pytest.raises(InvalidProjectName):
        forge.get_repo(name)
    with pytest.raises(InvalidProjectName):
        forge.create_repo(name, "")
    with pytest.raises(InvalidProjectName):
        ensure_repo(forge, name, "")
    assert gh.requests == []


def test_git_config_args_carry_no_raw_token(gh: FakeGitHub) -> None:
    args = make_forge(gh).git_config_args()
    assert args[0] == "-c"
    assert all(TOKEN not in arg for arg in args)
    key, _, header = args[1].partition("=")
    assert key == "http.extraHeader"
    prefix = "Authorization: Basic "
    assert header.startswith(prefix)
    assert base64.b64decode(header[len(prefix) :]).decode() == f"x-access-token:{TOKEN}"


def test_empty_token_or_org_is_rejected() -> None:
    with pytest.raises(ForgeError, match="ORCH_GITHUB_TOKEN"):
        GitHubForge(token="", org=ORG)
    with pytest.raises(ForgeError, match="ORCH_GITHUB_ORG"):
        GitHubForge(token=TOKEN, org="")
