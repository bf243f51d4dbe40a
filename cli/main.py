"""``orchestrator``: chat with the PO, list threads, resume interrupts, inspect projects/servers, run the demo.

The commands live in :mod:`cli.conversation`, :mod:`cli.inventory`, :mod:`cli.secret_commands`, :mod:`cli.sync`,
:mod:`cli.audit_commands` and :mod:`cli.lifecycle_commands`; importing them registers them on :data:`cli.app.app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import (  # noqa: F401  (registers them)
    audit_commands,
    conversation,
    cron_commands,
    event_commands,
    inventory,
    lifecycle_commands,
    secret_commands,
    status_commands,
    sync,
    thread_commands,
    tokens,
    trace_commands,
    webhook_commands,
)
from cli.app import app, console
from cli.conversation import answer_hint

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["answer_hint", "app"]


@app.command()
def demo(
    ctx: typer.Context,
    keep_running: Annotated[bool, typer.Option(help="Leave the deployed service running.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the run in this dir (default: a fresh temporary one).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="A real litellm model instead of the recording (or set ORCH_MODEL).")
    ] = None,
) -> None:
    """The main job end to end on a recorded model: chat -> Zavhoz || Engineering -> approval -> Ansible deploy."""
    from cli.demo import run_demo

    code = run_demo(data_dir or ctx.obj.get("data_dir"), model or ctx.obj.get("model"), keep_running, console)
    raise typer.Exit(code)


@app.command()
def api(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Bind address (beyond loopback only once an admin token exists).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve the same runtime over HTTP (FastAPI): threads, messages (SSE), approvals, projects, servers, tokens.

    Every route but /healthz needs an API key (`orchestrator token create NAME --role ROLE`).
    """
    import asyncio
    import ipaddress

    from cli.app import err, load_settings

    settings = load_settings(ctx)
    settings.ensure_data_dir()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not asyncio.run(_admin_token_exists(settings)):
        err.print(
            f"error: refusing to listen on {host}: no admin token exists, so nobody could manage this "
            "API. Make one first: orchestrator token create admin --role admin",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        raise typer.Exit(2)
    from api.server import serve

    serve(settings, host=host, port=port)


async def _admin_token_exists(settings: Settings) -> bool:
    from core.db import Database
    from services.identities import has_admin_token

    db = Database(settings.db_url)
    try:
        await db.migrate()
        return await has_admin_token(db)
    finally:
        await db.dispose()


if __name__ == "__main__":
    app()
