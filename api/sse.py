"""Runs as Server-Sent Events: bad input fails before the response starts; later errors end the stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict

from fastapi.sse import ServerSentEvent

from runtime.threads import RunEvent

log = logging.getLogger(__name__)
_RUNS: set[asyncio.Task[None]] = set()
"""Runs in flight, detached from the requests that started them (see :func:`detach`)."""


async def primed(events: AsyncIterator[RunEvent], on_end: Callable[[], None] = lambda: None) -> AsyncIterator[RunEvent]:
    """Advance a run to its first event, so that the runtime's input checks raise now.

    The runtime's run methods are async generators: their checks (unknown thread, nothing pending, wrong answer
    shape) only run on the first ``__anext__``. Calling this from a dependency turns them into a JSON error before
    any streaming starts.

    Args:
        events: A fresh run from ``OrchestratorRuntime`` (``start_turn``, ``resume``, ``continue_run``).
        on_end: Called once the run is over (refused, finished or failed), whether or not a client still reads it.

    Returns:
        The same run, first event included.

    Raises:
        RuntimeInputError: the runtime refused the input; nothing was run.
    """
    try:
        first = await anext(events)
    except StopAsyncIteration:
        on_end()
        return events
    except BaseException:
        on_end()
        raise
    return _chain(first, detach(events, on_end))


def detach(events: AsyncIterator[RunEvent], on_end: Callable[[], None] = lambda: None) -> AsyncIterator[RunEvent]:
    """Drive a run to its end in a task of its own; return an iterator over what it produces.

    A client that disconnects stops reading, not the run: a deploy half-way through is not cancelled with the HTTP
    connection. :func:`drain_runs` lets the app wait for runs in flight on shutdown.
    """
    queue: asyncio.Queue[RunEvent | Exception | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in events:
                queue.put_nowait(event)
            queue.put_nowait(None)
        except Exception as exc:  # handed to the reader, which reports it in the stream
            queue.put_nowait(exc)
        finally:
            on_end()

    task = asyncio.create_task(pump())
    _RUNS.add(task)
    task.add_done_callback(_RUNS.discard)

    async def read() -> AsyncIterator[RunEvent]:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item

    return read()


async def drain_runs(timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for detached runs to finish (those still going resume later from checkpoints)."""
    if _RUNS:
        await asyncio.wait(set(_RUNS), timeout=timeout_s)


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
