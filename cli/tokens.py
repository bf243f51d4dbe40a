"""``token create|list|revoke``: the API keys that identities call the HTTP API with.

The CLI itself needs no key: it works on the data dir, whose file permissions are its boundary, and names itself
``cli:<OS user>`` in the trail.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from cli.app import app, command_group, console, err, run_with_db

if TYPE_CHECKING:
    from core.db import Database

tokens = command_group(
    help="API keys: create one (shown once), list them, revoke one. Roles: viewer < operator < approver < admin.",
    no_args_is_help=True,
)
app.add_typer(tokens, name="token")


@tokens.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Unique name: the identity is token:NAME in the audit trail.")],
    role: Annotated[
        str,
        typer.Option(help="viewer (read), operator (+ run threads), approver (+ approve), admin (+ servers, tokens)."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Create an API key and print it once: only its SHA-256 is stored, so copy it now."""
    from models.enums import AccessRole
    from services.identities import TokenError, cli_identity, create_token

    try:
        chosen = AccessRole(role)
    except ValueError:
        err.print(f"error: unknown role {role!r}: use one of {', '.join(r.value for r in AccessRole)}", markup=False)
        raise typer.Exit(2) from None

    async def body(db: Database) -> int:
        try:
            key = await create_token(db, name, chosen, actor=cli_identity().name)
        except TokenError as exc:
            err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
            return 2
        if as_json:
            print(json.dumps({"name": name, "role": chosen.value, "key": key}))
        else:
            err.print(f"token {name!r} ({chosen.value}) created; this key is shown only now:", markup=False)
            print(key)
            err.print(f"use it as: curl -H 'Authorization: Bearer {key[:8]}...' http://127.0.0.1:8000/projects")
        return 0

    run_with_db(ctx, body, existing=False)


@tokens.command("list")
def list_(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Tokens: name, role, key hint, who made it, created, last used, revoked (never a key)."""
    from dataclasses import asdict

    from rich.table import Table

    from services.identities import list_tokens

    async def body(db: Database) -> int:
        rows = [asdict(t) for t in await list_tokens(db)]
        if as_json:
            print(json.dumps(rows, indent=2, default=str))
            return 0
        table = Table("name", "role", "hint", "created by", "created", "last used", "revoked")
        for r in rows:
            cells = [r["name"], r["role"].value, r["hint"] + "...", r["created_by"]]
            cells += [str(r[k])[:19] if r[k] else "" for k in ("created_at", "last_used_at", "revoked_at")]
            table.add_row(*cells)
        console.print(table, markup=False)  # names as typed
        return 0

    run_with_db(ctx, body)


@tokens.command("revoke")
def revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token: its key is refused from the next request on (the name is never reused)."""
    from services.identities import TokenError, cli_identity, revoke_token

    async def body(db: Database) -> int:
        try:
            await revoke_token(db, name, actor=cli_identity().name)
        except TokenError as exc:
            err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
            return 2
        console.print(f"token {name!r} revoked", markup=False)
        return 0

    run_with_db(ctx, body)
