"""The gates that end each engineering phase, registered by the names the contract uses (``gate: tests_red``).

A gate reads the phase's accepted artifact and the working copy at the phase's commit and says whether the phase is
done; when it is not, ``why`` is what the next round (or a person, at the round limit) reads. The test runs inside
the gates go through the sandbox (:func:`infra.testrun.run_tests`). The lock on the tests is checked by its content
hash, independent of the tool rules, so a way around ``write_file``'s rules is still caught.
"""

from __future__ import annotations

import ast
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.contract import Contract, Phase
from graphs.context import Context
from infra import workspace
from infra.testrun import TestRun, is_pytest, run_tests
from nodes.schemas import Design
from services.budgets import charge


@dataclass
class GateResult:
    """A gate's verdict.

    Attributes:
        passed: the phase may hand over to its ``next``.
        why: what failed, in words the next round's model (or a person) can act on; a short summary when passed.
        update: state keys the phase hands on (the plan, the lock, the test summary, the review).
        waivable: whether permissive mode may go on despite a failure (never for a missing plan or signature).
    """

    passed: bool
    why: str
    update: dict[str, Any] = field(default_factory=dict)
    waivable: bool = True


@dataclass(frozen=True)
class GateInput:
    """What a gate reads: the run's context, the contract and phase, the state, the artifact and the working copy."""

    ctx: Context
    contract: Contract
    phase: Phase
    state: dict[str, Any]
    artifact: dict[str, Any]
    root: Path
    commit: str | None
    project_id: int


Gate = Callable[[GateInput], Awaitable[GateResult]]


async def plan_valid(g: GateInput) -> GateResult:
    """PLAN: the artifact is a valid plan with at least one acceptance criterion.

    Valid: the contract's schema (checked at ``finish``), then the plan's own rules: requirement lines, a pytest
    test command, secret names, distinct criterion ids.
    """
    try:
        design = Design.model_validate(g.artifact)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:8])
        return GateResult(False, f"the plan is not valid: {problems}", waivable=False)
    if design.test_command and not is_pytest(design.test_command.split()):
        why = f"test_command {design.test_command!r} must run pytest (the gates read each test's outcome)"
        return GateResult(False, why, waivable=False)
    ids = [c.id for c in design.acceptance_criteria]
    if len(set(ids)) != len(ids):
        return GateResult(False, f"acceptance criteria ids repeat: {ids}", waivable=False)
    summary = f"{len(ids)} acceptance criteria, {len(design.files)} planned files"
    return GateResult(True, summary, {"design": design.model_dump()}, waivable=False)


async def tests_red(g: GateInput) -> GateResult:
    """TDD: the tests cover every criterion and FAIL against the current tree.

    Test files exist under the test folder; every acceptance criterion maps to at least one test that exists (read
    from the files' syntax tree, since the tests cannot be imported before the code exists); the run fails (pytest
    exit code 1 or 2). On success the locked files' hash is recorded.
    """
    test_dir = g.contract.test_dir
    files = [p for p in workspace.working_files(g.root) if p.startswith(f"{test_dir}/") and p.endswith(".py")]
    defined = _test_ids(g.root, files)
    if not defined:
        return GateResult(False, f"no pytest tests (test_* functions) under {test_dir}/")
    covers: dict[str, list[str]] = g.artifact.get("covers") or {}
    criteria = [c["id"] for c in g.state["design"]["acceptance_criteria"]]
    problems = [f"{cid} is covered by no test" for cid in criteria if not covers.get(cid)]
    problems += [f"covers names {cid}, which is not an acceptance criterion" for cid in covers if cid not in criteria]
    problems += [
        f"{cid} names {tid}, which is not a test in {test_dir}/"
        for cid, tids in covers.items()
        for tid in tids
        if tid not in defined
    ]
    if problems:
        return GateResult(False, "; ".join(problems) + f". The tests found: {', '.join(sorted(defined)[:30])}")
    run = await _run(g)
    if run.rc not in (1, 2):
        if run.rc == 0:
            why = "the tests PASS before the implementation exists: they do not test the acceptance criteria"
        elif run.rc == 5:
            why = "pytest collected no tests"
        else:
            why = f"the test run did not fail the way missing code fails (exit code {run.rc}): {run.reason or ''}"
        return GateResult(False, f"{why}\n{run.output[-1500:]}", {"tests": _summary(run, g)})
    locked = [p for p in workspace.working_files(g.root) if g.contract.is_locked(p)]
    digest, each = workspace.files_digest(g.root, locked)
    lock = {"hash": digest, "files": each, "commit": g.commit}
    why = f"{len(defined)} tests fail as they should (exit code {run.rc}); locked: {', '.join(sorted(each))}"
    return GateResult(True, why, {"locked_tests": lock, "covers": covers, "tests": _summary(run, g)})


