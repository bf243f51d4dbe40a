"""Double texting: what a new message does to a thread whose run is still going (``multitask_strategy``).

The strategies and their names are LangGraph Platform's
(https://langchain-ai.github.io/langgraph/cloud/concepts/double_texting/):

- ``reject`` (the default): refused at once with :class:`ThreadStateConflict` (HTTP 409).
- ``enqueue``: waits until the run in progress ends, then runs as if sent then.
- ``interrupt``: the run in progress stops at its next superstep boundary keeping its progress (its checkpoints
  stay; its unfinished tasks are dropped), then the new message runs from START on top of that state.
- ``rollback``: the run in progress stops the same way, then the thread goes back to the checkpoint that run started
  from (``ThreadRecord.run_base_checkpoint``) and the new message runs from there: LangGraph forks a thread when
  invoked with ``{"configurable": {"thread_id": ..., "checkpoint_id": <base>}}``, and the fork becomes the
  thread's latest state. A run that started on an empty thread is rolled back by deleting the thread's
  checkpoints. As on LangGraph Platform, what the dropped run already did outside the graph (database rows, port
  leases, repositories, deploys) is NOT undone: only the conversation's state goes back.

A strategy matters only when the thread's lock is held: on an idle thread every strategy runs the message at once.
Once the lock is taken, a thread that waits for an answer to an interrupt (a deploy approval...) refuses every
strategy, as before (409: answer it first); so does a rollback whose base checkpoint waits for an answer.

Runs are cross-process (the CLI, the API, the sync), so the stop request crosses processes through files beside the
thread's lock, ``<data_dir>/threads/<hash>.lock``: the run holding the lock writes a fresh token into the lock file;
a caller that wants it stopped writes ``{"token", "strategy"}`` to ``<hash>.stop``; the holder's ``RunControl``
(:func:`run_control`) reads that file each time LangGraph asks it, before every superstep, and drains (the run then
raises ``GraphDrained``). The token keeps a stale request from stopping a later run.

A cancel (:mod:`runtime.thread_admin`) asks the same way with the reason ``cancel``; the stopped run is then
abandoned (``ThreadRecord.stopped_mid_run`` False while the checkpoint still has tasks to run), and
:func:`prepare_turn` lets the next message start afresh on such a thread, as after an ``interrupt``. An archived
thread (``ThreadRecord.archived_at``) takes no new message.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from runtime.errors import RuntimeInputError, ThreadStateConflict

if TYPE_CHECKING:  # imported where used: the CLI reads STRATEGIES without loading LangGraph
    from langchain_core.messages import AnyMessage, ToolMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.runtime import RunControl

    from models.tables import ThreadRecord

Strategy = Literal["reject", "enqueue", "interrupt", "rollback"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
DEFAULT_STRATEGY: Strategy = "reject"
Asker = Strategy | Literal["cancel"]
"""Who asks for the thread's lock: a new message (its strategy), or a cancel of the run in progress."""
LOCK_WAIT_S = 900.0
"""How long a double text waits for the run in progress to end or stop (seconds) before it gives up (409)."""
POLL_S = 0.2
"""How often a waiting caller tries the lock (seconds)."""
NOT_RUN = "not run: a newer message interrupted this turn"
"""The answer recorded for a tool call the interrupted run never ran (every tool call needs an answer)."""


def parse_strategy(value: str) -> Strategy:
    """``value`` as a :data:`Strategy`.

    Raises:
        RuntimeInputError: not one of ``reject``, ``enqueue``, ``interrupt``, ``rollback``.
    """
    if value not in STRATEGIES:
        raise RuntimeInputError(f"unknown multitask strategy {value!r}: use one of {', '.join(STRATEGIES)}")
    return value  # type: ignore[return-value]


def thread_files(data_dir: Path, thread_id: str) -> tuple[Path, Path]:
    """``(lock, stop)``: the thread's lock file and its stop-request file, in ``<data_dir>/threads/``."""
    folder = data_dir / "threads"
    folder.mkdir(exist_ok=True)
    name = hashlib.sha256(thread_id.encode()).hexdigest()[:32]
    return folder / f"{name}.lock", folder / f"{name}.stop"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _write_stop(stop: Path, token: str, strategy: Asker) -> None:
    """Write the stop request whole (a temporary file renamed over it), so the poller never reads half of it."""
    part = stop.with_suffix(f".{uuid.uuid4().hex[:8]}.part")
    part.write_text(json.dumps({"token": token, "strategy": strategy}))
    os.replace(part, stop)


