"""What a run reports while it streams: :class:`RunEvent`, and how LangGraph's ``tasks`` stream items become them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class RunEvent:
    """What a run reports while streaming.

    ``kind``: ``node_start`` / ``node_end`` (``node``, ``path`` of parent subgraph nodes, ``duration_s``),
    ``message`` (the PO's words in ``text``; node ``system``: a notice of what happened while nobody watched),
    ``interrupt`` (``payload``, ``interrupt_id``), ``drained`` (the run stopped between supersteps on request:
    after SIGTERM ``continue_run`` finishes it; for a newer message's ``interrupt`` or ``rollback``, ``text`` says
    so), ``done``, ``cancel`` (the outcome of :meth:`runtime.threads.OrchestratorRuntime.cancel_project`, in
    ``text`` and ``payload``).
    """

    kind: Literal["node_start", "node_end", "message", "interrupt", "drained", "done", "error", "cancel"]
    node: str | None = None
    path: tuple[str, ...] = ()
    duration_s: float | None = None
    text: str | None = None
    payload: dict[str, Any] | None = None
    interrupt_id: str | None = None
    error: str | None = None


def task_event(data: dict[str, Any], path: tuple[str, ...], started: dict[str, float]) -> RunEvent | None:
    """A ``tasks`` stream item as a node event.

    An engineering phase's end carries its outcome in ``text`` (``IMPL round 1 (developer): failed: ...``),
    read from the timeline entry it appended.
    """
    task_id = data.get("id", "")
    if "result" not in data and "error" not in data:
        started[task_id] = time.perf_counter()
        return RunEvent(kind="node_start", node=data["name"], path=path)
    if task_id not in started or data.get("interrupts"):
        return None
    result = data.get("result")
    timeline = result.get("timeline") if isinstance(result, dict) else None
    text = None
    if timeline and data["name"] == "run_phase":
        t = timeline[-1]
        text = f"{t['phase']} round {t['round']} ({t['role']}): {t['outcome']}: {t['why']}"
    return RunEvent(
        kind="node_end",
        node=data["name"],
        path=path,
        error=f"{type(data['error']).__name__}: {data['error']}" if data.get("error") is not None else None,
        duration_s=time.perf_counter() - started.pop(task_id),
        text=text,
    )
