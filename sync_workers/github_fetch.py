"""FETCH for github_sync: HTTP only, no database.

:func:`fetch_listing` lists ``GET /orgs/{org}/repos?per_page=100&type=all`` page by page, following
``Link: rel="next"``, and :func:`confirm_absent` asks ``GET /repositories/{id}`` for repositories a complete listing
left out.

Why two clients. The listing goes over httpx because it must be conditional: each page's ETag is kept in a
``SyncCursor`` (key = the page URL) and sent back as ``If-None-Match``, and a 304 (free of primary rate limit) is
served from the page's repositories stored in the cursor. PyGithub has no conditional-request support (PyGithub
issue #536) and its ``Requester`` is private API, so patching ETags into it would break on any upgrade. The
confirmation by id goes through PyGithub (same token, same ``base_url``): a handful of requests that gain nothing
from ETags and reuse its 404 mapping. PyGithub's default retry (10 immediate retries on 5xx, then a ``requests``
``RetryError`` that is not a ``GithubException``) never runs, and neither does ``GithubRetry``, which sleeps in the
request for a rate limit (up to its ``max_rate_limit_wait``, or ``Retry-After`` capped at ``retry_after_max``): the
client gets a plain urllib3 ``Retry`` that retries only 5xx and connection errors, a bounded number of times with
exponential backoff, ignores ``Retry-After`` and hands every 403/429 back as a ``GithubException``, whose headers
:func:`rate_limit_pause` turns into a stored pause. Nothing here sleeps on a rate limit.

The token is sent in headers only; every message built here is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests
from github import Auth, Github, GithubException
from pydantic import ValidationError
from requests.structures import CaseInsensitiveDict
from urllib3.util.retry import Retry

from core.settings import Settings
from models.tables import utcnow
from sync_workers.github_types import REPOS, Absent, Confirmation, Listing, Outcome, Page

PER_PAGE = 100
API_VERSION = "2022-11-28"
RATE_LIMIT_WAIT_S = 60
"""Pause after a rate-limit answer that says neither when (GitHub: wait at least a minute)."""
MAX_PAUSE_S = 3600
REFUSAL_HINTS = {
    401: "check ORCH_GITHUB_TOKEN is valid and not expired",
    403: "check the token's access to the organization",
    404: "check ORCH_GITHUB_ORG and the token's access to the organization",
}


# ---- the org listing (httpx, conditional) ------------------------------------------------------------------------
def listing_url(base_url: str, org: str) -> str:
    """The first page URL of the org listing; later pages come from the ``Link`` header."""
    return f"{base_url.rstrip('/')}/orgs/{org}/repos?per_page={PER_PAGE}&type=all"


def http_client(token: str, timeout_s: float) -> httpx.AsyncClient:
    """An httpx client for the REST API: the token as PyGithub sends it, GitHub's JSON media type and API version."""
    auth = Auth.Token(token)
    headers = {
        "Authorization": f"{auth.token_type} {auth.token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": API_VERSION,
        "User-Agent": "orchestrator-github-sync",
    }
    return httpx.AsyncClient(headers=headers, timeout=timeout_s)


async def fetch_listing(client: httpx.AsyncClient, first_url: str, pages: dict[str, Page]) -> Listing:
    """List the org's repositories page by page, conditionally; stop at the first failure.

    Args:
        client: an authenticated client (:func:`http_client`).
        first_url: the first page (:func:`listing_url`).
        pages: the pages stored by earlier passes, by URL: their ETag is sent as ``If-None-Match`` and a 304
            stands for their repositories.

    Returns:
        The listing; ``complete`` only if every page was answered 200 or 304.
    """
    listing, url = Listing(), first_url  # type: tuple[Listing, str | None]
    origin = urlsplit(first_url)[:2]
    while url is not None:
        if url in listing.visited or urlsplit(url)[:2] != origin:
            listing.error = f"refusing to follow the Link header to {url!r} (a loop or another host)"
            return listing
        listing.visited.append(url)
        known = pages.get(url)
        headers = {"If-None-Match": known.etag} if known and known.etag else {}
        try:
            response = await client.get(url, headers=headers)
        except httpx.TimeoutException as e:
            listing.failure = f"GitHub timed out on {url} ({type(e).__name__})"
            return listing
        except httpx.TransportError as e:
            listing.failure = f"GitHub unreachable at {url} ({type(e).__name__}: {e})"
            return listing
        listing.requests += 1
        page = _read_page(response, known, listing)
        if page is None:
            return listing
        listing.repos.extend(page.repos)
        url = page.next_url
    listing.complete = True
    return listing


