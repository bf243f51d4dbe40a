"""``events``: the domain event journal (audit trail, incidents, deploys, approvals, sync passes), read directly.

``orchestrator events`` lists the latest rows; ``--after ID`` everything after an id; ``--follow`` keeps printing
new rows as they are journaled (as ``GET /events`` streams them, with the same gap rule, see
:mod:`services.journal`) until Ctrl-C, which ends it normally: exit status 0 (elsewhere Ctrl-C exits 130).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.app import app, err, run_with_db

if TYPE_CHECKING:
    from core.db import Database
    from models.time_tables import DomainEvent

DETAIL_CHARS = 160
"""Longest detail part of a line of the human listing (``--json`` has every field whole)."""


@app.command()
def events(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")] = False,
    after: Annotated[
        int | None, typer.Option(min=0, help="Everything after this journal id (0: from the start).")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only kinds starting with this, e.g. `deploy.`, `audit` or `sync.pass`.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Without --after: the latest N events.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The domain event journal, oldest first: audit trail, incidents, deploys, approvals and sync passes.

    Each event has an id (the ``GET /events`` stream's ``id:``), a kind, its subject, thread and actor, and its data.
    """
    from services.journal import KIND_PATTERN

    if kind is not None and not re.fullmatch(KIND_PATTERN, kind):
        err.print(f"error: --kind {kind!r} is not a kind prefix (lowercase letters, '.', '_')", markup=False)
        raise typer.Exit(2)

    async def body(db: Database) -> int:
        from services.journal import follow as follow_journal
        from services.journal import latest_id, matches, page_after, recent

        start = after
        if start is None:
            start = await latest_id(db)
            for row in await recent(db, limit=limit, kind=kind, up_to=start):
                _print(row, as_json)
        elif not follow:
            async for row in page_after(db, after=start):
                if matches(row, kind):
                    _print(row, as_json)
        if follow:
            await _follow(follow_journal(db, after=start), kind=kind, as_json=as_json)
        return 0

    run_with_db(ctx, body)


async def _follow(journal: AsyncGenerator[list[DomainEvent]], *, kind: str | None, as_json: bool) -> None:
    """Print what ``journal`` yields until Ctrl-C, which ends the follow normally (exit status 0), not as an error."""
    import asyncio  # here, not at the top: --help and the other commands do not pay for it

    from services.journal import matches

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)  # in place of asyncio.run's, which cancels (exit 130)
    try:
        async with contextlib.aclosing(journal):
            async for rows in journal:
                for row in rows:
                    if matches(row, kind):
                        _print(row, as_json)
                if stop.is_set():
                    return
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _print(row: DomainEvent, as_json: bool) -> None:
    from services.journal import event_dict

    if as_json:
        print(json.dumps(event_dict(row), separators=(",", ":")), flush=True)
        return
    subject = f"{row.subject_type or '-'}:{row.subject_id}" if row.subject_id is not None else row.subject_type or "-"
    when = row.created_at.strftime("%Y-%m-%d %H:%M:%S")
    line = f"{row.id:>7}  {when}  {row.kind:<20}  {subject:<14}  {row.actor or '-':<22}  {detail(row.kind, row.data)}"
    print(line.rstrip(), flush=True)


def detail(kind: str, data: dict[str, Any]) -> str:
    """An event's data in one short line: ``from -> to: reason`` for the trail, ``key=value`` pairs otherwise."""
    if kind == "audit":
        moved = f"{data.get('from_status')} -> " if data.get("from_status") else ""
        text = f"{moved}{data.get('to_status')}: {data.get('reason')}"
    else:
        text = " ".join(f"{k}={_short(v)}" for k, v in data.items() if not _empty(v))
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def _empty(value: Any) -> bool:
    return value is None or value in ("", [], {}) or (type(value) in (int, float) and value == 0)


def _short(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
