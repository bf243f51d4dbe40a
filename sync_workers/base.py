"""What every sync worker shares: its context and the summary of one pass."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.breakers import Breakers
from core.db import Database
from core.settings import Settings


@dataclass(frozen=True)
class SyncContext:
    """Process-wide things a worker pass needs (no graph state: the sync is not a graph).

    ``breakers`` are the circuit breakers every outside call of a pass goes through (GitHub, each SSH host), stored
    in ``db`` so the CLI, the API and the sync see one state (:mod:`core.breakers`); built from ``settings`` and
    ``db`` when not given.
    """

    settings: Settings
    db: Database
    breakers: Breakers = field(default=None)  # type: ignore[assignment]  # filled in by __post_init__

    def __post_init__(self) -> None:
        if self.breakers is None:
            object.__setattr__(self, "breakers", Breakers(self.settings, self.db))


@dataclass
class PassSummary:
    """Counts of one pass of one worker; ``errors`` non-empty means the pass failed (``--once`` exits non-zero).

    A transient failure (GitHub unreachable, one server not answering) is counted, not an error: the pass did its
    job of recording it.
    """

    worker: str
    created: int = 0
    updated: int = 0
    missing: int = 0
    transient_failures: int = 0
    requests: int = 0
    not_modified: int = 0
    """Requests answered 304 (free of primary rate limit)."""
    resumed: int = 0
    """Graph threads resumed (provisioner_trigger)."""
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No worker error in this pass."""
        return not self.errors

    def line(self) -> str:
        """A one-line summary for the log: every count (``resumed`` only when there were some), time and status."""
        counts = [
            ("created", self.created),
            ("updated", self.updated),
            ("missing", self.missing),
            ("transient", self.transient_failures),
            ("requests", self.requests),
            ("304", self.not_modified),
        ]
        if self.resumed:
            counts.append(("resumed", self.resumed))
        status = "ok" if self.ok else f"FAILED: {'; '.join(self.errors)}"
        parts = " ".join(f"{k}={v}" for k, v in counts)
        return f"{self.worker}: {parts} in {self.duration_s:.2f}s — {status}"
