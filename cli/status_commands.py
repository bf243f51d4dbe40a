"""``status``: the circuit breakers around GitHub, each SSH host and the model provider, as every process sees them.

A breaker opens after ``ORCH_BREAKER_FAILURES`` failures in a row (no connection, a timeout, a 5xx, a 429) and
refuses calls at once for ``ORCH_BREAKER_COOLDOWN_S`` seconds, then lets one trial call through (see
:mod:`core.breakers`). The state lives in the database, so this shows what the API and the sync service see.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from cli.app import app, console, load_settings, run_with_db

if TYPE_CHECKING:
    from core.breakers import BreakerState
    from core.db import Database

STYLES = {"closed": "green", "half-open": "yellow", "open": "red"}


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output: the same shape as GET /status.")] = False,
) -> None:
    """Each circuit breaker: name, state (closed, open, half-open), failures in a row, opened at, next try (UTC).

    ``--json`` prints ``{"breakers": [{"name", "label", "state", "failures", "opened_at", "next_try_at"}]}``, times
    as ISO 8601 UTC strings or null. A breaker appears once it has guarded a call.
    """
    from core.breakers import breaker_states

    settings = load_settings(ctx)

    async def body(db: Database) -> int:
        states = await breaker_states(db, settings)
        if as_json:
            print(json.dumps({"breakers": [s.as_json() for s in states]}, indent=2))
        else:
            _print_table(states)
        return 0

    run_with_db(ctx, body)


def _print_table(states: list[BreakerState]) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    if not states:
        console.print("no circuit breaker has guarded a call yet: GitHub, SSH hosts and the model provider all closed")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("breaker", no_wrap=True)
    table.add_column("what", overflow="fold", ratio=1)
    table.add_column("state", no_wrap=True)
    table.add_column("failures", justify="right", no_wrap=True)
    table.add_column("opened (UTC)", no_wrap=True)
    table.add_column("next try (UTC)", no_wrap=True)
    for s in states:
        style = STYLES.get(s.state, "white")
        table.add_row(
            escape(s.name),
            escape(s.label),
            f"[{style}]{s.state}[/{style}]",
            str(s.failures),
            s.opened_at.strftime("%m-%d %H:%M:%S") if s.opened_at else "-",
            s.next_try_at.strftime("%m-%d %H:%M:%S") if s.next_try_at else "-",
        )
    console.print(table)
