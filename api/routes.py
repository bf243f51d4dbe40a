"""Thin routes: each one declares its role rule, calls the runtime or a service, and shapes the answer.

Runs stream as Server-Sent Events (``event: <RunEvent kind>``, ``data: <its fields as JSON>``). Bad input is
refused before the stream starts, as JSON ``{"detail": ...}``: 401 (no valid key), 403 (role too low), 404 (unknown
thread, or another owner's), 409 (the thread's state does not allow it), 422 (wrong request), 429 (too many runs
going); nothing runs then.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlmodel.ext.asyncio.session import AsyncSession

from api import crud
from api.auth import Admin, Approver, Operator, Public, Viewer
from api.deps import RuntimeDep, SessionDep
from api.limits import RunSlots
from api.schemas import (
    THREAD_ID_PATTERN,
    BudgetExtendIn,
    BudgetOut,
    CancelIn,
    CancelOut,
    DeploymentPublic,
    ErrorOut,
    HealthOut,
    IncidentPublic,
    LifecycleOut,
    MessageIn,
    PendingPublic,
    ProjectPublic,
    ProjectSecretsPublic,
    ResumeIn,
    RollbackIn,
    SecretNamePublic,
    ServerIn,
    ServerPublic,
    ThreadCreated,
    ThreadListedPublic,
    TokenCreated,
    TokenIn,
    TokenPublic,
    ToolCallPublic,
)
from api.sse import primed, sse_events
from runtime.listing import CURSOR_PATTERN
from runtime.threads import RunEvent
from services.audit import audit_trail
from services.budgets import BudgetLimits, budget_of, extend_budget, open_budget
from services.identities import Identity, TokenError, create_token, list_tokens, revoke_token
from services.lifecycle import (
    LifecycleRefused,
    delete_project,
    deployments_of,
    rollback_project,
    start_project,
    stop_project,
    undeploy_project,
)
from services.secrets import UnknownProject, secret_status
from services.servers import ServerExists, add_server

_WHY = {
    400: "A Host this API does not serve (ORCH_API_ALLOWED_HOSTS), or a body that is not JSON text (e.g. not UTF-8)",
    401: "No API key, or an unknown or revoked one",
    403: "The key's role does not allow this (the message names the role needed)",
    404: "Not found (another owner's thread is not found either)",
    408: "The request body did not arrive in time",
    409: "The thread's state does not allow this, or the name is taken",
    413: "The request body is too large",
    415: "The body is not JSON",
    422: "The request is malformed (a list of problems) or does not fit (a sentence)",
    429: "Too many runs going for this identity (see Retry-After)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for refusals, all JSON ``ErrorOut`` (also on the streaming routes)."""
    return {code: {"model": ErrorOut, "description": _WHY[code]} for code in codes}


EDGE = errors(400, 408, 413)
"""Refusals any request may get: from the edge (:mod:`api.edge`: Host, body size and time), or a body not JSON text."""
READ = errors(401, 422)
CHANGE = errors(401, 403, 415, 422)
RUN = errors(401, 403, 404, 409, 415, 422, 429)

router = APIRouter(responses=EDGE)
health_router = APIRouter(responses=EDGE)
"""``/healthz`` alone: included first, so answering it does not set up the other routes (FastAPI does that lazily)."""

ThreadId = Annotated[str, Path(pattern=THREAD_ID_PATTERN, max_length=64, description="a thread id")]
ProjectName = Annotated[str, Path(max_length=64, description="a project name")]


def run_slots(request: Request) -> RunSlots:
    """The app's per-identity run counters (``app.state.run_slots``)."""
    slots: RunSlots = request.app.state.run_slots
    return slots


Slots = Annotated[RunSlots, Depends(run_slots)]


async def _start(slots: RunSlots, who: Identity, run: AsyncIterator[RunEvent]) -> AsyncIterator[RunEvent]:
    """Count the run against ``who``'s slots, then prime it (its refusals raise here, before any streaming)."""
    slots.take(who.name)
    return await primed(run, on_end=lambda: slots.give_back(who.name))


async def message_run(
    thread_id: ThreadId, body: MessageIn, rt: RuntimeDep, who: Operator, slots: Slots
) -> AsyncIterator[RunEvent]:
    """Start a turn with the person's message (refused here if the text is empty or the thread waits)."""
    return await _start(slots, who, rt.start_turn(body.text, thread_id, actor=who, multitask=body.multitask_strategy))


async def resume_run(
    thread_id: ThreadId, body: ResumeIn, rt: RuntimeDep, who: Operator, slots: Slots
) -> AsyncIterator[RunEvent]:
    """Answer a pending interrupt (refused here: unknown thread, nothing pending, wrong shape, role too low)."""
    return await _start(slots, who, rt.resume(thread_id, body.to_answer(), body.interrupt_id, actor=who))


