"""The repository forge interface: a local forge of bare git repos, or GitHub.

Methods are synchronous (PyGithub and git are); async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from infra.git import GitAuth


@dataclass(frozen=True)
class RepoInfo:
    """A repository as the forge knows it. ``id`` is the forge's immutable numeric id (GitHub's repo id)."""

    id: int
    name: str
    full_name: str
    html_url: str
    clone_url: str
    default_branch: str


class ForgeError(RuntimeError):
    """The forge refused the request (bad credentials, unknown org, invalid name): retrying will not help."""


class ForgeUnavailable(ForgeError):
    """The forge could not be reached or answered 5xx after retries: a transient failure, retry later."""


class Forge(Protocol):
    """What the orchestrator needs from a place that hosts repositories."""

    kind: str

    def get_repo(self, name: str) -> RepoInfo | None:
        """Return the repository ``name`` in the forge's org, or None if it does not exist (404)."""
        ...

    def create_repo(self, name: str, description: str) -> RepoInfo:
        """Create ``name`` with an initial commit on its default branch; raise ForgeError if it exists."""
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
    """Return the repository ``name``, creating it if missing (idempotent across crashes and re-runs)."""
    existing = forge.get_repo(name)
    if existing is not None:
        return existing
    return forge.create_repo(name, description)
