"""``thread messages|cancel|archive``: read a thread's conversation, abandon its run, archive it.

The same runtime calls as ``GET /threads/{id}/messages``, ``POST /threads/{id}/cancel`` and ``DELETE
/threads/{id}`` (:mod:`runtime.thread_admin`); the CLI acts as ``cli:<OS user>``, which may act on every thread.
``orchestrator threads --archived`` lists archived threads too. Data is printed literally (:mod:`cli.render`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from cli.app import app, command_group, console, run_with_runtime
from cli.render import line, literal

if TYPE_CHECKING:
    from runtime.threads import OrchestratorRuntime

thread_app = command_group(
    help="One thread: read its conversation, cancel its run (a stuck one too), archive it.", no_args_is_help=True
)
app.add_typer(thread_app, name="thread")

Thread = Annotated[str, typer.Argument(help="The thread id (see `orchestrator threads`).")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON output.")]


@thread_app.command("messages")
def messages(
    ctx: typer.Context,
    thread: Thread,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Messages per page (the latest page first).")] = 100,
    before: Annotated[
        int | None, typer.Option(min=0, help="Only messages before this index (as printed after a page).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """The thread's conversation, oldest first: people's and the PO's words, tool answers only summarized."""
    from runtime.thread_admin import thread_messages
    from services.identities import cli_identity

    async def body(rt: OrchestratorRuntime) -> int:
        page = await thread_messages(rt, thread, actor=cli_identity(), limit=limit, before=before)
        if as_json:
            print(json.dumps(asdict(page), indent=2))
            return 0
        for m in page.messages:
            who = {"human": "you", "ai": "PO", "tool": "tool", "system": "system"}[m.role]
            calls = f" (calls {', '.join(m.tool_calls)})" if m.tool_calls else ""
            console.print(line((f"{m.index:>4} {who}:", "bold"), " ", literal(m.text), (calls, "dim")), soft_wrap=True)
        if page.earlier is not None:
            more = f"earlier: orchestrator thread messages {thread} --before {page.earlier}"
            console.print(line((more, "dim")), soft_wrap=True)
        return 0

    run_with_runtime(body, ctx, existing=True)


@thread_app.command("cancel")
def cancel(
    ctx: typer.Context,
    thread: Thread,
    reason: Annotated[str, typer.Option(help="Why, for the project's trail.")] = "cancelled from the command line",
    wait: Annotated[
        float, typer.Option(min=0.1, max=900, help="Seconds to wait for a run in progress to stop.")
    ] = 120.0,
    as_json: AsJson = False,
) -> None:
    """Abandon the thread's run so that a new message starts afresh; the conversation is kept.

    A run going anywhere stops at its next step; a run stopped mid-way (a crash, a model that keeps failing) is
    dropped.

    A thread waiting for an answer is refused: answer it (`orchestrator resume`), or cancel its project's work
    (`orchestrator cancel PROJECT`), which answers it.
    """
    from runtime.thread_admin import cancel_thread
    from services.identities import cli_identity

    async def body(rt: OrchestratorRuntime) -> int:
        outcome = await cancel_thread(rt, thread, actor=cli_identity(), reason=reason, wait_s=wait)
        if as_json:
            print(json.dumps(asdict(outcome), indent=2))
        else:
            console.print(line((outcome.message, "green")), soft_wrap=True)
        return 0

    run_with_runtime(body, ctx, existing=True)


@thread_app.command("archive")
def archive(ctx: typer.Context, thread: Thread, as_json: AsJson = False) -> None:
    """Archive the thread: out of `orchestrator threads` (unless --archived), no new message; its history stays.

    Refused while a run of it is going (cancel it first) or while it waits for an answer.
    """
    from runtime.thread_admin import archive_thread
    from services.identities import cli_identity

    async def body(rt: OrchestratorRuntime) -> int:
        done = await archive_thread(rt, thread, actor=cli_identity())
        if as_json:
            print(json.dumps({"thread_id": thread, "archived": True, "changed": done}))
        else:
            said = f"thread {thread} archived" if done else f"thread {thread} was archived already"
            console.print(line((said, "green")), soft_wrap=True)
        return 0

    run_with_runtime(body, ctx, existing=True)
