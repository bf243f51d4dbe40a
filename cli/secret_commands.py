"""``secret-set``, ``secret-list``, ``secret-rm``, ``secret-rotate``: project secrets, never on a command line."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from cli.app import app, console, err, load_settings, read_input, run_with_db
from cli.render import error_line, literal


def _read_secret_value(name: str) -> str:
    """The value from stdin (a pipe or a file: one trailing newline dropped) or a hidden prompt asked twice.

    The value must be UTF-8 text (it becomes an environment variable of the service); anything else is refused with
    exit 2 and nothing stored. Ctrl-C at the prompt raises :class:`cli.app.PromptInterrupted`.
    """
    import getpass

    try:
        if not sys.stdin.isatty():
            value = sys.stdin.buffer.read().decode("utf-8")
            return value[:-2] if value.endswith("\r\n") else value[:-1] if value.endswith("\n") else value
        first = read_input(lambda: getpass.getpass(f"value of {name} (hidden): "))
        again = read_input(lambda: getpass.getpass(f"value of {name} again: "))
    except UnicodeDecodeError as exc:
        err.print(
            error_line(
                f"the value of {name} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                "nothing was stored"
            ),
            soft_wrap=True,
        )
        raise typer.Exit(2) from None
    if again != first:
        err.print(error_line("the two values differ; nothing was stored"))
        raise typer.Exit(2)
    return first


@app.command("secret-set")
def secret_set(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="The project's name (see `orchestrator projects`).")],
    name: Annotated[str, typer.Argument(help="The environment variable, e.g. DATABASE_URL.")],
) -> None:
    """Store a secret for a project's service, encrypted; the value comes from stdin or a hidden prompt.

    Never from the command line (it would show in /proc and in shell history): `printf %s "$V" | orchestrator
    secret-set hello-api API_TOKEN`, or run it in a terminal and type the value. The next deploy passes it to the
    service's environment (a changed value restarts the service).
    """
    from services.identities import cli_identity
    from services.secrets import list_secret_names, load_keys, set_secret, validate_secret_name

    settings = load_settings(ctx)

    async def body(db: Any) -> int:
        validate_secret_name(name)
        await list_secret_names(db, project)  # an unknown project is refused before the value is asked for
        keys = load_keys(settings)
        new = await set_secret(db, project, name, _read_secret_value(name), keys=keys, actor=cli_identity().name)
        console.print(
            f"secret {name} of {project} {'stored' if new else 'replaced'} (encrypted); the next deploy passes it "
            "to the service",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return 0

    run_with_db(ctx, body)


@app.command("secret-list")
def secret_list(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="The project's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """A project's secrets: names and when they were set (never a value), and the required ones still missing."""
    from rich.table import Table

    from services.secrets import secret_set_commands, secret_status

    async def body(db: Any) -> int:
        infos, missing = await secret_status(db, project)
        if as_json:
            out = {
                "project": project,
                "secrets": [{"name": i.name, "updated_at": i.updated_at.isoformat()} for i in infos],
                "missing": missing,
            }
            print(json.dumps(out, indent=2))
            return 0
        table = Table("name", "updated")
        for i in infos:
            table.add_row(literal(i.name), i.updated_at.isoformat(timespec="seconds"))
        console.print(table)
        if missing:
            console.print(
                f"missing (the design needs them): {', '.join(missing)}; set with: "
                f"{secret_set_commands(project, missing)}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        return 0

    run_with_db(ctx, body)


@app.command("secret-rm")
def secret_rm(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="The project's name.")],
    name: Annotated[str, typer.Argument(help="The environment variable to remove.")],
) -> None:
    """Remove a secret; the next deploy restarts the service without it."""
    from services.identities import cli_identity
    from services.secrets import delete_secret, validate_secret_name

    async def body(db: Any) -> int:
        validate_secret_name(name)
        if not await delete_secret(db, project, name, actor=cli_identity().name):
            err.print(f"error: {project} has no secret {name}; nothing removed", markup=False, highlight=False)
            return 2
        console.print(f"secret {name} of {project} removed", highlight=False, markup=False)
        return 0

    run_with_db(ctx, body)


@app.command("secret-rotate")
def secret_rotate(ctx: typer.Context) -> None:
    """Re-encrypt every secret with the first key of ORCH_SECRETS_KEY (a new key first, the old one after it)."""
    from services.identities import cli_identity
    from services.secrets import load_keys, rotate_secrets

    settings = load_settings(ctx)

    async def body(db: Any) -> int:
        count = await rotate_secrets(db, keys=load_keys(settings), actor=cli_identity().name)
        console.print(f"{count} secret(s) re-encrypted with the first key; the old key may now be dropped")
        return 0

    run_with_db(ctx, body)
