"""What runs now: a project's live deployment and its health URL.

Light on purpose (SQLModel and the tables only): listings (``orchestrator projects``, the API's project routes)
read it without importing the deploy machinery of :mod:`services.deploys` (Ansible, SSH, git, the forge).
"""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.enums import DeploymentStatus
from models.tables import Deployment, Project, Server


async def live_deployment(session: AsyncSession, project_id: int) -> Deployment | None:
    """The project's newest succeeded deployment (what runs now, and who approved it), or None."""
    stmt = (
        select(Deployment)
        .where(Deployment.project_id == project_id, Deployment.status == DeploymentStatus.succeeded)
        .order_by(col(Deployment.id).desc())
        .limit(1)
    )
    return (await session.exec(stmt)).first()


def project_url(project: Project, server: Server | None, health_path: str = "/health") -> str | None:
    """The health URL of a deployed project, if it has a server and port (``127.0.0.1`` for a local server)."""
    if server is None or project.port is None:
        return None
    host = "127.0.0.1" if server.connection == "local" else server.address
    return f"http://{host}:{project.port}{health_path}"
