"""``audit`` and ``budget``: a project's tool calls as the contract judged them, and what its runs may still spend."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.app import app, console, err, load_settings, run_with_db
from cli.render import line, literal

if TYPE_CHECKING:
    from sqlmodel.ext.asyncio.session import AsyncSession

    from core.db import Database
    from models.tables import Project, ToolCall
    from services.budgets import BudgetView

ARGS_SUMMARY_CHARS = 60
"""Longest args summary in the ``audit`` table (``--json`` has them whole, as stored: redacted)."""


@app.command()
def audit(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="The project's name (see `orchestrator projects`).")],
    phase: Annotated[str | None, typer.Option(help="Only the calls of this phase, e.g. IMPL.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="The latest N calls.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """A project's agent tool calls, oldest first: who called which tool in which phase, and what the contract said.

    File contents are never shown: the log keeps only their size and a digest.
    """
    from rich import box
    from rich.table import Table

    from services.audit import audit_trail

    async def body(db: Database) -> int:
        async with db.session() as s:
            found = await _project_or_none(s, project)
            if found is None or found.id is None:
                return _unknown(project)
            calls = await audit_trail(s, found.id, limit=limit, phase=phase)
        if as_json:
            print(json.dumps([_call_dict(c) for c in calls], indent=2))
            return 0
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("UTC", no_wrap=True)
        for name in ("phase", "role", "tool", "path / args"):
            table.add_column(name, overflow="fold")
        table.add_column("outcome", no_wrap=True)
        table.add_column("reason", ratio=1, overflow="fold")
        table.add_column("ms", justify="right", no_wrap=True)
        for c in calls:
            style = {"refused": "red", "failed": "red", "warned": "yellow"}.get(c.outcome, "green")
            table.add_row(
                c.created_at.strftime("%m-%d %H:%M:%S"),
                literal(c.phase),
                literal(c.role),
                literal(c.tool),
                literal(args_summary(c.args)),
                line((c.outcome, style)),
                literal(c.reason),
                f"{c.duration_ms:.0f}",
            )
        console.print(table)
        if not calls:
            console.print(
                literal(f"no tool calls recorded for {project}" + (f" in phase {phase}" if phase else "")),
                soft_wrap=True,
            )
        return 0

    run_with_db(ctx, body)


@app.command()
def budget(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="The project's name (see `orchestrator projects`).")],
    add_tokens: Annotated[int, typer.Option(min=0, help="Raise the token limit by N.")] = 0,
    add_cost: Annotated[float, typer.Option(min=0, help="Raise the cost limit by X US dollars.")] = 0.0,
    add_calls: Annotated[int, typer.Option(min=0, help="Raise the model-call limit by N.")] = 0,
    add_seconds: Annotated[float, typer.Option(min=0, help="Raise the working-time limit by S seconds.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """What a project's runs have spent and have left; with --add-* options, raise its limits (on the trail).

    A project with no budget yet starts from the defaults (ORCH_BUDGET_TOKENS, _COST_USD, _CALLS, _SECONDS)
    before it is extended.
    """
    from services.budgets import BudgetLimits, budget_of, extend_budget, open_budget
    from services.identities import cli_identity

    settings = load_settings(ctx)
    add = BudgetLimits(tokens=add_tokens, cost_usd=add_cost, calls=add_calls, seconds=add_seconds)
    extending = any(v > 0 for v in add.as_dict().values())
    try:
        add.check("--add-* options")
    except ValueError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc

    async def body(db: Database) -> int:
        async with db.session() as s:
            found = await _project_or_none(s, project)
            if found is None or found.id is None:
                return _unknown(project)
            if extending:
                await open_budget(s, found.id, BudgetLimits.from_settings(settings))
                view: BudgetView | None = await extend_budget(s, found.id, add, actor=cli_identity().name)
            else:
                view = await budget_of(s, found.id)
        if as_json:
            print(json.dumps({"project": project, "budget": view.as_dict() if view else None}, indent=2))
        elif view is None:
            d = BudgetLimits.from_settings(settings)
            console.print(
                f"{project} has no budget yet: its next run opens one with the defaults (tokens {d.tokens:,} · "
                f"cost ${d.cost_usd:,.2f} · calls {d.calls:,} · {d.seconds:.0f}s); --add-* options start from them",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        else:
            _print_budget(project, view, extended=extending)
        return 0

    run_with_db(ctx, body)


def args_summary(args: dict[str, Any]) -> str:
    """The path a call touched, else ``key=value`` pairs, cut to :data:`ARGS_SUMMARY_CHARS`."""
    if isinstance(args.get("path"), str):
        return str(args["path"])
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    return text if len(text) <= ARGS_SUMMARY_CHARS else text[: ARGS_SUMMARY_CHARS - 1] + "…"


def _print_budget(project: str, view: BudgetView, *, extended: bool) -> None:
    from rich.table import Table

    title = literal(f"budget of {project}" + (" (extended)" if extended else ""))
    table = Table("item", "spent", "limit", "left", title=title)
    spent, limits, left = view.spent, view.limits, view.left
    rows = [
        ("tokens", f"{spent.tokens:,}", f"{limits.tokens:,}", f"{left.tokens:,}"),
        ("cost_usd", f"${spent.cost_usd:,.2f}", f"${limits.cost_usd:,.2f}", f"${left.cost_usd:,.2f}"),
        ("calls", f"{spent.calls:,}", f"{limits.calls:,}", f"{left.calls:,}"),
        ("seconds", f"{spent.seconds:,.0f}", f"{limits.seconds:,.0f}", f"{left.seconds:,.0f}"),
    ]
    for name, *cells in rows:
        style = "red" if name in view.exhausted else ""
        table.add_row(name, *cells, style=style)
    console.print(table)
    if view.exhausted:
        console.print(
            line(
                ("exhausted:", "red"),
                f" {', '.join(view.exhausted)}; raise with `orchestrator budget {project} --add-calls N` (or "
                "--add-tokens, --add-cost, --add-seconds)",
            ),
            soft_wrap=True,
        )


async def _project_or_none(session: AsyncSession, name: str) -> Project | None:
    from sqlmodel import select

    from models.tables import Project

    return (await session.exec(select(Project).where(Project.name == name))).first()


def _unknown(project: str) -> int:
    err.print(
        f"error: no project named {project!r} (see `orchestrator projects`)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 2


def _call_dict(call: ToolCall) -> dict[str, Any]:
    keys = ("id", "created_at", "thread_id", "phase", "role", "tool", "args", "outcome", "reason", "duration_ms")
    row = {key: getattr(call, key) for key in keys}
    row["created_at"] = call.created_at.isoformat()
    return row
