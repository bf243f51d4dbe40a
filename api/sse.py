"""Runs as Server-Sent Events: bad input fails before the response starts; later errors end the stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import asdict

from fastapi.sse import ServerSentEvent

from core.runtime import RunEvent

log = logging.getLogger(__name__)


async def primed(events: AsyncIterator[RunEvent]) -> AsyncIterator[RunEvent]:
    """Advance a run to its first event, so that the runtime's input checks raise now.

    The runtime's run methods are async generators: their checks (unknown thread, nothing pending, wrong answer
    shape) only run on the first ``__anext__``. Calling this from a dependency turns them into a JSON error before
    any streaming starts.

    Args:
        events: A fresh run from ``OrchestratorRuntime`` (``start_turn``, ``resume``, ``continue_run``).

    Returns:
        The same run, first event included.

    Raises:
        RuntimeInputError: the runtime refused the input; nothing was run.
    """
    try:
        first = await anext(events)
    except StopAsyncIteration:
        return events
    return _chain(first, events)


async def _chain(first: RunEvent, rest: AsyncIterator[RunEvent]) -> AsyncIterator[RunEvent]:
    yield first
    async for event in rest:
        yield event


async def sse_events(events: AsyncIterator[RunEvent]) -> AsyncIterator[ServerSentEvent]:
    """One SSE per run event: ``event: <kind>``, ``data: <the event's fields as JSON>``.

    An error raised mid-run ends the stream with ``event: error`` and ``data: {"kind": "error", "error": msg}``.
    """
    try:
        async for event in events:
            yield ServerSentEvent(event=event.kind, data=asdict(event))
    except Exception as exc:  # the response has started: the client can only learn of it in the stream
        log.exception("run failed mid-stream")
        yield ServerSentEvent(event="error", data={"kind": "error", "error": str(exc) or type(exc).__name__})
