"""``chat``, ``resume`` and ``threads``: talk with the PO and answer its questions, from any process."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.app import (
    INTERRUPTED_EXIT,
    PromptInterrupted,
    app,
    console,
    err,
    print_interrupted,
    read_input,
    run_with_db,
    run_with_runtime,
)
from cli.render import error_line, line, literal
from runtime.multitask import DEFAULT_STRATEGY, Strategy

if TYPE_CHECKING:
    from core.db import Database
    from runtime.listing import ThreadPage
    from runtime.threads import OrchestratorRuntime, RunEvent


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
    multitask: Annotated[
        Strategy,
        typer.Option(
            help="If a run of the thread is going: reject (refuse), enqueue (run after it), interrupt (stop it at its "
            "next step, keep its progress) or rollback (stop it, drop its progress).",
        ),
    ] = DEFAULT_STRATEGY,
) -> None:
    """Talk with the Product Owner. Shows each node as it runs and asks pending approvals inline.

    A message to a thread that another process is running follows `--multitask` (LangGraph Platform's double
    texting); a thread waiting for an answer refuses every strategy: answer it first (`orchestrator resume`).
    """
    from cli.render import Renderer
    from core.llm_failures import ModelUnreachable
    from runtime.answers import Answer
    from runtime.errors import RuntimeInputError
    from services.identities import cli_identity

    renderer = Renderer(console)
    interactive = message is None and sys.stdin.isatty()

    async def body(rt: OrchestratorRuntime) -> int:
        import uuid

        thread_id = thread or f"t-{uuid.uuid4().hex[:12]}"
        how = " — /retry asks again after a model error; an empty line, /quit or Ctrl-D to leave" if interactive else ""
        console.print(line((f"thread {thread_id}{how}", "dim")), soft_wrap=True)
        try:
            for p in await rt.pending(thread_id) if await rt.thread_exists(thread_id) else []:
                renderer.pending(p.payload, p.id)
                if sys.stdin.isatty():
                    await _ask_inline(rt, thread_id, p.payload, p.id, renderer)
                else:
                    console.print(literal(answer_hint(thread_id, p.payload)), soft_wrap=True)
            while True:
                text = message if message is not None else _prompt("you")
                if not text or text in ("/quit", "/exit"):
                    return 0
                try:
                    await turn(rt, thread_id, text)
                except (ModelUnreachable, RuntimeInputError) as exc:
                    if not interactive:
                        raise
                    _turn_failed(exc, thread_id)  # the session stays open: the prompt comes back
                if message is not None:
                    return 0
        except PromptInterrupted:
            print_interrupted(f"left thread {thread_id} as it is; `orchestrator chat --thread {thread_id}` goes on")
            return INTERRUPTED_EXIT

    async def turn(rt: OrchestratorRuntime, thread_id: str, text: str) -> None:
        """One line of the person's: a message to the PO, or ``/retry`` (finish the run a model error stopped).

        In an interactive chat, a line is not sent while nothing listens where the model is served (see
        :mod:`cli.model_probe`): the person hears why at once, and can type again.
        """
        from cli.model_probe import unreachable

        if text == "/retry":
            events = rt.continue_run(thread_id, actor=cli_identity())
        elif interactive and (why := await unreachable(rt.settings)):
            _no_model(f"ORCH_MODEL={rt.settings.model_for('po')}: {why}; your message was not sent.")
            return
        else:
            events = rt.start_turn(text, thread_id, actor=cli_identity(), multitask=multitask)
        pending = await _render(events, renderer)
        while pending and sys.stdin.isatty():
            ev = pending[0]
            pending = await _ask_inline(rt, thread_id, ev.payload or {}, ev.interrupt_id, renderer)
        for ev in pending:
            console.print(literal(answer_hint(thread_id, ev.payload or {})), soft_wrap=True)

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
            return await _render(rt.resume(thread_id, answer[verb], iid, actor=cli_identity()), renderer)
        if payload.get("kind") == "waiting_for_resources":
            if _prompt("retry now? yes / empty to leave it waiting").lower() not in ("y", "yes"):
                return []
            return await _render(rt.resume(thread_id, Answer("approve"), iid, actor=cli_identity()), renderer)
        if payload.get("kind") == "budget_exhausted":
            choice = _prompt("extend (one more default budget) / stop / amounts like calls=20 cost=1.5")
            if not choice:
                console.print("[yellow]left pending[/yellow]")
                return []
            given = {"extend": Answer("approve"), "stop": Answer("reject", "stop")}.get(choice, Answer("text", choice))
            return await _render(rt.resume(thread_id, given, iid, actor=cli_identity()), renderer)
        text = _prompt(f"guidance for the {payload.get('role') or 'Developer'}")
        return (
            await _render(rt.resume(thread_id, Answer("text", text), iid, actor=cli_identity()), renderer)
            if text
            else []
        )

    run_with_runtime(body, ctx)


def answer_hint(thread_id: str, payload: dict[str, Any]) -> str:
    """The ``orchestrator resume`` command lines that answer this pending question."""
    how = {
        "deploy_approval": "--approve | --reject REASON | --answer FEEDBACK",
        "engineering_guidance": '--answer "what to do next" (or --answer stop)',
        "waiting_for_resources": "--approve (retry now; the sync retries by itself once a server is ready)",
        "budget_exhausted": '--approve (one more default budget) | --answer "calls=20 cost=1.5" | --reject (stop)',
    }.get(str(payload.get("kind")), "--answer TEXT")
    from cli.render import deadline_note

    note = deadline_note(payload)
    return f"Answer later with: orchestrator resume {thread_id} {how}" + (f" — {note}" if note else "")


NO_ANSWER_CAUSES = ("connection", "timeout", "auth", "not_found", "rate_limited", "server_error")
"""Model failures that mean no model answers at all (as opposed to one request it refused)."""


CONFIGURE_MODEL = (
    "Configure one: ORCH_MODEL=<litellm model> (e.g. openai/gpt-4o-mini, ollama_chat/qwen2.5-coder:7b) with its key "
    "in ORCH_API_KEY (ORCH_API_BASE for a server of your own), or ORCH_MODEL=replay/hello-api for the recorded demo."
)
"""How to give the chat a model, said whenever none answers."""


def _no_model(why: str, headline: str = "no model answers:", then: str = "") -> None:
    """Say that the model does not answer (``why``), how to configure one, and ``then`` what happens next."""
    err.print(error_line(why, headline), soft_wrap=True)
    err.print(literal(f"{CONFIGURE_MODEL} {then}".rstrip()), soft_wrap=True)


def _turn_failed(exc: Exception, thread_id: str) -> None:
    """Say why a turn of an interactive chat failed, and how to go on; the chat goes on."""
    from core.llm_failures import ModelUnreachable

    if not isinstance(exc, ModelUnreachable):
        err.print(error_line(exc), soft_wrap=True)
        return
    then = f"Your message stays on thread {thread_id}: /retry asks again, or later `orchestrator resume {thread_id}`."
    _no_model(str(exc), "no model answers:" if exc.cause in NO_ANSWER_CAUSES else "model error:", then)


def _prompt(label: str) -> str:
    """A line typed at ``label>`` (stripped); empty at the end of the input. Ctrl-C raises PromptInterrupted."""
    try:
        return read_input(lambda: console.input(line((f"{label}>", "bold"), " "))).strip()
    except EOFError:
        return ""


@app.command()
def resume(
    ctx: typer.Context,
    thread: Annotated[str, typer.Argument(help="The thread id (see `orchestrator threads`).")],
    approve: Annotated[bool, typer.Option("--approve", help="Approve the pending deploy.")] = False,
    reject: Annotated[
        str | None,
        typer.Option(help="Reject the pending deploy (or stop a stuck loop, a spent budget), with a reason."),
    ] = None,
    answer: Annotated[
        str | None, typer.Option(help="Feedback on a deploy, or guidance for a stuck loop (`stop` ends it).")
    ] = None,
    interrupt_id: Annotated[str | None, typer.Option(help="Which question, when several are pending.")] = None,
) -> None:
    """Answer a pending interrupt from any process, any time later; with no answer, finish a run that stopped."""
    from cli.render import Renderer
    from runtime.answers import Answer
    from services.identities import cli_identity

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
        err.print(error_line("give one of --approve, --reject REASON, --answer TEXT"))
        raise typer.Exit(2)
    renderer = Renderer(console)

    async def body(rt: OrchestratorRuntime) -> int:
        events = (
            rt.resume(thread, chosen[0], interrupt_id, actor=cli_identity())
            if chosen
            else rt.continue_run(thread, actor=cli_identity())
        )
        await _render(events, renderer)
        return 0

    run_with_runtime(body, ctx, existing=True)


@app.command()
def cancel(
    ctx: typer.Context,
    project: Annotated[str, typer.Argument(help="The project whose work in flight to stop.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "cancelled from the command line",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the outcome as JSON (the run's events are not shown).")
    ] = False,
) -> None:
    """Cancel a project's work in flight: a stuck loop, a pending question, a run that stopped mid-way.

    Its thread is answered or finished without another model call; the project ends `cancelled` with its port
    released (or back to `active` when the cancelled work was an update of a live release); the trail names you.
    A run going on in another process is asked to stop and does so before its next model call.
    """
    from cli.render import Renderer
    from services.identities import cli_identity

    renderer = Renderer(console)

    async def body(rt: OrchestratorRuntime) -> int:
        outcome: dict[str, Any] = {}
        async for ev in rt.cancel_project(project, actor=cli_identity(), reason=reason):
            if ev.kind == "cancel":
                outcome = {**(ev.payload or {}), "message": ev.text}
            elif not as_json:
                renderer.event(ev)
        if as_json:
            print(json.dumps(outcome, indent=2))
        else:
            color = "green" if outcome.get("stopped") else "yellow"
            console.print(line((str(outcome.get("message")), color)), soft_wrap=True)
        return 0

    run_with_runtime(body, ctx, existing=True)


@app.command()
def threads(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Threads per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next page's cursor, as printed after a page.")] = None,
    archived: Annotated[
        bool, typer.Option("--archived", help="Archived threads too (`orchestrator thread archive`).")
    ] = False,
) -> None:
    """Threads, newest first, with their pending interrupts (a page at a time, from the thread index)."""
    from runtime.listing import list_threads

    class NeedsRuntime(Exception):
        """The page holds threads from before the index: the runtime reads their checkpoints once."""

    async def from_index(db: Database) -> int:
        page = await list_threads(db, limit=limit, cursor=cursor, archived=archived)
        if page.unindexed:
            raise NeedsRuntime
        return _print_threads(page, as_json)

    async def from_runtime(rt: OrchestratorRuntime) -> int:
        return _print_threads(await rt.thread_page(limit=limit, cursor=cursor, archived=archived), as_json)

    try:
        run_with_db(ctx, from_index)
    except NeedsRuntime:
        run_with_runtime(from_runtime, ctx, existing=True)


def _print_threads(page: ThreadPage, as_json: bool) -> int:
    """Print a page of threads (a table, or a JSON list with ``--json``) and how to get the next page; return 0."""
    from dataclasses import asdict

    from rich.table import Table

    from cli.render import deadline_note

    if as_json:  # a list, as before pages; the next page's cursor goes to stderr
        print(json.dumps([asdict(v) for v in page.threads], indent=2))
        if page.next_cursor:
            err.print(literal(f"more: orchestrator threads --json --cursor {page.next_cursor}"), soft_wrap=True)
        return 0
    table = Table("thread", "title", "updated", "waiting for")
    for v in page.threads:
        waiting = ", ".join(
            f"{p.payload.get('kind')}: {p.payload.get('question', '')}"
            + (f" — {deadline_note(p.payload)}" if deadline_note(p.payload) else "")
            for p in v.pending
        )
        status = waiting or ("stopped mid-run" if v.stopped_mid_run else "")
        if v.archived_at:
            status = f"archived; {status}" if status else "archived"
        table.add_row(literal(v.id), literal(v.title), v.updated_at[:19], literal(status))
    console.print(table)
    if page.next_cursor:
        console.print(literal(f"more: orchestrator threads --cursor {page.next_cursor}"), soft_wrap=True)
    return 0