async def continue_run(thread_id: ThreadId, rt: RuntimeDep, who: Operator, slots: Slots) -> AsyncIterator[RunEvent]:
    """Finish a run that stopped mid-way (refused here: unknown thread, waiting for an answer, nothing to run)."""
    return await _start(slots, who, rt.continue_run(thread_id, actor=who))


@health_router.get("/healthz", dependencies=[Public])
async def healthz() -> HealthOut:
    """Liveness: the process answers. The one route that needs no key."""
    return HealthOut()


@router.get("/openapi.json", include_in_schema=False)
async def openapi_document(request: Request, who: Viewer) -> dict[str, Any]:
    """The OpenAPI document of the API (any key may read it)."""
    document: dict[str, Any] = request.app.openapi()
    return document


@router.post("/threads", status_code=status.HTTP_201_CREATED, responses=CHANGE)
async def create_thread(rt: RuntimeDep, who: Operator) -> ThreadCreated:
    """A new thread, owned by the caller; nothing runs until a message is posted to it."""
    return ThreadCreated(thread_id=await rt.create_thread(who))


THREAD_PAGE = 100
"""``GET /threads`` page size when the request names none."""


@router.get("/threads", responses=READ)
async def list_threads(
    rt: RuntimeDep,
    who: Viewer,
    request: Request,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=500, description="Threads per page.")] = THREAD_PAGE,
    cursor: Annotated[
        str | None,
        Query(pattern=CURSOR_PATTERN, description="The previous page's X-Next-Cursor; none for the first page."),
    ] = None,
    include_archived: Annotated[bool, Query(description="Archived threads too (`archived_at` set).")] = False,
) -> list[ThreadListedPublic]:
    """A page of the threads the caller may see, newest first, with pending interrupts, from the thread index.

    Approvers and admins see every thread, others their own. When more follow, the ``X-Next-Cursor`` header holds
    the next page's cursor and ``Link`` its URL (``rel="next"``). A cursor of another shape is a 422. Archived threads
    (``DELETE /threads/{id}``) are left out unless ``include_archived=true``.
    """
    owner = None if who.sees(None) else who.name
    page = await rt.thread_page(owner, limit=limit, cursor=cursor, archived=include_archived)
    if page.next_cursor is not None:
        response.headers["X-Next-Cursor"] = page.next_cursor
        response.headers["Link"] = f'<{request.url.include_query_params(cursor=page.next_cursor)}>; rel="next"'
    return [ThreadListedPublic.model_validate(view, from_attributes=True) for view in page.threads]


@router.post("/threads/{thread_id}/messages", response_class=EventSourceResponse, responses=RUN)
async def post_message(
    events: Annotated[AsyncIterator[RunEvent], Depends(message_run)],
) -> AsyncIterable[ServerSentEvent]:
    """Send a message to the PO and stream the run (operator; on another owner's thread, approver).

    ``multitask_strategy`` says what happens while another run of the thread is going (default ``reject``: 409);
    the response starts once the message runs (``enqueue``, ``interrupt`` and ``rollback`` wait for the lock).
    """
    async for sse in sse_events(events):
        yield sse


@router.get("/threads/{thread_id}/interrupts", responses=errors(401, 404, 422))
async def list_interrupts(thread_id: ThreadId, rt: RuntimeDep, who: Viewer) -> list[PendingPublic]:
    """The thread's pending interrupts (404 for an unknown thread, or another owner's)."""
    return [PendingPublic.model_validate(p, from_attributes=True) for p in await rt.pending(thread_id, who)]


@router.post("/threads/{thread_id}/resume", response_class=EventSourceResponse, responses=RUN)
async def resume(
    events: Annotated[AsyncIterator[RunEvent], Depends(resume_run)],
) -> AsyncIterable[ServerSentEvent]:
    """Answer a pending interrupt and stream the rest of the run.

    A deploy approval or a guidance request needs the approver role; a resource wait's retry, an operator on their
    own thread. With ``ORCH_APPROVAL_SEPARATE_APPROVER`` on, whoever asked for the change cannot approve it (403).
    """
    async for sse in sse_events(events):
        yield sse


@router.post("/threads/{thread_id}/continue", response_class=EventSourceResponse, responses=RUN)
async def continue_thread(
    events: Annotated[AsyncIterator[RunEvent], Depends(continue_run)],
) -> AsyncIterable[ServerSentEvent]:
    """Finish a run that stopped mid-way (a crash, a dropped client) from its last checkpoint."""
    async for sse in sse_events(events):
        yield sse


@router.get("/projects", responses=READ)
async def list_projects(session: SessionDep, who: Viewer) -> list[ProjectPublic]:
    """Every project, by name, with who asked for it, who approved the deploy that runs now, and its budget."""
    rows = await crud.list_projects(session=session)
    return [ProjectPublic.from_row(*row, budget=await budget_of(session, row[0].id or 0)) for row in rows]


