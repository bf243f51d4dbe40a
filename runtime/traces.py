"""The trace of a run as it streams: a ``run`` row when it starts, a ``node_run`` row per node end, its outcome.

Node executions are read from LangGraph's ``tasks`` stream (``stream_mode="tasks"``, see
https://langchain-ai.github.io/langgraph/how-tos/streaming/): an item without ``result`` or ``error`` starts a task,
the item with them ends it; an end with ``interrupts`` is a node that stopped at an ``interrupt()`` (it re-runs from
its start on resume). Model calls name the run through :attr:`graphs.context.Context.run_id` (see
:mod:`core.llm`). Each write is one short transaction, and a failed one is logged and dropped: a trace never breaks
the run it describes.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import update
from sqlmodel import col

from core.db import Database
from models.tables import utcnow
from models.time_tables import NodeRun, Run

log = logging.getLogger(__name__)

RunKind = Literal["message", "resume", "continue"]
"""Which entry point started a run: ``start_turn``, ``resume`` or ``continue_run``."""
RunOutcome = Literal["done", "interrupted", "drained", "failed"]
"""How a run ended: ran to its end, stopped at a question, stopped between supersteps on request, or raised. A run
whose process ended first is recorded as ``lost`` by whoever sees it next (``services.lost_runs.settle_lost_runs``)."""
ERROR_CHARS = 2000
"""The longest error text kept on a ``run`` or ``node_run`` row."""


def new_run_id() -> str:
    """A fresh run id, ``r-`` and 12 hex digits."""
    return f"r-{uuid.uuid4().hex[:12]}"


def node_outcome(data: dict[str, Any]) -> tuple[str, str | None]:
    """``(outcome, error)`` of a ``tasks`` stream end item: ``interrupted``, ``error`` (with its text) or ``ok``."""
    if data.get("interrupts"):
        return "interrupted", None
    if data.get("error") is not None:
        return "error", f"{type(data['error']).__name__}: {data['error']}"[:ERROR_CHARS]
    return "ok", None


class RunTrace:
    """The trace of one run; made by :meth:`begin`, fed every ``tasks`` item, closed by :meth:`finish`.

    Args:
        db: where the rows go.
        run_id: the run's id (``r-`` and 12 hex digits).
        thread_id: the thread it runs on.
    """

    def __init__(self, db: Database, run_id: str, thread_id: str) -> None:
        self.db = db
        self.run_id = run_id
        self.thread_id = thread_id
        self.finished = False
        self._started: dict[str, tuple[float, datetime]] = {}

    @classmethod
    async def begin(cls, db: Database, thread_id: str, kind: RunKind, actor: str | None, model: str | None) -> RunTrace:
        """Record the start of a run on ``thread_id`` (a ``run`` row with no outcome yet) and return its trace.

        ``actor`` is who the run acts for, ``model`` the run's default model (per-role settings may differ). The row
        names this machine and process, which tell a run still going from one whose process died.
        """
        trace = cls(db, new_run_id(), thread_id)
        row = Run(
            id=trace.run_id,
            thread_id=thread_id,
            kind=kind,
            actor=actor,
            model=model,
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        await trace._write("the start of", row=row)
        return trace

    async def task(self, data: dict[str, Any], path: tuple[str, ...]) -> None:
        """Take one ``tasks`` stream item: remember a start, store a ``node_run`` row for an end.

        Args:
            data: the item (``id``, ``name``; an end has ``result`` or ``error`` and ``interrupts``).
            path: the parent subgraph nodes of the task (empty for a node of the top graph).
        """
        task_id = str(data.get("id", ""))
        if "result" not in data and "error" not in data:
            self._started[task_id] = (time.perf_counter(), utcnow())
            return
        began = self._started.pop(task_id, None)
        if began is None:
            return
        seconds = time.perf_counter() - began[0]
        outcome, error = node_outcome(data)
        row = NodeRun(
            run_id=self.run_id,
            thread_id=self.thread_id,
            node=str(data.get("name", "")),
            path="/".join(path),
            started_at=began[1],
            duration_ms=seconds * 1000,
            outcome=outcome,
            error=error,
        )
        await self._write("a node of", row=row)

    async def finish(self, outcome: RunOutcome, error: BaseException | str | None = None) -> None:
        """Record how the run ended (once; a later call changes nothing).

        Args:
            outcome: see :data:`RunOutcome`.
            error: what failed (an exception is kept as ``Type: message``).
        """
        if self.finished:
            return
        self.finished = True
        if isinstance(error, BaseException):
            error = f"{type(error).__name__}: {error}"
        values = {"finished_at": utcnow(), "outcome": outcome, "error": error[:ERROR_CHARS] if error else None}
        stmt = update(Run).where(col(Run.id) == self.run_id).values(**values)
        await self._write("the end of", stmt=stmt)

    async def _write(self, what: str, *, row: Run | NodeRun | None = None, stmt: Any = None) -> None:
        """Insert ``row`` or execute ``stmt`` in one transaction; a failure is logged, never raised."""
        try:
            async with self.db.session() as s:
                if row is not None:
                    s.add(row)
                if stmt is not None:
                    await s.exec(stmt)
        except Exception:
            log.warning("could not record %s run %s of thread %s", what, self.run_id, self.thread_id, exc_info=True)
