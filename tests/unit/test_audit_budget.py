"""The tool audit log (redaction, record, read back) and the project budget (charges, limits, extensions)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from core.db import Database
from core.settings import Settings
from models.enums import ProjectStatus
from models.tables import Budget, Event, Project
from services import audit, budgets
from services.budgets import BudgetLimits, BudgetView

SECRET_FILE = "API_TOKEN = 'sk-live-0123456789abcdef'\n" + "x = 1\n" * 200


async def make_project(db: Database, name: str = "hello-api") -> int:
    async with db.session() as s:
        project = Project(name=name, status=ProjectStatus.implementing)
        s.add(project)
        await s.flush()
        assert project.id is not None
        return project.id


def test_redact_args_keeps_no_byte_of_a_written_file() -> None:
    args = {"path": "app.py", "content": SECRET_FILE}
    redacted = audit.redact_args("write_file", args)
    digest = hashlib.sha256(SECRET_FILE.encode()).hexdigest()[:8]
    assert redacted == {"path": "app.py", "content": f"<{len(SECRET_FILE.encode())} bytes, sha256 {digest}…>"}
    text = json.dumps(redacted)
    assert "sk-live" not in text and "x = 1" not in text
    assert args["content"] == SECRET_FILE, "the caller's arguments are not changed"
    assert audit.redact_args("write_file", {"path": "a", "content": "é"})["content"].startswith("<2 bytes, sha256 ")


def test_redact_args_cuts_long_strings_and_keeps_the_finish_artifact() -> None:
    long = "y" * 2000
    redacted = audit.redact_args("run_tests", {"command": long, "n": 3, "flag": True, "none": None})
    assert redacted["command"].startswith("y" * 500) and "cut: 2000 chars" in redacted["command"]
    assert len(redacted["command"]) < 600 and redacted["n"] == 3 and redacted["flag"] is True
    artifact = {"summary": "done", "files": ["app.py", "test_app.py"], "notes": {"detail": long}, "n": 1.5}
    kept = audit.redact_args("finish", {"artifact": artifact})["artifact"]
    assert kept["summary"] == "done" and kept["files"] == ["app.py", "test_app.py"] and kept["n"] == 1.5
    assert kept["notes"]["detail"].endswith("<cut: 2000 chars>")
    odd = audit.redact_args("x", {"when": datetime(2026, 1, 1, tzinfo=UTC), "raw": b"\x00secret", "t": (1, "a")})
    json.dumps(odd)  # JSON-safe
    assert "secret" not in odd["raw"] and odd["t"] == [1, "a"]


async def test_tool_calls_are_recorded_redacted_and_read_oldest_first(db: Database) -> None:
    pid = await make_project(db)
    other = await make_project(db, "other-api")
    calls = [
        ("PLAN", "architect", "read_file", {"path": "README.md"}, "allowed", None),
        ("TDD", "tester", "write_file", {"path": "test_app.py", "content": SECRET_FILE}, "allowed", None),
        ("IMPL", "developer", "write_file", {"path": "test_app.py", "content": "pass"}, "refused", "tests locked"),
        ("IMPL", "developer", "write_file", {"path": "app.py", "content": SECRET_FILE}, "allowed", None),
    ]
    for phase, role, tool, args, outcome, reason in calls:
        await audit.record_tool_call(
            db,
            thread_id="t-1",
            project_id=pid,
            role=role,
            phase=phase,
            tool=tool,
            args=args,
            outcome=outcome,
            reason=reason,
            duration_ms=1.5,
        )
    await audit.record_tool_call(
        db,
        thread_id=None,
        project_id=other,
        role="developer",
        phase="IMPL",
        tool="read_file",
        args={},
        outcome="allowed",
        reason=None,
        duration_ms=0,
    )
    with pytest.raises(ValueError, match="outcome 'maybe'"):
        await audit.record_tool_call(
            db,
            thread_id=None,
            project_id=pid,
            role="developer",
            phase="IMPL",
            tool="x",
            args={},
            outcome="maybe",
            reason=None,
            duration_ms=0,
        )
    async with db.session() as s:
        trail = await audit.audit_trail(s, pid)
        impl = await audit.audit_trail(s, pid, phase="IMPL")
        last_two = await audit.audit_trail(s, pid, limit=2)
    assert [(c.phase, c.tool, c.outcome) for c in trail] == [(p, t, o) for p, _, t, _, o, _ in calls]
    assert [c.args["path"] for c in impl] == ["test_app.py", "app.py"] and impl[0].reason == "tests locked"
    assert [c.id for c in last_two] == [c.id for c in trail[-2:]], "the latest ones, still oldest first"
    assert "sk-live" not in json.dumps([c.args for c in trail])


async def test_twenty_concurrent_charges_add_up_exactly(db: Database) -> None:
    pid = await make_project(db)
    async with db.session() as s:
        await budgets.open_budget(s, pid, BudgetLimits(tokens=10_000, cost_usd=1.0, calls=100, seconds=60))

    async def one() -> None:
        async with db.session() as s:
            await budgets.charge(s, pid, tokens=123, cost_usd=0.25, calls=1, seconds=0.5)

    await asyncio.gather(*(one() for _ in range(20)))
    async with db.session() as s:
        view = await budgets.budget_of(s, pid)
    assert view is not None
    assert view.spent == BudgetLimits(tokens=2460, cost_usd=5.0, calls=20, seconds=10.0)
    assert view.exhausted == ["cost_usd"] and view.left == BudgetLimits(7540, 0.0, 80, 50.0)


async def test_charge_without_a_budget_does_nothing_and_negative_charges_are_refused(db: Database) -> None:
    pid = await make_project(db)
    async with db.session() as s:
        await budgets.charge(s, pid, tokens=5, calls=1)
        assert await budgets.budget_of(s, pid) is None
        assert (await s.exec(select(Budget))).all() == []
        with pytest.raises(ValueError, match="a charge: tokens"):
            await budgets.charge(s, pid, tokens=-1)


async def test_open_budget_is_idempotent_and_starts_from_the_settings(db: Database, settings: Settings) -> None:
    pid = await make_project(db)
    defaults = BudgetLimits.from_settings(settings)
    assert defaults == BudgetLimits(400_000, 5.0, 80, 3600.0)
    async with db.session() as s:
        await budgets.open_budget(s, pid, defaults)
        await budgets.charge(s, pid, calls=3)
        await budgets.open_budget(s, pid, BudgetLimits(1, 1.0, 1, 1.0))  # already open: nothing changes
    async with db.session() as s:
        view = await budgets.budget_of(s, pid)
    assert view is not None and view.limits == defaults and view.spent.calls == 3


def test_exhausted_left_describe_and_json() -> None:
    view = BudgetView(
        project_id=1,
        limits=BudgetLimits(400_000, 5.0, 80, 3600.0),
        spent=BudgetLimits(1234, 0.0, 80, 3700.4),
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert view.exhausted == ["calls", "seconds"]
    assert view.left == BudgetLimits(398_766, 5.0, 0, 0)
    assert view.describe() == "tokens 1,234/400,000 · cost $0.00/$5.00 · calls 80/80 · 3700s/3600s"
    as_dict = json.loads(json.dumps(view.as_dict()))
    assert as_dict["left"]["calls"] == 0 and as_dict["spent"]["tokens"] == 1234
    assert as_dict["exhausted"] == ["calls", "seconds"] and as_dict["updated_at"].startswith("2026-01-01")
    fresh = BudgetView(1, BudgetLimits(10, 1.0, 5, 60.0), BudgetLimits(), view.updated_at)
    assert fresh.exhausted == [] and fresh.left == fresh.limits


async def test_extend_raises_limits_and_names_the_actor_on_the_trail(db: Database) -> None:
    pid = await make_project(db)
    async with db.session() as s:
        await budgets.open_budget(s, pid, BudgetLimits(1000, 1.0, 2, 60.0))
        await budgets.charge(s, pid, calls=2)
    async with db.session() as s:
        view = await budgets.extend_budget(
            s, pid, BudgetLimits(calls=10, cost_usd=0.5), actor="cli:ann", thread_id="t-9"
        )
    assert view.limits == BudgetLimits(1000, 1.5, 12, 60.0) and view.spent.calls == 2 and view.exhausted == []
    async with db.session() as s:
        events = (await s.exec(select(Event).where(Event.to_status == "budget_extended"))).all()
    assert len(events) == 1
    event = events[0]
    assert (event.subject_type, event.subject_id, event.actor, event.thread_id) == ("project", pid, "cli:ann", "t-9")
    assert "+10 calls" in event.reason and "+$0.50" in event.reason and "cli:ann" in event.reason
    assert "tokens" not in event.reason.split(";")[0], "only what changed is named as added"


async def test_bad_extensions_are_refused_and_change_nothing(db: Database) -> None:
    pid = await make_project(db)
    async with db.session() as s:
        await budgets.open_budget(s, pid, BudgetLimits(1000, 1.0, 2, 60.0))
    bad = [
        (BudgetLimits(), "must add something"),
        (BudgetLimits(calls=-5, tokens=10), "calls must be a finite number >= 0"),
        (BudgetLimits(cost_usd=float("nan")), "cost_usd must be a finite number"),
        (BudgetLimits(seconds=float("inf")), "seconds must be a finite number"),
    ]
    for add, why in bad:
        with pytest.raises(ValueError, match=why):
            async with db.session() as s:
                await budgets.extend_budget(s, pid, add, actor="cli:ann")
    no_budget = await make_project(db, "other-api")
    with pytest.raises(budgets.NoBudget, match="no budget"):
        async with db.session() as s:
            await budgets.extend_budget(s, no_budget, BudgetLimits(calls=1), actor="cli:ann")
    async with db.session() as s:
        view = await budgets.budget_of(s, pid)
        events = (await s.exec(select(Event).where(Event.to_status == "budget_extended"))).all()
    assert view is not None and view.limits == BudgetLimits(1000, 1.0, 2, 60.0) and events == []


async def test_set_budget_replaces_limits_keeps_spending_and_is_on_the_trail(db: Database) -> None:
    pid = await make_project(db)
    async with db.session() as s:
        first = await budgets.set_budget(s, pid, BudgetLimits(100, 1.0, 3, 10.0), actor="token:po")
        await budgets.charge(s, pid, tokens=50)
        second = await budgets.set_budget(s, pid, BudgetLimits(500, 2.0, 9, 20.0), actor="token:po")
    assert first.limits == BudgetLimits(100, 1.0, 3, 10.0)
    assert second.limits == BudgetLimits(500, 2.0, 9, 20.0) and second.spent.tokens == 50
    async with db.session() as s:
        reasons = [e.reason for e in (await s.exec(select(Event).where(Event.to_status == "budget_set"))).all()]
    assert len(reasons) == 2 and "had none" in reasons[0] and "was 100 tokens" in reasons[1]
    with pytest.raises(ValueError, match="tokens must be"):
        async with db.session() as s:
            await budgets.set_budget(s, pid, BudgetLimits(-1, 1.0, 1, 1.0), actor="token:po")
