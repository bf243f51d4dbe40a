"""Cron routes (operator): messages posted to a project's own thread on a schedule, fired by the sync service.

``GET /crons`` lists them with their next fire time; ``POST /crons`` adds one; ``POST /crons/{name}/pause`` and
``/resume``; ``DELETE /crons/{name}``. Schedules: see :mod:`services.crons` (UTC; 5 crontab fields, or 6 with
seconds first). 404: unknown cron or project; 409: a cron of that name exists; 422: a bad schedule or message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, Field

from api.auth import Operator
from api.deps import RuntimeDep
from api.routes import CHANGE, EDGE, errors
from models.names import SLUG_RE
from services.crons import (
    CronError,
    CronNameTaken,
    CronView,
    UnknownCron,
    UnknownCronProject,
    add_cron,
    delete_cron,
    list_crons,
    set_enabled,
)

router = APIRouter(responses=EDGE, tags=["crons"])
SLUG = SLUG_RE.pattern
"""Cron names are slugs (models/names.py): stated in the schema, so a name it allows is never refused for its form."""
PROJECT = r"^[A-Za-z0-9_.-]+$"
"""Project names as GitHub allows them (a discovered repository's name need not be a slug)."""
CronName = Annotated[str, Path(max_length=40, pattern=SLUG, description="a cron's name")]


class CronIn(BaseModel):
    """A new cron."""

    schedule: str = Field(max_length=128, description="crontab in UTC: 5 fields, or 6 with seconds first")
    project: str = Field(max_length=64, pattern=PROJECT, description="the project whose thread gets the message")
    message: str = Field(
        min_length=1, max_length=4000, pattern=r"\S", description="what is posted, as if a person wrote it (not blank)"
    )
    name: str | None = Field(default=None, max_length=40, pattern=SLUG, description="a slug (default cron-<8 hex>)")


class CronPublic(BaseModel):
    """A cron; times in UTC, ``next_fire_at`` null while paused."""

    name: str
    project: str | None
    schedule: str
    message: str
    enabled: bool
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    last_outcome: str | None
    fires: int
    created_by: str

    @classmethod
    def of(cls, view: CronView) -> CronPublic:
        """The API shape of a service view."""
        return cls(**view.__dict__)


def _refusal(exc: Exception) -> HTTPException:
    if isinstance(exc, UnknownCron | UnknownCronProject):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, CronNameTaken):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


@router.get("/crons", responses=errors(401, 403))
async def get_crons(
    rt: RuntimeDep, who: Operator, project: Annotated[str | None, Query(max_length=64, pattern=PROJECT)] = None
) -> list[CronPublic]:
    """Every cron (only ``project``'s if given), by name, with its next fire time (operator)."""
    async with rt.db.session() as s:
        return [CronPublic.of(v) for v in await list_crons(s, project=project)]


@router.post("/crons", status_code=status.HTTP_201_CREATED, responses={**CHANGE, **errors(404, 409)})
async def post_cron(body: CronIn, rt: RuntimeDep, who: Operator) -> CronPublic:
    """Add a cron (operator); on the trail as ``cron_added`` by the caller."""
    try:
        async with rt.db.session() as s:
            view = await add_cron(
                s, project=body.project, schedule=body.schedule, message=body.message, name=body.name, actor=who.name
            )
    except CronError as exc:
        raise _refusal(exc) from exc
    return CronPublic.of(view)


async def _toggle(rt: RuntimeDep, who: Operator, name: str, enabled: bool) -> CronPublic:
    try:
        async with rt.db.session() as s:
            return CronPublic.of(await set_enabled(s, name=name, enabled=enabled, actor=who.name))
    except UnknownCron as exc:
        raise _refusal(exc) from exc


@router.post("/crons/{name}/pause", responses={**CHANGE, **errors(404)})
async def pause_cron(name: CronName, rt: RuntimeDep, who: Operator) -> CronPublic:
    """Stop a cron from firing until resumed (operator); ``cron_paused``."""
    return await _toggle(rt, who, name, False)


@router.post("/crons/{name}/resume", responses={**CHANGE, **errors(404)})
async def resume_cron(name: CronName, rt: RuntimeDep, who: Operator) -> CronPublic:
    """Fire a paused cron again from its next time after now (operator); ``cron_resumed``."""
    return await _toggle(rt, who, name, True)


@router.delete("/crons/{name}", status_code=status.HTTP_204_NO_CONTENT, responses={**CHANGE, **errors(404)})
async def remove_cron(name: CronName, rt: RuntimeDep, who: Operator) -> Response:
    """Delete a cron (operator); ``cron_deleted`` (its fires stay on the trail)."""
    try:
        async with rt.db.session() as s:
            await delete_cron(s, name=name, actor=who.name)
    except UnknownCron as exc:
        raise _refusal(exc) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)
