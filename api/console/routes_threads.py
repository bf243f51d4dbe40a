"""Console pages of threads, the inbox and runs, and the forms that send a message or answer an interrupt.

A form's POST makes the same runtime call as the JSON API's route (``start_turn`` as ``POST /threads/{id}/messages``,
``resume`` as ``POST /threads/{id}/resume``), counted against the same per-identity run slots, with the same
refusals as JSON ``{"detail": ...}`` (403, 404, 409, 422, 429) before anything runs. The run then goes on in the
background (:func:`api.sse.primed` detaches it from the request) and the browser is sent to the thread's page, whose
live part follows the run's node timeline (the ``node_run`` table) as server-sent events until the run ends, then
reloads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event
from pydantic import BaseModel, Field
from sqlmodel import select

from api.console.access import Operator, Viewer
from api.console.pages import error_page, render
from api.console.routes import redirect
from api.console.session import check_csrf
from api.console.traces import node_runs, run_owner, runs_of, waterfall
from api.console.views import conversation, inbox, may_answer
from api.deps import RuntimeDep
from api.limits import RunSlots
from api.routes_events import STREAM_HEADERS, server_stopping
from api.schemas import MAX_MESSAGE_CHARS, THREAD_ID_PATTERN
from api.sse import primed
from models.tables import Project
from runtime.listing import CURSOR_PATTERN, thread_record
from runtime.threads import Answer, OrchestratorRuntime, RunEvent, RuntimeInputError, UnknownThread
from services.identities import Identity

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
ThreadId = Annotated[str, Path(pattern=THREAD_ID_PATTERN, max_length=64)]
RUN_ID_PATTERN = r"^r-[0-9a-f]{1,32}$"
THREAD_PAGE = 50
LIVE_POLL_S = 0.5
"""How often the live stream reads a running run's stored node timeline (seconds)."""
LIVE_KEEPALIVE_S = 15.0
"""Seconds of silence after which the live stream sends a ``: ping`` comment."""
_READERS: set[asyncio.Task[None]] = set()
"""Tasks reading runs started from the console to their end (the run itself is a task of :func:`api.sse.detach`)."""

ACTIONS: dict[str, Literal["approve", "reject", "text"]] = {"approve": "approve", "reject": "reject", "answer": "text"}
"""A form's action and the runtime's :class:`runtime.answers.Answer` kind it means."""


class MessageForm(BaseModel):
    """A message to the PO, with the session's CSRF token."""

    csrf: str = Field(default="", max_length=200)
    text: str = Field(default="", max_length=MAX_MESSAGE_CHARS)


class AnswerForm(BaseModel):
    """An answer to a pending interrupt: ``approve``, ``reject`` with a reason, or ``answer`` with feedback text."""

    csrf: str = Field(default="", max_length=200)
    interrupt_id: str = Field(default="", max_length=64)
    action: str = Field(default="", max_length=16)
    text: str = Field(default="", max_length=MAX_MESSAGE_CHARS)


async def _read_to_end(events: AsyncIterator[RunEvent]) -> None:
    try:
        async for _ in events:
            pass
    except Exception:  # nobody reads this run's stream: the failure goes to the log (and the project's trail)
        log.exception("a run started from the console failed")


async def start_in_background(request: Request, who: Identity, run: AsyncIterator[RunEvent]) -> None:
    """Count the run against ``who``'s slots, prime it (refusals raise here), then let it finish in the background.

    Raises:
        HTTPException: 429 when ``who`` has too many runs going. RuntimeInputError: the runtime refused the input.
    """
    slots: RunSlots = request.app.state.run_slots
    slots.take(who.name)
    events = await primed(run, on_end=lambda: slots.give_back(who.name))
    task = asyncio.create_task(_read_to_end(events))
    _READERS.add(task)
    task.add_done_callback(_READERS.discard)


def thread_url(thread_id: str) -> str:
    """The console page of a thread."""
    return f"/console/threads/{thread_id}"


@router.get("/console/threads")
async def threads_page(
    request: Request,
    rt: RuntimeDep,
    who: Viewer,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
) -> Response:
    """The threads ``who`` may see, newest first, a page at a time, from the thread index."""
    owner = None if who.sees(None) else who.name
    page = await rt.thread_page(owner, limit=THREAD_PAGE, cursor=cursor)
    return render(request, who, "threads.html", page=page, nav="threads")


@router.post("/console/threads")
async def new_thread(request: Request, form: MessageForm, rt: RuntimeDep, who: Operator) -> Response:
    """Start a thread with a first message (operator), then show it."""
    check_csrf(request, form.csrf)
    if not form.text.strip():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "say something: the message is empty")
    thread_id = await rt.create_thread(who)
    await start_in_background(request, who, rt.start_turn(form.text, thread_id, actor=who))
    return redirect(thread_url(thread_id))


async def _thread_context(rt: OrchestratorRuntime, thread_id: str, who: Identity) -> dict[str, Any]:
    """What the thread page and its live part show (RuntimeInputError: unknown, or not ``who``'s to see)."""
    rec = await thread_record(rt.db, thread_id)
    try:
        pending = await rt.pending(thread_id, who)
    except UnknownThread:
        if rec is None or not who.sees(rec.owner):
            raise
        pending = []  # a thread made (POST /threads) that nothing has run on yet
    runs = await runs_of(rt.db, thread_id)
    latest = runs[0] if runs else None
    # A run has a row with no outcome until it ends (runtime.traces); a thread from before runs were stored has
    # only the index's mid-run mark.
    if latest is not None:
        running = latest.outcome is None and not pending
    else:
        running = bool(rec and rec.stopped_mid_run and not pending)
    return {
        "thread_id": thread_id,
        "rec": rec,
        "pending": [(p, may_answer(who, p.payload)) for p in pending],
        "runs": runs,
        "latest": latest,
        "nodes": await node_runs(rt.db, latest.id) if latest else [],
        "running": running,
    }


