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
client (:func:`infra.forge.github_http.pygithub`) gets a plain urllib3 ``Retry`` that retries only 5xx and
connection errors, a bounded number of times with exponential backoff, ignores ``Retry-After`` and hands every
403/429 back as a ``GithubException``, whose headers :func:`rate_limit_pause` turns into a stored pause. Nothing here
sleeps on a rate limit, and a listing stops (and pauses) at a page answered with ``X-RateLimit-Remaining: 0``.

Redirects (https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#follow-redirects):
the listing follows a 301/302/307/308 to the same scheme and host (a renamed organization), at most
:data:`MAX_REDIRECTS` in a row, and refuses any other with a clear error; PyGithub follows a same-host 301 itself
and raises a bare ``RuntimeError`` for another host, which becomes a ``refused`` confirmation.

Every request carries :func:`infra.forge.github_http.headers` (media type, API version, this project's User-Agent).
The token is sent in headers only; every message built here is scrubbed of it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import requests
from github import Auth, Github, GithubException
from pydantic import ValidationError
from requests.structures import CaseInsensitiveDict

from core.settings import Settings
from infra.forge.github_http import (
    cross_origin_redirect,
    error_message,
    exhausted_wait,
    headers,
    pygithub,
    rate_limit_wait,
    sso_url,
)
from models.tables import utcnow
from sync_workers.github_types import REPOS, Absent, Confirmation, Listing, Outcome, Page, RepoSummary

PER_PAGE = 100
MAX_PAUSE_S = 3600
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
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
    """An httpx client for the REST API: the token as PyGithub sends it, and :func:`infra.forge.github_http.headers`.

    It follows no redirect by itself: :func:`fetch_listing` decides which to follow.
    """
    auth = Auth.Token(token)
    sent = {"Authorization": f"{auth.token_type} {auth.token}", **headers()}
    return httpx.AsyncClient(headers=sent, timeout=timeout_s, follow_redirects=False)


async def fetch_listing(client: httpx.AsyncClient, first_url: str, pages: dict[str, Page]) -> Listing:
    """List the org's repositories page by page, conditionally; stop at the first failure.

    A page answered with ``X-RateLimit-Remaining: 0`` is kept, but the next one is not asked for: the listing
    stops there (incomplete, ``paused_until`` set). A redirect to the same scheme and host is followed; one to
    another is an ``error``.

    Args:
        client: an authenticated client (:func:`http_client`).
        first_url: the first page (:func:`listing_url`).
        pages: the pages stored by earlier passes, by URL: their ETag is sent as ``If-None-Match`` and a 304
            stands for their repositories.

    Returns:
        The listing; ``complete`` only if every page was answered 200 or 304.
    """
    listing, url = Listing(), first_url  # type: tuple[Listing, str | None]
    origin, hops = urlsplit(first_url)[:2], 0
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
        if response.status_code in REDIRECTS and response.headers.get("location"):
            target = urljoin(url, response.headers["location"])
            hops += 1
            if urlsplit(target)[:2] != origin or hops > MAX_REDIRECTS:
                why = "another scheme or host" if hops <= MAX_REDIRECTS else f"more than {MAX_REDIRECTS} redirects"
                listing.error = (
                    f"GitHub redirected {url} to {target} ({why}): not followed; check ORCH_GITHUB_BASE_URL "
                    "and ORCH_GITHUB_ORG"
                )
                return listing
            url = target
            continue
        hops = 0
        page = _read_page(response, known, listing)
        if page is None:
            return listing
        listing.repos.extend(page.repos)
        if listing.paused_until is not None and page.next_url is not None:
            return listing  # the rate limit is spent: the next page would be refused
        url = page.next_url
    listing.complete = True
    return listing


def _read_page(response: httpx.Response, known: Page | None, listing: Listing) -> Page | None:
    """The page ``response`` stands for, or None after recording why not in ``listing``."""
    url, status = str(response.request.url), response.status_code
    if status == 304 and known is not None:
        listing.not_modified += 1
        listing.paused_until = listing.paused_until or _exhausted_until(response.headers)
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
        sso = sso_url(response.headers)
        hint = f"authorize the token for SAML SSO at {sso}" if sso else REFUSAL_HINTS[status]
        listing.error = f"GitHub refused {url}: {status} {_message(response)}; {hint}"
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

    The wait is :func:`infra.forge.github_http.rate_limit_wait` (``Retry-After``, else ``X-RateLimit-Reset`` when
    ``X-RateLimit-Remaining`` is 0, else a minute for a 429 or a "rate limit" message), capped at an hour.

    Args:
        status: the HTTP status.
        headers: a case-insensitive mapping (httpx or requests headers).
        message: GitHub's ``message`` from the body.
    """
    now = utcnow()
    wait = rate_limit_wait(status, headers, message, now)
    return None if wait is None else now + timedelta(seconds=min(wait, MAX_PAUSE_S))


def _exhausted_until(headers: Any) -> datetime | None:
    """The reset time of a good answer that used the last request of the primary limit, else None.

    ``X-RateLimit-Remaining: 0`` on a 200 (or 304) means the next request gets a 403: pause until
    ``X-RateLimit-Reset`` instead of spending that request.
    """
    now = utcnow()
    wait = exhausted_wait(headers, now)
    return None if wait is None else now + timedelta(seconds=min(wait, MAX_PAUSE_S))


# ---- the confirmation by id (PyGithub) ---------------------------------------------------------------------------
def _github(settings: Settings, token: str, timeout_s: float, backoff_s: float) -> Github:
    """PyGithub for the confirmations: 5xx/connection retries with backoff, rate limits raised at once, a timeout."""
    return pygithub(
        settings.github_base_url, token, retries=settings.github_retries, backoff_s=backoff_s, timeout_s=timeout_s
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
    wait for the next pass), and so do the ``stop_after_gone``-th 404 (the caller's cap is exceeded: more
    requests would not change its decision) and a redirect to another host (every request would get it). A
    repository answered under an owner other than ``settings.github_org`` is ``transferred``; a 451, or a 403
    that is no rate limit, is ``blocked`` with GitHub's message and the ``X-GitHub-SSO`` URL when sent.

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
            answer = await asyncio.to_thread(_confirm_one, gh, item, settings.github_org or "")
            done.append(replace(answer, detail=scrub(answer.detail, token)))
            gone = sum(c.outcome == "gone" for c in done)
            if answer.outcome in ("rate_limited", "refused") or (
                stop_after_gone is not None and gone >= stop_after_gone
            ):
                break
    finally:
        gh.close()
    return done


def _confirm_one(gh: Github, item: Absent, org: str) -> Confirmation:
    def answer(outcome: Outcome, detail: str, **kw: Any) -> Confirmation:
        return Confirmation(item, outcome, detail, **kw)

    try:
        repo = gh.get_repo(item.repo_id)
    except GithubException as e:  # a 404 is UnknownObjectException, or a plain GithubException if oddly worded
        if e.status == 404:
            return answer("gone", "404", status=404)
        message = error_message(e.data)
        found = CaseInsensitiveDict(e.headers or {})
        pause = rate_limit_pause(e.status, found, message)
        if pause is not None:
            return answer("rate_limited", f"rate limited ({e.status})", paused_until=pause, status=e.status)
        if e.status in (403, 451):
            sso = sso_url(found)
            detail = f"{e.status} {message or 'Forbidden'}" + (f"; authorize the token for SSO at {sso}" if sso else "")
            return answer("blocked", detail, status=e.status)
        return answer("failed", f"GitHub answered {e.status}", status=e.status)
    except requests.exceptions.RequestException as e:  # RetryError after 5xx retries, ConnectionError, Timeout
        return answer("failed", f"GitHub unavailable ({type(e).__name__})")
    except RuntimeError as e:  # PyGithub's refusal of a 301 to another scheme or host
        if not cross_origin_redirect(e):
            raise
        return answer("refused", f"GitHub redirected to another host or scheme, not followed ({e})")
    try:
        summary = RepoSummary.model_validate(repo.raw_data)
    except ValidationError as e:
        return answer("failed", f"GitHub answered with an unexpected repository ({e.error_count()} errors)")
    if summary.full_name.split("/")[0].lower() != org.lower():
        return answer("transferred", f"transferred to {summary.full_name}", repo=summary, status=200)
    return answer("present", f"exists as {summary.full_name}", repo=summary, status=200)


def scrub(text: str, token: str) -> str:
    """``text`` with every occurrence of ``token`` replaced by ``***``."""
    return text.replace(token, "***") if token else text
