"""A thread's administration over HTTP: its conversation, archiving it, cancelling its run.

Thin routes over :mod:`runtime.thread_admin`. An unknown thread, or another owner's to an operator or viewer, is a
404 as on every thread route; a state that does not allow the request is a 409 whose ``detail`` says what to do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status

from api.auth import Operator, Viewer
from api.deps import RuntimeDep
from api.routes import CHANGE, EDGE, ThreadId, errors
from api.schemas import ThreadCancelIn, ThreadCancelOut, ThreadMessagePublic, ThreadMessagesOut
from runtime.thread_admin import MAX_MESSAGE_PAGE, MESSAGE_PAGE, archive_thread, cancel_thread, thread_messages

router = APIRouter(responses=EDGE)


@router.get("/threads/{thread_id}/messages", responses=errors(401, 404, 422))
async def get_messages(
    thread_id: ThreadId,
    rt: RuntimeDep,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=MAX_MESSAGE_PAGE, description="Messages per page.")] = MESSAGE_PAGE,
    before: Annotated[
        int | None,
        Query(ge=0, le=2**31, description="Only messages with a lower index: the previous page's `earlier`."),
    ] = None,
) -> ThreadMessagesOut:
    """The thread's conversation from its latest checkpoint, oldest first, a page at a time (the latest by default).

    People's and the PO's words as they were said; a tool's answer only as a summary (which tool, whether it
    answered), never its content; the tools the PO called by name. 404: unknown thread, or another owner's.
    """
    page = await thread_messages(rt, thread_id, actor=who, limit=limit, before=before)
    items = [ThreadMessagePublic.model_validate(m) for m in page.messages]
    return ThreadMessagesOut(thread_id=page.thread_id, total=page.total, messages=items, earlier=page.earlier)


@router.delete(
    "/threads/{thread_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 403, 404, 409, 415, 422),
)
async def delete_thread(thread_id: ThreadId, rt: RuntimeDep, who: Operator) -> Response:
    """Archive the thread (operator, on their own; approvers and admins on any); its conversation stays readable.

    It leaves ``GET /threads`` (unless ``include_archived=true``) and a new message to it is refused (409).

    409 while a run of it is going (cancel it first: ``POST /threads/{id}/cancel``) or while it waits for an answer
    to a question (answer it, or cancel the project's work): archiving would leave the question unanswered. Archiving
    an archived thread changes nothing (204).
    """
    await archive_thread(rt, thread_id, actor=who)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/threads/{thread_id}/cancel", responses={**CHANGE, **errors(404, 409)})
async def post_cancel(
    thread_id: ThreadId,
    rt: RuntimeDep,
    who: Operator,
    body: Annotated[ThreadCancelIn | None, Body()] = None,
) -> ThreadCancelOut:
    """Abandon the thread's run (operator, on their own; approvers and admins on any), so a new message starts afresh.

    A run in progress (in this process or any other) is asked to stop at its next step and this waits for it up to
    ``wait_s`` (its stream ends with a ``drained`` event saying it was cancelled); a run that stopped mid-way (a
    crash, a model call that keeps failing) is abandoned at once. The conversation is kept; on the trail of the
    thread's project as ``run_cancelled``; the project's status does not change (``POST /projects/{name}/cancel``
    stops a project's work).

    409: the thread waits for an answer to a question (answer it, or cancel the project, which answers it); it has
    no run to cancel; the run did not stop within ``wait_s`` (nothing changed).
    """
    asked = body or ThreadCancelIn()
    outcome = await cancel_thread(rt, thread_id, actor=who, reason=asked.reason, wait_s=asked.wait_s)
    return ThreadCancelOut.model_validate(outcome)
