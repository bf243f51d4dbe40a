"""Runs as the console draws them: a thread's runs, and one run's trace waterfall with its model calls.

Read with plain queries from the ``run``, ``node_run`` and ``llmcall`` tables. Each bar of the waterfall starts at
the node's ``started_at`` minus the run's and is ``duration_ms`` long; the page draws it as percentages of the run's
span (as LangSmith's and Jaeger's trace views do). Model calls are put on the node they name (``LLMCall.node``: the
node, or its path through subgraphs), on the execution whose time window holds the call when the node ran several
times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlmodel import col, select

from core.db import Database
from models.tables import LLMCall, ThreadRecord
from models.time_tables import NodeRun, Run
from services.lost_runs import settle_lost_runs

SLACK_MS = 5.0
"""Clock slack when a model call's time is matched to a node's window (both are written by the same process)."""
MIN_BAR_PCT = 0.4
"""The narrowest bar drawn, in percent of the run's span (a 1 ms node stays visible)."""


def _aware(value: datetime) -> datetime:
    """The database hands datetimes back naive; they were written in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class Bar:
    """One node execution in the waterfall: where it starts (ms after the run's start) and how it is drawn."""

    node: NodeRun
    offset_ms: float
    left_pct: float = 0.0
    width_pct: float = 0.0
    slowest: bool = False
    group: bool = False
    """The node is a subgraph whose own nodes are bars too (its bar spans theirs)."""
    calls: list[LLMCall] = field(default_factory=list)

    @property
    def depth(self) -> int:
        """How deep in subgraphs the node runs (0: a node of the top graph)."""
        return len(self.node.path.split("/")) if self.node.path else 0

    @property
    def label(self) -> str:
        """The node with its subgraph path: ``engineering/run_phase``."""
        return f"{self.node.path}/{self.node.node}" if self.node.path else self.node.node

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens of the model calls made in this node."""
        return sum(c.prompt_tokens + c.completion_tokens for c in self.calls)

    @property
    def cost_usd(self) -> float:
        """What the model calls made in this node cost, in US dollars."""
        return sum(c.cost_usd for c in self.calls)


@dataclass
class Waterfall:
    """A run's trace: its bars by start, its span in ms, its model calls, and their sums."""

    run: Run
    bars: list[Bar]
    span_ms: float
    calls: list[LLMCall]

    @property
    def tokens(self) -> int:
        """Every model call's prompt and completion tokens, summed."""
        return sum(c.prompt_tokens + c.completion_tokens for c in self.calls)

    @property
    def cost_usd(self) -> float:
        """Every model call's cost, summed (US dollars)."""
        return sum(c.cost_usd for c in self.calls)

    @property
    def slowest(self) -> Bar | None:
        """The longest node execution that is not a subgraph of others (those span their nodes); None: none ran."""
        leaves = [b for b in self.bars if not b.group] or self.bars
        return max(leaves, key=lambda b: b.node.duration_ms, default=None)


async def runs_of(db: Database, thread_id: str, limit: int = 50) -> list[Run]:
    """The thread's latest runs, newest first; a run whose process is gone is settled as ``lost`` first.

    See :func:`services.lost_runs.settle_lost_runs`: the thread page stops showing it as running, and its live part
    stops watching.
    """
    async with db.session() as s:
        stmt = select(Run).where(Run.thread_id == thread_id).order_by(col(Run.started_at).desc()).limit(limit)
        runs = list((await s.exec(stmt)).all())
        await settle_lost_runs(s, runs)
        return runs


async def node_runs(db: Database, run_id: str) -> list[NodeRun]:
    """The run's node executions by start."""
    async with db.session() as s:
        stmt = select(NodeRun).where(NodeRun.run_id == run_id).order_by(col(NodeRun.started_at), col(NodeRun.id))
        return list((await s.exec(stmt)).all())


async def run_owner(db: Database, run_id: str) -> tuple[Run | None, str | None]:
    """The run (settled as ``lost`` if its process is gone) and the owner of its thread.

    None: no such run; an owner of None: a thread with no owner.
    """
    async with db.session() as s:
        run = await s.get(Run, run_id)
        if run is None:
            return None, None
        await settle_lost_runs(s, [run])
        rec = await s.get(ThreadRecord, run.thread_id)
        return run, rec.owner if rec else None


def _ms_between(earlier: datetime, later: datetime) -> float:
    return (_aware(later) - _aware(earlier)).total_seconds() * 1000 + SLACK_MS


def _place_calls(bars: list[Bar], calls: list[LLMCall]) -> None:
    """Put each model call on the bar of its node whose time window holds it (else the last one started before)."""
    for call in calls:
        named = [b for b in bars if call.node in (b.node.node, b.label)]
        if not named:
            continue
        at = _aware(call.created_at)
        inside = [b for b in named if 0 <= _ms_between(b.node.started_at, at) <= b.node.duration_ms + SLACK_MS]
        before = [b for b in named if _aware(b.node.started_at) <= at]
        (inside or before or named)[-1].calls.append(call)


async def waterfall(db: Database, run: Run) -> Waterfall:
    """The run's waterfall: bars placed and sized on the run's span, the slowest marked, model calls on their nodes."""
    nodes = await node_runs(db, run.id)
    async with db.session() as s:
        stmt = select(LLMCall).where(LLMCall.run_id == run.id).order_by(col(LLMCall.created_at), col(LLMCall.id))
        calls = list((await s.exec(stmt)).all())
    start = _aware(run.started_at)
    bars = [Bar(node=n, offset_ms=max((_aware(n.started_at) - start).total_seconds() * 1000, 0.0)) for n in nodes]
    ends = [b.offset_ms + b.node.duration_ms for b in bars]
    if run.finished_at is not None:
        ends.append((_aware(run.finished_at) - start).total_seconds() * 1000)
    span = max([*ends, 1.0])
    for bar in bars:
        bar.left_pct = min(bar.offset_ms / span * 100, 100 - MIN_BAR_PCT)
        bar.width_pct = min(max(bar.node.duration_ms / span * 100, MIN_BAR_PCT), 100 - bar.left_pct)
    paths = {b.node.path for b in bars}
    for bar in bars:
        bar.group = any(p == bar.label or p.startswith(bar.label + "/") for p in paths)
    _place_calls(bars, calls)
    trace = Waterfall(run=run, bars=bars, span_ms=span, calls=calls)
    if (slowest := trace.slowest) is not None:
        slowest.slowest = True
    return trace
