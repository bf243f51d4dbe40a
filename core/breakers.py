"""Circuit breakers around what this project cannot control: GitHub, each SSH host, the model provider.

``breaker_failures`` failures in a row (``ORCH_BREAKER_FAILURES``, default 5) open a breaker; while open, every call
fails at once with a clear error ("GitHub unavailable since 12:03:01Z (5 failures in a row), next try at
12:04:01Z") instead of a timeout per call. After ``breaker_cooldown_s`` (``ORCH_BREAKER_COOLDOWN_S``, default 60)
the next call is a trial: a success closes the breaker, a failure opens it for another cool-down. Only real
unavailability counts (no connection, a timeout, a 5xx, a 429): a 404 or a 422 is an answer, and a success
resets the count.

The state machine is purgatory's (https://github.com/mardiros/purgatory): it is async (the SSH checks, the model
seam and the database here are), it takes a custom storage backend (its unit of work and repository), and its
``exclude`` predicates decide per exception whether it counts. pybreaker's async path needs Tornado and aiobreaker
has had no release since 2021. The storage here is the database (``SyncCursor`` rows keyed ``breaker:<name>``,
no migration), so the CLI, the API and the sync service see one state: ``cached`` holds
``{"state", "opened_at", "label"}``, ``consecutive_failures`` the count and ``paused_until`` the next try.
Processes update a row last-writer-wins: two processes may each send a trial call after a cool-down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from purgatory import (
    AsyncAbstractUnitOfWork,
    AsyncCircuitBreakerFactory,
    AsyncInMemoryUnitOfWork,
    SyncAbstractUnitOfWork,
    SyncCircuitBreakerFactory,
    SyncInMemoryUnitOfWork,
)
from purgatory.domain.model import Context, OpenedState
from purgatory.service._async.repository import AsyncAbstractRepository
from purgatory.service._sync.repository import SyncAbstractRepository
from purgatory.typing import StateName
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col, select

from core.db import Database
from core.settings import Settings
from models.tables import SyncCursor, utcnow

KEY_PREFIX = "breaker:"
"""The ``SyncCursor.key`` prefix of breaker rows."""
UNAVAILABLE_STATUSES = frozenset({429, *range(500, 600)})
"""HTTP statuses that count as the service being unavailable; every other answer is the service working."""


@dataclass(frozen=True)
class BreakerState:
    """One breaker as ``orchestrator status`` and ``GET /status`` show it."""

    name: str
    """``github``, ``model`` or ``ssh:<address>:<port>``."""
    label: str
    """What is guarded, in words (``GitHub``, ``the model provider``, ``SSH host 10.0.0.5:22``)."""
    state: str
    """``closed`` (calls go through), ``open`` (refused at once) or ``half-open`` (the next call is the trial)."""
    failures: int
    """Failures in a row."""
    opened_at: datetime | None
    """When it last opened (UTC); None while closed."""
    next_try_at: datetime | None
    """When an open breaker lets the trial call through (UTC); None while closed."""

    def as_json(self) -> dict[str, Any]:
        """The JSON shape: the fields above, times as ISO 8601 strings (UTC) or null."""
        return {
            "name": self.name,
            "label": self.label,
            "state": self.state,
            "failures": self.failures,
            "opened_at": _iso(self.opened_at),
            "next_try_at": _iso(self.next_try_at),
        }

    def refusal(self) -> str:
        """``<label> unavailable since HH:MM:SSZ (N failures in a row), next try at HH:MM:SSZ``."""
        since = _clock(self.opened_at)
        return f"{self.label} unavailable since {since} ({self.failures} failures in a row), next try at " + _clock(
            self.next_try_at
        )


class ServiceUnavailable(RuntimeError):
    """A call refused at once because its breaker is open; ``state`` says since when and when to try again."""

    def __init__(self, state: BreakerState) -> None:
        super().__init__(state.refusal())
        self.state = state


def http_unavailable(status: int | None) -> bool:
    """Whether an HTTP status means unavailability (429, 5xx); None (no answer at all) counts too."""
    return status is None or status in UNAVAILABLE_STATUSES


class _DbRepository(AsyncAbstractRepository):
    """The purgatory storage over ``SyncCursor`` rows; each ``get`` reads the row, so every process sees one state."""

    def __init__(self, db: Database, labels: dict[str, str], threshold: int, ttl: float) -> None:
        self.db = db
        self.labels = labels
        self.threshold, self.ttl = threshold, ttl
        self.messages = []

    async def get(self, name: str) -> Context | None:
        async with self.db.session() as s:
            row = await s.get(SyncCursor, KEY_PREFIX + name)
        return None if row is None else _context(name, row, self.threshold, self.ttl)

    async def register(self, context: Context) -> None:
        await self._write(context.name, state=context.state, opened_at=context.opened_at, failures=0)

    async def update_state(self, name: str, state: str, opened_at: float | None) -> None:
        await self._write(name, state=state, opened_at=opened_at)

    async def inc_failures(self, name: str, failure_count: int) -> None:
        await self._write(name, failures=failure_count)

    async def reset_failure(self, name: str) -> None:
        await self._write(name, failures=0)

    async def _write(self, name: str, **change: Any) -> None:
        """Apply ``change`` to the breaker's row, made on first use.

        Callers that use a new breaker at once (50 host checks of one ``ssh:`` breaker) each find no row and insert
        one; all but the first get the key's ``IntegrityError``, and write again over the row it made.
        """
        for attempt in range(2):
            try:
                async with self.db.session() as s:
                    row = await s.get(SyncCursor, KEY_PREFIX + name)
                    s.add(_changed(row, name, self.labels, change))
                return
            except IntegrityError:
                if attempt:
                    raise


def _context(name: str, row: SyncCursor, threshold: int, ttl: float) -> Context:
    """The purgatory context of a stored breaker row."""
    data = row.cached if isinstance(row.cached, dict) else {}
    state: StateName = data["state"] if data.get("state") in ("opened", "half-opened") else "closed"
    return Context(
        name, threshold, ttl, state=state, failure_count=row.consecutive_failures, opened_at=data.get("opened_at")
    )


def _changed(row: SyncCursor | None, name: str, labels: dict[str, str], change: dict[str, Any]) -> SyncCursor:
    """``row`` (a new one if None) with ``change`` applied: ``state`` and ``opened_at``, and/or ``failures``."""
    row = row or SyncCursor(key=KEY_PREFIX + name, cached={})
    data = dict(row.cached) if isinstance(row.cached, dict) else {}
    data["label"] = labels.get(name, data.get("label", name))
    if "state" in change:
        data["state"], data["opened_at"] = change["state"], change["opened_at"]
    if "failures" in change:
        row.consecutive_failures = change["failures"]
    row.cached, row.updated_at = data, utcnow()
    return row


class _SyncDbRepository(SyncAbstractRepository):
    """The same rows as :class:`_DbRepository` through a blocking engine, for blocking callers (PyGithub)."""

    def __init__(self, engine: Engine, labels: dict[str, str], threshold: int, ttl: float) -> None:
        self.engine = engine
        self.labels = labels
        self.threshold, self.ttl = threshold, ttl
        self.messages = []

    def get(self, name: str) -> Context | None:
        with Session(self.engine) as s:
            row = s.get(SyncCursor, KEY_PREFIX + name)
        return None if row is None else _context(name, row, self.threshold, self.ttl)

    def register(self, context: Context) -> None:
        self._write(context.name, state=context.state, opened_at=context.opened_at, failures=0)

    def update_state(self, name: str, state: str, opened_at: float | None) -> None:
        self._write(name, state=state, opened_at=opened_at)

    def inc_failures(self, name: str, failure_count: int) -> None:
        self._write(name, failures=failure_count)

    def reset_failure(self, name: str) -> None:
        self._write(name, failures=0)

    def _write(self, name: str, **change: Any) -> None:
        """As :meth:`_DbRepository._write`: a row another caller inserted first is written over."""
        for attempt in range(2):
            try:
                with Session(self.engine, expire_on_commit=False) as s:
                    s.add(_changed(s.get(SyncCursor, KEY_PREFIX + name), name, self.labels, change))
                    s.commit()
                return
            except IntegrityError:
                if attempt:
                    raise


class _SyncDbUnitOfWork(SyncAbstractUnitOfWork):
    def __init__(self, engine: Engine, labels: dict[str, str], threshold: int, ttl: float) -> None:
        self.contexts = _SyncDbRepository(engine, labels, threshold, ttl)

    def commit(self) -> None:
        """Each write commits on its own."""

    def rollback(self) -> None:
        """Nothing to undo."""


class _DbUnitOfWork(AsyncAbstractUnitOfWork):
    def __init__(self, db: Database, labels: dict[str, str], threshold: int, ttl: float) -> None:
        self.contexts = _DbRepository(db, labels, threshold, ttl)

    async def commit(self) -> None:
        """Each write commits on its own (a breaker row is one small upsert)."""

    async def rollback(self) -> None:
        """Nothing to undo: see :meth:`commit`."""


class Breakers:
    """The breakers of one process, stored in ``db`` (shared by every process) or, without one, in memory.

    Args:
        settings: ``breaker_failures`` (the threshold) and ``breaker_cooldown_s`` (seconds open before a trial).
        db: the database holding the state; None keeps it in this process only.
    """

    def __init__(self, settings: Settings, db: Database | None) -> None:
        self.threshold = settings.breaker_failures
        self.cooldown_s = settings.breaker_cooldown_s
        self.labels: dict[str, str] = {}
        uow = (
            _DbUnitOfWork(db, self.labels, self.threshold, self.cooldown_s)
            if db is not None
            else AsyncInMemoryUnitOfWork()
        )
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=self.threshold, default_ttl=self.cooldown_s, uow=uow
        )

    @asynccontextmanager
    async def guard(
        self,
        name: str,
        label: str,
        *,
        counts: Callable[[BaseException], bool],
        refuse: Callable[[ServiceUnavailable], BaseException] = lambda e: e,
    ) -> AsyncIterator[None]:
        """Run the body under breaker ``name``: refused at once while open; its failure counted if ``counts`` says so.

        Args:
            name: the breaker (``github``, ``model``, ``ssh:<address>:<port>``).
            label: what it guards, in words, for the refusal and the status.
            counts: whether an exception the body raised is unavailability (a connection error, a timeout, a 5xx,
                a 429); any other exception, like a success, resets the count. A cancellation (not an
                ``Exception``) changes nothing.
            refuse: turns the refusal into the exception the caller's error path already shows (``ModelUnreachable``,
                ``ForgeUnavailable``); by default :class:`ServiceUnavailable` itself.

        Raises:
            The exception ``refuse`` returns, built from a :class:`ServiceUnavailable`, while the breaker is open;
            whatever the body raises, unchanged.
        """
        self.labels[name] = label
        # purgatory excludes an exception when the predicate is true: exclude what is not unavailability
        brk = await self._factory.get_breaker(name, self.threshold, self.cooldown_s, [(BaseException, _not(counts))])
        try:
            await brk.__aenter__()
        except OpenedState as exc:
            raise refuse(ServiceUnavailable(self._state(name, label, brk.context))) from exc
        try:
            yield
        except Exception as exc:
            await brk.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        # a cancellation (a BaseException, not caught above) tells nothing about the service: nothing recorded
        await brk.__aexit__(None, None, None)

    def _state(self, name: str, label: str, ctx: Context) -> BreakerState:
        return _refused_state(name, label, ctx, self.threshold, self.cooldown_s)


def sync_breakers(settings: Settings) -> SyncBreakers:
    """The blocking breakers of ``settings``, stored in its database (``settings.db_url``) for every process."""
    return SyncBreakers(
        failures=settings.breaker_failures, cooldown_s=settings.breaker_cooldown_s, database_url=settings.db_url
    )


class SyncBreakers:
    """:class:`Breakers` for blocking callers (PyGithub runs in worker threads), on the same rows.

    Args:
        failures: failures in a row that open a breaker (``settings.breaker_failures``).
        cooldown_s: seconds open before a trial call (``settings.breaker_cooldown_s``).
        database_url: the shared database's (async) URL, reached here through its blocking driver (``sqlite``,
            ``postgresql+psycopg``); None keeps the state in this process only.
    """

    def __init__(self, *, failures: int, cooldown_s: float, database_url: str | None = None) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.labels: dict[str, str] = {}
        uow: SyncAbstractUnitOfWork = SyncInMemoryUnitOfWork()
        if database_url is not None:
            uow = _SyncDbUnitOfWork(_blocking_engine(database_url), self.labels, self.threshold, self.cooldown_s)
        self._factory = SyncCircuitBreakerFactory(
            default_threshold=self.threshold, default_ttl=self.cooldown_s, uow=uow
        )

    @contextmanager
    def guard(
        self,
        name: str,
        label: str,
        *,
        counts: Callable[[BaseException], bool],
        refuse: Callable[[ServiceUnavailable], BaseException] = lambda e: e,
    ) -> Iterator[None]:
        """Blocking :meth:`Breakers.guard`: same arguments, same errors."""
        self.labels[name] = label
        brk = self._factory.get_breaker(name, self.threshold, self.cooldown_s, [(BaseException, _not(counts))])
        try:
            brk.__enter__()
        except OpenedState as exc:
            state = _refused_state(name, label, brk.context, self.threshold, self.cooldown_s)
            raise refuse(ServiceUnavailable(state)) from exc
        try:
            yield
        except Exception as exc:
            brk.__exit__(type(exc), exc, exc.__traceback__)
            raise
        brk.__exit__(None, None, None)


def _blocking_engine(url: str) -> Engine:
    """A blocking engine on the database of the async ``url`` (one connection per use, nothing pooled)."""
    sync_url = url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")
    args = {"timeout": 30} if sync_url.startswith("sqlite") else {}
    return create_engine(sync_url, poolclass=NullPool, connect_args=args)


def _refused_state(name: str, label: str, ctx: Context, threshold: int, cooldown_s: float) -> BreakerState:
    """The state an open breaker refuses with (in memory, purgatory keeps no count once open: it was the threshold)."""
    return _shown(name, label, ctx.state, ctx.failure_count or threshold, ctx.opened_at, cooldown_s)


def _not(counts: Callable[[BaseException], bool]) -> Callable[[BaseException], bool]:
    return lambda exc: not counts(exc)


async def breaker_states(db: Database, settings: Settings) -> list[BreakerState]:
    """Every breaker stored in ``db``, by name: what ``orchestrator status`` and ``GET /status`` show.

    Args:
        db: the shared database.
        settings: ``breaker_cooldown_s`` gives the next try of an open breaker.

    Returns:
        One :class:`BreakerState` per breaker that has guarded a call; an open one past its cool-down shows as
        ``half-open``.
    """
    async with db.session() as s:
        rows = (await s.exec(select(SyncCursor).where(col(SyncCursor.key).startswith(KEY_PREFIX)))).all()
    states = []
    for row in sorted(rows, key=lambda r: r.key):
        data = row.cached if isinstance(row.cached, dict) else {}
        name = row.key.removeprefix(KEY_PREFIX)
        state = str(data.get("state", "closed"))
        states.append(
            _shown(
                name,
                str(data.get("label", name)),
                state,
                row.consecutive_failures,
                data.get("opened_at"),
                settings.breaker_cooldown_s,
            )
        )
    return states


def _shown(name: str, label: str, state: str, failures: int, opened: float | None, cooldown_s: float) -> BreakerState:
    """A stored state in the shown words: purgatory's ``opened``/``half-opened`` become ``open``/``half-open``."""
    if state not in ("opened", "half-opened") or opened is None:
        return BreakerState(name, label, "closed", failures, None, None)
    opened_at = datetime.fromtimestamp(opened, UTC)
    next_try = opened_at + timedelta(seconds=cooldown_s)
    shown = "half-open" if state == "half-opened" or next_try <= datetime.now(UTC) else "open"
    return BreakerState(name, label, shown, failures, opened_at, next_try)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat(timespec="seconds").replace("+00:00", "Z") if at else None


def _clock(at: datetime | None) -> str:
    return at.strftime("%H:%M:%SZ") if at else "?"
