"""Who reconciles one GitHub repository when ``POST /webhooks/github`` announces a change to it.

The code that does it is the sync's (``sync_workers.github_repo.reconcile_repository``), which the API may not
import (the layers in pyproject.toml: ``api`` and ``sync_workers`` are independent). So the entry point that starts
the API, ``orchestrator api``, hands it in here: a callback from above, as the layering wants. Without one, a
delivery is recorded and the next github_sync pass reconciles the repository.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.db import Database
    from core.settings import Settings

RepositoryReconciler = Callable[["Settings", "Database", int], Awaitable[str]]
"""``(settings, db, repo_id) -> one-line summary``; reconciles GitHub repository ``repo_id`` now."""

_RECONCILER: list[RepositoryReconciler] = []


def use_repository_reconciler(reconciler: RepositoryReconciler) -> None:
    """Make ``reconciler`` the one ``POST /webhooks/github`` calls (replacing any earlier one)."""
    _RECONCILER[:] = [reconciler]


def repository_reconciler() -> RepositoryReconciler | None:
    """The reconciler in force, or None (then the next polling pass does the work)."""
    return _RECONCILER[0] if _RECONCILER else None
