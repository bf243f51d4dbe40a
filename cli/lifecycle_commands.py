"""A project's releases and the end of its life (:mod:`services.lifecycle`).

``stop``, ``start``, ``undeploy``, ``delete``, ``rollback`` and ``deployments``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.app import app, console, err, load_settings, run_with_db

if TYPE_CHECKING:
    from core.db import Database
    from core.settings import Settings
    from services.lifecycle import LifecycleOutcome

Move = Callable[..., Coroutine[Any, Any, "LifecycleOutcome"]]
Project = Annotated[str, typer.Argument(help="The project's name (see `orchestrator projects`).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the outcome as JSON: project, status, message.")]


def _run(ctx: typer.Context, move: Callable[[], Move], project: str, as_json: bool) -> None:
    """Run one move as the CLI's identity; a refusal (its status, a failed stop or start) exits 2 with its words."""
    from rich.markup import escape

    from services.identities import cli_identity
    from services.lifecycle import LifecycleRefused

    settings: Settings = load_settings(ctx)

    async def body(db: Database) -> int:
        try:
            outcome = await move()(settings, db, project, actor=cli_identity().name)
        except (LookupError, LifecycleRefused) as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            return 2
        if as_json:
            print(json.dumps({"project": outcome.project, "status": outcome.status, "message": outcome.message}))
        else:
            console.print(f"[green]{escape(outcome.message)}[/green]", highlight=False, soft_wrap=True)
        return 0

    run_with_db(ctx, body)


@app.command()
def stop(ctx: typer.Context, project: Project, as_json: AsJson = False) -> None:
    """Stop an active project's service; its release and port stay reserved (`start` brings it back)."""
    from services.lifecycle import stop_project

    _run(ctx, lambda: stop_project, project, as_json)


@app.command()
def start(ctx: typer.Context, project: Project, as_json: AsJson = False) -> None:
    """Start a stopped project's live release again; it must pass the deploy's checks (its process, its health)."""
    from services.lifecycle import start_project

    _run(ctx, lambda: start_project, project, as_json)


@app.command()
def undeploy(ctx: typer.Context, project: Project, as_json: AsJson = False) -> None:
    """Stop the project's service and release its port; an update to the PO starts it again."""
    from services.lifecycle import undeploy_project

    _run(ctx, lambda: undeploy_project, project, as_json)


@app.command()
def delete(
    ctx: typer.Context,
    project: Project,
    yes: Annotated[bool, typer.Option("--yes", help="Do it without asking (scripts).")] = False,
    archive_repo: Annotated[
        bool, typer.Option("--archive-repo", help="Also archive its repository on the forge (read-only, kept).")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Undeploy the project and archive it: kept on the record, never worked on again.

    Its repository is kept as it is, or archived on the forge (read-only) with --archive-repo.
    """
    from services.lifecycle import delete_project

    if not yes:
        if not sys.stdin.isatty():
            err.print("[red]error:[/red] no terminal to confirm on: pass --yes to delete", highlight=False)
            raise typer.Exit(2)
        if not typer.confirm(f"Delete {project}? Its service stops and it is archived for good", default=False):
            err.print("nothing deleted")
            raise typer.Exit(1)
    _run(ctx, lambda: functools.partial(delete_project, archive_repo=archive_repo), project, as_json)


@app.command()
def rollback(
    ctx: typer.Context,
    project: Project,
    to: Annotated[
        int | None,
        typer.Option(help="A succeeded deployment's id (see `orchestrator deployments`); default: the one before."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Deploy an earlier good release of an active project again, checked like any deploy and recorded as one."""
    from services.lifecycle import rollback_project

    _run(ctx, lambda: functools.partial(rollback_project, to=to), project, as_json)


@app.command()
def deployments(ctx: typer.Context, project: Project, as_json: AsJson = False) -> None:
    """A project's deployments, newest first: id, commit, status, who approved, when (the ids `rollback --to` takes)."""
    from rich.markup import escape
    from rich.table import Table

    from services.lifecycle import deployments_of

    async def body(db: Database) -> int:
        try:
            rows = await deployments_of(db, project)
        except LookupError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            return 2
        if as_json:
            print(json.dumps([r.model_dump(mode="json", exclude={"summary", "verification"}) for r in rows], indent=2))
            return 0
        table = Table("id", "commit", "status", "approved by", "started", "url")
        for r in rows:
            table.add_row(
                str(r.id), r.commit_sha[:10], r.status, r.approved_by or "", str(r.started_at)[:19], r.url or ""
            )
        console.print(table, markup=False)  # commits, names, URLs as they are
        return 0

    run_with_db(ctx, body)
