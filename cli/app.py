"""The ``orchestrator`` Typer app: its global options, settings, and the two ways a command runs.

``run_with_runtime`` opens the whole runtime (graph, checkpoints, forge) for commands that run or answer a graph;
``run_with_db`` opens only the database for the listings and the inventory, which stay quick. Heavy modules
(LangGraph, litellm, SQLAlchemy) are imported inside them, so ``--help`` stays fast.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from core.db import Database
    from core.settings import Settings
    from runtime.threads import OrchestratorRuntime

app = typer.Typer(
    help="A hierarchical multi-agent orchestrator: a Product Owner dispatching Zavhoz (servers, ports) and "
    "Engineering (Architect, Developer, Tester), with human approvals and Ansible deploys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data dir (DB, checkpoints, forge). Env: ORCH_DATA_DIR.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="litellm model for every role. Env: ORCH_MODEL.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress (INFO) to stderr.")] = False,
) -> None:
    """Global options; every other setting comes from ORCH_* environment variables.

    Every command starts by sweeping what a killed orchestrator left behind (secrets files in RAM, the processes
    of its playbook runs; see infra/orphans.py): a chat, the API and the sync all start here.
    """
    from infra.orphans import sweep_orphans

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sweep_orphans()
    ctx.obj = {k: v for k, v in {"data_dir": data_dir, "model": model}.items() if v is not None}


def load_settings(ctx: typer.Context) -> Settings:
    """Settings from the environment and the global options; a bad value exits 2 with what to fix."""
    from pydantic import ValidationError

    from core.settings import Settings

    try:
        return Settings(**ctx.obj)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        err.print(f"[red]configuration error:[/red] {problems}")
        raise typer.Exit(2) from exc


def run_with_runtime(
    coro_fn: Callable[[OrchestratorRuntime], Coroutine[Any, Any, int]], ctx: typer.Context, *, existing: bool = False
) -> None:
    """Open a runtime, run ``coro_fn(rt)``, and turn known errors into a message and an exit code.

    ``existing``: the command only reads or answers what is there (resume, listings): a data dir that does not
    exist is a mistyped ``--data-dir`` or ``ORCH_DATA_DIR``, refused with exit 2 instead of created empty.
    """
    from core.contract import ContractError
    from core.llm_failures import ModelUnreachable
    from runtime.threads import OrchestratorRuntime, RuntimeInputError

    settings = load_settings(ctx)
    if existing and settings.database_url is None and not settings.data_dir.is_dir():
        verb = "resume" if ctx.command.name == "resume" else "list"
        err.print(
            f"[red]error:[/red] no data dir at {settings.data_dir.resolve()}: nothing to {verb}; "
            "check --data-dir or ORCH_DATA_DIR",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)

    async def go() -> int:
        async with OrchestratorRuntime(settings) as rt:
            # SIGTERM drains: the run stops after its current superstep and `resume THREAD` finishes it. (SIGINT
            # keeps its default: the chat prompt blocks the loop, so a loop handler could not answer Ctrl-C there.)
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, rt.request_drain)
            return await coro_fn(rt)

    thread = ctx.params.get("thread")
    again = f"orchestrator resume {thread}" if thread else "orchestrator resume THREAD (its id is shown above)"
    try:
        code = asyncio.run(go())
    except ContractError as exc:
        err.print(f"[red]contract error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    except RuntimeInputError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except ModelUnreachable as exc:
        err.print(
            f"[red]model error:[/red] {exc}\nThe thread's checkpoint is kept; `{again}` "
            "continues once the model answers."
        )
        raise typer.Exit(1) from exc
    except Exception as exc:  # a node failed: say so plainly; the checkpoint before that node is kept
        err.print(
            f"[red]run failed:[/red] {type(exc).__name__}: {exc}\nThe checkpoint before the failing node is kept; "
            f"`{again}` retries from there."
        )
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


def run_with_db(
    ctx: typer.Context, body: Callable[[Database], Coroutine[Any, Any, int]], *, existing: bool = True
) -> None:
    """Run ``body(db)`` on the data dir's database only (no graph, no model); refusals exit 2 with their words.

    Refusals are secrets errors and refused input (:class:`runtime.errors.RuntimeInputError`).

    ``existing`` (the default): a data dir that does not exist is refused (exit 2), since a mistyped ``--data-dir``
    would otherwise get a fresh, empty database (and a new secrets key); False creates it (0700).
    """
    from core.db import Database
    from runtime.errors import RuntimeInputError
    from services.leases import ensure_default_server
    from services.secrets import SecretsError

    settings = load_settings(ctx)
    if not existing:
        settings.ensure_data_dir()
    if settings.database_url is None and not settings.data_dir.is_dir():
        err.print(
            f"[red]error:[/red] no data dir at {settings.data_dir.resolve()}: nothing there; "
            "check --data-dir or ORCH_DATA_DIR",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)

    async def go() -> int:
        db = Database(settings.db_url)
        try:
            await db.migrate()
            await ensure_default_server(db, settings)
            return await body(db)
        finally:
            await db.dispose()

    try:
        code = asyncio.run(go())
    except (SecretsError, RuntimeInputError) as exc:
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)
