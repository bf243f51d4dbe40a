"""The engineering contract on real parts: each gate failing and passing, each phase's refusals, the test lock and a
way around it, the signature, and the deploy refusing what was not verified.

The phase node runs for real (a real SQLite file, real git repositories of the local forge, tests in the bubblewrap
sandbox); only the model's answers are scripted, as tool calls, so each case says exactly what a model did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlmodel import select

from core.db import Database
from core.llm import LLMReply
from core.settings import Settings
from infra.git import run_git
from models.enums import ProjectStatus
from models.tables import Event, Project, ToolCall
from nodes.engineering import run_phase
from services.budgets import BudgetLimits, open_budget
from services.verification import VerificationRefused, decode
from tests.integration.helpers import contract_variant
from tests.unit.test_nodes import ScriptedLLM, runtime, with_repo

pytestmark = pytest.mark.slow


PLAN = {
    "summary": "a greeting module",
    "acceptance_criteria": [
        {"id": "AC1", "text": "greet('Ada') returns 'Hello, Ada!'"},
        {"id": "AC2", "text": "greet('') returns 'Hello, world!'"},
    ],
    "files": [{"path": "greet.py", "purpose": "greet()"}, {"path": "tests/test_greet.py", "purpose": "its tests"}],
    "entrypoint": "greet.py",
    "health_path": "/health",
}
TESTS = """from greet import greet


def test_names_someone():
    assert greet("Ada") == "Hello, Ada!"


def test_defaults_to_world():
    assert greet("") == "Hello, world!"
"""
COVERS = {
    "AC1": ["tests/test_greet.py::test_names_someone"],
    "AC2": ["tests/test_greet.py::test_defaults_to_world"],
}
GOOD = "def greet(name):\n    return f\"Hello, {name or 'world'}!\"\n"
HALF = 'def greet(name):\n    return f"Hello, {name}!"\n'


def answer(*calls: tuple[str, dict[str, Any]]) -> LLMReply:
    """One model answer making ``calls`` in order."""
    return LLMReply(content="", tool_calls=[{"id": f"c{i}", "name": n, "args": a} for i, (n, a) in enumerate(calls)])


def write(path: str, content: str) -> tuple[str, dict[str, Any]]:
    return ("write_file", {"path": path, "content": content})


def finish(artifact: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("finish", artifact)


async def project_at(settings: Settings, db: Database) -> tuple[Project, dict[str, Any]]:
    """A project with a repository and a budget, in ``initialized``; its Engineering input."""
    project = await with_repo(settings, db, ProjectStatus.initialized)
    assert project.id is not None
    async with db.session() as s:
        await open_budget(s, project.id, BudgetLimits.from_settings(settings))
    return project, {"project_id": project.id, "project_name": project.name, "spec": {"summary": "greet people"}}


async def step(settings: Settings, db: Database, state: dict[str, Any], **scripts: list[LLMReply]) -> dict[str, Any]:
    """Run one round of the state's phase with scripted answers; return the state after it (input + update)."""
    llm = ScriptedLLM(**scripts)
    out = await run_phase(state, runtime(settings, db, llm))  # type: ignore[arg-type]
    step.asked = llm.asked  # type: ignore[attr-defined]
    return {**state, **out}


async def audit(db: Database, phase: str) -> list[tuple[str, str, str | None]]:
    async with db.session() as s:
        rows = (await s.exec(select(ToolCall).where(ToolCall.phase == phase).order_by(ToolCall.id))).all()  # type: ignore[arg-type]
    return [(r.tool, r.outcome, r.reason) for r in rows]


async def through_tdd(settings: Settings, db: Database) -> dict[str, Any]:
    """PLAN and TDD passed, the tests locked."""
    _, state = await project_at(settings, db)
    state = await step(settings, db, state, architect=[answer(finish(PLAN))])
    state = await step(
        settings,
        db,
        state,
        tester=[answer(write("tests/test_greet.py", TESTS), finish({"covers": COVERS, "message": "tests"}))],
    )
    assert state["phase"] == "IMPL", state["gate_feedback"]
    return state


# --- PLAN ----------------------------------------------------------------------------------------------------------


async def test_plan_gate_refuses_a_test_command_that_is_not_pytest_then_passes(
    settings: Settings, db: Database
) -> None:
    _, state = await project_at(settings, db)
    bad = {**PLAN, "test_command": "python run_my_checks.py"}
    state = await step(settings, db, state, architect=[answer(finish(bad))])
    assert state["phase"] == "PLAN" and "must run pytest" in state["gate_feedback"]["why"]
    assert state["timeline"][-1]["outcome"] == "failed"
    state = await step(settings, db, state, architect=[answer(finish(PLAN))])
    assert "must run pytest" in step.asked[0][1][-1]["content"]  # type: ignore[attr-defined]  # the round reads why
    assert state["phase"] == "TDD" and state["design"]["acceptance_criteria"][1]["id"] == "AC2"


