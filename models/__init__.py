"""Tables, status enums and the allowed-transition table."""

from models.enums import DeploymentStatus, ProjectStatus, ServerStatus
from models.tables import Deployment, Event, LLMCall, PortLease, Project, Server, ThreadRecord

__all__ = [
    "Deployment",
    "DeploymentStatus",
    "Event",
    "LLMCall",
    "PortLease",
    "Project",
    "ProjectStatus",
    "Server",
    "ServerStatus",
    "ThreadRecord",
]
