"""Tables, status enums and the allowed-transition table."""

from models.enums import DeploymentStatus, ProjectStatus, ServerStatus
from models.tables import (
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
