"""Thin routes: each one calls the runtime or a data-access function and shapes the answer.

Runs stream as Server-Sent Events (``event: <RunEvent kind>``, ``data: <its fields as JSON>``). Bad input is
refused before the stream starts, as ``{"detail": "..."}`` with 404 (unknown thread), 409 (the thread's state
does not allow it) or 422 (wrong request); nothing runs then.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api import crud
from api.deps import RuntimeDep, SessionDep
from api.schemas import (
    ErrorOut,
    HealthOut,
    MessageIn,
    PendingPublic,
    ProjectPublic,
    ProjectSecretsPublic,
    ResumeIn,
    SecretNamePublic,
    ServerPublic,
    ThreadCreated,
    ThreadPublic,
)
from api.sse import primed, sse_events
from runtime.threads import RunEvent, new_thread_id
from services.secrets import UnknownProject, secret_status
from services.servers import ServerCreate, ServerExists, add_server

router = APIRouter()

REFUSALS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (404, 409, 422)}


async def message_run(thread_id: str, body: MessageIn, rt: RuntimeDep) -> AsyncIterator[RunEvent]:
    """Start a turn with the person's message (refused here if the text is empty or the thread waits)."""
    return await primed(rt.start_turn(body.text, thread_id))


async def resume_run(thread_id: str, body: ResumeIn, rt: RuntimeDep) -> AsyncIterator[RunEvent]:
    """Answer a pending interrupt (refused here: unknown thread, nothing pending, answer of the wrong shape)."""
    return await primed(rt.resume(thread_id, body.to_answer(), body.interrupt_id))


async def continue_run(thread_id: str, rt: RuntimeDep) -> AsyncIterator[RunEvent]:
    """Finish a run that stopped mid-way (refused here: unknown thread, waiting for an answer, nothing to run)."""
    return await primed(rt.continue_run(thread_id))


@router.get("/healthz")
async def healthz() -> HealthOut:
    """Liveness: the process answers."""
    return HealthOut()


@router.post("/threads", status_code=status.HTTP_201_CREATED)
async def create_thread() -> ThreadCreated:
    """A new thread id; nothing runs until a message is posted to it."""
    return ThreadCreated(thread_id=new_thread_id())


@router.get("/threads")
async def list_threads(rt: RuntimeDep) -> list[ThreadPublic]:
    """Every thread, newest first, with its pending interrupts."""
    return [ThreadPublic.model_validate(view, from_attributes=True) for view in await rt.threads()]


@router.post("/threads/{thread_id}/messages", response_class=EventSourceResponse, responses=REFUSALS)
async def post_message(
    events: Annotated[AsyncIterator[RunEvent], Depends(message_run)],
) -> AsyncIterable[ServerSentEvent]:
    """Send a message to the PO and stream the run."""
    async for sse in sse_events(events):
        yield sse


@router.get("/threads/{thread_id}/interrupts", responses=REFUSALS)
async def list_interrupts(thread_id: str, rt: RuntimeDep) -> list[PendingPublic]:
    """The thread's pending interrupts (404 for an unknown thread)."""
    return [PendingPublic.model_validate(p, from_attributes=True) for p in await rt.pending(thread_id)]


@router.post("/threads/{thread_id}/resume", response_class=EventSourceResponse, responses=REFUSALS)
async def resume(
    events: Annotated[AsyncIterator[RunEvent], Depends(resume_run)],
) -> AsyncIterable[ServerSentEvent]:
    """Answer a pending interrupt and stream the rest of the run."""
    async for sse in sse_events(events):
        yield sse


@router.post("/threads/{thread_id}/continue", response_class=EventSourceResponse, responses=REFUSALS)
async def continue_thread(
    events: Annotated[AsyncIterator[RunEvent], Depends(continue_run)],
) -> AsyncIterable[ServerSentEvent]:
    """Finish a run that stopped mid-way (a crash, a dropped client) from its last checkpoint."""
    async for sse in sse_events(events):
        yield sse


@router.get("/projects")
async def list_projects(session: SessionDep) -> list[ProjectPublic]:
    """Every project, by name."""
    return [ProjectPublic.from_row(p, s) for p, s in await crud.list_projects(session=session)]


@router.get("/projects/{name}", responses={404: {"model": ErrorOut}})
async def get_project(name: str, session: SessionDep) -> ProjectPublic:
    """One project by name (404 if unknown)."""
    row = await crud.get_project(session=session, name=name)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown project {name!r}: see GET /projects")
    return ProjectPublic.from_row(*row)


@router.get("/projects/{name}/secrets", responses={404: {"model": ErrorOut}})
async def project_secrets(name: str, rt: RuntimeDep) -> ProjectSecretsPublic:
    """A project's secret names with when each was set, and the required ones still missing; never a value.

    Values are set only through ``orchestrator secret-set`` (stdin or a hidden prompt), not over HTTP.
    """
    try:
        infos, missing = await secret_status(rt.db, name)
    except UnknownProject as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown project {name!r}: see GET /projects") from exc
    found = [SecretNamePublic(name=i.name, updated_at=i.updated_at) for i in infos]
    return ProjectSecretsPublic(project=name, secrets=found, missing=missing)


@router.get("/servers")
async def list_servers(session: SessionDep) -> list[ServerPublic]:
    """Every server, by name."""
    return [ServerPublic.model_validate(s) for s in await crud.list_servers(session=session)]


@router.post("/servers", status_code=status.HTTP_201_CREATED, responses={409: {"model": ErrorOut}})
async def create_server(body: ServerCreate, rt: RuntimeDep) -> ServerPublic:
    """Register a server (``discovered``, or ``provisioning`` with ``provision: true``); 409 if the name is taken."""
    try:
        return ServerPublic.model_validate(await add_server(rt.db, body))
    except ServerExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
