"""Run the deploy playbook for one commit of one project on one server (the DevOps node and recovery share it)."""

from __future__ import annotations

import sys

from core.ansible import PlaybookResult, inventory_for, run_playbook
from core.settings import Settings
from models.enums import ServerStatus
from models.tables import Project, Server

REMOTE_RELEASE_ROOT = "/srv/orchestrator"
REMOTE_PYTHON = "/usr/bin/python3"


def release_root(settings: Settings, server: Server) -> str:
    """Where releases live on ``server``: the data dir for this machine, /srv/orchestrator elsewhere."""
    return str(settings.data_dir.resolve() / "releases") if server.connection == "local" else REMOTE_RELEASE_ROOT


async def run_on_server(
    settings: Settings, server: Server, playbook: str, extravars: dict[str, object], timeout_s: float | None = None
) -> PlaybookResult:
    """Run ``playbook`` against ``server`` (its connection, address and SSH user), work files in the data dir."""
    return await run_playbook(
        playbook,
        inventory=inventory_for(
            name=server.name,
            address=server.address,
            connection=server.connection,
            ssh_port=server.ssh_port,
            ssh_user=server.ssh_user,
        ),
        extravars=extravars,
        work_root=settings.data_dir.resolve() / "ansible",
        timeout_s=timeout_s if timeout_s is not None else settings.deploy_timeout_s,
    )


async def run_deploy(
    settings: Settings, *, project: Project, server: Server, commit: str, port: int, entrypoint: str, health_path: str
) -> PlaybookResult:
    """Run playbooks/deploy.yml: fetch ``commit``, install, (re)start on ``port``, wait, check ``health_path``.

    Idempotent: the same commit already running on the same port is left alone (no second copy).
    """
    local = server.connection == "local"
    return await run_on_server(
        settings,
        server,
        "deploy.yml",
        {
            "project": project.name,
            "repo_url": project.clone_url,
            "commit": commit,
            "port": port,
            "entrypoint": entrypoint,
            "health_path": health_path,
            "release_root": release_root(settings, server),
            "service_python": sys.executable if local else REMOTE_PYTHON,
            "health_timeout": int(settings.health_timeout_s),
        },
    )


async def stop_service(settings: Settings, *, project: str, server: Server) -> PlaybookResult:
    """Run playbooks/stop.yml: stop the project's service on ``server`` if it runs (idempotent)."""
    return await run_on_server(
        settings, server, "stop.yml", {"project": project, "release_root": release_root(settings, server)}, 60
    )


def local_server() -> Server:
    """A Server row standing for this machine (connection ``local``), e.g. to stop what the demo deployed."""
    return Server(name="localhost", address="127.0.0.1", connection="local", status=ServerStatus.ready)