def _read_stop(stop: Path) -> dict[str, Any] | None:
    try:
        asked = json.loads(stop.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return asked if isinstance(asked, dict) else None


@contextlib.asynccontextmanager
async def hold_thread(
    data_dir: Path,
    thread_id: str,
    strategy: Asker = DEFAULT_STRATEGY,
    *,
    hint: str = "",
    wait_s: float = LOCK_WAIT_S,
    before_wait: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bool]:
    """Hold the thread's exclusive ``flock`` for the body; yield whether another run held it first.

    The lock excludes a second request in this process and any other process on this machine, and the kernel
    releases it when a holder dies (not a lock across machines: that needs the database's). On a busy thread,
    ``reject`` refuses at once; the other strategies call ``before_wait`` (checks that must refuse before anything
    is asked of the run in progress), then ``interrupt``/``rollback``/``cancel`` ask that run to stop, and all of
    them poll the lock (non-blocking, every :data:`POLL_S` s) for up to ``wait_s`` seconds.

    Raises:
        ThreadStateConflict: the thread is busy and ``strategy`` is ``reject`` (``hint`` is added to the message),
            or the run in progress neither ended nor stopped within ``wait_s`` (nothing is left asked of it).
    """
    lock, stop = thread_files(data_dir, thread_id)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        waited = not _try_lock(fd)
        if waited:
            if strategy == "reject":
                raise ThreadStateConflict(f"thread {thread_id} is running elsewhere; wait for that run{hint}")
            if before_wait is not None:
                await before_wait()
            await _wait_for_lock(fd, lock, stop, thread_id, strategy, wait_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, uuid.uuid4().hex.encode(), 0)  # this run's token: a stop request names it
        yield waited
    finally:
        os.close(fd)  # releases the lock


async def _wait_for_lock(fd: int, lock: Path, stop: Path, thread_id: str, strategy: Asker, wait_s: float) -> None:
    """Poll the lock; for ``interrupt``, ``rollback`` and ``cancel``, ask whichever run holds it to stop (each one)."""
    import asyncio  # here: the CLI's --help imports this module and nothing else needs asyncio there

    deadline = time.monotonic() + wait_s
    asked = ""
    try:
        while not _try_lock(fd):
            # enqueue asks nothing; an empty token: the holder has not written it yet (microseconds), asked next poll
            token = "" if strategy == "enqueue" else lock.read_text().strip()
            if token and token != asked:
                _write_stop(stop, token, strategy)
                asked = token
            if time.monotonic() > deadline:
                verb = "end" if strategy == "enqueue" else "stop"
                if strategy == "cancel":
                    raise ThreadStateConflict(
                        f"thread {thread_id}: the run in progress did not stop within {wait_s:g} s (a step may take "
                        "longer: a model call, a deploy); nothing was cancelled, ask again"
                    )
                raise ThreadStateConflict(
                    f"thread {thread_id}: the run in progress did not {verb} within {wait_s:g} s; "
                    "your message was not sent, send it again later"
                )
            await asyncio.sleep(POLL_S)
    finally:
        if strategy != "enqueue":
            stop.unlink(missing_ok=True)


@functools.cache
def _control_class() -> Callable[[Path, str], RunControl]:
    """A ``RunControl`` subclass that also drains when a stop request names its run.

    Built on first use, so that LangGraph is imported only then.
    """
    from langgraph.runtime import RunControl

    class StopFileControl(RunControl):
        __slots__ = ("_stop", "_token")

        def __init__(self, stop: Path, token: str) -> None:
            super().__init__()
            self._stop, self._token = stop, token

        @property
        def drain_requested(self) -> bool:
            if self._drain_reason is None and self._token:
                asked = _read_stop(self._stop)
                if asked is not None and asked.get("token") == self._token:
                    self.request_drain(str(asked.get("strategy")))
            return self._drain_reason is not None

    return StopFileControl


def run_control(data_dir: Path, thread_id: str) -> RunControl:
    """The ``RunControl`` of a run that holds the thread's lock, draining on request or when a newer message asks.

    ``request_drain()`` (SIGTERM) works as usual; so does a stop request naming this run's token (:func:`hold_thread`).

    LangGraph reads ``drain_requested`` before each superstep (subgraphs share the parent's control), so the request
    is seen at the next superstep boundary, whenever it was written; the drain's reason is the strategy that asked
    (``interrupt`` or ``rollback``, see :func:`drained_text`).
    """
    lock, stop = thread_files(data_dir, thread_id)
    try:
        token = lock.read_text().strip()
    except FileNotFoundError:  # a run not started under the thread's lock: no newer message can name it
        token = ""
    return _control_class()(stop, token)


def drained_text(control: RunControl, thread_id: str) -> str:
    """What a drained run tells its caller: a newer message took over, or (SIGTERM) how to finish it."""
    if control.drain_reason == "interrupt":
        return "stopped between steps: a newer message on this thread interrupts this run (its progress is kept)"
    if control.drain_reason == "rollback":
        return "stopped between steps: a newer message on this thread rolls this run back (its progress is dropped)"
    if control.drain_reason == "cancel":
        return "stopped between steps: this run was cancelled (its progress is kept; a new message starts afresh)"
    return f"stopped between steps on request; resume {thread_id} to finish"


@dataclass
class Turn:
    """How a new message runs: the graph ``input`` and, for a rollback, the ``checkpoint_id`` it forks from."""

    input: dict[str, Any]
    checkpoint_id: str | None = None


def close_tool_calls(messages: list[AnyMessage]) -> list[ToolMessage]:
    """An answer (an ``error``) for each tool call in ``messages`` that has none: every call needs one."""
    from langchain_core.messages import AIMessage, ToolMessage

    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    return [
        ToolMessage(content=json.dumps({"error": NOT_RUN}), tool_call_id=call["id"], name=call["name"])
        for m in messages
        if isinstance(m, AIMessage)
        for call in m.tool_calls
        if call["id"] not in answered
    ]


async def check_rollback_base(graph: Any, thread_id: str, base: str | None) -> None:
    """Refuse a rollback that cannot be done: no recorded base, or one that waits for an answer.

    ``base`` is ``ThreadRecord.run_base_checkpoint``: ``""`` for a run that started on an empty thread.

    Raises:
        ThreadStateConflict: in either case; the message says why.
    """
    if base is None:
        raise ThreadStateConflict(
            f"thread {thread_id} has no record of where its run started, so it cannot be rolled back; "
            "use multitask_strategy interrupt or enqueue"
        )
    if base and (await graph.aget_state(_config(thread_id, base))).interrupts:
        raise ThreadStateConflict(
            f"thread {thread_id}'s run started from a pending question; rolling back would return to it: "
            "answer it instead (orchestrator resume)"
        )


def _config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def was_cancelled(record: ThreadRecord | None) -> bool:
    """Whether the thread's stopped run was cancelled (abandoned): indexed, and not marked mid-run.

    Only meaningful with the thread's lock held and its checkpoint still holding tasks to run: every run marks the
    thread mid-run when it starts (``runtime.listing.start_run``) and clears the mark only when it ends at a question
    or at its end, so a thread stopped mid-run (a crash, a failed node, a drain) has the mark until a cancel clears
    it (:func:`runtime.thread_admin.cancel_thread`). A thread from before the index (``pending`` None) never counts.
    """
    return record is not None and record.pending is not None and not record.stopped_mid_run


async def prepare_turn(
    graph: Any,
    thread_id: str,
    text: str,
    *,
    strategy: Strategy,
    waited: bool,
    base: str | None,
    record: ThreadRecord | None = None,
) -> Turn:
    """Check the thread (its lock held) and say how ``text`` runs on it under ``strategy``.

    ``waited``: another run held the lock (the strategy applies only then); ``base``: the last run's
    ``run_base_checkpoint``; ``record``: the thread's index row. A new message after an interrupted or cancelled
    run runs from START on the kept state: LangGraph drops a checkpoint's unfinished tasks when new input arrives
    (verified with langgraph 1.2), and tool calls the stopped run never answered get an ``error`` answer
    (:func:`close_tool_calls`).

    Raises:
        ThreadStateConflict: the thread is archived; it waits for an answer (every strategy); it stopped mid-run,
            that run was not cancelled and the message is not an interrupt of it; a rollback that
            :func:`check_rollback_base` refuses.
    """
    from langchain_core.messages import HumanMessage

    if record is not None and record.archived_at is not None:
        raise ThreadStateConflict(
            f"thread archived; {thread_id} takes no new message: start a new thread (its history stays readable: "
            f"GET /threads/{thread_id}/messages, orchestrator thread messages {thread_id})"
        )
    state = await graph.aget_state(_config(thread_id))
    human = HumanMessage(content=text)
    if state.created_at is None:
        return Turn({"messages": [human]})
    if state.interrupts:
        why = "; no multitask strategy passes it: answer it first" if waited else ""
        raise ThreadStateConflict(f"thread {thread_id} waits for an answer to its pending question{why}")
    applied = strategy if waited else DEFAULT_STRATEGY
    if applied == "rollback":
        await check_rollback_base(graph, thread_id, base)
        if not base:  # the run started on an empty thread: back to nothing
            await graph.checkpointer.adelete_thread(thread_id)
            return Turn({"messages": [human]})
        then = await graph.aget_state(_config(thread_id, base))
        return Turn({"messages": [*close_tool_calls(then.values.get("messages", [])), human]}, base)
    if state.next and applied != "interrupt" and not was_cancelled(record):
        raise ThreadStateConflict(
            f"thread {thread_id} stopped mid-run; finish that run first (orchestrator resume {thread_id}), or cancel "
            f"it (orchestrator thread cancel {thread_id}, POST /threads/{thread_id}/cancel) to start afresh"
        )
    return Turn({"messages": [*close_tool_calls(state.values.get("messages", [])), human]})
