"""``projects``, ``servers`` and ``add-server``: what the database holds, and a machine entering it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from cli.app import app, console, err, run_with_db
from cli.render import error_line, literal

if TYPE_CHECKING:
    from core.db import Database


@app.command()
def projects(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Projects, their lifecycle status and budget (spent calls/limit and cost; `orchestrator budget P` for more)."""
    _table(ctx, "projects", as_json)


@app.command()
def servers(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Servers, their status and port ranges."""
    _table(ctx, "servers", as_json)


@app.command("add-server")
def add_server(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Inventory name, e.g. web-1.")],
    address: Annotated[str, typer.Option(help="IP address or DNS name.")],
    ssh_port: Annotated[int, typer.Option(help="SSH port.")] = 22,
    ssh_user: Annotated[str, typer.Option(help="SSH user (key auth; see ORCH_SSH_KEY_PATH).")] = "root",
    ports: Annotated[str, typer.Option(help="Port range lent to projects, START-END.")] = "8100-8199",
    provision: Annotated[
        bool, typer.Option(help="Run playbooks/provision.yml first (the sync's provisioner_trigger does).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Register a server: the next `orchestrator sync` pass checks it (or provisions it) and makes it ready."""
    from pydantic import ValidationError

    from services.identities import cli_identity
    from services.servers import ServerCreate, ServerExists
    from services.servers import add_server as register

    try:
        start, _, end = ports.partition("-")
        spec = ServerCreate(
            name=name,
            address=address,
            ssh_port=ssh_port,
            ssh_user=ssh_user,
            port_range_start=int(start),
            port_range_end=int(end or start),
            provision=provision,
        )
    except ValueError as exc:  # ValidationError is a ValueError; so is a port range that is not numbers
        problems = (
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'server'}: {e['msg']}" for e in exc.errors())
            if isinstance(exc, ValidationError)
            else f"--ports {ports!r} is not START-END"
        )
        err.print(error_line(problems), soft_wrap=True)
        raise typer.Exit(2) from exc

    async def body(db: Database) -> int:
        try:
            server = await register(db, spec, actor=cli_identity().name)
        except ServerExists as exc:
            err.print(error_line(exc), soft_wrap=True)
            return 2
        row = {"name": server.name, "address": server.address, "status": server.status.value, "id": server.id}
        if as_json:
            print(json.dumps(row))
        else:
            nxt = "provisions it" if provision else "checks it over SSH"
            console.print(
                literal(f"server {server.name} registered ({server.status.value}); the next sync pass {nxt}"),
                soft_wrap=True,
            )
        return 0

    run_with_db(ctx, body, existing=False)


def _table(ctx: typer.Context, what: str, as_json: bool) -> None:
    from rich.table import Table

    from cli.listing import budget_cell, project_rows, server_rows

    async def body(db: Database) -> int:
        rows = await (project_rows(db) if what == "projects" else server_rows(db))
        if as_json:
            print(json.dumps(rows, indent=2, default=str))
            return 0
        table = Table(*(rows[0].keys() if rows else ["(none)"]))
        for row in rows:
            cells = {**row, "budget": budget_cell(row["budget"])} if "budget" in row else row
            table.add_row(*(literal(v) for v in cells.values()))
        console.print(table)
        return 0

    run_with_db(ctx, body)
