"""GitHubForge against FakeGitHub, through PyGithub's real HTTP path (requests + urllib3 retries)."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from github import GithubException

from infra import workspace
from infra.forge.base import ForgeError, ForgeUnavailable, ensure_repo
from infra.forge.github import GitHubForge
from infra.git import NO_AUTH, GitError, run_git
from models.names import InvalidProjectName
from tests.fixtures.fake_github import FakeGitHub
from tests.fixtures.git_http import GitHttpServer

TOKEN = "ghp_fakeSECRET0123456789abcdef"
B64 = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
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


def assert_no_secret(exc: BaseException) -> None:
    """Neither the token nor its base64 (the Basic credential) is in the exception or anything it chains."""
    assert_no_token(exc)
    assert_no_token(exc, B64)


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


def test_archive_makes_the_repository_archived_and_an_unknown_one_is_a_forge_error(gh: FakeGitHub) -> None:
    forge = make_forge(gh)
    forge.create_repo("old-api", "d")
    forge.archive_repo("old-api")
    forge.archive_repo("old-api")  # GitHub takes it again without complaint
    assert gh.repos[f"{ORG}/old-api".lower()]["archived"] is True
    assert gh.count("PATCH", f"/repos/{ORG}/old-api") == 2
    with pytest.raises(ForgeError, match="no repository .*/ghost to archive"):
        forge.archive_repo("ghost")


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


def test_git_auth_is_githubs_basic_header_and_hides_the_token(gh: FakeGitHub) -> None:
    auth = make_forge(gh).git_auth()
    prefix = "Authorization: Basic "
    assert auth.header.startswith(prefix)
    assert base64.b64decode(auth.header[len(prefix) :]).decode() == f"x-access-token:{TOKEN}"
    assert TOKEN not in repr(auth) and B64 not in repr(auth) and B64 not in str(auth)
    assert auth.env({})["GIT_CONFIG_VALUE_0"] == auth.header


@pytest.fixture
def git_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a ``git`` first on PATH that records its argv and the git config it got from the environment."""
    real = shutil.which("git")
    assert real
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "git-calls.log"
    wrapper = bin_dir / "git"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'printf "argv:%s\\n" "$*" >> {log}\n'
        f'printf "env:%s=%s\\n" "${{GIT_CONFIG_KEY_0:-}}" "${{GIT_CONFIG_VALUE_0:-}}" >> {log}\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def calls(log: Path, kind: str) -> list[str]:
    return [line.split(":", 1)[1] for line in log.read_text().splitlines() if line.startswith(kind + ":")]


def test_failed_clone_through_github_forge_leaks_no_token(gh: FakeGitHub, tmp_path: Path, git_log: Path) -> None:
    forge = make_forge(gh)
    info = forge.create_repo("hello-api", "")
    with pytest.raises(GitError) as excinfo:  # FakeGitHub answers git's Basic header with a 401
        workspace.prepare(tmp_path / "ws", info.clone_url, forge.git_auth())
    assert info.clone_url in str(excinfo.value)
    assert_no_secret(excinfo.value)
    assert gh.count("GET", "/acme/hello-api.git/info/refs") >= 1  # git did reach the forge
    argv = calls(git_log, "argv")
    assert any(line.startswith("clone ") for line in argv)
    assert all(TOKEN not in line and B64 not in line for line in argv)
    key = make_forge(gh).git_auth().config_key
    assert calls(git_log, "env") == [f"{key}=Authorization: Basic {B64}"]  # the header came by env, scoped


def test_failed_push_through_github_forge_leaks_no_token(gh: FakeGitHub, tmp_path: Path, git_log: Path) -> None:
    forge = make_forge(gh)
    info = forge.create_repo("hello-api", "")
    root = tmp_path / "ws"
    run_git("init", "--quiet", "-b", "main", str(root))
    run_git("remote", "add", "origin", info.clone_url, cwd=root)
    (root / "app.py").write_text("print('hi')\n")
    with pytest.raises(GitError) as excinfo:
        workspace.commit_and_push(root, "first", forge.git_auth())
    assert "git push --quiet origin HEAD:main failed" in str(excinfo.value)
    assert_no_secret(excinfo.value)
    assert gh.count("GET", "/acme/hello-api.git/info/refs") >= 1
    argv = calls(git_log, "argv")
    assert any(line.startswith("push ") for line in argv)
    assert all(TOKEN not in line and B64 not in line for line in argv)


def test_clone_and_push_to_a_host_that_demands_the_header(tmp_path: Path, git_log: Path) -> None:
    """A smart-HTTP git host that, like GitHub, refuses requests without ``x-access-token`` Basic auth."""
    with GitHttpServer(tmp_path / "repos", token=TOKEN) as host:
        url = host.create_repo("acme/hello-api")
        auth = GitHubForge(token=TOKEN, org=ORG, base_url=host.base_url).git_auth()

        with pytest.raises(GitError) as refused:
            workspace.prepare(tmp_path / "anon", url, NO_AUTH)
        assert host.unauthorized >= 1 and host.authorized == 0

        root = workspace.prepare(tmp_path / "ws", url, auth)
        assert workspace.listing(root) == ["README.md"]
        (root / "app.py").write_text("print('hi')\n")
        sha = workspace.commit_and_push(root, "add app", auth)
        assert host.head("acme/hello-api") == sha
        assert host.authorized >= 4  # refs + pack for the clone, refs + pack for the push

    assert_no_secret(refused.value)
    config = (root / ".git" / "config").read_text()
    assert TOKEN not in config and B64 not in config and "extraHeader" not in config
    assert all(TOKEN not in line and B64 not in line for line in calls(git_log, "argv"))


def test_empty_token_or_org_is_rejected() -> None:
    with pytest.raises(ForgeError, match="ORCH_GITHUB_TOKEN"):
        GitHubForge(token="", org=ORG)
    with pytest.raises(ForgeError, match="ORCH_GITHUB_ORG"):
        GitHubForge(token=TOKEN, org="")


def test_the_header_goes_only_to_the_forge_origin(tmp_path: Path) -> None:
    """A clone URL on another host gets no credential: git matches ``http.<origin>.extraHeader`` per request."""
    with GitHttpServer(tmp_path / "repos", token=TOKEN) as host:
        url = host.create_repo("acme/hello-api")
        elsewhere = GitHubForge(token=TOKEN, org=ORG, base_url="http://127.0.0.1:9").git_auth()
        with pytest.raises(GitError) as refused:
            workspace.prepare(tmp_path / "ws", url, elsewhere)
        assert host.unauthorized >= 1 and host.authorized == 0
    assert_no_secret(refused.value)


@pytest.mark.parametrize(
    ("api", "key"),
    [
        ("https://api.github.com", "http.https://github.com/.extraHeader"),
        ("https://ghe.example.com/api/v3", "http.https://ghe.example.com/.extraHeader"),
    ],
)
def test_the_header_is_scoped_to_where_the_forge_serves_git(api: str, key: str) -> None:
    auth = GitHubForge(token=TOKEN, org=ORG, base_url=api).git_auth()
    assert auth.config_key == key and auth.env()["GIT_CONFIG_KEY_0"] == key