async def tests_green(g: GateInput) -> GateResult:
    """IMPL: the locked files are as TDD left them (by hash) and the tests pass.

    Passing means exit code 0 and every test that covers a criterion PASSED (not skipped, not deselected).
    """
    lock = g.state.get("locked_tests") or {}
    changed = _lock_changes(g, lock)
    if changed:
        why = "the locked tests changed: " + ", ".join(changed) + ". Tests are fixed once TDD ends; change the code."
        return GateResult(False, why, {"lock_broken": changed})
    run = await _run(g)
    summary = _summary(run, g)
    if not run.passed:
        failing = sorted(t for t, o in run.outcomes.items() if o in ("FAILED", "ERROR"))
        head = f"the tests fail (exit code {run.rc})" + (f": {', '.join(failing[:20])}" if failing else "")
        return GateResult(False, f"{head}\n{run.output[-3000:]}", {"tests": summary})
    covered = sorted({t for tids in (g.state.get("covers") or {}).values() for t in tids})
    not_run = [t for t in covered if run.outcomes.get(t) != "PASSED"]
    if not_run:
        seen = ", ".join(f"{t}: {run.outcomes.get(t, 'not run')}" for t in not_run[:20])
        return GateResult(False, f"tests that cover a criterion did not pass: {seen}", {"tests": summary})
    return GateResult(True, f"{summary['passed']} tests pass, the locked tests unchanged", {"tests": summary})


async def review_clean(g: GateInput) -> GateResult:
    """REVIEW: the verdict approves and there is no blocking issue; otherwise the issues go back to IMPL."""
    issues = g.artifact.get("blocking_issues") or []
    review = {**g.artifact, "commit": g.commit}
    if g.artifact.get("verdict") == "approve" and not issues:
        return GateResult(
            True, "approved" + (f": {g.artifact['notes']}" if g.artifact.get("notes") else ""), {"review": review}
        )
    lines = [
        f"- {i.get('file') + ': ' if i.get('file') else ''}{i['problem']}"
        + (f" ({i['criterion']})" if i.get("criterion") else "")
        for i in issues
    ] or ["- the verdict asks for changes without naming a blocking issue: " + str(g.artifact.get("notes", ""))]
    return GateResult(False, "\n".join(lines), {"review": review})


GATES: dict[str, Gate] = {
    "plan_valid": plan_valid,
    "tests_red": tests_red,
    "tests_green": tests_green,
    "review_clean": review_clean,
}
"""Gate name -> gate. ``signed`` (COMPLETE) is the signing step itself, in :mod:`nodes.engineering`."""


def _lock_changes(g: GateInput, lock: dict[str, Any]) -> list[str]:
    """Locked files edited, added or removed since TDD, as ``path (edited|added|removed)``."""
    now_locked = [p for p in workspace.working_files(g.root) if g.contract.is_locked(p)]
    _, each = workspace.files_digest(g.root, now_locked)
    before: dict[str, str] = lock.get("files") or {}
    changed = [f"{p} (edited)" for p in sorted(set(each) & set(before)) if each[p] != before[p]]
    changed += [f"{p} (added)" for p in sorted(set(each) - set(before))]
    changed += [f"{p} (removed)" for p in sorted(set(before) - set(each))]
    return changed


def locked_digest(contract: Contract, root: Path) -> str:
    """The hash of the working copy's locked files now (see :func:`infra.workspace.files_digest`)."""
    return workspace.files_digest(root, [p for p in workspace.working_files(root) if contract.is_locked(p)])[0]


async def _run(g: GateInput) -> TestRun:
    """Run the plan's tests in the sandbox and charge the time to the project's budget."""
    run = await run_tests(g.root, g.ctx.settings, g.state["design"].get("test_command"))
    async with g.ctx.db.session() as s:
        await charge(s, g.project_id, seconds=run.duration_s)
    return run


def _summary(run: TestRun, g: GateInput) -> dict[str, Any]:
    counts = {o: sum(1 for v in run.outcomes.values() if v == o) for o in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    return {
        "passed": counts["PASSED"],
        "failed": counts["FAILED"] + counts["ERROR"],
        "skipped": counts["SKIPPED"],
        "ok": run.passed,
        "rc": run.rc,
        "command": run.command,
        "sandboxed": run.sandboxed,
        "reason": run.reason,
        "commit": g.commit,
        "duration_s": round(run.duration_s, 2),
        "output_tail": run.output[-1500:],
    }


def _test_ids(root: Path, files: list[str]) -> set[str]:
    """Pytest ids the files define: ``path::test_x`` and ``path::TestY::test_x``.

    pytest's default collection rules (``test*`` functions, ``Test*`` classes); a file that does not parse defines
    none.
    """
    ids: set[str] = set()
    for rel in files:
        name = rel.rsplit("/", 1)[-1]
        if not (name.startswith("test_") or name.endswith("_test.py")):
            continue
        try:
            tree = ast.parse(workspace.read_text(root, rel, max_chars=2_000_000))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                ids.add(f"{rel}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name.startswith("test"):
                        ids.add(f"{rel}::{node.name}::{item.name}")
    return ids
