"""Git credentials travel only in git's environment, and no GitError message ever shows them."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from infra.forge.github import GitHubForge
from infra.forge.local import LocalForge
from infra.git import NO_AUTH, GitAuth, GitError, redact_auth, run_git

TOKEN = "ghp_unitSECRET0123456789abcdef"
B64 = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


@pytest.fixture()
def auth() -> GitAuth:
    return GitHubForge(token=TOKEN, org="acme", base_url="http://127.0.0.1:9").git_auth()


def assert_clean(text: str) -> None:
    assert TOKEN not in text
    assert B64 not in text


def assert_error_clean(exc: BaseException) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        assert_clean(str(seen))
        assert_clean(repr(seen))
        seen = seen.__cause__ or seen.__context__


def test_github_auth_is_a_basic_header_that_never_shows(auth: GitAuth) -> None:
    assert auth.header == f"Authorization: Basic {B64}"
    assert base64.b64decode(auth.header.split()[-1]).decode() == f"x-access-token:{TOKEN}"
    assert bool(auth)
    assert_clean(repr(auth))
    assert_clean(str(auth))
    assert_clean(f"{auth}")


def test_local_forge_needs_no_auth(tmp_path: Path) -> None:
    auth = LocalForge(tmp_path / "forge").git_auth()
    assert auth is NO_AUTH
    assert not auth
    assert auth.env({}) == {}


def test_env_appends_after_entries_already_there(auth: GitAuth) -> None:
    assert auth.env({}) == {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.http://127.0.0.1:9/.extraHeader",  # scoped to the forge's origin
        "GIT_CONFIG_VALUE_0": auth.header,
    }
    assert auth.env({"GIT_CONFIG_COUNT": "2"}) == {
        "GIT_CONFIG_COUNT": "3",
        "GIT_CONFIG_KEY_2": "http.http://127.0.0.1:9/.extraHeader",
        "GIT_CONFIG_VALUE_2": auth.header,
    }


def test_git_gets_the_header_from_its_environment(auth: GitAuth, tmp_path: Path) -> None:
    here, other = "http://127.0.0.1:9/acme/x.git", "http://127.0.0.2:9/acme/x.git"
    assert run_git("config", "--get-urlmatch", "http.extraHeader", here, cwd=tmp_path, auth=auth) == auth.header
    with pytest.raises(GitError):  # another host matches no key: git exits 1
        run_git("config", "--get-urlmatch", "http.extraHeader", other, cwd=tmp_path, auth=auth)
    with pytest.raises(GitError):  # without auth there is no such key
        run_git("config", "--get-urlmatch", "http.extraHeader", here, cwd=tmp_path)


def test_existing_git_config_env_entries_are_kept(
    auth: GitAuth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.mine")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "kept")
    assert run_git("config", "--get", "core.mine", cwd=tmp_path, auth=auth) == "kept"
    assert run_git("config", "--get", auth.config_key, cwd=tmp_path, auth=auth) == auth.header


def test_redact_removes_token_base64_and_header(auth: GitAuth) -> None:
    text = f"header {auth.header}; b64 {B64}; raw {TOKEN}; url https://x-access-token:{TOKEN}@github.com/a/b.git"
    out = auth.redact(text)
    assert_clean(out)
    assert "Authorization: Basic ***" in out
    assert "raw ***" in out
    assert "https://***@github.com/a/b.git" in out


def test_redact_auth_without_knowing_the_secret() -> None:
    assert redact_auth("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact_auth("fetch https://user:pw@host/x.git") == "fetch https://***@host/x.git"
    assert redact_auth("nothing to hide in /srv/a@b") == "nothing to hide in /srv/a@b"


@pytest.mark.parametrize("arg", [TOKEN, B64, f"Authorization: Basic {B64}"])
def test_git_error_never_contains_auth_material(auth: GitAuth, tmp_path: Path, arg: str) -> None:
    """Even a caller that wrongly puts the secret in argv gets it redacted from the message (git echoes it)."""
    run_git("init", "--quiet", str(tmp_path))
    with pytest.raises(GitError) as excinfo:
        run_git("rev-parse", "--verify", "--end-of-options", arg, cwd=tmp_path, auth=auth)
    message = str(excinfo.value)
    assert "git rev-parse --verify" in message and "failed (rc 128)" in message
    assert_error_clean(excinfo.value)


def test_failed_http_clone_error_holds_no_auth(auth: GitAuth, tmp_path: Path) -> None:
    with pytest.raises(GitError) as excinfo:  # nothing listens on port 9 of 127.0.0.1: connection refused
        run_git("clone", "--quiet", "http://127.0.0.1:9/acme/x.git", str(tmp_path / "x"), auth=auth, timeout_s=30)
    assert "git clone --quiet http://127.0.0.1:9/acme/x.git" in str(excinfo.value)
    assert_error_clean(excinfo.value)


def test_url_credentials_are_redacted_without_auth(tmp_path: Path) -> None:
    url = f"http://x-access-token:{TOKEN}@127.0.0.1:9/acme/x.git"
    with pytest.raises(GitError) as excinfo:
        run_git("clone", "--quiet", url, str(tmp_path / "x"), timeout_s=30)
    assert "http://***@127.0.0.1:9/acme/x.git" in str(excinfo.value)
    assert_error_clean(excinfo.value)


def test_timeout_message_is_redacted(auth: GitAuth, tmp_path: Path) -> None:
    """A git that hangs (opening a FIFO nobody writes) is cut off; the message is redacted and chains nothing."""
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    with pytest.raises(GitError, match="timed out after 0.5s") as excinfo:
        run_git("hash-object", "--", str(fifo), B64, cwd=tmp_path, auth=auth, timeout_s=0.5)
    assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None
    assert_error_clean(excinfo.value)
