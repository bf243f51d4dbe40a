"""Tables, status enums and the allowed-transition table."""

from models.cron_tables import CronJob  # noqa: F401  (registers the table)
from models.enums import AccessRole, DeploymentStatus, ProjectStatus, ServerStatus
from models.notification_tables import GithubDelivery, Webhook, WebhookDelivery  # noqa: F401
from models.tables import (
    ApiToken,
    Deployment,
    Event,
    Incident,
    LLMCall,
    PortLease,
    Project,
    Secret,
    Server,
    SyncCursor,
    ThreadRecord,
)
from models.time_tables import DomainEvent, InterruptDeadline, NodeRun, Run  # noqa: F401

__all__ = [
    "AccessRole",
    "ApiToken",
    "Deployment",
    "DeploymentStatus",
    "Event",
    "Incident",
    "LLMCall",
    "PortLease",
    "Project",
    "ProjectStatus",
    "Secret",
    "Server",
    "ServerStatus",
    "SyncCursor",
    "ThreadRecord",
]
