"""``GET /events``: the audit trail as a JSON page, or the domain event journal as a live Server-Sent Events stream.

Content negotiation (RFC 9110 section 12.5.1, ``Accept``) picks the answer: a request that asks for
``text/event-stream`` (as a browser's ``EventSource`` does) gets the stream; any other (``application/json``,
``*/*``, no ``Accept``) gets the JSON page of the audit trail, newest first.

The stream follows the SSE format of the WHATWG HTML standard
(https://html.spec.whatwg.org/multipage/server-sent-events.html): each journal row is one event, ``id:`` its id,
``event:`` its kind, ``data:`` the row as JSON. A client that reconnects sends the last id it got as
``Last-Event-ID`` and receives exactly what came after it; ``?after=`` does the same for a first connection. Without
either, the stream starts with what is journaled after the request. A ``: ping`` comment goes out after 15 s of
silence so proxies keep the connection open. How rows are read (polling, and the gap rule that keeps an id from
being skipped on PostgreSQL) is in :mod:`services.journal`.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event

from api import crud
from api.auth import Viewer
from api.deps import RuntimeDep
from api.routes import EDGE, READ
from api.schemas import EventPublic
from core.db import Database
from services.journal import KIND_PATTERN, event_dict, follow, latest_id, matches

router = APIRouter(responses=EDGE)

KEEPALIVE_S = 15.0
"""Seconds of silence after which the stream sends a ``: ping`` comment."""
MAX_ID = 2**63 - 1
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No cache may keep the stream, and no proxy (nginx) may buffer it."""


_STREAM_ITEM = {
    "type": "object",
    "description": "One Server-Sent Event per journal row (the SSE fields are `id`, `event` and `data`).",
    "properties": {
        "id": {"type": "string", "description": "The journal id: send it back as Last-Event-ID to resume."},
        "event": {"type": "string", "description": "The event's kind."},
        "data": {"type": "string", "description": "The row as JSON."},
    },
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    **READ,
    200: {
        "description": "The audit trail, newest first (JSON); or, with `Accept: text/event-stream`, the live "
        "domain event stream.",
        "content": {"text/event-stream": {"schema": {"type": "string"}, "itemSchema": _STREAM_ITEM}},
    },
}


def wants_stream(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for ``text/event-stream`` ahead of JSON.

    True when ``text/event-stream`` is named with a quality above 0 that ``application/json`` (if named) does not
    beat; wildcards (``*/*``) never pick the stream.
    """
    quality: dict[str, float] = {}
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(q, quality.get(media.lower(), 0.0))
    stream = quality.get("text/event-stream", 0.0)
    return stream > 0 and stream >= quality.get("application/json", 0.0)


def last_event_id(value: str | None) -> int | None:
    """The journal id of a ``Last-Event-ID`` header (None when absent or blank).

    Raises:
        fastapi.HTTPException: 422, the value is not an integer from 0 to 2^63-1.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ID:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "Last-Event-ID must be a journal id (0 to 2^63-1)")
    return int(text)


def server_stopping() -> bool:
    """Whether uvicorn was asked to stop (SIGTERM or Ctrl-C), so an endless stream must end.

    uvicorn waits for every open response before it shuts down, and a stream never ends by itself; uvicorn's own
    signal handler is the bound method ``Server.handle_exit``, whose server's ``should_exit`` says a stop began.
    False under any other server (the stream then ends when the client goes).
    """
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


async def event_stream(db: Database, *, after: int, kind: str | None) -> AsyncIterator[bytes]:
    """The SSE bytes of the journal rows after ``after`` (of kinds starting with ``kind``), with keep-alives."""
    quiet_since = time.monotonic()
    async for rows in follow(db, after=after):
        if server_stopping():
            return
        sent = False
        for row in rows:
            if matches(row, kind):
                data = json.dumps(event_dict(row), separators=(",", ":"))
                yield format_sse_event(data_str=data, event=row.kind, id=str(row.id))
                sent = True
        now = time.monotonic()
        if sent:
            quiet_since = now
        elif now - quiet_since >= KEEPALIVE_S:
            yield KEEPALIVE_COMMENT
            quiet_since = now


@router.get("/events", response_model=list[EventPublic], responses=RESPONSES)
async def list_events(
    request: Request,
    rt: RuntimeDep,
    who: Viewer,
    subject_type: Annotated[str | None, Query(max_length=32, description="project, server, token...")] = None,
    subject_id: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    before: Annotated[int | None, Query(ge=0, le=MAX_ID, description="page back: ids below this")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Stream only: start after this journal id (0: from the start).")
    ] = None,
    kind: Annotated[
        str | None,
        Query(pattern=KIND_PATTERN, description="Stream only: kinds starting with this, e.g. `deploy.` or `audit`."),
    ] = None,
) -> Any:
    """The audit trail, newest first: every status change and action, with who made it.

    With `Accept: text/event-stream`: the domain event journal, live. Each event: `id:` the journal id, `event:`
    its kind (`audit`, `deploy.succeeded`, `incident.opened`, `approval.requested`, `sync.pass`...), `data:` JSON
    {id, kind, subject_type, subject_id, thread_id, actor, data, created_at}. `Last-Event-ID` (or `after`) resumes
    after that id with nothing lost or repeated; `kind` keeps the kinds with that prefix. The JSON page ignores
    `after`, `kind` and `Last-Event-ID`; the stream ignores the paging parameters.

    `Last-Event-ID` is a request header that is not listed among the parameters (a JSON request ignores it): on the
    stream, anything but a journal id (an integer from 0 to 2^63-1) is a 422.
    """
    if wants_stream(request.headers.get("accept")):
        resumed = last_event_id(request.headers.get("last-event-id"))
        start = resumed if resumed is not None else after
        if start is None:
            start = await latest_id(rt.db)
        return EventSourceResponse(event_stream(rt.db, after=start, kind=kind), headers=STREAM_HEADERS)
    async with rt.db.session() as session:
        rows = await crud.list_events(
            session=session, subject_type=subject_type, subject_id=subject_id, before=before, limit=limit
        )
    return [EventPublic.model_validate(r) for r in rows]
