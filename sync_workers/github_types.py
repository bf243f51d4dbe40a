"""The data github_sync passes between FETCH and RECONCILE: plain values, no I/O.

FETCH is :mod:`sync_workers.github_fetch`; RECONCILE is :mod:`sync_workers.github_reconcile` and
:mod:`sync_workers.github_cursor`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, TypeAdapter

WORKER = "github_sync"
"""The worker's name, also the key of its own ``SyncCursor`` (pause, failure count, page URLs)."""


class RepoSummary(BaseModel):
    """The fields of a listed repository that reconciliation reads (also what a page's cursor stores)."""

    id: int
    name: str
    full_name: str
    html_url: str
    clone_url: str
    default_branch: str | None = None
    archived: bool = False
    description: str | None = None


REPOS = TypeAdapter(list[RepoSummary])
"""Validates a listing page's JSON (or a cursor's stored repositories) into :class:`RepoSummary` objects."""


@dataclass(frozen=True)
class Page:
    """One listing page as last answered 200: its ETag, its repositories and the URL of the next page."""

    etag: str | None
    repos: list[RepoSummary]
    next_url: str | None


@dataclass
class Listing:
    """What :func:`sync_workers.github_fetch.fetch_listing` brought back.

    Attributes:
        repos: every repository of the pages fetched, in listing order (complete only if ``complete``).
        fresh: pages answered 200, by URL, to store as cursors.
        visited: every page URL requested, in order.
        requests: HTTP requests answered (any status).
        not_modified: requests answered 304.
        complete: the last page was reached without failure.
        failure: a transient failure (connection, timeout, 5xx, rate limit), token-free.
        error: a refusal that retrying will not fix (401, unknown org), token-free.
        paused_until: when a rate-limit answer allows the next request.
    """

    repos: list[RepoSummary] = field(default_factory=list)
    fresh: dict[str, Page] = field(default_factory=dict)
    visited: list[str] = field(default_factory=list)
    complete: bool = False
    requests: int = 0
    not_modified: int = 0
    failure: str | None = None
    error: str | None = None
    paused_until: datetime | None = None


@dataclass(frozen=True)
class Absent:
    """A known project whose repository was not in a complete listing."""

    project_id: int
    project_name: str
    repo_id: int
    full_name: str


Outcome = Literal["gone", "present", "transferred", "blocked", "waiting", "failed", "refused", "rate_limited"]
"""``gone``: 404. ``present``: 200 in the org. ``transferred``: 200 under another owner. ``blocked``: 451, or a 403
that is no rate limit (SSO enforcement, missing scope). ``waiting``: not asked, an earlier ``blocked`` is backing
off. ``failed``: 5xx, timeout, unreachable (transient). ``refused``: a redirect to another host or scheme.
``rate_limited``: 403/429 rate limit."""


@dataclass(frozen=True)
class Confirmation:
    """The answer to ``GET /repositories/{id}`` for one :class:`Absent`: ``gone`` only on a 404.

    ``repo`` is the repository answered (``present`` and ``transferred``); ``detail`` carries GitHub's message (and
    the SSO authorization URL when GitHub sent one) for ``blocked``.
    """

    absent: Absent
    outcome: Outcome
    detail: str
    paused_until: datetime | None = None
    repo: RepoSummary | None = None
    status: int | None = None
