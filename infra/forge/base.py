"""The repository forge interface: a local forge of bare git repos, or GitHub.

Methods are synchronous (PyGithub and git are); async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from infra.git import GitAuth


@dataclass(frozen=True)
class RepoInfo:
    """A repository as the forge knows it.

    ``id`` is the forge's immutable numeric id, namespaced by forge: GitHub's repository ids are positive, the local
    forge's negative, so an id recorded on one forge can never be confirmed (or mistaken for another repository) on
    the other. ``moved_from`` is the full name that was asked for when the forge answered with this repository
    under another name of the same owner (GitHub's 301 for a renamed repository); None otherwise.
    """

    id: int
    name: str
    full_name: str
    html_url: str
    clone_url: str
    default_branch: str
    moved_from: str | None = None


class ForgeError(RuntimeError):
    """The forge refused the request (bad credentials, unknown org, invalid name): retrying will not help."""


class ForgeUnavailable(ForgeError):
    """The forge could not be reached or answered 5xx after retries: a transient failure, retry later."""


class ForgeRateLimited(ForgeUnavailable):
    """The forge asked for a pause longer than a request may wait: no request is made before ``until`` (UTC)."""

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message)
        self.until = until


class RepoTransferred(ForgeError):
    """The repository asked for now belongs to another owner (GitHub redirected to it): it left the organization.

    Attributes:
        asked: the full name asked for (``org/name``).
        info: the repository as the forge answered it, under its new owner.
    """

    def __init__(self, asked: str, info: RepoInfo) -> None:
        super().__init__(
            f"repository {asked} was transferred out of the organization: it is now {info.full_name} (id {info.id})"
        )
        self.asked = asked
        self.info = info


class Forge(Protocol):
    """What the orchestrator needs from a place that hosts repositories."""

    kind: str

    def get_repo(self, name: str) -> RepoInfo | None:
        """Return the repository ``name`` in the forge's org, or None if it does not exist (404).

        A repository renamed away from ``name`` comes back under its new name with ``moved_from`` set.

        Raises:
            RepoTransferred: the repository now belongs to another owner.
        """
        ...

    def create_repo(self, name: str, description: str) -> RepoInfo:
        """Create ``name`` with an initial commit on its default branch; raise ForgeError if it exists.

        ``description`` is sent as :func:`clean_description` makes it.
        """
        ...

    def archive_repo(self, name: str) -> None:
        """Make ``name`` read-only, kept with its history (GitHub's archive); idempotent.

        Raises:
            ForgeError: no such repository, or the forge refused.
        """
        ...

    def git_auth(self) -> GitAuth:
        """Credentials for clone/fetch/push of this forge's repositories (``NO_AUTH`` if none are needed).

        They reach git only through its environment (see :class:`infra.git.GitAuth`): never argv, never disk.
        """
        ...


def ensure_repo(forge: Forge, name: str, description: str) -> RepoInfo:
    """Return the repository ``name``, creating it if missing (idempotent across crashes and re-runs).

    Only a repository that holds exactly that name in the forge's org counts as existing. An answer under another
    name (a repository renamed away from ``name``) or another owner (transferred out of the org) means the name is
    free: GitHub lets a new repository take it, which ends the old redirect. See
    https://docs.github.com/en/repositories/creating-and-managing-repositories/renaming-a-repository.

    Raises:
        InvalidProjectName: ``name`` is not a safe slug. ForgeError / ForgeUnavailable: as the forge's calls.
    """
    try:
        existing = forge.get_repo(name)
    except RepoTransferred:
        existing = None
    if existing is not None and existing.moved_from is None:
        return existing
    return forge.create_repo(name, description)


DESCRIPTION_MAX = 350
"""The longest repository description GitHub takes, in characters."""
_SPACES = re.compile(r"\s+")


def clean_description(text: str, limit: int = DESCRIPTION_MAX) -> str:
    """One line of at most ``limit`` characters that GitHub accepts as a repository description.

    GitHub refuses a description holding control characters (422 "description control characters are not
    allowed"), so a model's multi-line text would fail the create on every retry. Every run of whitespace
    (newlines and tabs included) becomes one space, other control and format characters (Unicode categories Cc,
    Cf, Cs, Co, Cn) are dropped, and a text over the limit is cut at a word boundary with an ellipsis.

    Args:
        text: any text (a model's summary).
        limit: the longest result, in characters (at least 2).

    Returns:
        The cleaned text; ``""`` for a text with nothing printable.
    """
    spaced = _SPACES.sub(" ", text)
    kept = "".join(c for c in spaced if not unicodedata.category(c).startswith("C"))
    line = _SPACES.sub(" ", kept).strip()
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"
