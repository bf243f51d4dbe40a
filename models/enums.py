"""Status enums of projects, servers and deployments (stored by value)."""

from __future__ import annotations

from enum import StrEnum


class ProjectStatus(StrEnum):
    """The project lifecycle of roadmap v2, plus ``discovered`` and ``cancelled``.

    ``discovered``: a repository the sync found by itself; ``cancelled``: work a person cancelled before anything of
    the project was deployed; ``stopped``, ``undeployed``, ``archived``: the end of its life (services/lifecycle.py).
    """

    discovered = "discovered"
    draft = "draft"
    estimated = "estimated"
    provisioning = "provisioning"
    initialized = "initialized"
    designing = "designing"
    designed = "designed"
    implementing = "implementing"
    implemented = "implemented"
    verifying = "verifying"
    verified = "verified"
    deploying = "deploying"
    active = "active"
    maintenance = "maintenance"
    cancelled = "cancelled"
    """Work on it was cancelled before anything was deployed: nothing runs, its port is released."""
    stopped = "stopped"
    """Its service was stopped on request; its release and port stay reserved for a start."""
    undeployed = "undeployed"
    """Its service was stopped and its port released on request; an update starts it again."""
    archived = "archived"
    """Deleted on request: kept on the record with its trail and repository, never worked on again."""
    missing = "missing"


class ServerStatus(StrEnum):
    """Server lifecycle: discovered -> provisioning -> ready <-> error."""

    discovered = "discovered"
    provisioning = "provisioning"
    ready = "ready"
    error = "error"


class DeploymentStatus(StrEnum):
    """A deployment's run state."""

    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    rolled_back = "rolled_back"
    """It failed its checks, was stopped, and the release live before it answers again."""


class AccessRole(StrEnum):
    """What an API key may do; each role includes every one before it (viewer < operator < approver < admin).

    viewer: read projects, servers, its own threads, incidents and the audit trail. operator: + start threads, post
    messages, continue its own runs. approver: + answer approvals and guidance, and see, on any thread. admin: +
    register servers, manage tokens.
    """

    viewer = "viewer"
    operator = "operator"
    approver = "approver"
    admin = "admin"

    @property
    def rank(self) -> int:
        """The role's place in the order, 0 for viewer."""
        return list(AccessRole).index(self)

    def includes(self, other: AccessRole) -> bool:
        """Whether this role may do everything ``other`` may."""
        return self.rank >= other.rank
