"""Runs, traces and costs: a thread's runs, one run's timeline with its model calls, and costs by project.

Every route is the viewer's. A thread's runs (and a run, through its thread) are seen only by whoever may see the
thread: approvers and admins see every thread, others their own; another owner's is a 404, as for every thread
route. The rows are written while runs stream (:mod:`runtime.traces`) and read by :mod:`services.traces`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import WithJsonSchema

from api.auth import Viewer
from api.deps import SessionDep
from api.routes import EDGE, ThreadId, errors
from api.schemas import CostsOut, RunPublic, RunTimelineOut
from services.traces import (
    RUN_ID_PATTERN,
    UnknownProjectName,
    costs,
    parse_date_time,
    run_timeline,
    thread_runs,
    thread_visible,
)

router = APIRouter(responses=EDGE)

DateTimeText = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
"""An RFC 3339 date-time, checked by :func:`services.traces.parse_date_time` (a number is not a time: pydantic's
``datetime`` would take ``0.5`` as seconds after 1970)."""
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="a run id (`r-` and 12 hex digits)")]


@router.get("/threads/{thread_id}/runs", responses=errors(401, 404, 422))
async def list_runs(
    thread_id: ThreadId,
    session: SessionDep,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=1000, description="The newest N runs.")] = 100,
) -> list[RunPublic]:
    """The thread's runs, newest first: entry point, actor, model, times, outcome, node count, tokens and cost.

    404 for an unknown thread, or another owner's.
    """
    if not await thread_visible(session, thread_id, who):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown thread {thread_id!r}")
    return [RunPublic.model_validate(r.as_dict()) for r in await thread_runs(session, thread_id, limit=limit)]


@router.get("/runs/{run_id}", responses=errors(401, 404, 422))
async def get_run(run_id: RunId, session: SessionDep, who: Viewer) -> RunTimelineOut:
    """One run's trace: its nodes, its model calls and their totals.

    Nodes come in start order with their start offset and duration (ms), the slowest marked; model calls with the
    role and node that made them, the model, tokens, cost (USD) and latency (ms).

    404 for an unknown run, or a run of a thread the caller may not see.
    """
    timeline = await run_timeline(session, run_id)
    if timeline is None or not await thread_visible(session, timeline.run.thread_id, who):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown run {run_id!r}")
    return RunTimelineOut.model_validate(timeline.as_dict())


@router.get("/costs", responses=errors(401, 404, 422))
async def get_costs(
    session: SessionDep,
    who: Viewer,
    project: Annotated[str | None, Query(max_length=64, description="Only this project's calls.")] = None,
    since: Annotated[
        DateTimeText | None, Query(description="Only calls made at or after this time (RFC 3339; no zone: UTC).")
    ] = None,
) -> CostsOut:
    """Model calls grouped by project, role and model (most expensive first), with sums by each and the total.

    A call belongs to the project its thread works on (the newest one, for a thread that made several). 404 for an
    unknown project.
    """
    try:
        start = parse_date_time(since) if since is not None else None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"since: {exc}") from exc
    try:
        report = await costs(session, project=project, since=start)
    except UnknownProjectName as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return CostsOut.model_validate(report.as_dict())
