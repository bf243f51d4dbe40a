"""``update_project_intent``'s first step: which projects an update may start from, and re-runs of it."""

from __future__ import annotations

import pytest

from core.db import Database
from models.enums import ProjectStatus
from models.transitions import transition_project
from nodes.po_tools import CreateProjectIntent, UpdateProjectIntent, create_project, start_update
from services.budgets import BudgetLimits


async def test_an_update_starts_only_from_a_live_verified_or_discovered_project(db: Database) -> None:
    with pytest.raises(ValueError, match="no project named 'ghost'"):
        await start_update(db, UpdateProjectIntent(name="ghost", change="add a thing"), "t-1", actor="cli:test")
    project = await create_project(
        db,
        CreateProjectIntent(name="busy-api", summary="s"),
        "t-1",
        actor="cli:test",
        budget=BudgetLimits(1000, 1.0, 10, 60.0),
    )
    assert project.id is not None
    with pytest.raises(ValueError, match="busy-api is draft"):
        await start_update(db, UpdateProjectIntent(name="busy-api", change="add a thing"), "t-1", actor="cli:test")
    for to in ("estimated", "provisioning", "initialized", "designing", "designed", "implementing", "implemented"):
        async with db.session() as s:
            await transition_project(s, project.id, ProjectStatus(to), reason="test", thread_id="t-1")
    for to in ("verifying", "verified", "deploying", "active"):
        async with db.session() as s:
            await transition_project(s, project.id, ProjectStatus(to), reason="test", thread_id="t-1")
    updated = await start_update(
        db, UpdateProjectIntent(name="busy-api", change="add a thing"), "t-2", actor="cli:test"
    )
    assert updated.status == ProjectStatus.maintenance
    again = await start_update(db, UpdateProjectIntent(name="busy-api", change="add a thing"), "t-2", actor="cli:test")
    assert again.status == ProjectStatus.maintenance  # a re-run of the tool step moves nothing twice
