"""How this project speaks to GitHub's REST API: request headers, the PyGithub client, reading special answers.

The headers every request carries, the PyGithub client, and how rate-limit, SSO and redirect answers are read.
Pure functions and one client factory; no request is made here.

Followed:

* media type and API version:
  https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api#media-types and
  https://docs.github.com/en/rest/about-the-rest-api/api-versions
* User-Agent: https://docs.github.com/en/rest/using-the-rest-api/getting-started-with-the-rest-api#user-agent
* rate limits: https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
* redirects: https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#follow-redirects
* SAML SSO (the ``X-GitHub-SSO`` header): https://docs.github.com/en/enterprise-cloud@latest/authentication/
  authenticating-with-saml-single-sign-on/authorizing-a-personal-access-token-for-use-with-saml-single-sign-on
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib import metadata
from typing import Any

import requests
from github import Auth, Github, GithubException
from requests.structures import CaseInsensitiveDict
from urllib3.util.retry import Retry

from core.breakers import http_unavailable

ACCEPT = "application/vnd.github+json"
API_VERSION = "2022-11-28"


def _version() -> str:
    try:
        return metadata.version("orchestrator")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0"


USER_AGENT = f"orchestrator/{_version()} (LangGraph multi-agent orchestrator)"
"""GitHub asks for a User-Agent naming the application; every request of this project sends this one."""
RATE_LIMIT_WAIT_S = 60.0
"""The wait after a rate-limit answer that says neither when (GitHub: wait at least a minute)."""
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})
"""What urllib3 may send again after a 5xx or a lost answer. Never POST: a POST whose answer was lost may have
taken effect (a repository created), and only its caller can tell."""


def headers() -> dict[str, str]:
    """The headers every request to the REST API carries besides ``Authorization``."""
    return {"Accept": ACCEPT, "X-GitHub-Api-Version": API_VERSION, "User-Agent": USER_AGENT}


class _Token(Auth.Token):
    """A token that also sets GitHub's media type on each request PyGithub sends.

    PyGithub calls :meth:`authentication` for every request, just before sending it; on its own it sends
    ``Accept: */*`` (or an obsolete preview type on some endpoints, such as creating a repository).
    """

    def authentication(self, headers: dict[str, Any]) -> None:
        super().authentication(headers)
        headers["Accept"] = ACCEPT


def retry_policy(retries: int, backoff_s: float) -> Retry:
    """urllib3 retries for PyGithub: 5xx and connection errors of idempotent methods only, never a ``Retry-After``.

    A 403/429 comes back to the caller as a ``GithubException`` (see :func:`rate_limit_wait`), and the last 5xx as
    a response (``raise_on_status=False``) that PyGithub raises as a ``GithubException``, not a ``RetryError``.

    Args:
        retries: retries after the first request (``retries + 1`` requests at most).
        backoff_s: urllib3's backoff factor: ``backoff_s * 2**n`` seconds between retries.
    """
    return Retry(
        total=retries,
        backoff_factor=backoff_s,
        status_forcelist=range(500, 600),
        allowed_methods=IDEMPOTENT_METHODS,
        respect_retry_after_header=False,
        raise_on_status=False,
    )


def pygithub(base_url: str, token: str, *, retries: int, backoff_s: float, timeout_s: float) -> Github:
    """A PyGithub client that sends :func:`headers` on every request and retries by :func:`retry_policy`.

    Args:
        base_url: the REST API root (``https://api.github.com``, ``https://HOST/api/v3``).
        token: the token, sent as ``Authorization: token ...``.
        retries: see :func:`retry_policy`.
        backoff_s: see :func:`retry_policy`.
        timeout_s: connect and read timeout of each request, in seconds (rounded up: PyGithub wants an int).
    """
    return Github(
        base_url=base_url.rstrip("/"),
        auth=_Token(token),
        retry=retry_policy(retries, backoff_s),
        seconds_between_requests=None,
        timeout=max(1, math.ceil(timeout_s)),
        user_agent=USER_AGENT,
        api_version=API_VERSION,
    )


def rate_limit_wait(status: int, headers: Any, message: str = "", now: datetime | None = None) -> float | None:
    """Seconds until GitHub allows the next request after a rate-limit answer, or None if this is not one.

    A 403/429 with ``Retry-After`` (seconds or an HTTP date) waits that long; one with ``X-RateLimit-Remaining: 0``
    waits until ``X-RateLimit-Reset`` (epoch seconds); a 429, or a 403 whose message says "rate limit", without
    either waits :data:`RATE_LIMIT_WAIT_S`. At least one second; no upper bound (the caller caps it).

    Args:
        status: the HTTP status.
        headers: a case-insensitive mapping (httpx or requests headers).
        message: GitHub's ``message`` from the body.
        now: the current time (UTC), for tests.
    """
    if status not in (403, 429):
        return None
    now = now or datetime.now(UTC)
    wait: float | None = None
    if headers.get("retry-after"):
        wait = _seconds(str(headers["retry-after"]), now)
    elif headers.get("x-ratelimit-remaining") == "0" and str(headers.get("x-ratelimit-reset", "")).isdigit():
        wait = int(headers["x-ratelimit-reset"]) - now.timestamp()
    elif status == 429 or "rate limit" in message.lower():
        wait = RATE_LIMIT_WAIT_S
    return None if wait is None else max(wait, 1.0)


def exhausted_wait(headers: Any, now: datetime | None = None) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` when a good answer used the last request of the primary limit, else None.

    ``X-RateLimit-Remaining: 0`` means the next request would be refused: wait instead of spending it.
    """
    reset = str(headers.get("x-ratelimit-reset", ""))
    if headers.get("x-ratelimit-remaining") != "0" or not reset.isdigit():
        return None
    return max(int(reset) - (now or datetime.now(UTC)).timestamp(), 1.0)


def _seconds(retry_after: str, now: datetime) -> float:
    if retry_after.strip().isdigit():
        return float(retry_after)
    try:  # an HTTP date
        return (parsedate_to_datetime(retry_after) - now).total_seconds()
    except (TypeError, ValueError):
        return RATE_LIMIT_WAIT_S


_SSO_URL = re.compile(r"\burl=(\S+)")


def sso_url(headers: Any) -> str | None:
    """The URL where a person authorizes the token for the organization's SAML SSO, from ``X-GitHub-SSO``.

    GitHub sends ``X-GitHub-SSO: required; url=https://github.com/orgs/ORG/sso?authorization_request=...`` on a
    403 caused by SSO enforcement (``partial-results; organizations=...`` on listings names no URL).
    """
    value = str(headers.get("x-github-sso", "") or "")
    match = _SSO_URL.search(value) if value.lower().startswith("required") else None
    return match.group(1).rstrip(";,") if match else None


def error_message(data: Any) -> str:
    """GitHub's ``message`` from an error body (``""`` when there is none), with a 451's block reason and URL."""
    if not isinstance(data, dict):
        return ""
    message = str(data.get("message", "") or "")
    block = data.get("block")
    if isinstance(block, dict):
        details = ", ".join(f"{k}: {block[k]}" for k in ("reason", "html_url") if block.get(k))
        message = f"{message} ({details})" if details else message
    return message


def unavailable(exc: BaseException) -> bool:
    """Whether a failed GitHub request counts against GitHub's circuit breaker (:mod:`core.breakers`).

    Counted: no connection or no answer in time (a ``requests`` exception, urllib3's retries exhausted), a 5xx, a
    429 or a rate-limit 403. Not counted: every other answer (401, 403, 404, 422...), which GitHub gave.
    """
    if isinstance(exc, requests.exceptions.RequestException):
        return True
    if isinstance(exc, GithubException):
        status = int(exc.status or 0)
        data = exc.data if isinstance(exc.data, dict) else {}
        limited = rate_limit_wait(status, CaseInsensitiveDict(exc.headers or {}), error_message(data)) is not None
        return http_unavailable(status) or limited
    return False


def cross_origin_redirect(exc: RuntimeError) -> bool:
    """Whether ``exc`` is PyGithub's refusal of a 301 to another scheme or host (it raises a bare RuntimeError)."""
    text = str(exc)
    return "redirected" in text and ("Github server" in text or "server redirected to" in text)
