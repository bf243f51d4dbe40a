"""GitHub as the forge: private repositories in one organization, through PyGithub (REST API v3).

Endpoints followed:
https://docs.github.com/en/rest/repos/repos#get-a-repository,
https://docs.github.com/en/rest/repos/repos#create-an-organization-repository,
https://docs.github.com/en/rest/repos/repos#update-a-repository and
https://docs.github.com/en/rest/orgs/orgs#get-an-organization; how requests are sent and answers read is
:mod:`infra.forge.github_http`.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import requests
from github import GithubException
from github.Organization import Organization
from github.Repository import Repository
from requests.structures import CaseInsensitiveDict

from core.breakers import ServiceUnavailable, SyncBreakers
from core.settings import Settings
from infra.forge.base import (
    ForgeError,
    ForgeRateLimited,
    ForgeUnavailable,
    RepoInfo,
    RepoTransferred,
    clean_description,
)
from infra.forge.github_http import (
    cross_origin_redirect,
    error_message,
    pygithub,
    rate_limit_wait,
    sso_url,
    unavailable,
)
from infra.git import GitAuth
from models.names import validate_slug

T = TypeVar("T")
DEFAULT_BREAKER = (
    Settings.model_fields["breaker_failures"].default,
    Settings.model_fields["breaker_cooldown_s"].default,
)
"""Failures in a row and cool-down (s) of GitHub's breaker when the caller passes none."""
CLOCK_SKEW = timedelta(minutes=5)
"""How far GitHub's clock may be behind ours when judging whether a repository was created by this request."""