@router.get("/projects/{name}", responses=errors(401, 404, 422))
async def get_project(name: ProjectName, session: SessionDep, who: Viewer) -> ProjectPublic:
    """One project by name, with its budget (404 if unknown)."""
    row = await crud.get_project(session=session, name=name)
    if row is None:
        raise _unknown_project(name)
    return ProjectPublic.from_row(*row, budget=await budget_of(session, row[0].id or 0))


@router.get("/projects/{name}/audit", responses=errors(401, 404, 422))
async def project_audit(
    name: ProjectName,
    session: SessionDep,
    who: Viewer,
    phase: Annotated[str | None, Query(max_length=32, description="only this phase's calls, e.g. IMPL")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="the latest N calls")] = 200,
) -> list[ToolCallPublic]:
    """The project's agent tool calls, oldest first, as the phase contract judged them (never a file's contents)."""
    project_id = await _project_id(session, name)
    calls = await audit_trail(session, project_id, limit=limit, phase=phase)
    return [ToolCallPublic.model_validate(c) for c in calls]


@router.get("/projects/{name}/budget", responses=errors(401, 404, 422))
async def get_budget(name: ProjectName, session: SessionDep, who: Viewer) -> BudgetOut:
    """What the project's runs may spend, have spent and have left (404: unknown project, or no budget yet)."""
    view = await budget_of(session, await _project_id(session, name))
    if view is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"project {name!r} has no budget yet: its first run opens one")
    return BudgetOut.from_view(view)


@router.post("/projects/{name}/budget", responses={**CHANGE, **errors(404)})
async def post_budget(name: ProjectName, body: BudgetExtendIn, rt: RuntimeDep, who: Approver) -> BudgetOut:
    """Raise the project's budget limits by the amounts given (approver); on the trail as ``budget_extended``.

    A project with no budget yet starts from the defaults (``ORCH_BUDGET_*``) before it is raised.
    """
    # A session of its own, committed before the answer leaves (SessionDep's commits after the response is sent).
    async with rt.db.session() as session:
        project_id = await _project_id(session, name)
        await open_budget(session, project_id, BudgetLimits.from_settings(rt.settings))
        try:
            view = await extend_budget(session, project_id, body.to_limits(), actor=who.name)
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return BudgetOut.from_view(view)


@router.post("/projects/{name}/cancel", responses={**CHANGE, **errors(404, 409)})
async def cancel_project(name: ProjectName, body: CancelIn, rt: RuntimeDep, who: Approver, slots: Slots) -> CancelOut:
    """Cancel the project's work in flight (approver): a stuck loop, a pending question, a run stopped mid-way.

    Answers once the thread has ended (no model call is made on the way): the project is then ``cancelled`` with
    its port released, or back to ``active`` when the work was an update of a live release. A run going on in
    another process is asked to stop (``stopped`` false) and stops before its next model call. 409: nothing in
    flight to cancel.
    """
    slots.take(who.name)
    try:
        said, outcome = [], None
        async for ev in rt.cancel_project(name, actor=who, reason=body.reason):
            if ev.kind == "message" and ev.text:
                said.append(ev.text)
            elif ev.kind == "cancel":
                outcome = ev
    finally:
        slots.give_back(who.name)
    assert outcome is not None and outcome.payload is not None
    return CancelOut(**outcome.payload, message=outcome.text or "", said=said)


async def _lifecycle(rt: Any, name: str, who: Identity, move: Any) -> LifecycleOut:
    """Run one :mod:`services.lifecycle` move as ``who``: 404 for an unknown project, 409 when refused."""
    try:
        outcome = await move(rt.settings, rt.db, name, actor=who.name)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except LifecycleRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return LifecycleOut(project=outcome.project, status=outcome.status, message=outcome.message)


@router.get("/projects/{name}/deployments", responses=errors(401, 404, 422))
async def project_deployments(name: ProjectName, rt: RuntimeDep, who: Viewer) -> list[DeploymentPublic]:
    """The project's deployments, newest first (the ids a rollback may name)."""
    try:
        rows = await deployments_of(rt.db, name)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return [DeploymentPublic.model_validate(r, from_attributes=True) for r in rows]


@router.post("/projects/{name}/rollback", responses={**CHANGE, **errors(404, 409)})
async def rollback_project_route(name: ProjectName, body: RollbackIn, rt: RuntimeDep, who: Approver) -> LifecycleOut:
    """Deploy an earlier good release again (approver), checked and recorded like any deploy.

    409: not active, no such earlier good deployment, or it failed its checks (the live release then answers again).
    """
    return await _lifecycle(rt, name, who, functools.partial(rollback_project, to=body.to))