async def test_plan_refuses_writing_files(settings: Settings, db: Database) -> None:
    _, state = await project_at(settings, db)
    state = await step(
        settings, db, state, architect=[answer(write("greet.py", GOOD), finish(PLAN)), answer(finish(PLAN))]
    )
    assert state["phase"] == "TDD"
    [(tool, outcome, reason), *_] = await audit(db, "PLAN")
    assert (tool, outcome) == ("write_file", "refused") and "list_files" in (reason or "")


# --- TDD -----------------------------------------------------------------------------------------------------------


async def test_tdd_refuses_code_outside_the_test_folder_and_the_model_reads_why(
    settings: Settings, db: Database
) -> None:
    _, state = await project_at(settings, db)
    state = await step(settings, db, state, architect=[answer(finish(PLAN))])
    tdd = {"covers": COVERS, "message": "tests"}
    state = await step(
        settings,
        db,
        state,
        tester=[
            answer(write("greet.py", GOOD), write("tests/test_greet.py", TESTS), finish(tdd)),
            answer(finish(tdd)),
        ],
    )
    second = step.asked[1][1]  # type: ignore[attr-defined]
    assert [m["role"] for m in second[-3:]] == ["tool", "tool", "tool"]
    assert second[-3]["content"].startswith("refused: ") and "tests/**" in second[-3]["content"]
    assert "a call of this answer was refused" in second[-1]["content"]
    assert state["phase"] == "IMPL"
    assert [(t, o) for t, o, _ in await audit(db, "TDD")] == [
        ("write_file", "refused"),
        ("write_file", "allowed"),
        ("finish", "refused"),
        ("finish", "allowed"),
    ]
    root = settings.data_dir.resolve() / "workspaces" / "hello-api"
    assert not (root / "greet.py").exists()


async def test_tdd_gate_refuses_tests_that_already_pass(settings: Settings, db: Database) -> None:
    _, state = await project_at(settings, db)
    state = await step(settings, db, state, architect=[answer(finish(PLAN))])
    vacuous = "def test_names_someone():\n    assert True\n\n\ndef test_defaults_to_world():\n    assert True\n"
    state = await step(
        settings,
        db,
        state,
        tester=[answer(write("tests/test_greet.py", vacuous), finish({"covers": COVERS, "message": "t"}))],
    )
    assert state["phase"] == "TDD" and "PASS before the implementation exists" in state["gate_feedback"]["why"]


async def test_tdd_gate_refuses_an_uncovered_criterion_and_a_test_that_does_not_exist(
    settings: Settings, db: Database
) -> None:
    _, state = await project_at(settings, db)
    state = await step(settings, db, state, architect=[answer(finish(PLAN))])
    covers = {"AC1": ["tests/test_greet.py::test_names_someone", "tests/test_greet.py::test_imaginary"]}
    state = await step(
        settings,
        db,
        state,
        tester=[answer(write("tests/test_greet.py", TESTS), finish({"covers": covers, "message": "t"}))],
    )
    why = state["gate_feedback"]["why"]
    assert state["phase"] == "TDD" and "AC2 is covered by no test" in why and "test_imaginary" in why


# --- IMPL ----------------------------------------------------------------------------------------------------------


async def test_impl_refuses_a_locked_test_and_the_test_configuration(settings: Settings, db: Database) -> None:
    state = await through_tdd(settings, db)
    easier = TESTS.replace("Hello, world!", "Hello, !")
    state = await step(
        settings,
        db,
        state,
        developer=[
            answer(
                write("tests/test_greet.py", easier),
                write("conftest.py", "collect_ignore = ['tests']\n"),
                finish({"message": "x"}),
            ),
            answer(write("greet.py", GOOD), finish({"message": "greet"})),
        ],
    )
    refusals = [(t, r) for t, o, r in await audit(db, "IMPL") if o == "refused"]
    assert [t for t, _ in refusals] == ["write_file", "write_file", "finish"]
    assert "tests/test_greet.py" in (refusals[0][1] or "") and "locked" in (refusals[0][1] or "")
    assert "conftest.py" in (refusals[1][1] or "")
    assert state["phase"] == "REVIEW" and state["tests"]["passed"] == 2
    root = settings.data_dir.resolve() / "workspaces" / "hello-api"
    assert (root / "tests" / "test_greet.py").read_text() == TESTS and not (root / "conftest.py").exists()


