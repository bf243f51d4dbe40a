"""``orchestrator``: chat with the PO, list threads, resume interrupts, inspect projects/servers, run the demo.

Heavy modules (LangGraph, litellm, SQLAlchemy) are imported inside commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from core.runtime import OrchestratorRuntime, RunEvent
    from core.settings import Settings

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
    """Global options; every other setting comes from ORCH_* environment variables."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = {k: v for k, v in {"data_dir": data_dir, "model": model}.items() if v is not None}


def _settings(ctx: typer.Context) -> Settings:
    """Settings from the environment and the global options; a bad value exits 2 with what to fix."""
    from pydantic import ValidationError

    from core.settings import Settings

    try:
        return Settings(**ctx.obj)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        err.print(f"[red]configuration error:[/red] {problems}")
        raise typer.Exit(2) from exc


def _run(
    coro_fn: Callable[[OrchestratorRuntime], Coroutine[Any, Any, int]], ctx: typer.Context, *, existing: bool = False
) -> None:
    """Open a runtime, run ``coro_fn(rt)``, and turn known errors into a message and an exit code.

    ``existing``: the command only reads or answers what is there (resume, listings): a data dir that does not
    exist is a mistyped ``--data-dir`` or ``ORCH_DATA_DIR``, refused with exit 2 instead of created empty.
    """
    from core.llm import InvalidModelOutput, ModelUnreachable
    from core.runtime import OrchestratorRuntime, RuntimeInputError

    settings = _settings(ctx)
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

    try:
        code = asyncio.run(go())
    except RuntimeInputError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except (ModelUnreachable, InvalidModelOutput) as exc:
        err.print(
            f"[red]model error:[/red] {exc}\nThe thread's checkpoint is kept; `orchestrator resume THREAD` "
            "continues once the model answers."
        )
        raise typer.Exit(1) from exc
    except Exception as exc:  # a node failed: say so plainly; the checkpoint before that node is kept
        err.print(
            f"[red]run failed:[/red] {type(exc).__name__}: {exc}\nThe checkpoint before the failing node is kept; "
            "`orchestrator resume THREAD` retries from there."
        )
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


async def _render(events: AsyncIterator[RunEvent], renderer: Any) -> list[RunEvent]:
    """Render a stream; return its interrupt events."""
    pending = []
    async for ev in events:
        renderer.event(ev)
        if ev.kind == "interrupt":
            pending.append(ev)
    return pending


