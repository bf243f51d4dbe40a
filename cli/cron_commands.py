"""``cron add|list|pause|resume|delete``: messages posted to a project's own thread on a schedule.

The running sync service (``orchestrator sync``) fires them; see :mod:`services.crons` for the schedule syntax
(5 crontab fields, or 6 with seconds first; UTC).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.app import app, command_group, console, err, run_with_db

if TYPE_CHECKING:
    from core.db import Database
    from services.crons import CronView

crons = command_group(
    help="Scheduled messages to a project's thread, fired by `orchestrator sync` (UTC; 5 fields, or 6 with seconds).",
    no_args_is_help=True,
)
app.add_typer(crons, name="cron")


def cron_json(view: CronView) -> dict[str, Any]:
    """A cron as JSON: every :class:`services.crons.CronView` field, times as ISO 8601 UTC strings (or null)."""
    out = asdict(view)
    for key in ("next_fire_at", "last_fired_at"):
        out[key] = out[key].isoformat() if out[key] else None
    return out


def _refused(exc: Exception) -> int:
    err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
    return 2


def _show(view: CronView, verb: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(cron_json(view)))
        return
    nxt = view.next_fire_at.isoformat() if view.next_fire_at else "paused"
    console.print(f"cron {view.name} {verb}: {view.schedule!r} on {view.project}; next fire {nxt}", markup=False)


@crons.command("add")
def add(
    ctx: typer.Context,
    schedule: Annotated[
        str,
        typer.Argument(help="Crontab in UTC: '0 2 * * *' (minute hour day month weekday), or 6 fields, seconds first."),
    ],
    project: Annotated[str, typer.Option("--project", help="The project whose thread gets the message.")],
    message: Annotated[str, typer.Option("--message", help="What is posted to the thread, as if a person wrote it.")],
    name: Annotated[str | None, typer.Option(help="A slug naming the cron (default cron-<8 hex>).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Schedule a message to a project's own thread; `orchestrator sync` posts it at each fire time."""
    from services.crons import CronError, add_cron
    from services.identities import cli_identity

    async def body(db: Database) -> int:
        try:
            async with db.session() as s:
                view = await add_cron(
                    s, project=project, schedule=schedule, message=message, name=name, actor=cli_identity().name
                )
        except CronError as exc:
            return _refused(exc)
        _show(view, "added", as_json)
        return 0

    run_with_db(ctx, body)


@crons.command("list")
def list_(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option("--project", help="Only this project's crons.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Every cron with its next fire time (UTC) and the outcome of its last fire."""
    from rich.table import Table

    from services.crons import list_crons

    async def body(db: Database) -> int:
        async with db.session() as s:
            views = await list_crons(s, project=project)
        if as_json:
            print(json.dumps([cron_json(v) for v in views], indent=2))
            return 0
        if not views:
            console.print("no crons; add one: orchestrator cron add '0 2 * * *' --project P --message '...'")
            return 0
        table = Table("name", "project", "schedule", "next fire (UTC)", "fires", "last outcome", "message")
        for v in views:
            nxt = v.next_fire_at.strftime("%Y-%m-%d %H:%M:%S") if v.next_fire_at else "paused"
            table.add_row(
                v.name, v.project or "(gone)", v.schedule, nxt, str(v.fires), v.last_outcome or "", v.message[:60]
            )
        console.print(table, markup=False)  # names and messages as typed
        return 0

    run_with_db(ctx, body)


def _toggle(ctx: typer.Context, name: str, enabled: bool, as_json: bool) -> None:
    from services.crons import UnknownCron, set_enabled
    from services.identities import cli_identity

    async def body(db: Database) -> int:
        try:
            async with db.session() as s:
                view = await set_enabled(s, name=name, enabled=enabled, actor=cli_identity().name)
        except UnknownCron as exc:
            return _refused(exc)
        _show(view, "resumed" if enabled else "paused", as_json)
        return 0

    run_with_db(ctx, body)


@crons.command("pause")
def pause(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The cron's name (see `orchestrator cron list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Stop a cron from firing until it is resumed."""
    _toggle(ctx, name, False, as_json)


@crons.command("resume")
def resume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The cron's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Fire a paused cron again, from its next time after now (the paused times are not made up)."""
    _toggle(ctx, name, True, as_json)


@crons.command("delete")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The cron's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Delete a cron (its fires stay on the audit trail)."""
    from services.crons import UnknownCron, delete_cron
    from services.identities import cli_identity

    async def body(db: Database) -> int:
        try:
            async with db.session() as s:
                await delete_cron(s, name=name, actor=cli_identity().name)
        except UnknownCron as exc:
            return _refused(exc)
        if as_json:
            print(json.dumps({"name": name, "deleted": True}))
        else:
            console.print(f"cron {name} deleted", markup=False)
        return 0

    run_with_db(ctx, body)