def _read_page(response: httpx.Response, known: Page | None, listing: Listing) -> Page | None:
    """The page ``response`` stands for, or None after recording why not in ``listing``."""
    url, status = str(response.request.url), response.status_code
    if status == 304 and known is not None:
        listing.not_modified += 1
        return known
    if status == 200:
        try:
            repos = REPOS.validate_json(response.content)
        except ValidationError as e:
            listing.failure = f"GitHub answered {url} with an unexpected body ({e.error_count()} errors)"
            return None
        page = Page(response.headers.get("etag"), repos, response.links.get("next", {}).get("url"))
        listing.fresh[url] = page
        listing.paused_until = listing.paused_until or _exhausted_until(response.headers)
        return page
    pause = rate_limit_pause(response.status_code, response.headers, _message(response))
    if pause is not None:
        listing.paused_until = pause
        listing.failure = f"GitHub rate limit ({status}) on {url}"
    elif status >= 500 or status == 304:
        listing.failure = f"GitHub answered {status} on {url}"
    elif status in REFUSAL_HINTS:
        listing.error = f"GitHub refused {url}: {status} {_message(response)}; {REFUSAL_HINTS[status]}"
    else:
        listing.error = f"GitHub answered {status} on {url}: {_message(response)}"
    return None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("message", "")) if isinstance(body, dict) else ""


# ---- rate limits -------------------------------------------------------------------------------------------------
def rate_limit_pause(status: int, headers: Any, message: str = "") -> datetime | None:
    """When GitHub allows the next request after a rate-limit answer, or None if this is not one.

    A 403/429 with ``Retry-After`` (secondary limit) pauses that many seconds; one with
    ``X-RateLimit-Remaining: 0`` (primary limit) pauses until ``X-RateLimit-Reset`` (epoch seconds); one whose
    message says "rate limit" without either pauses a minute. Pauses are capped at an hour.

    Args:
        status: the HTTP status.
        headers: a case-insensitive mapping (httpx or requests headers).
        message: GitHub's ``message`` from the body.
    """
    if status not in (403, 429):
        return None
    now = utcnow()
    wait: float | None = None
    if headers.get("retry-after"):
        wait = _seconds(headers["retry-after"], now)
    elif headers.get("x-ratelimit-remaining") == "0" and str(headers.get("x-ratelimit-reset", "")).isdigit():
        wait = int(headers["x-ratelimit-reset"]) - now.timestamp()
    elif "rate limit" in message.lower():
        wait = RATE_LIMIT_WAIT_S
    if wait is None:
        return None
    return now + timedelta(seconds=min(max(wait, 1.0), MAX_PAUSE_S))


def _exhausted_until(headers: Any) -> datetime | None:
    """The reset time of a good answer that used the last request of the primary limit, else None.

    ``X-RateLimit-Remaining: 0`` on a 200 means the next request gets a 403: pause until ``X-RateLimit-Reset``
    instead of spending that request.
    """
    reset = str(headers.get("x-ratelimit-reset", ""))
    if headers.get("x-ratelimit-remaining") != "0" or not reset.isdigit():
        return None
    now = utcnow()
    return now + timedelta(seconds=min(max(int(reset) - now.timestamp(), 1.0), MAX_PAUSE_S))


