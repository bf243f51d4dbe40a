"""The ``orchestrator`` Typer app: its global options, settings, and the two ways a command runs.

``run_with_runtime`` opens the whole runtime (graph, checkpoints, forge) for commands that run or answer a graph;
``run_with_db`` opens only the database for the listings and the inventory, which stay quick. Heavy modules
(LangGraph, litellm, SQLAlchemy) are imported inside them, so ``--help`` stays fast.

Ctrl-C ends a command with exit code 130 (128 + SIGINT, the shell's convention) and one line on stderr: during a
run once asyncio's cancellation of it completes, at a prompt at once (:func:`read_input`). Data is printed
literally (:mod:`cli.render`).
"""

from __future__ import annotations

import inspect
import logging
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from typer.core import TyperGroup

from cli import collector
from cli.render import error_line, line

if TYPE_CHECKING:
    from rich.console import Console

    from core.db import Database
    from core.settings import Settings
    from runtime.threads import OrchestratorRuntime


class CommandGroup(TyperGroup):
    """A command group whose help lists each command with the whole first paragraph of its docstring.

    Help is Click's plain text (``rich_markup_mode=None``, see :func:`command_group`): Typer's Rich help imports
    Markdown and traceback rendering (~0.1 s) before printing a word. Click's own command list would cut each line to
    its first sentence or the terminal's width; this one wraps the paragraph whole instead. As the app's group, its
    :meth:`main` also leaves the heap frozen for the exit (:mod:`cli.collector`).
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command line (Click's ``main``); however it ends, leave the heap frozen for the exit.

        See :func:`cli.collector.freeze_for_exit`: the interpreter's last collection then walks nothing.
        """
        try:
            return super().main(*args, **kwargs)
        finally:
            collector.freeze_for_exit()

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Write the ``Commands`` section: name, then the first paragraph of its help (``short_help`` if set)."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            text = cmd.short_help or inspect.cleandoc(cmd.help or "").split("\n\n")[0]
            rows.append((name, " ".join(text.replace("\b", "").split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def command_group(**kwargs: Any) -> typer.Typer:
    """A ``typer.Typer`` (the app or a sub-command group like ``thread``) with the plain help of :class:`CommandGroup`.

    Every group needs it: a command's help is rendered by the settings of the group it belongs to.
    """
    kwargs.setdefault("context_settings", {"max_content_width": 120})  # the terminal's width, up to 120 columns
    return typer.Typer(cls=CommandGroup, rich_markup_mode=None, **kwargs)


app = command_group(
    help="A hierarchical multi-agent orchestrator: a Product Owner dispatching Zavhoz (servers, ports) and "
    "Engineering (Architect, Developer, Tester), with human approvals and Ansible deploys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class _LazyConsole:
    """A ``rich.console.Console`` made on first use, so that ``--help`` and usage errors never import Rich.

    Every attribute is the real console's; Rich has no lazy console of its own.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


console = cast("Console", _LazyConsole())
err = cast("Console", _LazyConsole(stderr=True))
INTERRUPTED_EXIT = 130
"""Exit code after Ctrl-C: 128 + SIGINT (2), as shells report a process ended by it."""


class PromptInterrupted(Exception):
    """Ctrl-C at a prompt (:func:`read_input`); the command says what was left and exits 130."""


def read_input(read: Callable[[], str]) -> str:
    """Call ``read()`` (``input``, ``getpass``, ``console.input``) so that one Ctrl-C ends it at once.

    ``asyncio.run`` answers SIGINT by cancelling its main task, which cannot happen while a synchronous read of
    the terminal blocks the event loop: the first Ctrl-C was lost and only a second one ended the process
    (https://docs.python.org/3/library/asyncio-runner.html#handling-keyboard-interruption). During the read,
    Python's default handler is back in place, so the read itself raises.

    Raises:
        PromptInterrupted: Ctrl-C during the read.
        EOFError: the input ended (Ctrl-D), as ``read`` raised it.
    """
    if threading.current_thread() is not threading.main_thread():
        return read()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return read()
    except KeyboardInterrupt:
        raise PromptInterrupted from None
    finally:
        signal.signal(signal.SIGINT, previous)


def print_interrupted(what: str = "") -> None:
    """The one line Ctrl-C leaves on stderr: ``interrupted`` and, when given, what it left and how to go on."""
    err.print(line(("interrupted", "yellow"), f": {what}" if what else ""), soft_wrap=True)


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
    of its playbook runs; see infra/orphans.py): a chat, the API and the sync all start here. The garbage collector
    is paused through a listing (:mod:`cli.collector`).
    """
    from infra.orphans import sweep_orphans

    ctx.call_on_close(collector.pause_for(ctx.invoked_subcommand))

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sweep_orphans()
    ctx.obj = {k: v for k, v in {"data_dir": data_dir, "model": model}.items() if v is not None}


def load_settings(ctx: typer.Context) -> Settings:
    """Settings from the environment and the global options; a bad one exits 2 with one line saying what to fix.

    A data dir path that exists but is not a directory (a file) is such a bad value.
    """
    from pydantic import ValidationError

    from core.settings import Settings

    try:
        settings = Settings(**ctx.obj)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        err.print(error_line(problems, "configuration error:"), soft_wrap=True)
        raise typer.Exit(2) from exc
    try:
        not_a_dir = settings.data_dir.exists() and not settings.data_dir.is_dir()
    except OSError as exc:  # a folder above it is closed to this user
        err.print(error_line(f"data dir {settings.data_dir}: {exc.strerror}; check --data-dir or ORCH_DATA_DIR"))
        raise typer.Exit(2) from None
    if not_a_dir:
        err.print(
            error_line(f"data dir {settings.data_dir} is a file, not a directory; check --data-dir or ORCH_DATA_DIR"),
            soft_wrap=True,
        )
        raise typer.Exit(2)
    return settings


def run_with_runtime(
    coro_fn: Callable[[OrchestratorRuntime], Coroutine[Any, Any, int]], ctx: typer.Context, *, existing: bool = False
) -> None:
    """Open a runtime, run ``coro_fn(rt)``, and turn known errors into a message and an exit code.

    ``existing``: the command only reads or answers what is there (resume, listings): a data dir that does not
    exist is a mistyped ``--data-dir`` or ``ORCH_DATA_DIR``, refused with exit 2 instead of created empty.
    """
    import asyncio

    from core.contract import ContractError
    from core.llm_failures import ModelUnreachable
    from runtime.threads import OrchestratorRuntime, RuntimeInputError

    settings = load_settings(ctx)
    if existing and settings.database_url is None and not settings.data_dir.is_dir():
        verb = "resume" if ctx.command.name == "resume" else "list"
        err.print(
            error_line(
                f"no data dir at {settings.data_dir.resolve()}: nothing to {verb}; check --data-dir or ORCH_DATA_DIR"
            ),
            soft_wrap=True,
        )
        raise typer.Exit(2)

    async def go() -> int:
        async with OrchestratorRuntime(settings) as rt:
            # SIGTERM drains: the run stops after its current superstep and `resume THREAD` finishes it. SIGINT is
            # asyncio.run's (it cancels the run: KeyboardInterrupt below), and Python's own at a prompt (read_input).
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, rt.request_drain)
            return await coro_fn(rt)

    thread = ctx.params.get("thread")
    again = f"orchestrator resume {thread}" if thread else "orchestrator resume THREAD (its id is shown above)"
    try:
        code = asyncio.run(go())
    except ContractError as exc:
        err.print(error_line(exc, "contract error:"), soft_wrap=True)
        raise typer.Exit(2) from exc
    except RuntimeInputError as exc:
        err.print(error_line(exc), soft_wrap=True)
        raise typer.Exit(2) from exc
    except ModelUnreachable as exc:
        err.print(
            error_line(
                f"{exc}\nThe thread's checkpoint is kept; `{again}` continues once the model answers.", "model error:"
            ),
            soft_wrap=True,
        )
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:  # Ctrl-C during a run: asyncio.run cancelled it; the last checkpoint is kept
        print_interrupted(f"the run stopped; its last checkpoint is kept and `{again}` finishes it")
        raise typer.Exit(INTERRUPTED_EXIT) from None
    except PromptInterrupted:
        print_interrupted()
        raise typer.Exit(INTERRUPTED_EXIT) from None
    except Exception as exc:  # a node failed: say so plainly; the checkpoint before that node is kept
        err.print(
            error_line(
                f"{type(exc).__name__}: {exc}\nThe checkpoint before the failing node is kept; `{again}` retries from "
                "there.",
                "run failed:",
            ),
            soft_wrap=True,
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
    import asyncio

    from sqlalchemy.exc import OperationalError

    from core.db import Database
    from services.leases import ensure_default_server

    settings = load_settings(ctx)
    if not existing:
        settings.ensure_data_dir()
    if settings.database_url is None and not settings.data_dir.is_dir():
        err.print(
            error_line(
                f"no data dir at {settings.data_dir.resolve()}: nothing there; check --data-dir or ORCH_DATA_DIR"
            ),
            soft_wrap=True,
        )
        raise typer.Exit(2)

    async def go() -> int:
        db = Database(settings.db_url)
        try:
            await db.migrate()
            if not db.read_only:  # a read-only data dir is listed as it is
                await ensure_default_server(db, settings)
            return await body(db)
        finally:
            await db.dispose()

    try:
        code = asyncio.run(go())
    except OperationalError as exc:
        if "readonly" not in str(exc):
            raise
        where = settings.data_dir if settings.database_url is None else "the database"
        err.print(error_line(f"{where} is read-only for this user, and this command writes to it"), soft_wrap=True)
        raise typer.Exit(2) from None
    except (KeyboardInterrupt, PromptInterrupted):
        print_interrupted()
        raise typer.Exit(INTERRUPTED_EXIT) from None
    except Exception as exc:
        if not _refusal(exc):
            raise
        err.print(error_line(exc), soft_wrap=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _refusal(exc: Exception) -> bool:
    """Whether ``exc`` is a refusal :func:`run_with_db` reports in one line (exit 2), not a failure.

    Refusals: secrets errors, refused input (:class:`runtime.errors.RuntimeInputError`), a read-only database not at
    the current revision. Their modules are imported here, once something failed: the secrets module brings the
    ``cryptography`` package, which a listing does not need.
    """
    from core.db import ReadOnlyDatabase
    from runtime.errors import RuntimeInputError
    from services.secrets import SecretsError

    return isinstance(exc, (SecretsError, RuntimeInputError, ReadOnlyDatabase))
