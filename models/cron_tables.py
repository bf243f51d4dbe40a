"""The ``cron_job`` table: a message posted to a project's own thread on a schedule.

The table is the crons' persistent job store: the CLI and the API write it, the sync service reads it and claims each
fire in it (see :mod:`services.crons`).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from models.tables import utcnow


class CronJob(SQLModel, table=True):
    """One user cron: ``schedule`` (a crontab expression, 5 fields, or 6 with seconds first) posts ``message``.

    ``fire_seq`` counts claimed fires; a fire is claimed by an UPDATE that expects the value it read, so two
    schedulers that see the same due row fire it once. ``next_fire_at`` is None while paused.
    """

    __tablename__ = "cron_job"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=40)
    project_id: int = Field(index=True)
    schedule: str = Field(max_length=128)
    message: str = Field(max_length=4000)
    enabled: bool = True
    next_fire_at: datetime | None = Field(default=None, index=True)
    """UTC; the next time the cron is due (None while paused)."""
    fire_seq: int = 0
    last_fired_at: datetime | None = None
    last_outcome: str | None = Field(default=None, max_length=500)
    """``posted``, or ``skipped: <why>`` / ``failed: <error>`` for the last fire."""
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