def _seconds(retry_after: str, now: datetime) -> float:
    if retry_after.strip().isdigit():
        return float(retry_after)
    try:  # an HTTP date
        return (parsedate_to_datetime(retry_after) - now).total_seconds()
    except (TypeError, ValueError):
        return RATE_LIMIT_WAIT_S


# ---- the confirmation by id (PyGithub) ---------------------------------------------------------------------------
def _github(settings: Settings, token: str, timeout_s: float, backoff_s: float) -> Github:
    """PyGithub for the confirmations: 5xx/connection retries with backoff, rate limits raised at once, a timeout.

    ``raise_on_status=False`` makes the last 5xx come back as a response (PyGithub raises ``GithubException`` for
    it) instead of urllib3's ``MaxRetryError``. PyGithub asserts that ``timeout`` is an int (seconds): round up.
    """
    retry = Retry(
        total=settings.github_retries,
        backoff_factor=backoff_s,
        status_forcelist=range(500, 600),
        allowed_methods={"GET"},
        respect_retry_after_header=False,
        raise_on_status=False,
    )
    return Github(
        base_url=settings.github_base_url.rstrip("/"),
        auth=Auth.Token(token),
        retry=retry,
        seconds_between_requests=None,
        timeout=max(1, math.ceil(timeout_s)),
    )


async def confirm_absent(
    settings: Settings,
    token: str,
    absent: list[Absent],
    *,
    stop_after_gone: int | None = None,
    timeout_s: float,
    backoff_s: float,
) -> list[Confirmation]:
    """Ask GitHub for each absent repository by id (``GET /repositories/{id}``), one after the other.

    PyGithub is synchronous: each request runs in a thread. A rate-limit answer stops the confirmations (the rest
    wait for the next pass), and so does the ``stop_after_gone``-th 404 (the caller's cap is exceeded: more
    requests would not change its decision).

    Args:
        settings: the token's base URL and retries.
        token: the GitHub token.
        absent: the repositories to ask about, in order.
        stop_after_gone: stop after this many 404s (None: ask about every one).
        timeout_s: connect/read timeout of each request, in seconds.
        backoff_s: PyGithub's retry backoff factor (0 in tests).

    Returns:
        One confirmation per repository asked about (fewer than ``absent`` after a stop).
    """
    if not absent:
        return []
    gh = _github(settings, token, timeout_s, backoff_s)
    done: list[Confirmation] = []
    try:
        for item in absent:
            outcome, detail, pause = await asyncio.to_thread(_confirm_one, gh, item.repo_id)
            done.append(Confirmation(item, outcome, scrub(detail, token), pause))
            gone = sum(c.outcome == "gone" for c in done)
            if outcome == "rate_limited" or (stop_after_gone is not None and gone >= stop_after_gone):
                break
    finally:
        gh.close()
    return done


def _confirm_one(gh: Github, repo_id: int) -> tuple[Outcome, str, datetime | None]:
    try:
        repo = gh.get_repo(repo_id)
    except GithubException as e:  # a 404 is UnknownObjectException, or a plain GithubException if oddly worded
        if e.status == 404:
            return "gone", "404", None
        data = e.data if isinstance(e.data, dict) else {}
        pause = rate_limit_pause(e.status, CaseInsensitiveDict(e.headers or {}), str(data.get("message", "")))
        if pause is not None:
            return "rate_limited", f"rate limited ({e.status})", pause
        return "failed", f"GitHub answered {e.status}", None
    except requests.exceptions.RequestException as e:  # RetryError after 5xx retries, ConnectionError, Timeout
        return "failed", f"GitHub unavailable ({type(e).__name__})", None
    return "present", f"exists as {repo.full_name}", None


def scrub(text: str, token: str) -> str:
    """``text`` with every occurrence of ``token`` replaced by ``***``."""
    return text.replace(token, "***") if token else text
