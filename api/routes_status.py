"""``GET /status`` (viewer): the circuit breakers around GitHub, each SSH host and the model provider.

The same JSON as ``orchestrator status --json``, read from the database every process writes (see
:mod:`core.breakers`).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import Viewer
from api.deps import RuntimeDep
from api.routes import EDGE, READ
from core.breakers import breaker_states

router = APIRouter(responses=EDGE, tags=["status"])


class BreakerPublic(BaseModel):
    """One circuit breaker; times in UTC, null while closed."""

    name: str = Field(description="github, model:<api base>, or ssh:<address>:<port>")
    label: str = Field(description="what it guards, in words")
    state: str = Field(description="closed (calls pass), open (refused at once), half-open (the next call is a trial)")
    failures: int = Field(description="failures in a row (no connection, timeout, 5xx, 429)")
    opened_at: datetime | None = Field(description="when it last opened")
    next_try_at: datetime | None = Field(description="when an open breaker lets one trial call through")


class StatusOut(BaseModel):
    """Every breaker that has guarded a call, by name."""

    breakers: list[BreakerPublic]


@router.get("/status", responses=READ)
async def get_status(rt: RuntimeDep, who: Viewer) -> StatusOut:
    """The circuit breakers: which outside services are being refused at once, since when, and until when."""
    states = await breaker_states(rt.db, rt.settings)
    return StatusOut(breakers=[BreakerPublic.model_validate(s.as_json()) for s in states])
