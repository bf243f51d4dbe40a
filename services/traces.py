"""Read the stored traces: a thread's runs, one run's timeline (nodes and model calls), and costs.

Rows are written while runs stream (:mod:`runtime.traces`: ``run``, ``node_run``) and by the model seam
(:mod:`core.llm`: ``llmcall`` with ``run_id`` and ``node``). Tokens and cost are litellm's (``cost_usd`` is 0 for a
recorded or local model). A model call belongs to a project through its thread (``Project.thread_id``); a thread that
worked on several projects has its calls counted once, under the newest of them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.tables import LLMCall, Project, ThreadRecord
from models.time_tables import NodeRun, Run
from services.identities import Identity
from services.lost_runs import settle_lost_runs

RUN_ID_PATTERN = r"^r-[0-9a-f]{12}$"
"""Run ids: ``r-`` and 12 lowercase hex digits."""
_RELATIVE = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def as_utc(when: datetime) -> datetime:
    """``when`` as an aware UTC datetime (SQLite hands back naive UTC values)."""
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def utc_bound(when: datetime) -> datetime:
    """:func:`as_utc`, clamped: a time whose UTC form falls outside years 1-9999 becomes the first or last moment."""
    try:
        return as_utc(when)
    except OverflowError:  # 0001-01-01T00:00+05:00 is in year 0 at UTC
        return (datetime.min if when.year < 5000 else datetime.max).replace(tzinfo=UTC)


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})?$")


def parse_date_time(text: str) -> datetime:
    """An RFC 3339 date-time (``2026-12-01T08:00:00Z``; no zone: UTC) as an aware UTC datetime, clamped to years 1-9999.

    Raises:
        ValueError: anything else, a date alone or a number included (the message says what is accepted).
    """
    try:
        if not _DATE_TIME.match(text):
            raise ValueError("not of the form")
        return utc_bound(datetime.fromisoformat(text.upper().replace(" ", "T")))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time such as 2026-12-01T08:00:00Z ({exc})") from None


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The start of a ``--since`` window: ``30m``, ``24h``, ``7d``, ``2w`` ago, or an ISO 8601 date or date-time.

    A date or date-time without a zone is UTC. Returns an aware UTC datetime.

    Raises:
        ValueError: neither form (the message says what is accepted).
    """
    if match := _RELATIVE.match(text):
        amount, unit = int(match.group(1)), match.group(2)
        try:
            return as_utc(now or datetime.now(UTC)) - timedelta(seconds=amount * _UNIT_S[unit])
        except OverflowError:  # further back than year 1: everything
            return datetime.min.replace(tzinfo=UTC)
    try:
        return utc_bound(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a duration (30m, 24h, 7d, 2w) nor an ISO date or time (2026-12-01, "
            "2026-12-01T08:00Z)"
        ) from None


@dataclass
class Usage:
    """Model calls summed: how many, tokens in and out, cost (USD), time waiting for the model (ms)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        """Add ``other`` to this one."""
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.latency_ms += other.latency_ms

    def as_dict(self) -> dict[str, Any]:
        """The fields and ``tokens``, for JSON."""
        return {**asdict(self), "tokens": self.tokens}


@dataclass
class RunSummary:
    """One run as listings show it: what started it, for whom, how it ended, and its usage."""

    id: str
    thread_id: str
    kind: str
    actor: str | None
    model: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    """``done``, ``interrupted``, ``drained``, ``failed``; None while it runs (or if its process died)."""
    error: str | None
    nodes: int = 0
    usage: Usage = field(default_factory=Usage)

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None while it runs."""
        if self.finished_at is None:
            return None
        return (as_utc(self.finished_at) - as_utc(self.started_at)).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times in ISO 8601 UTC, ``duration_s``, the usage fields at the top level."""
        out = {k: v for k, v in asdict(self).items() if k != "usage"}
        out["started_at"] = as_utc(self.started_at).isoformat()
        out["finished_at"] = as_utc(self.finished_at).isoformat() if self.finished_at else None
        return {**out, "duration_s": self.duration_s, **self.usage.as_dict()}


@dataclass
class NodeStep:
    """One node execution in a run's timeline; ``offset_ms`` is its start after the run's start."""

    node: str
    path: str
    """The parent subgraph nodes, ``/``-joined (empty at the top)."""
    started_at: datetime
    offset_ms: float
    duration_ms: float
    outcome: str
    error: str | None
    subgraph: bool = False
    """The node is a subgraph whose own nodes are rows too (its duration contains theirs)."""
    slowest: bool = False

    @property
    def where(self) -> str:
        """The node with its path: ``engineering/run_phase``."""
        return f"{self.path}/{self.node}" if self.path else self.node

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``where``."""
        return {**asdict(self), "started_at": as_utc(self.started_at).isoformat(), "where": self.where}


@dataclass
class ModelCall:
    """One model call of a run: who asked (role, node), which model, tokens, cost, latency, whether it was used."""

    id: int
    created_at: datetime
    role: str
    model: str
    node: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    ok: bool
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``tokens``."""
        out = {**asdict(self), "created_at": as_utc(self.created_at).isoformat()}
        return {**out, "tokens": self.prompt_tokens + self.completion_tokens}


@dataclass
class RunTimeline:
    """A run with its nodes in start order (the slowest marked), its model calls as recorded, and their totals."""

    run: RunSummary
    nodes: list[NodeStep]
    calls: list[ModelCall]

    @property
    def slowest(self) -> NodeStep | None:
        """The marked node: the longest one that is not a subgraph (the longest of all if every one is)."""
        return next((n for n in self.nodes if n.slowest), None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``run``, ``nodes``, ``calls``, ``slowest`` (a node or None), ``totals`` (usage)."""
        slowest = self.slowest
        return {
            "run": self.run.as_dict(),
            "nodes": [n.as_dict() for n in self.nodes],
            "calls": [c.as_dict() for c in self.calls],
            "slowest": slowest.as_dict() if slowest else None,
            "totals": self.run.usage.as_dict(),
        }


def _usage_columns() -> tuple[Any, ...]:
    return (
        func.count(col(LLMCall.id)),
        func.coalesce(func.sum(LLMCall.prompt_tokens), 0),
        func.coalesce(func.sum(LLMCall.completion_tokens), 0),
        func.coalesce(func.sum(LLMCall.cost_usd), 0.0),
        func.coalesce(func.sum(LLMCall.latency_ms), 0.0),
    )


def _usage(row: Any) -> Usage:
    calls, prompt, completion, cost, latency = row
    return Usage(int(calls or 0), int(prompt or 0), int(completion or 0), float(cost or 0.0), float(latency or 0.0))


async def thread_runs(session: AsyncSession, thread_id: str, *, limit: int = 100) -> list[RunSummary]:
    """The thread's runs, newest first (at most ``limit``), each with its node count and usage; lost ones settled."""
    runs = (
        await session.exec(
            select(Run)
            .where(Run.thread_id == thread_id)
            .order_by(col(Run.started_at).desc(), col(Run.id).desc())
            .limit(limit)
        )
    ).all()
    await settle_lost_runs(session, runs)
    return await _summaries(session, list(runs))


async def _summaries(session: AsyncSession, runs: list[Run]) -> list[RunSummary]:
    ids = [r.id for r in runs]
    if not ids:
        return []
    counted = select(NodeRun.run_id, func.count()).where(col(NodeRun.run_id).in_(ids)).group_by(NodeRun.run_id)
    node_counts = dict((await session.exec(counted)).all())
    usage_rows = await session.exec(
        select(LLMCall.run_id, *_usage_columns()).where(col(LLMCall.run_id).in_(ids)).group_by(LLMCall.run_id)
    )
    usage = {row[0]: _usage(row[1:]) for row in usage_rows.all()}
    return [
        RunSummary(
            id=r.id,
            thread_id=r.thread_id,
            kind=r.kind,
            actor=r.actor,
            model=r.model,
            started_at=r.started_at,
            finished_at=r.finished_at,
            outcome=r.outcome,
            error=r.error,
            nodes=int(node_counts.get(r.id, 0)),
            usage=usage.get(r.id, Usage()),
        )
        for r in runs
    ]


async def run_timeline(session: AsyncSession, run_id: str) -> RunTimeline | None:
    """One run's timeline (a lost run settled, see :func:`settle_lost_runs`), or None for an unknown run id."""
    run = await session.get(Run, run_id)
    if run is None:
        return None
    await settle_lost_runs(session, [run])
    (summary,) = await _summaries(session, [run])
    rows = (
        await session.exec(
            select(NodeRun).where(NodeRun.run_id == run_id).order_by(col(NodeRun.started_at), col(NodeRun.id))
        )
    ).all()
    calls = (await session.exec(select(LLMCall).where(LLMCall.run_id == run_id).order_by(col(LLMCall.id)))).all()
    start = as_utc(run.started_at)
    inner = {r.path for r in rows if r.path}
    steps = [
        NodeStep(
            node=r.node,
            path=r.path,
            started_at=r.started_at,
            offset_ms=max(0.0, (as_utc(r.started_at) - start).total_seconds() * 1000),
            duration_ms=r.duration_ms,
            outcome=r.outcome,
            error=r.error,
        )
        for r in rows
    ]
    for step in steps:
        step.subgraph = any(p == step.where or p.startswith(step.where + "/") for p in inner)
    leaves = [s for s in steps if not s.subgraph] or steps
    if leaves:
        max(leaves, key=lambda s: s.duration_ms).slowest = True
    return RunTimeline(run=summary, nodes=steps, calls=[_call(c) for c in calls])


def _call(row: LLMCall) -> ModelCall:
    return ModelCall(
        id=row.id or 0,
        created_at=row.created_at,
        role=row.role,
        model=row.model,
        node=row.node,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost_usd=row.cost_usd,
        latency_ms=row.latency_ms,
        ok=row.ok,
        error=row.error,
    )


@dataclass
class CostRow:
    """Usage of one (project, role, model); ``project`` None for calls of threads with no project."""

    project: str | None
    role: str
    model: str
    usage: Usage

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the keys and the usage fields at the top level."""
        return {"project": self.project, "role": self.role, "model": self.model, **self.usage.as_dict()}


@dataclass
class CostReport:
    """Costs grouped by project, role and model, with the sums by project, by role, by model and overall."""

    since: datetime | None
    project: str | None
    rows: list[CostRow]

    def by(self, key: str) -> dict[str | None, Usage]:
        """The rows summed by ``project``, ``role`` or ``model``."""
        out: dict[str | None, Usage] = {}
        for row in self.rows:
            out.setdefault(getattr(row, key), Usage()).add(row.usage)
        return out

    @property
    def total(self) -> Usage:
        """Every row summed."""
        total = Usage()
        for row in self.rows:
            total.add(row.usage)
        return total

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``rows``, ``projects``, ``roles``, ``models`` (each a list of usage with its key), ``total``."""
        groups = {
            plural: [{key: name, **u.as_dict()} for name, u in self.by(key).items()]
            for key, plural in (("project", "projects"), ("role", "roles"), ("model", "models"))
        }
        return {
            "since": self.since.isoformat() if self.since else None,
            "project": self.project,
            "rows": [r.as_dict() for r in self.rows],
            **groups,
            "total": self.total.as_dict(),
        }


class UnknownProjectName(LookupError):
    """``costs`` asked for a project that does not exist."""


async def costs(session: AsyncSession, *, project: str | None = None, since: datetime | None = None) -> CostReport:
    """Model calls grouped by project, role and model (most expensive first), optionally one project's, since a time.

    Raises:
        UnknownProjectName: ``project`` names no project.
    """
    if project is not None:
        found = (await session.exec(select(Project.id).where(Project.name == project))).first()
        if found is None:
            raise UnknownProjectName(f"no project named {project!r} (see `orchestrator projects`)")
    newest = (
        select(Project.thread_id, func.max(Project.id).label("pid"))
        .where(col(Project.thread_id).is_not(None))
        .group_by(Project.thread_id)
        .subquery()
    )
    stmt = (
        select(Project.name, LLMCall.role, LLMCall.model, *_usage_columns())
        .select_from(LLMCall)
        .outerjoin(newest, newest.c.thread_id == LLMCall.thread_id)
        .outerjoin(Project, col(Project.id) == newest.c.pid)
        .group_by(Project.name, LLMCall.role, LLMCall.model)
    )
    if project is not None:
        stmt = stmt.where(Project.name == project)
    since = utc_bound(since) if since is not None else None
    if since is not None:
        stmt = stmt.where(col(LLMCall.created_at) >= since)
    found_rows = (await session.exec(stmt)).all()
    rows = [CostRow(project=r[0], role=r[1], model=r[2], usage=_usage(r[3:])) for r in found_rows]
    rows.sort(key=lambda r: (-r.usage.cost_usd, -r.usage.tokens, r.project or "", r.role, r.model))
    return CostReport(since=since, project=project, rows=rows)


async def thread_visible(session: AsyncSession, thread_id: str, identity: Identity) -> bool:
    """Whether ``identity`` may see the thread's runs: the thread is known and :meth:`Identity.sees` its owner.

    The rule of every thread route (approvers and admins see all threads, others their own); a thread not visible
    is answered as unknown, so ids cannot be probed.
    """
    row = await session.get(ThreadRecord, thread_id)
    return row is not None and identity.sees(row.owner)
