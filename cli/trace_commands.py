"""``runs`` and ``costs``: a thread's runs, one run's timeline (slowest node marked, tokens and cost), and costs.

The rows are stored while runs stream (:mod:`runtime.traces`) and read by :mod:`services.traces`; ``--json`` prints
the same shapes as ``GET /threads/{id}/runs``, ``GET /runs/{id}`` and ``GET /costs``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.app import app, console, err, run_with_db
from cli.render import error_line, line, literal

if TYPE_CHECKING:
    from core.db import Database
    from services.traces import CostReport, RunSummary, RunTimeline, Usage

WATERFALL_WIDTH = 20
"""Characters of the waterfall bar column of ``runs show``."""
_OUTCOME_STYLE = {"done": "green", "ok": "green", "interrupted": "yellow", "drained": "yellow", "lost": "red"}


@app.command()
def runs(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(metavar="THREAD|show", help="A thread id to list its runs, or `show` to show the run RUN.")
    ],
    run_id: Annotated[str | None, typer.Argument(metavar="RUN", help="With `show`: the run id (r-...).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="List the newest N runs.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """`runs THREAD`: the thread's runs, newest first. `runs show RUN`: the run's node timeline and model calls.

    The timeline marks the slowest node (not a subgraph node: its time holds its own nodes') and sums tokens and cost.
    """
    if (target == "show") != (run_id is not None):
        err.print(error_line("say `orchestrator runs THREAD` or `orchestrator runs show RUN`"), soft_wrap=True)
        raise typer.Exit(2)

    async def body(db: Database) -> int:
        from services.identities import cli_identity
        from services.traces import run_timeline, thread_runs, thread_visible

        async with db.session() as s:
            if run_id is not None:
                timeline = await run_timeline(s, run_id)
                if timeline is None:
                    return _refuse(f"no run {run_id!r} (see `orchestrator runs THREAD`)")
                _print_timeline(timeline, as_json)
                return 0
            if not await thread_visible(s, target, cli_identity()):
                return _refuse(f"unknown thread {target!r} (see `orchestrator threads`)")
            found = await thread_runs(s, target, limit=limit)
        if as_json:
            print(json.dumps([r.as_dict() for r in found], indent=2))
        else:
            _print_runs(target, found)
        return 0

    run_with_db(ctx, body)


@app.command()
def costs(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(help="Only this project's model calls.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only calls since: a duration (30m, 24h, 7d, 2w) or an ISO date or time (UTC).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """What model calls cost, by project, role and model: calls, tokens and cost (litellm's prices; 0 for replay)."""
    from services.traces import parse_since

    try:
        start = parse_since(since) if since is not None else None
    except ValueError as exc:
        err.print(error_line(exc), soft_wrap=True)
        raise typer.Exit(2) from None

    async def body(db: Database) -> int:
        from services.traces import UnknownProjectName
        from services.traces import costs as cost_report

        async with db.session() as s:
            try:
                report = await cost_report(s, project=project, since=start)
            except UnknownProjectName as exc:
                return _refuse(str(exc))
        if as_json:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            _print_costs(report)
        return 0

    run_with_db(ctx, body)


def _refuse(message: str) -> int:
    err.print(error_line(message), soft_wrap=True)
    return 2


def _money(usd: float) -> str:
    return "$0" if usd == 0 else f"${usd:,.4f}"


def _usage_text(u: Usage) -> str:
    return f"{u.calls} model calls · {u.prompt_tokens:,} + {u.completion_tokens:,} = {u.tokens:,} tokens · " + _money(
        u.cost_usd
    )


def _print_runs(thread_id: str, found: list[RunSummary]) -> None:
    from rich import box
    from rich.table import Table

    if not found:
        console.print(literal(f"no runs recorded for thread {thread_id}"), soft_wrap=True)
        return
    title = literal(f"runs of {thread_id}, newest first (UTC; --json for nodes, calls and actors)")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=title)
    for name in ("run", "kind", "started", "took", "outcome", "tokens", "cost"):
        right = name in ("took", "tokens", "cost")
        table.add_column(name, justify="right" if right else "left", no_wrap=True)
    for r in found:
        outcome = r.outcome or "running"
        table.add_row(
            literal(r.id),
            literal(r.kind),
            r.started_at.strftime("%m-%d %H:%M"),
            f"{r.duration_s:.1f}s" if r.duration_s is not None else "",
            line((outcome, _OUTCOME_STYLE.get(outcome, "red" if r.outcome else "dim"))),
            f"{r.usage.tokens:,}",
            _money(r.usage.cost_usd),
        )
    console.print(table)
    failed = [r for r in found if r.error]
    for r in failed:
        console.print(line((f"{r.id}:", "red"), " ", literal(r.error)), soft_wrap=True)


def _bar(offset_ms: float, duration_ms: float, span_ms: float) -> str:
    """A waterfall bar: where the node ran within the run, :data:`WATERFALL_WIDTH` characters wide."""
    if span_ms <= 0:
        return ""
    start = min(WATERFALL_WIDTH - 1, int(offset_ms / span_ms * WATERFALL_WIDTH))
    length = max(1, round(duration_ms / span_ms * WATERFALL_WIDTH))
    return " " * start + "█" * min(length, WATERFALL_WIDTH - start)


def _print_timeline(timeline: RunTimeline, as_json: bool) -> None:
    if as_json:
        print(json.dumps(timeline.as_dict(), indent=2))
        return
    from rich import box
    from rich.table import Table

    run = timeline.run
    outcome = run.outcome or "running"
    seconds = f" in {run.duration_s:.2f}s" if run.duration_s is not None else ""
    console.print(
        line(
            (run.id, "bold"),
            f" · {run.kind} on {run.thread_id} · {run.model or ''} · by {run.actor or ''} · ",
            (outcome, _OUTCOME_STYLE.get(outcome, "red" if run.outcome else "dim")),
            seconds,
        ),
        soft_wrap=True,
    )
    if run.error:
        console.print(error_line(run.error), soft_wrap=True)
    span = max(
        [run.duration_s * 1000 if run.duration_s else 0.0] + [n.offset_ms + n.duration_ms for n in timeline.nodes]
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="node timeline")
    table.add_column("node", overflow="fold")
    table.add_column("start", justify="right", no_wrap=True)
    table.add_column("seconds", justify="right", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("waterfall", no_wrap=True, min_width=WATERFALL_WIDTH, max_width=WATERFALL_WIDTH)
    for n in timeline.nodes:
        style = "bold red" if n.slowest else ("dim" if n.subgraph else "")
        table.add_row(
            line(
                (f"{n.path}/" if n.path else "", "dim"),
                (n.node, style),
                ("  ◀ slowest", "bold red") if n.slowest else "",
            ),
            f"+{n.offset_ms / 1000:.2f}",
            f"{n.duration_ms / 1000:.2f}",
            line((n.outcome, _OUTCOME_STYLE.get(n.outcome, "red"))),
            line((_bar(n.offset_ms, n.duration_ms, span), "red" if n.slowest else "cyan")),
        )
    console.print(table)
    if timeline.calls:
        _print_calls(timeline)
    console.print(line(("total: ", "bold"), _usage_text(run.usage)), soft_wrap=True)


def _print_calls(timeline: RunTimeline) -> None:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="model calls")
    for name in ("role", "model", "node", "in", "out", "cost", "ms", "ok"):
        table.add_column(name, justify="right" if name in ("in", "out", "cost", "ms") else "left")
    for c in timeline.calls:
        table.add_row(
            literal(c.role),
            literal(c.model),
            literal(c.node),
            f"{c.prompt_tokens:,}",
            f"{c.completion_tokens:,}",
            _money(c.cost_usd),
            f"{c.latency_ms:.0f}",
            line(("yes", "green")) if c.ok else line(("no", "red")),
        )
    console.print(table)


def _print_costs(report: CostReport) -> None:
    from rich import box
    from rich.table import Table

    scope = f" of {report.project}" if report.project else ""
    since = f" since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else ""
    if not report.rows:
        console.print(literal(f"no model calls recorded{scope}{since}"), soft_wrap=True)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=literal(f"costs{scope}{since}"), show_footer=True)
    total = report.total
    footer: dict[str, Any] = {
        "project": "total",
        "calls": str(total.calls),
        "tokens in": f"{total.prompt_tokens:,}",
        "tokens out": f"{total.completion_tokens:,}",
        "cost": _money(total.cost_usd),
    }
    for name in ("project", "role", "model", "calls", "tokens in", "tokens out", "cost"):
        right = name in ("calls", "tokens in", "tokens out", "cost")
        table.add_column(name, footer=footer.get(name, ""), justify="right" if right else "left")
    for r in report.rows:
        table.add_row(
            literal(r.project if r.project is not None else "(no project)"),
            literal(r.role),
            literal(r.model),
            str(r.usage.calls),
            f"{r.usage.prompt_tokens:,}",
            f"{r.usage.completion_tokens:,}",
            _money(r.usage.cost_usd),
        )
    console.print(table)
    for key in ("role", "model"):
        parts = [f"{name}: {_money(u.cost_usd)} ({u.tokens:,} tokens)" for name, u in report.by(key).items()]
        console.print(line((f"by {key}: ", "bold"), literal(" · ".join(parts))), soft_wrap=True)
