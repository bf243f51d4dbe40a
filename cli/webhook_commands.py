"""``webhooks add|list|remove|deliveries|send|events``: outgoing webhooks and their delivery log.

Importing this module also hands the API the sync's one-repository reconcile (for ``POST /webhooks/github``):
``orchestrator api`` serves with it.

A secret is read from stdin only (``--secret-from-stdin``), never from the command line, and never printed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from api.github_reconciler import use_repository_reconciler
from cli.app import app, command_group, console, err, load_settings, run_with_db

if TYPE_CHECKING:
    from core.db import Database
    from core.settings import Settings

webhooks = command_group(
    help="Outgoing webhooks: signed POSTs on approvals, incidents, deploys and failed runs; their delivery log.",
    no_args_is_help=True,
)
app.add_typer(webhooks, name="webhooks")


async def reconcile_one_repository(settings: Settings, db: Database, repo_id: int) -> str:
    """Reconcile GitHub repository ``repo_id`` through the sync's code; returns the summary's line.

    Handed to the API (``POST /webhooks/github``), which may not import the sync workers itself.
    """
    from sync_workers.base import SyncContext
    from sync_workers.github_repo import reconcile_repository

    return (await reconcile_repository(SyncContext(settings=settings, db=db), repo_id)).line()


use_repository_reconciler(reconcile_one_repository)


def _print_json(rows: list[object]) -> None:
    print(json.dumps([asdict(r) for r in rows], default=str))  # type: ignore[call-overload]


@webhooks.command("add")
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Where events are POSTed (http or https).")],
    events: Annotated[
        str, typer.Option(help="Comma-separated event names, or `all` (see `orchestrator webhooks events`).")
    ],
    secret_from_stdin: Annotated[
        bool, typer.Option("--secret-from-stdin", help="Read the HMAC secret from stdin (required).")
    ] = False,
    fmt: Annotated[str, typer.Option("--format", help="json (the event) or slack ({'text': ...}).")] = "json",
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Add a webhook; its secret (read from stdin) signs every request as ``X-Hub-Signature-256``."""
    from services.identities import cli_identity
    from services.notifications import WebhookInputError, add_webhook

    if not secret_from_stdin:
        err.print("[red]error:[/red] pass --secret-from-stdin and pipe the secret in (never on the command line)")
        raise typer.Exit(2)
    secret = sys.stdin.read()
    settings = load_settings(ctx)

    async def body(db: Database) -> int:
        try:
            info = await add_webhook(
                db, settings, url=url, secret=secret, events=events.split(","), fmt=fmt, actor=cli_identity().name
            )
        except WebhookInputError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True, markup=False)
            return 2
        if as_json:
            _print_json([info])
        else:
            added = f"webhook {info.id} added: {info.url} ({info.format}) for {', '.join(info.events)}"
            console.print(added, markup=False)
        return 0

    run_with_db(ctx, body, existing=False)


@webhooks.command("events")
def events_() -> None:
    """The event names a webhook may subscribe to."""
    from services.notifications import EVENTS

    print("\n".join(EVENTS))


@webhooks.command("list")
def list_(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """The webhooks: id, URL, format and events (never a secret)."""
    from services.notifications import list_webhooks

    async def body(db: Database) -> int:
        rows = await list_webhooks(db)
        if as_json:
            _print_json(list(rows))
        for r in [] if as_json else rows:
            shown = f"{r.id}  {r.url}  {r.format}  {','.join(r.events)}"
            console.print(shown, highlight=False, soft_wrap=True, markup=False)
        if not rows and not as_json:
            console.print("no webhooks (add one with `orchestrator webhooks add URL --secret-from-stdin --events all`)")
        return 0

    run_with_db(ctx, body)


@webhooks.command("remove")
def remove(ctx: typer.Context, webhook_id: Annotated[int, typer.Argument(help="The webhook's id.")]) -> None:
    """Remove a webhook and its delivery log."""
    from services.identities import cli_identity
    from services.notifications import remove_webhook

    async def body(db: Database) -> int:
        if not await remove_webhook(db, webhook_id, actor=cli_identity().name):
            err.print(f"[red]error:[/red] no webhook {webhook_id} (see `orchestrator webhooks list`)")
            return 2
        console.print(f"webhook {webhook_id} removed")
        return 0

    run_with_db(ctx, body)


@webhooks.command("deliveries")
def deliveries(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """The delivery log: each delivery's id, webhook, event, status, attempts and last error."""
    from services.notifications import list_deliveries

    async def body(db: Database) -> int:
        rows = await list_deliveries(db, limit=limit)
        if as_json:
            _print_json(list(rows))
            return 0
        for r in rows:
            last = f"  last: {r.last_status or '-'} {r.last_error or ''}".rstrip()
            line = f"{r.delivery_id}  webhook {r.webhook_id}  {r.event}  {r.status}  attempts {r.attempts}{last}"
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        return 0

    run_with_db(ctx, body)


@webhooks.command("send")
def send(ctx: typer.Context) -> None:
    """Send the pending deliveries now, each with retries; prints how many were delivered."""
    from services.notifications import deliver_pending

    settings = load_settings(ctx)

    async def body(db: Database) -> int:
        console.print(f"{await deliver_pending(db, settings)} delivered")
        return 0

    run_with_db(ctx, body)
