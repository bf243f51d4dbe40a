"""Status enums of projects, servers and deployments (stored by value)."""

from __future__ import annotations

from enum import StrEnum


class ProjectStatus(StrEnum):
    """The project lifecycle of roadmap v2, plus ``discovered`` for repositories the sync finds by itself."""

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