@app.command()
def chat(
    ctx: typer.Context,
    thread: Annotated[str | None, typer.Option(help="Continue this thread (default: a new one).")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Send one message and exit.")] = None,
) -> None:
    """Talk with the Product Owner. Shows each node as it runs and asks pending approvals inline."""
    from cli.render import Renderer
    from core.runtime import Answer

    renderer = Renderer(console)

    async def body(rt: OrchestratorRuntime) -> int:
        import uuid

        thread_id = thread or f"t-{uuid.uuid4().hex[:12]}"
        console.print(f"[dim]thread {thread_id} — empty line or Ctrl-D to leave[/dim]")
        for p in await rt.pending(thread_id) if await rt.thread_exists(thread_id) else []:
            renderer.pending(p.payload, p.id)
            if sys.stdin.isatty():
                await _ask_inline(rt, thread_id, p.payload, p.id, renderer)
            else:
                console.print(answer_hint(thread_id, p.payload), soft_wrap=True, highlight=False)
        while True:
            text = message if message is not None else _prompt("you")
            if not text:
                return 0
            pending = await _render(rt.start_turn(text, thread_id), renderer)
            while pending and sys.stdin.isatty():
                ev = pending[0]
                pending = await _ask_inline(rt, thread_id, ev.payload or {}, ev.interrupt_id, renderer)
            for ev in pending:
                console.print(answer_hint(thread_id, ev.payload or {}), soft_wrap=True, highlight=False)
            if message is not None:
                return 0

    async def _ask_inline(
        rt: OrchestratorRuntime, thread_id: str, payload: dict[str, Any], iid: str | None, renderer: Renderer
    ) -> list[Any]:
        if payload.get("kind") == "deploy_approval":
            choice = _prompt("approve / reject REASON / feedback TEXT")
            verb, _, rest = (choice or "").partition(" ")
            answer = {"approve": Answer("approve"), "reject": Answer("reject", rest), "feedback": Answer("text", rest)}
            if verb not in answer:
                console.print("[yellow]left pending[/yellow]")
                return []
            return await _render(rt.resume(thread_id, answer[verb], iid), renderer)
        if payload.get("kind") == "waiting_for_resources":
            if _prompt("retry now? yes / empty to leave it waiting").lower() not in ("y", "yes"):
                return []
            return await _render(rt.resume(thread_id, Answer("approve"), iid), renderer)
        text = _prompt("guidance for the Developer")
        return await _render(rt.resume(thread_id, Answer("text", text), iid), renderer) if text else []

    _run(body, ctx)


def answer_hint(thread_id: str, payload: dict[str, Any]) -> str:
    """The ``orchestrator resume`` command lines that answer this pending question."""
    how = {
        "deploy_approval": "--approve | --reject REASON | --answer FEEDBACK",
        "engineering_guidance": '--answer "what the Developer should do"',
        "waiting_for_resources": "--approve (retry now; the sync retries by itself once a server is ready)",
    }.get(str(payload.get("kind")), "--answer TEXT")
    return f"Answer later with: orchestrator resume {thread_id} {how}"


def _prompt(label: str) -> str:
    try:
        return console.input(f"[bold]{label}>[/bold] ").strip()
    except EOFError:
        return ""


@app.command()
def resume(
    ctx: typer.Context,
    thread: Annotated[str, typer.Argument(help="The thread id (see `orchestrator threads`).")],
    approve: Annotated[bool, typer.Option("--approve", help="Approve the pending deploy.")] = False,
    reject: Annotated[str | None, typer.Option(help="Reject the pending deploy, with a reason.")] = None,
    answer: Annotated[str | None, typer.Option(help="Feedback on a deploy, or guidance for a stuck loop.")] = None,
    interrupt_id: Annotated[str | None, typer.Option(help="Which question, when several are pending.")] = None,
) -> None:
    """Answer a pending interrupt from any process, any time later; with no answer, finish a run that stopped."""
    from cli.render import Renderer
    from core.runtime import Answer

    chosen = [
        a
        for a in (
            Answer("approve") if approve else None,
            Answer("reject", reject) if reject is not None else None,
            Answer("text", answer) if answer is not None else None,
        )
        if a
    ]
    if len(chosen) > 1:
        err.print("[red]error:[/red] give one of --approve, --reject REASON, --answer TEXT")
        raise typer.Exit(2)
    renderer = Renderer(console)

    async def body(rt: OrchestratorRuntime) -> int:
        events = rt.resume(thread, chosen[0], interrupt_id) if chosen else rt.continue_run(thread)
        await _render(events, renderer)
        return 0

    _run(body, ctx, existing=True)


@app.command()
def threads(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Threads, newest first, with their pending interrupts."""
    from dataclasses import asdict

    from rich.table import Table

    async def body(rt: OrchestratorRuntime) -> int:
        views = await rt.threads()
        if as_json:
            print(json.dumps([asdict(v) for v in views], indent=2, default=str))
            return 0
        table = Table("thread", "title", "updated", "waiting for")
        for v in views:
            waiting = ", ".join(f"{p.payload.get('kind')}: {p.payload.get('question', '')}" for p in v.pending)
            table.add_row(v.id, v.title, v.updated_at[:19], waiting or ("stopped mid-run" if v.stopped_mid_run else ""))
        console.print(table)
        return 0

    _run(body, ctx, existing=True)


@app.command()
def projects(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Projects and their lifecycle status."""
    _table(ctx, "projects", as_json)


@app.command()
def servers(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Servers, their status and port ranges."""
    _table(ctx, "servers", as_json)


@app.command("add-server")
def add_server(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Inventory name, e.g. web-1.")],
    address: Annotated[str, typer.Option(help="IP address or DNS name.")],
    ssh_port: Annotated[int, typer.Option(help="SSH port.")] = 22,
    ssh_user: Annotated[str, typer.Option(help="SSH user (key auth; see ORCH_SSH_KEY_PATH).")] = "root",
    ports: Annotated[str, typer.Option(help="Port range lent to projects, START-END.")] = "8100-8199",
    provision: Annotated[
        bool, typer.Option(help="Run playbooks/provision.yml first (the sync's provisioner_trigger does).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Register a server: the next `orchestrator sync` pass checks it (or provisions it) and makes it ready."""
    from pydantic import ValidationError

    from core.servers import ServerCreate, ServerExists
    from core.servers import add_server as register

    try:
        start, _, end = ports.partition("-")
        spec = ServerCreate(
            name=name,
            address=address,
            ssh_port=ssh_port,
            ssh_user=ssh_user,
            port_range_start=int(start),
            port_range_end=int(end or start),
            provision=provision,
        )
    except ValueError as exc:  # ValidationError is a ValueError; so is a port range that is not numbers
        problems = (
            "; ".join(f"{'.'.join(map(str, e['loc'])) or 'server'}: {e['msg']}" for e in exc.errors())
            if isinstance(exc, ValidationError)
            else f"--ports {ports!r} is not START-END"
        )
        err.print(f"[red]error:[/red] {problems}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc

    async def body(rt: OrchestratorRuntime) -> int:
        try:
            server = await register(rt.db, spec)
        except ServerExists as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            return 2
        row = {"name": server.name, "address": server.address, "status": server.status.value, "id": server.id}
        if as_json:
            print(json.dumps(row))
        else:
            nxt = "provisions it" if provision else "checks it over SSH"
            console.print(f"server {server.name} registered ({server.status.value}); the next sync pass {nxt}")
        return 0

    _run(body, ctx)


def _table(ctx: typer.Context, what: str, as_json: bool) -> None:
    from rich.table import Table

    from cli.listing import project_rows, server_rows

    async def body(rt: OrchestratorRuntime) -> int:
        rows = await (project_rows(rt.db) if what == "projects" else server_rows(rt.db))
        if as_json:
            print(json.dumps(rows, indent=2, default=str))
            return 0
        table = Table(*(rows[0].keys() if rows else ["(none)"]))
        for row in rows:
            table.add_row(*(str(v) if v is not None else "" for v in row.values()))
        console.print(table)
        return 0

    _run(body, ctx, existing=True)


def _secrets_db(ctx: typer.Context, body: Callable[[Any], Coroutine[Any, Any, int]]) -> None:
    """Run ``body(db)`` on the data dir's database (no graph, no model); secrets errors exit 2 with their words.

    A data dir that does not exist is refused (exit 2): a mistyped ``--data-dir`` would otherwise get a fresh,
    empty database and a new key.
    """
    from core.db import Database
    from core.secrets import SecretsError

    settings = _settings(ctx)
    if settings.database_url is None and not settings.data_dir.is_dir():
        err.print(
            f"[red]error:[/red] no data dir at {settings.data_dir.resolve()}: no projects there; "
            "check --data-dir or ORCH_DATA_DIR",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)

    async def go() -> int:
        db = Database(settings.db_url)
        try:
            await db.migrate()
            return await body(db)
        finally:
            await db.dispose()

    try:
        code = asyncio.run(go())
    except SecretsError as exc:
        from rich.markup import escape

        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def _read_secret_value(name: str) -> str:
    """The value from stdin (a pipe or a file: one trailing newline dropped) or a hidden prompt asked twice."""
    import getpass

    if not sys.stdin.isatty():
        value = sys.stdin.read()
        return value[:-2] if value.endswith("\r\n") else value[:-1] if value.endswith("\n") else value
    first = getpass.getpass(f"value of {name} (hidden): ")
    if getpass.getpass(f"value of {name} again: ") != first:
        err.print("[red]error:[/red] the two values differ; nothing was stored")
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
    from core.secrets import list_secret_names, load_keys, set_secret, validate_secret_name

    settings = _settings(ctx)

    async def body(db: Any) -> int:
        validate_secret_name(name)
        await list_secret_names(db, project)  # an unknown project is refused before the value is asked for
        keys = load_keys(settings)
        new = await set_secret(db, project, name, _read_secret_value(name), keys=keys)
        console.print(
            f"secret {name} of {project} {'stored' if new else 'replaced'} (encrypted); the next deploy passes it "
            "to the service",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return 0

    _secrets_db(ctx, body)


@app.command("secret-list")
def secret_list(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="The project's name.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """A project's secrets: names and when they were set (never a value), and the required ones still missing."""
    from rich.table import Table

    from core.secrets import secret_set_commands, secret_status

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
            table.add_row(i.name, i.updated_at.isoformat(timespec="seconds"))
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

    _secrets_db(ctx, body)


@app.command("secret-rm")
def secret_rm(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="The project's name.")],
    name: Annotated[str, typer.Argument(help="The environment variable to remove.")],
) -> None:
    """Remove a secret; the next deploy restarts the service without it."""
    from core.secrets import delete_secret, validate_secret_name

    async def body(db: Any) -> int:
        validate_secret_name(name)
        if not await delete_secret(db, project, name):
            err.print(f"error: {project} has no secret {name}; nothing removed", markup=False, highlight=False)
            return 2
        console.print(f"secret {name} of {project} removed", highlight=False, markup=False)
        return 0

    _secrets_db(ctx, body)


@app.command("secret-rotate")
def secret_rotate(ctx: typer.Context) -> None:
    """Re-encrypt every secret with the first key of ORCH_SECRETS_KEY (a new key first, the old one after it)."""
    from core.secrets import load_keys, rotate_secrets

    settings = _settings(ctx)

    async def body(db: Any) -> int:
        count = await rotate_secrets(db, keys=load_keys(settings))
        console.print(f"{count} secret(s) re-encrypted with the first key; the old key may now be dropped")
        return 0

    _secrets_db(ctx, body)


@app.command()
def sync(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="One pass of every worker, then exit (1 if one failed).")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="WORKER",
            help="Run only this worker (repeatable): github_sync, server_sync, health_checker, provisioner_trigger.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --once: the summaries as JSON.")] = False,
) -> None:
    """The source-of-truth service: keep the database equal to GitHub and the servers, resume waiting projects.

    Runs until SIGTERM/SIGINT, letting passes in flight finish. One sync process works at a time; another waits.
    """
    import os
    from dataclasses import asdict
    from datetime import datetime

    from rich.text import Text

    from sync_workers.base import PassSummary
    from sync_workers.lock import SyncLock, waiting_message
    from sync_workers.scheduler import check_names, describe, run_forever, run_once

    settings = _settings(ctx)
    try:
        check_names(only)
        if as_json and not once:
            raise ValueError("--json needs --once (a running sync prints a line per pass)")
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc

    def show(summary: PassSummary, stamp: bool = False) -> None:
        prefix = f"{datetime.now():%H:%M:%S} " if stamp else ""
        line = describe(summary)
        style = "red" if summary.errors else ("dim" if line != summary.line() else "green")
        console.print(Text(prefix + line, style=style), soft_wrap=True, highlight=False)
        for note in summary.notes:
            if note not in line:
                console.print(Text(f"    {note}", style="dim"), soft_wrap=True, highlight=False)

    def starting(name: str) -> None:
        err.print(f"{name}: running…", style="dim", markup=False, highlight=False)

    async def go() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)  # while waiting for the lock, and through --once
        lock = SyncLock(settings, on_lost=stop)  # a lost lock stops the workers as SIGTERM does
        acquiring = asyncio.create_task(
            lock.acquire(on_wait=lambda pid: err.print(waiting_message(pid), markup=False, highlight=False))
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            err.print("stopped before the lock was free; nothing ran", markup=False)
            return 0
        stopping.cancel()
        acquiring.result()
        try:
            if once:
                summaries = await run_once(
                    settings, only=only, stop=stop, on_start=starting, on_summary=None if as_json else show
                )
                if as_json:
                    print(json.dumps([{**asdict(s), "ok": s.ok} for s in summaries], indent=2))
                if lock.lost.is_set():
                    err.print(f"sync: lost the lock ({lock.lost_reason}); stopped", markup=False)
                    return 1
                if stop.is_set():
                    err.print("sync: stopped on request before every worker ran", markup=False)
                    return 1
                return 1 if any(s.errors for s in summaries) else 0
            err.print(
                f"sync: running (pid {os.getpid()}, data {settings.data_dir}); SIGTERM or Ctrl-C stops",
                markup=False,
                highlight=False,
            )
            await run_forever(
                settings, stop=stop, only=only, on_summary=lambda s: show(s, stamp=True), cancel=lock.lost
            )
            if lock.lost.is_set():
                err.print(f"sync: lost the lock ({lock.lost_reason}); stopped", markup=False)
                return 1
            err.print("sync: stopped cleanly", markup=False)
            return 0
        finally:
            await lock.release()

    raise typer.Exit(asyncio.run(go()))


@app.command()
def demo(
    ctx: typer.Context,
    keep_running: Annotated[bool, typer.Option(help="Leave the deployed service running.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the run in this dir (default: a fresh temporary one).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="A real litellm model instead of the recording (or set ORCH_MODEL).")
    ] = None,
) -> None:
    """The main job end to end on a recorded model: chat -> Zavhoz || Engineering -> approval -> Ansible deploy."""
    from cli.demo import run_demo

    code = run_demo(data_dir or ctx.obj.get("data_dir"), model or ctx.obj.get("model"), keep_running, console)
    raise typer.Exit(code)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve the same runtime over HTTP (FastAPI): threads, messages (SSE), approvals, projects, servers."""
    import uvicorn

    uvicorn.run("api.app:app_factory", factory=True, host=host, port=port)


if __name__ == "__main__":
    app()
