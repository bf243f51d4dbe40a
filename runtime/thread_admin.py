"""A thread's administration: read its conversation, archive it, cancel its run.

The API (``GET /threads/{id}/messages``, ``DELETE /threads/{id}``, ``POST /threads/{id}/cancel``) and the CLI
(``orchestrator thread messages|archive|cancel``) both call these functions. Each one first checks that the caller
may see the thread: an unknown thread, or another owner's to an identity that sees only its own, is
:class:`UnknownThread` (404), as on every other thread route.

Cancel: a run in progress, in this process or any other, is asked to stop at its next superstep boundary with the
stop request of :mod:`runtime.multitask` (reason ``cancel``), and the cancel waits, bounded, for it to let go of the
thread's lock. A run that stopped mid-way (a crash, a failed model call, a drain) is then abandoned: the thread
index stops calling it mid-run, so the next message starts from START on the conversation as it stands, the way
LangGraph runs new input on a checkpoint with unfinished tasks (see :func:`runtime.multitask.prepare_turn`). The
checkpoint is kept. A pending question is not answered here: the cancel is refused, pointing to the answer or to
the project's cancel (``POST /projects/{name}/cancel``), which answers it for the project's sake.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlmodel import select

from core.db import Database
from models.tables import Project, ThreadRecord
from runtime.errors import RuntimeInputError, ThreadStateConflict, UnknownThread
from runtime.listing import abandon_run, archive, thread_record
from runtime.multitask import NOT_RUN, hold_thread, was_cancelled
from services.cancel import CANCELLABLE
from services.identities import Identity, record

if TYPE_CHECKING:  # LangGraph and its messages load with the graph (runtime.po_graph), not with this module
    from langchain_core.messages import BaseMessage, ToolMessage
    from langchain_core.runnables import RunnableConfig

    from runtime.threads import OrchestratorRuntime

MESSAGE_PAGE = 100
"""Messages per page when the caller names no ``limit``."""
MAX_MESSAGE_PAGE = 500
"""The largest page of messages."""
CANCEL_WAIT_S = 120.0
"""How long a cancel waits for a run in progress to stop (seconds) when the caller names no wait."""
MAX_CANCEL_WAIT_S = 900.0
"""The longest wait a cancel may ask for (seconds)."""

Role = Literal["human", "ai", "tool", "system"]


@dataclass(frozen=True)
class ThreadMessage:
    """One message of a thread's conversation, as a person may read it.

    ``index`` is its place in the conversation (0: the first message; the order they were added). ``text``: the
    words of a person or the PO; for a tool result only a summary (which tool, whether it answered, how long the
    answer was): tool results carry database rows and are never shown. ``tool_calls``: the names of the tools an
    ``ai`` message asked for (their arguments are not shown). ``name``: the tool's name for ``tool``, else the
    message's own name if it has one.
    """

    index: int
    role: Role
    text: str
    name: str | None = None
    tool_calls: tuple[str, ...] = ()
    id: str | None = None


@dataclass(frozen=True)
class MessagePage:
    """A page of a thread's conversation, oldest first.

    ``total``: messages in the thread; ``earlier``: the ``before`` that reads the page before this one (None: this
    page starts at the first message).
    """

    thread_id: str
    total: int
    messages: list[ThreadMessage]
    earlier: int | None


@dataclass(frozen=True)
class CancelOutcome:
    """What a cancel did.

    ``outcome``: ``stopped`` (a run in progress stopped at a superstep boundary and was abandoned), ``abandoned`` (a
    run that had stopped mid-way was abandoned), ``finished`` (the run in progress ended on its own before it
    could stop: nothing was left to abandon). ``project``/``project_status``: the project the thread works on, if
    any; its status is not changed by a thread's cancel (``POST /projects/{name}/cancel`` stops a project's work).
    """

    thread_id: str
    outcome: Literal["stopped", "abandoned", "finished"]
    message: str
    project: str | None = None
    project_status: str | None = None


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


async def visible_record(rt: OrchestratorRuntime, thread_id: str, actor: Identity) -> ThreadRecord | None:
    """The thread's index row (None for a thread with a checkpoint but no row), once ``actor`` may see the thread.

    Raises:
        UnknownThread: neither a row nor a checkpoint exists, or the row is another owner's and ``actor`` sees only
            its own (approvers and admins see every thread; a thread with no owner only to them).
    """
    row = await thread_record(rt.db, thread_id)
    known = row is not None or await rt.thread_exists(thread_id)
    if not known or not actor.sees(row.owner if row else None):
        raise UnknownThread(f"unknown thread {thread_id!r}: list threads to see the known ones")
    return row


async def thread_messages(
    rt: OrchestratorRuntime,
    thread_id: str,
    *,
    actor: Identity,
    limit: int = MESSAGE_PAGE,
    before: int | None = None,
) -> MessagePage:
    """A page of the thread's conversation from its latest checkpoint (the PO graph's ``messages``), oldest first.

    Args:
        rt: the open runtime.
        thread_id: the thread.
        actor: who reads (see :func:`visible_record`).
        limit: messages per page, 1 to :data:`MAX_MESSAGE_PAGE`.
        before: only messages with an index below this one (a page's ``earlier``); None: the latest page.

    Raises:
        RuntimeInputError: ``limit`` or ``before`` out of range. UnknownThread: see :func:`visible_record`.
    """
    if not 1 <= limit <= MAX_MESSAGE_PAGE:
        raise RuntimeInputError(f"limit must be 1 to {MAX_MESSAGE_PAGE}; got {limit}")
    if before is not None and before < 0:
        raise RuntimeInputError(f"before must be a message index, 0 or more; got {before}")
    await visible_record(rt, thread_id, actor)
    state = await (await rt.compiled()).aget_state(_config(thread_id))
    messages: list[BaseMessage] = list(state.values.get("messages", [])) if state.created_at else []
    end = len(messages) if before is None else min(before, len(messages))
    start = max(0, end - limit)
    page = [public_message(i, m) for i, m in enumerate(messages[start:end], start)]
    return MessagePage(thread_id=thread_id, total=len(messages), messages=page, earlier=start or None)


def public_message(index: int, message: BaseMessage) -> ThreadMessage:
    """``message`` as a person may read it (see :class:`ThreadMessage`); a tool result becomes a summary."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    if isinstance(message, ToolMessage):
        return ThreadMessage(index, "tool", tool_summary(message), name=message.name, id=message.id)
    role: Role = "system"
    if isinstance(message, HumanMessage):
        role = "human"
    elif isinstance(message, AIMessage):
        role = "ai"
    elif not isinstance(message, SystemMessage):
        role = {"human": "human", "ai": "ai"}.get(message.type, "system")  # type: ignore[assignment]
    calls = tuple(c["name"] for c in message.tool_calls) if isinstance(message, AIMessage) else ()
    return ThreadMessage(index, role, message.text, name=message.name, tool_calls=calls, id=message.id)


def tool_summary(message: ToolMessage) -> str:
    """``<tool>: answered (N characters, not shown)``, ``<tool>: error (not shown)`` or ``<tool>: not run: ...``.

    A tool's answer may hold rows of the database (servers, projects, addresses): only its size is told.
    """
    name = message.name or "tool"
    content = message.text
    try:
        parsed: Any = json.loads(content)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if error == NOT_RUN:
        return f"{name}: {NOT_RUN}"
    if error is not None or message.status == "error":
        return f"{name}: error (not shown)"
    return f"{name}: answered ({len(content)} characters, not shown)"


async def archive_thread(rt: OrchestratorRuntime, thread_id: str, *, actor: Identity) -> bool:
    """Archive the thread as ``actor``: listings leave it out, a new message to it is refused; its history stays.

    Refused while a run of it is going and while it waits for an answer to a question: a pending question (a deploy
    approval, a resource wait) would be forgotten, not answered; answer it or cancel the project's work first. A run
    stopped mid-way may be archived as it is. Goes on the trail of the thread's project as ``thread_archived``.

    Returns:
        True when archived now, False when it already was (nothing changed).

    Raises:
        UnknownThread: see :func:`visible_record`. ThreadStateConflict: a run is going, or a question is pending.
    """
    await visible_record(rt, thread_id, actor)
    hint = f" (or cancel it: orchestrator thread cancel {thread_id}, POST /threads/{thread_id}/cancel), then archive"
    async with hold_thread(rt.settings.data_dir, thread_id, hint=hint):
        state = await (await rt.compiled()).aget_state(_config(thread_id))
        if state.interrupts:
            raise ThreadStateConflict(_pending_text(thread_id, state.interrupts, "archiving it"))
        done = await archive(rt.db, thread_id)
    if done:
        await _on_project_trail(rt.db, thread_id, "thread_archived", f"thread {thread_id} archived", actor)
    return done


async def cancel_thread(
    rt: OrchestratorRuntime,
    thread_id: str,
    *,
    actor: Identity,
    reason: str = "cancelled",
    wait_s: float = CANCEL_WAIT_S,
) -> CancelOutcome:
    """Abandon the thread's run as ``actor``: stop a run in progress, or drop one that stopped mid-way.

    A run in progress anywhere (the API, a chat, the sync) is asked to stop at its next superstep (it ends with a
    ``drained`` event saying it was cancelled) and this waits up to ``wait_s`` seconds for it. Then, if the thread's
    checkpoint still has steps to run, they are abandoned: the next message starts afresh from the conversation
    (tool calls left unanswered get an error answer). On the trail of the thread's project as ``run_cancelled``
    (with ``reason``); the project's own status does not change.

    Raises:
        UnknownThread: see :func:`visible_record`. ThreadStateConflict: the thread waits for an answer to a
            question (answer it, or cancel the project: ``POST /projects/{name}/cancel``); it has no run to cancel
            (its last run ended, or its stopped run was cancelled already); the run in progress did not stop within
            ``wait_s`` (nothing was changed; ask again). RuntimeInputError: ``wait_s`` out of range.
    """
    if not 0 < wait_s <= MAX_CANCEL_WAIT_S:
        raise RuntimeInputError(f"wait_s must be above 0 and at most {MAX_CANCEL_WAIT_S:g} seconds; got {wait_s:g}")
    await visible_record(rt, thread_id, actor)
    outcome: Literal["stopped", "abandoned", "finished"]
    async with hold_thread(rt.settings.data_dir, thread_id, "cancel", wait_s=wait_s) as was_running:
        state = await (await rt.compiled()).aget_state(_config(thread_id))
        if state.interrupts:
            raise ThreadStateConflict(_pending_text(thread_id, state.interrupts, "a cancel of the thread"))
        if not state.next and was_running:
            outcome = "finished"
        elif not state.next:
            raise ThreadStateConflict(f"thread {thread_id} has no run to cancel: its last run ended")
        elif not was_running and was_cancelled(await thread_record(rt.db, thread_id)):
            raise ThreadStateConflict(
                f"thread {thread_id}'s stopped run was cancelled already: a new message starts afresh"
            )
        else:
            await abandon_run(rt.db, thread_id)
            outcome = "stopped" if was_running else "abandoned"
    if outcome == "finished":
        project = await _project_of(rt.db, thread_id)
    else:
        why = f"thread {thread_id}: run {outcome} by a cancel: {reason}"
        project = await _on_project_trail(rt.db, thread_id, "run_cancelled", why, actor)
    return CancelOutcome(
        thread_id=thread_id,
        outcome=outcome,
        message=_cancel_text(thread_id, outcome, project),
        project=project.name if project else None,
        project_status=project.status.value if project else None,
    )


def _cancel_text(thread_id: str, outcome: str, project: Project | None) -> str:
    text = {
        "stopped": f"the run in progress on thread {thread_id} stopped between steps and was abandoned",
        "abandoned": f"the run that stopped mid-way on thread {thread_id} was abandoned",
        "finished": f"the run on thread {thread_id} ended on its own before it could stop; nothing was abandoned",
    }[outcome]
    if outcome != "finished":
        text += "; a new message starts afresh from the conversation"
    if project is not None and project.status in CANCELLABLE:
        text += (
            f". Project {project.name} stays {project.status.value}: `orchestrator cancel {project.name}` "
            f"(POST /projects/{project.name}/cancel) stops its work"
        )
    return text


def _pending_text(thread_id: str, interrupts: Any, doing: str) -> str:
    kinds = ", ".join(sorted({str(dict(i.value).get("kind")) for i in interrupts}))
    return (
        f"thread {thread_id} waits for an answer to its pending question ({kinds}), which {doing} would not give: "
        f"answer it (orchestrator resume {thread_id}, POST /threads/{thread_id}/resume), or cancel its project's "
        "work (orchestrator cancel PROJECT, POST /projects/{name}/cancel)"
    )


async def _project_of(db: Database, thread_id: str) -> Project | None:
    async with db.session() as s:
        return (await s.exec(select(Project).where(Project.thread_id == thread_id))).first()


async def _on_project_trail(db: Database, thread_id: str, action: str, reason: str, actor: Identity) -> Project | None:
    """Write ``action`` on the trail of the project the thread works on (none: nothing written); return it."""
    project = await _project_of(db, thread_id)
    if project is None or project.id is None:
        return project
    async with db.session() as s:
        await record(
            s,
            subject_type="project",
            subject_id=project.id,
            action=action,
            reason=reason[:500],
            actor=actor.name,
            thread_id=thread_id,
        )
    return project
