"""A project's budget: what its runs may spend (tokens, USD, model calls, working seconds) and what they have spent.

Spending only ever grows through one atomic ``UPDATE budget SET spent_x = spent_x + :x`` (:func:`charge`; the LLM
seam issues the same statement), so concurrent model calls never lose a charge to a read-modify-write. Limits move
only by a person: :func:`extend_budget` raises them, :func:`set_budget` replaces them; both are on the trail.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from models.tables import Budget, utcnow
from services.identities import record

ITEMS = ("tokens", "cost_usd", "calls", "seconds")
"""The four things a budget counts, as named in :attr:`BudgetView.exhausted` and in JSON."""


class BudgetSettings(Protocol):
    """The settings a default budget comes from (``core.settings.Settings`` has them)."""

    budget_tokens: int
    budget_cost_usd: float
    budget_calls: int
    budget_seconds: float


class NoBudget(LookupError):
    """The project has no budget (none was opened for it); nothing was changed."""


@dataclass(frozen=True)
class BudgetLimits:
    """An amount of each budget item: limits, what was spent, what is left, or what to add.

    Attributes:
        tokens: prompt + completion tokens.
        cost_usd: model cost in US dollars.
        calls: model calls.
        seconds: working seconds (model latency plus test runs).
    """

    tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: BudgetSettings) -> BudgetLimits:
        """The default budget of a project run (``ORCH_BUDGET_TOKENS``, ``_COST_USD``, ``_CALLS``, ``_SECONDS``)."""
        return cls(
            tokens=settings.budget_tokens,
            cost_usd=settings.budget_cost_usd,
            calls=settings.budget_calls,
            seconds=settings.budget_seconds,
        )

    def as_dict(self) -> dict[str, int | float]:
        """``{"tokens": ..., "cost_usd": ..., "calls": ..., "seconds": ...}``."""
        return asdict(self)

    def check(self, what: str) -> None:
        """Refuse a negative, infinite or NaN amount.

        Raises:
            ValueError: naming ``what`` (e.g. "an extension") and the item.
        """
        for name, value in self.as_dict().items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{what}: {name} must be a finite number >= 0, not {value!r}")


@dataclass(frozen=True)
class BudgetView:
    """A project's budget as people see it: limits, spent, left and what ran out."""

    project_id: int
    limits: BudgetLimits
    spent: BudgetLimits
    updated_at: datetime

    @classmethod
    def of(cls, row: Budget) -> BudgetView:
        """The view of a ``budget`` row."""
        return cls(
            project_id=row.project_id,
            limits=BudgetLimits(row.limit_tokens, row.limit_cost_usd, row.limit_calls, row.limit_seconds),
            spent=BudgetLimits(row.spent_tokens, row.spent_cost_usd, row.spent_calls, row.spent_seconds),
            updated_at=row.updated_at,
        )

    @property
    def left(self) -> BudgetLimits:
        """What is left of each item, never below zero."""
        left = {n: max(getattr(self.limits, n) - getattr(self.spent, n), 0) for n in ITEMS}
        return BudgetLimits(**left)

    @property
    def exhausted(self) -> list[str]:
        """The items spent to or past their limit, in :data:`ITEMS` order (e.g. ``["calls"]``); empty: all left."""
        return [n for n in ITEMS if getattr(self.spent, n) >= getattr(self.limits, n)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: ``limits``, ``spent``, ``left`` (each a dict of :data:`ITEMS`), ``exhausted``, ``updated_at``."""
        return {
            "limits": self.limits.as_dict(),
            "spent": self.spent.as_dict(),
            "left": self.left.as_dict(),
            "exhausted": self.exhausted,
            "updated_at": self.updated_at.isoformat(),
        }

    def describe(self) -> str:
        """One line: ``tokens 1,234/400,000 · cost $0.00/$5.00 · calls 7/80 · 12s/3600s``."""
        s, lim = self.spent, self.limits
        return (
            f"tokens {s.tokens:,}/{lim.tokens:,} · cost ${s.cost_usd:,.2f}/${lim.cost_usd:,.2f} · "
            f"calls {s.calls:,}/{lim.calls:,} · {s.seconds:.0f}s/{lim.seconds:.0f}s"
        )


async def open_budget(session: AsyncSession, project_id: int, limits: BudgetLimits) -> None:
    """Give a project a budget of ``limits`` with nothing spent, unless it has one (then nothing changes).

    One ``INSERT ... ON CONFLICT DO NOTHING``: two runs opening it at once make one row.

    Raises:
        ValueError: a negative or non-finite limit.
    """
    limits.check("a budget")
    values = {
        "project_id": project_id,
        "limit_tokens": limits.tokens,
        "limit_cost_usd": limits.cost_usd,
        "limit_calls": limits.calls,
        "limit_seconds": limits.seconds,
        "spent_tokens": 0,
        "spent_cost_usd": 0.0,
        "spent_calls": 0,
        "spent_seconds": 0.0,
        "updated_at": utcnow(),
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(Budget).values(**values).on_conflict_do_nothing(index_elements=["project_id"])
    await session.exec(stmt)  # type: ignore[call-overload]


async def budget_of(session: AsyncSession, project_id: int) -> BudgetView | None:
    """The project's budget, or None when it has none."""
    row = await session.get(Budget, project_id, populate_existing=True)
    return BudgetView.of(row) if row is not None else None


async def extend_budget(
    session: AsyncSession, project_id: int, add: BudgetLimits, *, actor: str, thread_id: str | None = None
) -> BudgetView:
    """Raise the project's limits by ``add`` (one atomic update) and put it on the trail (``budget_extended``).

    Args:
        session: an open session (the change and its Event commit together).
        project_id: the project's id.
        add: how much to add to each limit; each >= 0, at least one > 0.
        actor: who extends it (``cli:<user>``, ``token:<name>``).
        thread_id: the thread that asked, if any.

    Returns:
        The budget after the change.

    Raises:
        ValueError: a negative or non-finite amount, or nothing to add.
        NoBudget: the project has no budget.
    """
    add.check("a budget extension")
    if not any(getattr(add, n) > 0 for n in ITEMS):
        raise ValueError("a budget extension must add something: give at least one of tokens, cost_usd, calls, seconds")
    stmt = (
        update(Budget)
        .where(col(Budget.project_id) == project_id)
        .values(
            limit_tokens=col(Budget.limit_tokens) + add.tokens,
            limit_cost_usd=col(Budget.limit_cost_usd) + add.cost_usd,
            limit_calls=col(Budget.limit_calls) + add.calls,
            limit_seconds=col(Budget.limit_seconds) + add.seconds,
            updated_at=utcnow(),
        )
    )
    if (await session.exec(stmt)).rowcount == 0:  # type: ignore[call-overload]
        raise NoBudget(f"project {project_id} has no budget to extend")
    view = await budget_of(session, project_id)
    assert view is not None
    added = ", ".join(f"+{_amount(n, getattr(add, n))}" for n in ITEMS if getattr(add, n) > 0)
    why = f"budget extended by {actor}: {added}; now {view.describe()}"
    await record(
        session,
        subject_type="project",
        subject_id=project_id,
        action="budget_extended",
        reason=why,
        actor=actor,
        thread_id=thread_id,
    )
    return view


async def set_budget(session: AsyncSession, project_id: int, limits: BudgetLimits, *, actor: str) -> BudgetView:
    """Replace the project's limits (a person's override for one request), opening the budget if it has none.

    What was spent stays. The change is on the trail as ``budget_set``, naming the old and new limits.

    Raises:
        ValueError: a negative or non-finite limit.
    """
    limits.check("a budget")
    before = await budget_of(session, project_id)
    await open_budget(session, project_id, limits)
    stmt = (
        update(Budget)
        .where(col(Budget.project_id) == project_id)
        .values(
            limit_tokens=limits.tokens,
            limit_cost_usd=limits.cost_usd,
            limit_calls=limits.calls,
            limit_seconds=limits.seconds,
            updated_at=utcnow(),
        )
    )
    await session.exec(stmt)  # type: ignore[call-overload]
    view = await budget_of(session, project_id)
    assert view is not None
    was = f"was {_limits(before.limits)}" if before else "had none"
    why = f"budget set to {_limits(limits)} by {actor} ({was})"
    await record(session, subject_type="project", subject_id=project_id, action="budget_set", reason=why, actor=actor)
    return view


async def charge(
    session: AsyncSession,
    project_id: int,
    *,
    tokens: int = 0,
    cost_usd: float = 0.0,
    calls: int = 0,
    seconds: float = 0.0,
) -> None:
    """Add to what the project has spent, in one atomic ``UPDATE ... SET spent_x = spent_x + :x``.

    A project without a budget is charged nothing (no row, no error).

    Raises:
        ValueError: a negative or non-finite amount.
    """
    BudgetLimits(tokens, cost_usd, calls, seconds).check("a charge")
    stmt = (
        update(Budget)
        .where(col(Budget.project_id) == project_id)
        .values(
            spent_tokens=col(Budget.spent_tokens) + tokens,
            spent_cost_usd=col(Budget.spent_cost_usd) + cost_usd,
            spent_calls=col(Budget.spent_calls) + calls,
            spent_seconds=col(Budget.spent_seconds) + seconds,
            updated_at=utcnow(),
        )
    )
    await session.exec(stmt)  # type: ignore[call-overload]


def _amount(name: str, value: float) -> str:
    if name == "cost_usd":
        return f"${value:,.2f}"
    if name == "seconds":
        return f"{value:,.0f}s"
    return f"{value:,} {name}"


def _limits(limits: BudgetLimits) -> str:
    return ", ".join(_amount(n, getattr(limits, n)) for n in ITEMS)