class GitHubForge:
    """Repositories in the GitHub organization ``org``, reached with a token (classic PAT, fine-grained or app).

    Transient failures (5xx, connection errors, timeouts) of idempotent requests are retried with exponential
    backoff and surface as ``ForgeUnavailable``; a creation is retried by :meth:`create_repo` itself. A rate limit
    is waited out inside the call only up to ``max_wait_s``; a longer one becomes a stored pause (in memory and,
    when ``pause_file`` is given, on disk for every process of this data dir) and raises ``ForgeRateLimited``
    without a request until it ends. Refusals surface as ``ForgeError``. The token is never part of an exception
    message or of ``repr``.
    """

    kind = "github"

    def __init__(
        self,
        *,
        token: str,
        org: str,
        base_url: str = "https://api.github.com",
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 15,
        max_wait_s: float = 10.0,
        pause_file: Path | None = None,
        breakers: SyncBreakers | None = None,
    ) -> None:
        """Build the client; no request is made until the first call.

        Args:
            token: GitHub token (ORCH_GITHUB_TOKEN) allowed to create repositories in ``org``.
            org: the organization (ORCH_GITHUB_ORG) that owns the repositories.
            base_url: REST API root; ``https://HOST/api/v3`` for GitHub Enterprise Server.
            retries: retries after a 5xx, connection error or short rate limit (``retries + 1`` requests at most).
            backoff_s: backoff factor: sleeps ``backoff_s * 2**n`` seconds between retries (0 in tests).
            timeout_s: connect and read timeout of each request, in seconds.
            max_wait_s: the longest rate-limit wait slept inside a call, in seconds; longer ones pause the forge.
            pause_file: where a pause is stored for other processes (JSON ``{"until": ISO time}``); None: memory only.
            breakers: where GitHub's circuit breaker lives (``core.breakers.sync_breakers(settings)`` shares it
                with every process); None: one of the default settings, in this process only. While it is open,
                every call raises ``ForgeUnavailable`` at once ("GitHub unavailable since ..., next try at ...").

        Raises:
            ForgeError: the token or the organization is empty.
        """
        if not token:
            raise ForgeError("ORCH_GITHUB_TOKEN is empty: a GitHub token is required for the github forge")
        if not org:
            raise ForgeError("ORCH_GITHUB_ORG is empty: name the organization that owns the repositories")
        self.org = org
        self.base_url = base_url.rstrip("/")
        self.max_wait_s = max_wait_s
        self.pause_file = pause_file
        self._token = token
        self._retries = retries
        self._backoff_s = backoff_s
        self._paused_until: datetime | None = None
        self._breakers = breakers or SyncBreakers(failures=DEFAULT_BREAKER[0], cooldown_s=DEFAULT_BREAKER[1])
        self._gh = pygithub(self.base_url, token, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)

    def __repr__(self) -> str:
        return f"GitHubForge(org={self.org!r}, base_url={self.base_url!r})"

    def get_repo(self, name: str) -> RepoInfo | None:
        """Return ``org/name``, or None if GitHub answers 404 (also what a token that cannot see it gets).

        GitHub answers a renamed or transferred repository's old name with a 301 to the repository by id, which is
        followed; the answer's full name is then checked against the one asked for. See
        https://docs.github.com/en/rest/repos/repos#get-a-repository.

        Returns:
            The repository; under another name of the org (renamed) with ``moved_from`` set to ``org/name``.

        Raises:
            InvalidProjectName: ``name`` is not a safe slug (before any request).
            RepoTransferred: the repository now belongs to another owner.
            ForgeError: bad credentials, forbidden (SSO, scope), blocked for legal reasons (451), a redirect to
                another host.
            ForgeUnavailable: GitHub unreachable or 5xx after retries; ForgeRateLimited: rate limited past
                ``max_wait_s``, or paused.
        """
        validate_slug(name)
        with self._translate(f"get repository {self.org}/{name}"):
            repo = self._fetch(name)
            return None if repo is None else self._checked(name, repo)

    def create_repo(self, name: str, description: str) -> RepoInfo:
        """Create the private repository ``org/name`` with an initial commit (``auto_init``) on its default branch.

        See https://docs.github.com/en/rest/repos/repos#create-an-organization-repository. The description is
        :func:`~infra.forge.base.clean_description` of ``description``.

        Idempotent against lost answers: a POST that got a 5xx, a timeout or a dropped connection may have created
        the repository, so it is sent again (at most ``retries`` times), and a retry answered 422 "name already
        exists on this account" is not taken as a conflict at once. The repository of that name is fetched and
        accepted as ours only when all of these hold: an earlier POST of this same call went unanswered (so it
        may have taken effect); GitHub holds it under exactly ``org/name`` (not through a redirect); its
        ``created_at`` is not before this call started (less :data:`CLOCK_SKEW`); it is private; and its
        description is the one sent. Otherwise the 422 is a conflict.

        Returns:
            The new repository, with GitHub's id and URLs.

        Raises:
            InvalidProjectName: ``name`` is not a safe slug (before any request).
            ForgeError: the repository exists and is not ours (message starting "repository exists"), the
                organization is unknown or invisible to the token (404), bad credentials (401) or missing
                permission (403).
            ForgeUnavailable: GitHub unreachable or 5xx after retries; ForgeRateLimited: rate limited past
                ``max_wait_s``, or paused.
        """
        validate_slug(name)
        text = clean_description(description)
        started = datetime.now(UTC)
        with self._translate(f"create repository {self.org}/{name}"):
            try:
                org = self._call(lambda: self._gh.get_organization(self.org))
            except GithubException as e:
                if e.status == 404:
                    raise ForgeError(
                        f"organization {self.org!r} not found or token cannot see it "
                        "(check ORCH_GITHUB_ORG and the token's organization access)"
                    ) from e
                raise
            return self._info(self._create(org, name, text, started))

    def archive_repo(self, name: str) -> None:
        """Archive ``org/name`` (read-only, kept): ``PATCH /repos/{owner}/{repo}`` with ``archived: true``.

        See https://docs.github.com/en/rest/repos/repos#update-a-repository. Archiving an archived repository is
        a no-op for GitHub. A renamed repository is archived under its new name; a transferred one is not touched.

        Raises:
            InvalidProjectName: ``name`` is not a safe slug. RepoTransferred: it now belongs to another owner.
                ForgeError: no such repository, bad credentials or missing permission. ForgeUnavailable: GitHub
                unreachable or 5xx after retries.
        """
        validate_slug(name)
        with self._translate(f"archive repository {self.org}/{name}"):
            repo = self._fetch(name)
            if repo is None:
                raise ForgeError(f"no repository {self.org}/{name} to archive")
            self._checked(name, repo)
            self._call(lambda: repo.edit(archived=True))

    def git_auth(self) -> GitAuth:
        """Return the credentials that authenticate https clone/fetch/push to GitHub.

        The header carries HTTP Basic ``x-access-token:<token>``, which GitHub accepts for every token type. It
        reaches git through the environment only (never argv, ``.git/config`` nor the remote URL), and both the
        raw token and its base64 form are redacted from git error messages.
        """
        basic = base64.b64encode(f"x-access-token:{self._token}".encode()).decode()
        return GitAuth(header=f"Authorization: Basic {basic}", secrets=(self._token,), url=git_origin(self.base_url))

    # ---- requests ------------------------------------------------------------------------------------------------
    def _fetch(self, name: str) -> Repository | None:
        try:
            return self._call(lambda: self._gh.get_repo(f"{self.org}/{name}"))
        except GithubException as e:
            if e.status == 404:
                return None
            raise

    def _checked(self, name: str, repo: Repository) -> RepoInfo:
        """The repository answered for ``name``, checked against what was asked (a 301 may have been followed)."""
        info, asked = self._info(repo), f"{self.org}/{name}"
        if info.full_name.lower() == asked.lower():
            return info
        if info.full_name.split("/")[0].lower() == self.org.lower():
            return replace(info, moved_from=asked)
        raise RepoTransferred(asked, info)

    def _create(self, org: Organization, name: str, text: str, started: datetime) -> Repository:
        """POST the repository, again after an unanswered POST; a 422 "already exists" goes to :meth:`_adopt`."""
        unanswered: str | None = None
        for attempt in range(self._retries + 1):
            try:
                return self._call(lambda: org.create_repo(name, description=text, private=True, auto_init=True))
            except GithubException as e:
                if e.status == 422 and "already exists" in _detail(e):
                    return self._adopt(name, text, started, unanswered, e)
                if e.status < 500 or attempt == self._retries:
                    raise
                unanswered = f"answered {e.status}"
            except requests.exceptions.RequestException as e:
                if attempt == self._retries:
                    raise
                unanswered = f"{type(e).__name__}"
            time.sleep(self._backoff_s * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _adopt(
        self, name: str, text: str, started: datetime, unanswered: str | None, conflict: GithubException
    ) -> Repository:
        """The existing ``org/name`` if this call created it (see :meth:`create_repo`), else a conflict."""
        asked = f"{self.org}/{name}"
        if unanswered is None:
            raise ForgeError(f"repository exists: {asked} existed before this request; choose another name") from (
                conflict
            )
        repo = self._fetch(name)
        if repo is None:
            raise ForgeUnavailable(f"{asked}: GitHub said it exists, then answered 404; try again") from conflict
        problems = []
        if repo.full_name.lower() != asked.lower():
            problems.append(f"the name redirects to {repo.full_name}")
        created = repo.created_at if repo.created_at.tzinfo else repo.created_at.replace(tzinfo=UTC)
        if created < started - CLOCK_SKEW:
            problems.append(f"created {created:%Y-%m-%d %H:%M:%S} UTC, before this request")
        if not repo.private:
            problems.append("it is public")
        if (repo.description or "") != text:
            problems.append("its description differs")
        if problems:
            raise ForgeError(
                f"repository exists: {asked} was not created by this request ({'; '.join(problems)}); "
                "choose another name"
            ) from conflict
        return repo

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one PyGithub call: refused at once while paused; a rate limit slept on up to ``max_wait_s``."""
        self._check_pause()
        for attempt in range(self._retries + 1):
            try:
                return fn()
            except GithubException as e:
                wait = rate_limit_wait(e.status, CaseInsensitiveDict(e.headers or {}), _detail(e))
                if wait is None:
                    raise
                if wait > self.max_wait_s or attempt == self._retries:
                    until = datetime.now(UTC) + timedelta(seconds=wait)
                    self._store_pause(until)
                    raise ForgeRateLimited(
                        f"GitHub rate limit ({e.status}): no request to GitHub before "
                        f"{until.isoformat(timespec='seconds')}",
                        until,
                    ) from e
                time.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    # ---- the stored pause ----------------------------------------------------------------------------------------
    def _check_pause(self) -> None:
        until = max(p for p in (self._paused_until, self._stored_pause(), datetime.min.replace(tzinfo=UTC)) if p)
        if until > datetime.now(UTC):
            raise ForgeRateLimited(
                f"GitHub asked for a pause: no request to GitHub before {until.isoformat(timespec='seconds')}", until
            )

    def _stored_pause(self) -> datetime | None:
        if self.pause_file is None:
            return None
        try:
            until = datetime.fromisoformat(json.loads(self.pause_file.read_text())["until"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return until if until.tzinfo else until.replace(tzinfo=UTC)

    def _store_pause(self, until: datetime) -> None:
        """Remember ``until``; on disk through a temporary file and a rename, so a reader never sees half of it."""
        self._paused_until = max(until, self._paused_until or until)
        if self.pause_file is None:
            return
        from infra.forge.local import make_private_dirs

        make_private_dirs(self.pause_file.parent)
        fd, tmp = tempfile.mkstemp(dir=self.pause_file.parent, prefix=".github-pause-")
        with os.fdopen(fd, "w") as f:
            json.dump({"until": self._paused_until.isoformat()}, f)
        os.replace(tmp, self.pause_file)

    @staticmethod
    def _info(repo: Repository) -> RepoInfo:
        return RepoInfo(
            id=repo.id,
            name=repo.name,
            full_name=repo.full_name,
            html_url=repo.html_url,
            clone_url=repo.clone_url,
            default_branch=repo.default_branch,
        )

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        """Map PyGithub and requests exceptions to ForgeError / ForgeUnavailable, scrubbing the token.

        The body runs under GitHub's circuit breaker, which sees the untranslated exceptions (see
        :func:`~infra.forge.github_http.unavailable`) and, while open, refuses with ``ForgeUnavailable`` at once.
        """
        try:
            with self._breakers.guard("github", "GitHub", counts=_counted, refuse=_refused):
                yield
        except ForgeError:
            raise
        except GithubException as e:
            raise self._refusal(action, e) from e
        except requests.exceptions.RequestException as e:  # RetryError, ConnectionError, Timeout
            raise ForgeUnavailable(
                self._scrub(f"{action}: GitHub unavailable at {self.base_url} ({type(e).__name__}: {e})")
            ) from e
        except RuntimeError as e:  # PyGithub refuses a 301 to another scheme or host with a bare RuntimeError
            if not cross_origin_redirect(e):
                raise
            raise ForgeError(
                self._scrub(
                    f"{action}: GitHub redirected to another host or scheme, which is not followed ({e}); "
                    "check ORCH_GITHUB_BASE_URL"
                )
            ) from e

    def _refusal(self, action: str, e: GithubException) -> ForgeError:
        detail = self._scrub(f"{e.status} {_detail(e)}".strip())
        if e.status == 401:
            return ForgeError(
                f"{action}: GitHub rejected the token ({detail}); check ORCH_GITHUB_TOKEN is valid and not expired"
            )
        if e.status == 403:
            sso = sso_url(CaseInsensitiveDict(e.headers or {}))
            if sso:
                return ForgeError(f"{action}: forbidden ({detail}); authorize the token for SAML SSO at {sso}")
            return ForgeError(
                f"{action}: forbidden ({detail}); check ORCH_GITHUB_TOKEN has the 'repo' scope "
                f"(fine-grained: Administration write) and access to ORCH_GITHUB_ORG={self.org}"
            )
        if e.status == 451:
            return ForgeError(f"{action}: GitHub blocks access for legal reasons ({detail})")
        if e.status == 429 or e.status >= 500:
            return ForgeUnavailable(f"{action}: GitHub answered {detail}")
        return ForgeError(f"{action}: GitHub answered {detail}")

    def _scrub(self, text: str) -> str:
        return self.git_auth().redact(text)


def _counted(exc: BaseException) -> bool:
    """Whether a failure counts against GitHub's breaker: unavailability, or a rate-limit pause."""
    return isinstance(exc, ForgeRateLimited) or unavailable(exc)


def _refused(exc: ServiceUnavailable) -> ForgeUnavailable:
    return ForgeUnavailable(str(exc))


def _detail(e: GithubException) -> str:
    """GitHub's ``message`` (with a 451's block) plus the ``errors[].message`` of a 422, from the JSON error body."""
    data = e.data if isinstance(e.data, dict) else {}
    parts = [error_message(data)]
    parts += [str(err.get("message", err)) if isinstance(err, dict) else str(err) for err in data.get("errors", [])]
    return "; ".join(p for p in parts if p)


def git_origin(api_base_url: str) -> str:
    """The origin git talks to for repositories of the API at ``api_base_url``, with a trailing slash.

    ``https://api.github.com`` serves repositories at ``https://github.com/``; GitHub Enterprise
    (``https://HOST/api/v3``) and test servers serve git on the API's own origin.
    """
    parts = urlsplit(api_base_url)
    host = "github.com" if parts.netloc == "api.github.com" else parts.netloc
    return f"{parts.scheme}://{host}/"