@router.get("/console/threads/{thread_id}")
async def thread_page(thread_id: ThreadId, request: Request, rt: RuntimeDep, who: Viewer) -> Response:
    """A thread: its conversation, pending questions, the live node timeline of its run, its runs, a message box."""
    try:
        context = await _thread_context(rt, thread_id, who)
    except RuntimeInputError as exc:
        return error_page(request, who, 404, str(exc))
    async with rt.db.session() as s:
        project = (await s.exec(select(Project).where(Project.thread_id == thread_id))).first()
    said = await conversation(rt, thread_id)
    return render(request, who, "thread.html", said=said, project=project, nav="threads", **context)


@router.get("/console/threads/{thread_id}/live")
async def thread_live(
    thread_id: ThreadId,
    request: Request,
    rt: RuntimeDep,
    who: Viewer,
    watching: Annotated[bool, Query()] = False,
) -> Response:
    """The live part of a thread page: the node timeline of its latest run, polled while it runs.

    ``watching``: the page was rendered while a run was going; once it has ended, ``HX-Refresh`` reloads the page
    (new messages, the answer forms of a new question).
    """
    try:
        context = await _thread_context(rt, thread_id, who)
    except RuntimeInputError as exc:
        return error_page(request, who, 404, str(exc))
    response = render(request, who, "live.html", **context)
    if watching and not context["running"]:
        response.headers["HX-Refresh"] = "true"
    return response


@router.get("/console/threads/{thread_id}/live/stream")
async def thread_live_stream(thread_id: ThreadId, request: Request, rt: RuntimeDep, who: Viewer) -> Response:
    """The live part of a thread page as server-sent events (what the page's script follows while a run goes).

    Events: ``live``, the part re-rendered as HTML, each time the run's node timeline or state changes (first at
    once); ``done`` when no run is going any more (the page then reloads to show new messages and questions). The
    stored node runs are read every :data:`LIVE_POLL_S` seconds: polling the database works for a run in any process
    (the API, the CLI, the sync), as :mod:`services.journal` explains; ``: ping`` after
    :data:`LIVE_KEEPALIVE_S` seconds of silence. A thread ``who`` may not see is a 404 page.
    """
    try:
        await _thread_context(rt, thread_id, who)
    except RuntimeInputError as exc:
        return error_page(request, who, 404, str(exc))
    return EventSourceResponse(_live_events(request, rt, thread_id, who), headers=STREAM_HEADERS)


async def _live_events(
    request: Request, rt: OrchestratorRuntime, thread_id: str, who: Identity
) -> AsyncIterator[bytes]:
    seen: tuple[Any, ...] | None = None
    quiet_since = time.monotonic()
    while not server_stopping():
        context = await _thread_context(rt, thread_id, who)
        latest = context["latest"]
        mark = (latest.id if latest else None, latest.outcome if latest else None, len(context["nodes"]))
        if mark + (context["running"],) != seen:
            seen = mark + (context["running"],)
            html = bytes(render(request, who, "live.html", **context).body).decode()
            yield format_sse_event(data_str=html, event="live")
            quiet_since = time.monotonic()
        if not context["running"]:
            yield format_sse_event(data_str="the run ended", event="done")
            return
        if time.monotonic() - quiet_since >= LIVE_KEEPALIVE_S:
            yield KEEPALIVE_COMMENT
            quiet_since = time.monotonic()
        await asyncio.sleep(LIVE_POLL_S)


@router.post("/console/threads/{thread_id}/messages")
async def post_message(
    thread_id: ThreadId, request: Request, form: MessageForm, rt: RuntimeDep, who: Operator
) -> Response:
    """Send a message to the PO on this thread (operator, own thread; approver, any), then show the thread."""
    check_csrf(request, form.csrf)
    await start_in_background(request, who, rt.start_turn(form.text, thread_id, actor=who))
    return redirect(thread_url(thread_id))


@router.post("/console/threads/{thread_id}/answer")
async def answer(thread_id: ThreadId, request: Request, form: AnswerForm, rt: RuntimeDep, who: Operator) -> Response:
    """Answer a pending interrupt as the CLI and the API do (``rt.resume``), then show the thread.

    The role each kind of question needs is checked by the runtime (a viewer never gets here: the route's rule).
    """
    check_csrf(request, form.csrf)
    if form.action not in ACTIONS:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "action must be approve, reject or answer")
    if form.action != "approve" and not form.text.strip():
        what = "a reason" if form.action == "reject" else "the feedback"
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{form.action} needs {what} in the text box")
    kind = ACTIONS[form.action]
    reply = Answer(kind=kind, text=form.text.strip() or None)
    run = rt.resume(thread_id, reply, form.interrupt_id or None, actor=who)
    await start_in_background(request, who, run)
    return redirect(thread_url(thread_id))


@router.get("/console/inbox")
async def inbox_page(request: Request, rt: RuntimeDep, who: Viewer) -> Response:
    """Every pending interrupt across the threads ``who`` may see, newest first, with its answer forms."""
    return render(request, who, "inbox.html", items=await inbox(rt, who), nav="inbox")


@router.get("/console/runs/{run_id}")
async def run_page(
    run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN, max_length=40)], request: Request, rt: RuntimeDep, who: Viewer
) -> Response:
    """A run's trace waterfall: its node executions on a time axis, the slowest marked, tokens and cost summed."""
    run, owner = await run_owner(rt.db, run_id)
    if run is None or not who.sees(owner):
        return error_page(request, who, 404, f"unknown run {run_id!r}")
    trace = await waterfall(rt.db, run)
    return render(request, who, "run.html", trace=trace, nav="threads")
