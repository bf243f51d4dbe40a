"""Tables, status enums and the allowed-transition table."""

from models.cron_tables import CronJob  # noqa: F401  (registers the table)
from models.enums import AccessRole, DeploymentStatus, ProjectStatus, ServerStatus
from models.notification_tables import GithubDelivery, Webhook, WebhookDelivery  # noqa: F401
from models.time_tables import DomainEvent, InterruptDeadline  # noqa: F401
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
