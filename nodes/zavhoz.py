"""Zavhoz nodes: check the project's secrets, pick a ready server, lease a port, hand back ``server_info``."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.state import ServerInfo, ZavhozState
from models.tables import Server
from services import leases
from services.secrets import flag_missing_secrets


async def check_secrets(state: ZavhozState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Compare the secrets the project requires with those stored: names only, never a value.

    Missing ones set the project's ``setup_required`` flag; the deploy approval lists them with the command that
    sets each, and the deploy's pre-flight check refuses until they are stored (Engineering's design, which
    declares them, may not exist yet when this runs: the pre-flight check is the one that holds).
    """
    missing = await flag_missing_secrets(runtime.context.db, state["project_id"])
    return {"missing_secrets": missing}


async def find_server(state: ZavhozState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Choose the server: the one already leased to the project, else the first ready one with a free port."""
    db = runtime.context.db
    held = await leases.existing_lease(db, state["project_id"])
    if held is not None:
        return {"server_id": held.server_id}
    server = await leases.find_ready_server(db)
    if server is None:
        return {"server_id": None, "server_info": None, "zavhoz_status": "waiting_for_resources"}
    return {"server_id": server.id}


async def lease_port(state: ZavhozState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Lease a port on the chosen server (idempotent per project) and return the server info."""
    db = runtime.context.db
    async with db.session() as s:
        server = await s.get(Server, state["server_id"])
    assert server is not None and server.id is not None
    port = await leases.lease_port(db, project_id=state["project_id"], server=server)
    if port is None:
        return {"server_info": None, "zavhoz_status": "waiting_for_resources"}
    info = ServerInfo(
        server_id=server.id,
        name=server.name,
        address=server.address,
        connection=server.connection,
        ssh_port=server.ssh_port,
        ssh_user=server.ssh_user,
        port=port,
    )
    return {"server_info": info, "zavhoz_status": "done"}
