"""The per-run ``Context`` (LangGraph ``context_schema``): everything a node needs, none of it checkpointed."""

from __future__ import annotations

from dataclasses import dataclass

from core.db import Database
from core.llm import LLM
from core.settings import Settings
from infra.forge.base import Forge


@dataclass(frozen=True)
class Context:
    """Passed on every ``astream``/``ainvoke`` (and again on resume); read in nodes via ``Runtime[Context]``."""

    settings: Settings
    db: Database
    llm: LLM
    forge: Forge
    thread_id: str
    actor: str
    """Who the run acts for, as the trail names it (``token:<name>``, ``cli:<user>``, ``system:<worker>``)."""
    run_id: str | None = None
    """The run (``models.time_tables.Run``, ``r-`` and 12 hex digits) the model calls of this run are charged to."""
