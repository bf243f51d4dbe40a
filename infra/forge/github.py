"""GitHub as the forge: private repositories in one organization, through PyGithub (REST API v3).

Endpoints followed:
https://docs.github.com/en/rest/repos/repos#get-a-repository,
https://docs.github.com/en/rest/repos/repos#create-an-organization-repository and
https://docs.github.com/en/rest/orgs/orgs#get-an-organization.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import requests
from github import Auth, Github, GithubException, GithubRetry, RateLimitExceededException
from github.Repository import Repository

from infra.forge.base import ForgeError, ForgeUnavailable, RepoInfo
from infra.git import GitAuth
from models.names import validate_slug


class GitHubForge:
    """Repositories in the GitHub organization ``org``, reached with a token (classic PAT, fine-grained or app).

    Transient failures (5xx, connection errors, timeouts, rate limits) are retried by PyGithub's ``GithubRetry``
    with exponential backoff and surface as ``ForgeUnavailable``; refusals surface as ``ForgeError``. The token is
    never part of an exception message or of ``repr``.
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
    ) -> None:
        """Build the client; no request is made until the first call.

        Args:
            token: GitHub token (ORCH_GITHUB_TOKEN) allowed to create repositories in ``org``.
            org: the organization (ORCH_GITHUB_ORG) that owns the repositories.
            base_url: REST API root; ``https://HOST/api/v3`` for GitHub Enterprise Server.
            retries: retries after a 5xx, connection error or rate limit (``retries + 1`` requests at most).
            backoff_s: urllib3 backoff factor: sleeps ``backoff_s * 2**n`` seconds between retries (0 in tests).
            timeout_s: connect and read timeout of each request, in seconds.

        Raises:
            ForgeError: the token or the organization is empty.
        """
        if not token:
            raise ForgeError("ORCH_GITHUB_TOKEN is empty: a GitHub token is required for the github forge")
        if not org:
            raise ForgeError("ORCH_GITHUB_ORG is empty: name the organization that owns the repositories")
        self.org = org
        self.base_url = base_url.rstrip("/")
        self._token = token
        retry = GithubRetry(total=retries, backoff_factor=backoff_s, max_rate_limit_wait=60)
        self._gh = Github(
            base_url=self.base_url,
            auth=Auth.Token(token),
            retry=retry,
            seconds_between_requests=None,
            timeout=max(1, math.ceil(timeout_s)),  # PyGithub asserts an int number of seconds
        )

    def __repr__(self) -> str:
        return f"GitHubForge(org={self.org!r}, base_url={self.base_url!r})"

    def get_repo(self, name: str) -> RepoInfo | None:
        """Return ``org/name``, or None if GitHub answers 404 (also what a token that cannot see it gets).

        See https://docs.github.com/en/rest/repos/repos#get-a-repository.

        Raises:
            InvalidProjectName: ``name`` is not a safe slug (before any request).
            ForgeError: bad credentials or forbidden.
            ForgeUnavailable: GitHub unreachable, 5xx or rate limited after retries.
        """
        validate_slug(name)
        with self._translate(f"get repository {self.org}/{name}"):
            try:
                return self._info(self._gh.get_repo(f"{self.org}/{name}"))
            except GithubException as e:
                if e.status == 404:
                    return None
                raise

    def create_repo(self, name: str, description: str) -> RepoInfo:
        """Create the private repository ``org/name`` with an initial commit (``auto_init``) on its default branch.

        See https://docs.github.com/en/rest/repos/repos#create-an-organization-repository.

        Returns:
            The new repository, with GitHub's id and URLs.

        Raises:
            InvalidProjectName: ``name`` is not a safe slug (before any request).
            ForgeError: the repository exists (422), the organization is unknown or invisible to the token (404),
                bad credentials (401) or missing permission (403).
            ForgeUnavailable: GitHub unreachable, 5xx or rate limited after retries.
        """
        validate_slug(name)
        with self._translate(f"create repository {self.org}/{name}"):
            try:
                org = self._gh.get_organization(self.org)
                repo = org.create_repo(name, description=description, private=True, auto_init=True)
            except GithubException as e:
                if e.status == 404:
                    raise ForgeError(
                        f"organization {self.org!r} not found or token cannot see it "
                        "(check ORCH_GITHUB_ORG and the token's organization access)"
                    ) from e
                if e.status == 422 and "already exists" in _detail(e):
                    raise ForgeError(f"repository exists: {self.org}/{name}") from e
                raise
        return self._info(repo)

    def archive_repo(self, name: str) -> None:
        """Archive ``org/name`` (read-only, kept): ``PATCH /repos/{owner}/{repo}`` with ``archived: true``.

        See https://docs.github.com/en/rest/repos/repos#update-a-repository. Archiving an archived repository is
        a no-op for GitHub.

        Raises:
            InvalidProjectName: ``name`` is not a safe slug. ForgeError: no such repository, bad credentials or
                missing permission. ForgeUnavailable: GitHub unreachable, 5xx or rate limited after retries.
        """
        validate_slug(name)
        with self._translate(f"archive repository {self.org}/{name}"):
            try:
                self._gh.get_repo(f"{self.org}/{name}").edit(archived=True)
            except GithubException as e:
                if e.status == 404:
                    raise ForgeError(f"no repository {self.org}/{name} to archive") from e
                raise

    def git_auth(self) -> GitAuth:
        """Return the credentials that authenticate https clone/fetch/push to GitHub.

        The header carries HTTP Basic ``x-access-token:<token>``, which GitHub accepts for every token type. It
        reaches git through the environment only (never argv, ``.git/config`` nor the remote URL), and both the
        raw token and its base64 form are redacted from git error messages.
        """
        basic = base64.b64encode(f"x-access-token:{self._token}".encode()).decode()
        return GitAuth(header=f"Authorization: Basic {basic}", secrets=(self._token,), url=git_origin(self.base_url))

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
        """Map PyGithub and requests exceptions to ForgeError / ForgeUnavailable, scrubbing the token."""
        try:
            yield
        except RateLimitExceededException as e:  # includes RateLimitExceededExceedsMaxWait
            raise ForgeUnavailable(self._scrub(f"{action}: GitHub rate limit exceeded ({_detail(e)})")) from e
        except GithubException as e:
            detail = self._scrub(f"{e.status} {_detail(e)}".strip())
            if e.status == 401:
                raise ForgeError(
                    f"{action}: GitHub rejected the token ({detail}); check ORCH_GITHUB_TOKEN is valid and not expired"
                ) from e
            if e.status == 403:
                raise ForgeError(
                    f"{action}: forbidden ({detail}); check ORCH_GITHUB_TOKEN has the 'repo' scope "
                    "(fine-grained: Administration write) and access to "
                    f"ORCH_GITHUB_ORG={self.org}"
                ) from e
            if e.status == 429 or e.status >= 500:
                raise ForgeUnavailable(f"{action}: GitHub answered {detail}") from e
            raise ForgeError(f"{action}: GitHub answered {detail}") from e
        except requests.exceptions.RequestException as e:  # RetryError, ConnectionError, Timeout
            raise ForgeUnavailable(
                self._scrub(f"{action}: GitHub unavailable at {self.base_url} ({type(e).__name__}: {e})")
            ) from e

    def _scrub(self, text: str) -> str:
        return self.git_auth().redact(text)


def _detail(e: GithubException) -> str:
    """GitHub's ``message`` plus the ``errors[].message`` of a 422, from the JSON error body."""
    data = e.data if isinstance(e.data, dict) else {}
    parts = [str(data.get("message", ""))]
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