async def test_a_way_around_the_tool_rules_is_caught_by_the_lock(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    """A contract whose IMPL rule forgets the deny list lets the edit through; the gate's hash check still fails it."""
    import yaml

    loose = contract_variant(tmp_path / "c")
    raw = yaml.safe_load(loose.read_text())
    raw["phases"]["IMPL"]["tools"]["write_file"] = {"paths": ["**"]}
    loose.write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = settings.model_copy(update={"contract_path": loose})
    state = await through_tdd(settings, db)
    easier = TESTS.replace("Hello, world!", "Hello, !")
    state = await step(
        settings,
        db,
        state,
        developer=[answer(write("greet.py", HALF), write("tests/test_greet.py", easier), finish({"message": "x"}))],
    )
    assert state["phase"] == "IMPL"
    assert "locked tests changed: tests/test_greet.py (edited)" in state["gate_feedback"]["why"]


async def test_impl_gate_fails_red_then_passes_green(settings: Settings, db: Database) -> None:
    state = await through_tdd(settings, db)
    state = await step(settings, db, state, developer=[answer(write("greet.py", HALF), finish({"message": "half"}))])
    assert state["phase"] == "IMPL" and "test_defaults_to_world" in state["gate_feedback"]["why"]
    state = await step(settings, db, state, developer=[answer(write("greet.py", GOOD), finish({"message": "all"}))])
    assert "The tests_green gate refused your last round" in step.asked[0][1][-1]["content"]  # type: ignore[attr-defined]
    assert state["phase"] == "REVIEW" and (state["tests"]["passed"], state["tests"]["failed"]) == (2, 0)


async def test_impl_gate_refuses_skipped_covering_tests(settings: Settings, db: Database) -> None:
    state = await through_tdd(settings, db)
    skipping = "import pytest\n\npytest.skip('not today', allow_module_level=True)\n\n" + GOOD
    state = await step(settings, db, state, developer=[answer(write("greet.py", skipping), finish({"message": "x"}))])
    assert state["phase"] == "IMPL"
    assert "did not pass" in state["gate_feedback"]["why"] or "tests fail" in state["gate_feedback"]["why"]


# --- REVIEW and COMPLETE -------------------------------------------------------------------------------------------


async def green(settings: Settings, db: Database) -> dict[str, Any]:
    state = await through_tdd(settings, db)
    return await step(settings, db, state, developer=[answer(write("greet.py", GOOD), finish({"message": "greet"}))])


async def test_a_blocking_review_goes_back_to_impl_with_its_issues(settings: Settings, db: Database) -> None:
    state = await green(settings, db)
    issue = {"file": "greet.py", "problem": "greet() has no docstring saying what it returns"}
    state = await step(
        settings,
        db,
        state,
        architect=[answer(finish({"verdict": "changes_requested", "blocking_issues": [issue]}))],
    )
    assert "+def greet(name):" in step.asked[0][1][-1]["content"]  # type: ignore[attr-defined]  # it read the diff
    assert state["phase"] == "IMPL" and "no docstring" in state["gate_feedback"]["why"]
    async with db.session() as s:
        project = await s.get(Project, state["project_id"])
    assert project is not None and project.status == ProjectStatus.implementing
    state = await step(
        settings,
        db,
        state,
        developer=[answer(write("greet.py", '"""Greetings."""\n' + GOOD), finish({"message": "doc"}))],
    )
    assert "The review found blocking issues" in step.asked[0][1][-1]["content"]  # type: ignore[attr-defined]
    assert state["phase"] == "REVIEW"


async def test_complete_signs_the_commit_tree_and_locked_tests(settings: Settings, db: Database) -> None:
    state = await green(settings, db)
    state = await step(settings, db, state, architect=[answer(finish({"verdict": "approve", "blocking_issues": []}))])
    assert state["phase"] == "COMPLETE"
    state = await step(settings, db, state)
    assert state["engineering_status"] == "verified" and state["phase"] is None
    claims = decode(settings, state["verification"])
    bare = str(settings.data_dir / "forge" / "hello-api.git")
    assert claims.commit == run_git("--git-dir", bare, "rev-parse", "main") == state["commit"]
    assert claims.tree == run_git("--git-dir", bare, "rev-parse", "main^{tree}")
    assert claims.tests_hash == state["locked_tests"]["hash"] and claims.tests["passed"] == 2
    assert claims.contract_version == "1" and claims.mode == "strict" and claims.warnings == ()
    async with db.session() as s:
        project = await s.get(Project, state["project_id"])
    assert project is not None and project.status == ProjectStatus.verified


async def test_complete_refuses_to_sign_when_the_branch_moved(settings: Settings, db: Database) -> None:
    state = await green(settings, db)
    state = await step(settings, db, state, architect=[answer(finish({"verdict": "approve", "blocking_issues": []}))])
    other = settings.data_dir / "elsewhere"
    run_git("clone", "--quiet", str(settings.data_dir / "forge" / "hello-api.git"), str(other))
    (other / "greet.py").write_text("def greet(name):\n    return 'pwned'\n")
    run_git("commit", "--quiet", "-am", "pushed after the tests passed", cwd=other)
    run_git("push", "--quiet", "origin", "HEAD:main", cwd=other)
    state = await step(settings, db, state)
    assert "verification" not in state and state["phase"] == "IMPL"
    assert "the branch moved since the tests passed" in state["gate_feedback"]["why"]


async def test_permissive_mode_lets_a_refused_call_through_and_the_signature_says_so(
    settings: Settings, db: Database
) -> None:
    settings = settings.model_copy(update={"contract_mode": "permissive"})
    _, state = await project_at(settings, db)
    state = await step(settings, db, state, architect=[answer(write("notes.md", "thinking"), finish(PLAN))])
    assert state["phase"] == "TDD" and any("PLAN" in w and "write_file" in w for w in state["warnings"])
    assert [(t, o) for t, o, _ in await audit(db, "PLAN")] == [("write_file", "warned"), ("finish", "allowed")]


# --- The budget ----------------------------------------------------------------------------------------------------


async def test_a_spent_budget_stops_the_phase_before_any_model_call(settings: Settings, db: Database) -> None:
    project, state = await project_at(settings, db)
    assert project.id is not None
    async with db.session() as s:
        from services.budgets import charge

        await charge(s, project.id, calls=settings.budget_calls)
    llm = ScriptedLLM()
    out = await run_phase(state, runtime(settings, db, llm))  # type: ignore[arg-type]
    assert out["budget_exhausted"]["exhausted"] == ["calls"] and llm.asked == []
    async with db.session() as s:
        events = (await s.exec(select(Event).where(Event.subject_id == project.id))).all()
    assert not any(e.to_status == "designing" for e in events)  # nothing moved


async def test_verify_refuses_another_commit(settings: Settings, db: Database) -> None:
    """The check the deploy runs, on the signed state above and a commit pushed after it."""
    from services.deploys import check_verification

    state = await green(settings, db)
    state = await step(settings, db, state, architect=[answer(finish({"verdict": "approve", "blocking_issues": []}))])
    state = await step(settings, db, state)
    async with db.session() as s:
        project = await s.get(Project, state["project_id"])
    assert project is not None
    attested = await check_verification(settings, project, state["commit"], state["verification"])
    assert attested.commit == state["commit"]
    root = settings.data_dir.resolve() / "workspaces" / "hello-api"
    (root / "greet.py").write_text("def greet(name):\n    return 'later'\n")
    run_git("commit", "--quiet", "-am", "after verification", cwd=root)
    run_git("push", "--quiet", "origin", "HEAD:main", cwd=root)
    later = run_git("rev-parse", "HEAD", cwd=root)
    with pytest.raises(VerificationRefused, match="a commit pushed after verification is not verified"):
        await check_verification(settings, project, later, state["verification"])
    forged = settings.model_copy(update={"signing_key": SecretStr("x" * 40)})
    with pytest.raises(VerificationRefused, match="forged"):
        await check_verification(forged, project, state["commit"], state["verification"])


async def test_review_refuses_writing_and_running_and_an_unknown_tool(settings: Settings, db: Database) -> None:
    state = await green(settings, db)
    approve = {"verdict": "approve", "blocking_issues": []}
    state = await step(
        settings,
        db,
        state,
        architect=[
            answer(write("greet.py", "# reviewed\n" + GOOD), ("run_tests", {}), ("deploy_now", {}), finish(approve)),
            answer(("read_file", {"path": "greet.py"}), finish(approve)),
        ],
    )
    assert state["phase"] == "COMPLETE"
    assert [(t, o) for t, o, _ in await audit(db, "REVIEW")] == [
        ("write_file", "refused"),
        ("run_tests", "refused"),
        ("deploy_now", "refused"),
        ("finish", "refused"),
        ("read_file", "allowed"),
        ("finish", "allowed"),
    ]
    root = settings.data_dir.resolve() / "workspaces" / "hello-api"
    assert (root / "greet.py").read_text() == GOOD


async def test_permissive_mode_waives_a_failed_gate_and_the_signature_lists_it(
    settings: Settings, db: Database
) -> None:
    settings = settings.model_copy(update={"contract_mode": "permissive"})
    state = await through_tdd(settings, db)
    state = await step(settings, db, state, developer=[answer(write("greet.py", HALF), finish({"message": "half"}))])
    assert state["phase"] == "REVIEW" and state["timeline"][-1]["outcome"] == "waived"
    state = await step(settings, db, state, architect=[answer(finish({"verdict": "approve", "blocking_issues": []}))])
    state = await step(settings, db, state)
    claims = decode(settings, state["verification"])
    assert claims.mode == "permissive" and any("tests_green failed and was waived" in w for w in claims.warnings)
    assert "1 permissive-mode warning" in claims.describe()