@router.post("/projects/{name}/stop", responses={**CHANGE, **errors(404, 409)})
async def stop_project_route(name: ProjectName, rt: RuntimeDep, who: Approver) -> LifecycleOut:
    """Stop an active project's service (approver); its release and port stay reserved. 409: not active."""
    return await _lifecycle(rt, name, who, stop_project)


@router.post("/projects/{name}/start", responses={**CHANGE, **errors(404, 409)})
async def start_project_route(name: ProjectName, rt: RuntimeDep, who: Approver) -> LifecycleOut:
    """Start a stopped project's live release again, proven like a deploy (approver).

    409: not stopped, or it failed its checks (the answer says how).
    """
    return await _lifecycle(rt, name, who, start_project)


@router.post("/projects/{name}/undeploy", responses={**CHANGE, **errors(404, 409)})
async def undeploy_project_route(name: ProjectName, rt: RuntimeDep, who: Approver) -> LifecycleOut:
    """Stop the project's service and release its port (approver). 409: work in flight (cancel it first)."""
    return await _lifecycle(rt, name, who, undeploy_project)


@router.delete("/projects/{name}", responses={**CHANGE, **errors(404, 409)})
async def delete_project_route(
    name: ProjectName,
    rt: RuntimeDep,
    who: Approver,
    archive_repo: Annotated[bool, Query(description="also archive its repository on the forge")] = False,
) -> LifecycleOut:
    """Undeploy the project and archive it (approver): kept on the record with its repository.

    Nothing works on it again. 409: work in flight, or already archived.
    """
    return await _lifecycle(rt, name, who, functools.partial(delete_project, archive_repo=archive_repo))


def _unknown_project(name: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"unknown project {name!r}: see GET /projects")


async def _project_id(session: AsyncSession, name: str) -> int:
    """The id of the project called ``name``; HTTPException 404 when there is none."""
    row = await crud.get_project(session=session, name=name)
    if row is None or row[0].id is None:
        raise _unknown_project(name)
    return row[0].id


@router.get("/projects/{name}/secrets", responses=errors(401, 404, 422))
async def project_secrets(name: ProjectName, rt: RuntimeDep, who: Viewer) -> ProjectSecretsPublic:
    """A project's secret names with when each was set, and the required ones still missing; never a value.

    Values are set only through ``orchestrator secret-set`` (stdin or a hidden prompt), not over HTTP.
    """
    try:
        infos, missing = await secret_status(rt.db, name)
    except UnknownProject as exc:
        raise _unknown_project(name) from exc
    found = [SecretNamePublic(name=i.name, updated_at=i.updated_at) for i in infos]
    return ProjectSecretsPublic(project=name, secrets=found, missing=missing)


@router.get("/servers", responses=READ)
async def list_servers(session: SessionDep, who: Viewer) -> list[ServerPublic]:
    """Every server, by name."""
    return [ServerPublic.model_validate(s) for s in await crud.list_servers(session=session)]


@router.post("/servers", status_code=status.HTTP_201_CREATED, responses={**CHANGE, **errors(409)})
async def create_server(body: ServerIn, rt: RuntimeDep, who: Admin) -> ServerPublic:
    """Register a server (``discovered``, or ``provisioning`` with ``provision: true``); 409 if the name is taken."""
    try:
        return ServerPublic.model_validate(await add_server(rt.db, body, actor=who.name))
    except ServerExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


@router.get("/incidents", responses=READ)
async def list_incidents(
    session: SessionDep,
    who: Viewer,
    open_only: Annotated[bool, Query(alias="open", description="only the unresolved ones")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[IncidentPublic]:
    """Incidents, newest first."""
    rows = await crud.list_incidents(session=session, open_only=open_only, limit=limit)
    return [IncidentPublic.model_validate(r) for r in rows]


@router.get("/tokens", responses=errors(401, 403))
async def get_tokens(rt: RuntimeDep, who: Admin) -> list[TokenPublic]:
    """Every token (revoked ones too), by name; never a key."""
    return [TokenPublic.model_validate(t) for t in await list_tokens(rt.db)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED, responses={**CHANGE, **errors(409)})
async def post_token(body: TokenIn, rt: RuntimeDep, who: Admin) -> TokenCreated:
    """Create a token; its key is in this answer only (409 if the name was ever used)."""
    try:
        key = await create_token(rt.db, body.name, body.role, actor=who.name)
    except TokenError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return TokenCreated(name=body.name, role=body.role, key=key)


@router.delete(
    "/tokens/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 403, 404, 415),
)
async def delete_token(name: Annotated[str, Path(max_length=64)], rt: RuntimeDep, who: Admin) -> Response:
    """Revoke a token now (404 if no live token has that name)."""
    try:
        await revoke_token(rt.db, name, actor=who.name)
    except TokenError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)
