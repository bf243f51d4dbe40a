"""The engineering phases as one contract-driven node: whatever phase the state names, worked by the contract's role.

``run_phase`` reads the phase from the state (the contract's ``first`` at the start), checks the budget, moves the
project's status, opens the working copy, runs one round of the phase's agent (:mod:`nodes.agent`), commits what it
wrote, runs the phase's gate (:mod:`nodes.gates`) and names the next phase: ``next`` when the gate passed, ``on_fail``
when it did not (permissive mode goes on with a warning when the gate may be waived). COMPLETE, the system's phase,
signs what was verified (:mod:`services.verification`).

Re-entrant: a re-run after a crash (mid-node or right after it) moves no status twice; the working copy is reset to
the remote first, so a half-written round is dropped and written again.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from langgraph.runtime import Runtime
from sqlalchemy import update
from sqlmodel import col

from core.contract import Contract, Phase, load_for
from graphs.context import Context
from graphs.state import EngineeringResult, EngineeringState
from infra import workspace
from infra.venvs import REQUIREMENTS
from models.enums import ProjectStatus as P
from models.tables import Project, utcnow
from models.transitions import enter_project_status, transition_project
from nodes.agent import Round, Toolbox, run_round
from nodes.approval import stopped
from nodes.gates import GATES, GateInput, GateResult, locked_digest
from prompts import engineering as prompts
from services.budgets import budget_of
from services.cancel import cancel_request
from services.identities import record
from services.verification import Attestation, sign

WORKING_STATUS = {"PLAN": P.designing, "TDD": P.implementing, "IMPL": P.implementing, "REVIEW": P.verifying}
"""The project status while a phase works (phases the code does not know keep the project where it is)."""
REACHED = {"TDD": {P.implementing}, "IMPL": {P.implemented, P.verifying}, "REVIEW": {P.implementing}}
"""Statuses found at a phase's start that mean nothing moves (a re-run, or a later round).

Only a round's outcome moves the project: IMPL's green -> implemented -> verifying, a failed REVIEW -> implementing,
COMPLETE -> verified.
"""


async def run_phase(state: EngineeringState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Work one round of the state's phase and decide the next one.

    Returns:
        ``phase`` (the next phase to run, None when complete), ``phase_rounds``, ``timeline`` (one entry appended),
        ``gate_feedback`` (why the gate refused, for the next round), plus what the gate hands on; or only
        ``budget_exhausted`` when the project's budget ran out before a model call (nothing else happened); or
        Engineering's ``stopped`` end when a cancel of the project stands (read at the start and before every model
        call).

    Raises:
        ContractError: the configured contract is broken (the runtime refuses to start with one, so only if it
            changed on disk since).
        ModelUnreachable: the role's model failed.
    """
    ctx = runtime.context
    contract = load_for(ctx.settings)
    phase = contract.phase(state.get("phase") or contract.first)
    pid = state["project_id"]
    cancelled = await cancel_request(ctx.db, pid)
    if cancelled is not None:  # before anything moves: the work ends here, the PO leaves the project consistent
        return stopped(state, by=cancelled[0], why=cancelled[1])
    if phase.role != "system":
        async with ctx.db.session() as s:
            view = await budget_of(s, pid)
        if view is not None and view.exhausted:
            return {"budget_exhausted": {**view.as_dict(), "summary": view.describe()}}
    await _enter(ctx, pid, phase, state)
    async with ctx.db.session() as s:
        project = await s.get(Project, pid)
    assert project is not None and project.clone_url
    root = ctx.settings.data_dir.resolve() / "workspaces" / project.name
    git_auth = ctx.forge.git_auth()
    await asyncio.to_thread(workspace.prepare, root, project.clone_url, git_auth, project.default_branch)
    if phase.role == "system":
        return await _complete(ctx, contract, phase, state, root)
    design = state.get("design") or {}
    deps = design.get("dependencies") or []
    if deps and "write_file" in phase.tools and not (root / REQUIREMENTS).is_file():
        # the plan's dependencies live in the repository, before the first test run needs them
        await asyncio.to_thread(workspace.write_files, root, [(REQUIREMENTS, "\n".join(deps) + "\n")])
    box = Toolbox(ctx, contract, phase, pid, root, design.get("test_command"))
    rnd = await run_round(box, _messages(contract, phase, state, root))
    if rnd.cancelled is not None:  # nothing of this round is committed; the working copy is reset on any re-run
        return stopped(state, by=rnd.cancelled[0], why=rnd.cancelled[1])
    if rnd.exhausted is not None:
        return {"budget_exhausted": rnd.exhausted}
    commit = state.get("commit")
    if "write_file" in phase.tools and rnd.artifact is not None:
        message = str(rnd.artifact.get("message") or f"{phase.name}: {project.name}")[:200]
        commit = await asyncio.to_thread(workspace.commit_and_push, root, message, git_auth, project.default_branch)
    gate = await _gate(ctx, contract, phase, state, rnd, root, commit, pid)
    return await _decide(ctx, contract, phase, state, rnd, gate, commit)


async def _gate(
    ctx: Context,
    contract: Contract,
    phase: Phase,
    state: EngineeringState,
    rnd: Round,
    root: Any,
    commit: str | None,
    pid: int,
) -> GateResult:
    if rnd.artifact is None:
        why = f"the {phase.role} did not call finish with a valid artifact in {rnd.steps} answers"
        if rnd.refused:
            why += "; refused: " + "; ".join(rnd.refused[-5:])
        return GateResult(False, why, waivable=False)
    gin = GateInput(ctx, contract, phase, dict(state), rnd.artifact, root, commit, pid)
    return await GATES[phase.gate](gin)


async def _decide(
    ctx: Context,
    contract: Contract,
    phase: Phase,
    state: EngineeringState,
    rnd: Round,
    gate: GateResult,
    commit: str | None,
) -> dict[str, Any]:
    """The phase's outcome: the next phase, the timeline entry, an Event, and the status a failure returns to."""
    pid = state["project_id"]
    rounds = dict(state.get("phase_rounds") or {})
    rounds[phase.name] = rounds.get(phase.name, 0) + 1
    warnings = list(state.get("warnings") or []) + [f"{phase.name}: {w}" for w in rnd.warnings]
    waived = not gate.passed and gate.waivable and contract.mode == "permissive"
    if waived:
        warnings.append(f"{phase.name}: gate {phase.gate} failed and was waived (permissive): {gate.why[:300]}")
    goes_on = gate.passed or waived
    outcome = "passed" if gate.passed else "waived" if waived else "failed"
    why = gate.why.splitlines()[0][:300] if gate.why else ""
    entry = _entry(phase, rounds[phase.name], outcome, why, commit, len(rnd.refused))
    nxt = phase.next if goes_on else phase.on_fail
    async with ctx.db.session() as s:
        await record(
            s,
            subject_type="project",
            subject_id=pid,
            action=f"phase_{outcome}",
            reason=f"{phase.name} round {rounds[phase.name]} ({phase.role}): gate {phase.gate} {outcome}: {why}",
            actor=ctx.actor,
            thread_id=ctx.thread_id,
        )
    if phase.name == "PLAN" and goes_on:
        await _planned(ctx, pid, gate.update.get("design") or {})
    elif phase.name == "IMPL" and goes_on:  # green: implemented and verifying (a re-run finds it there already)
        await _move(ctx, pid, P.implemented, f"commit {(commit or '')[:10]}: {why[:120]}", unless={P.verifying})
        await _move(ctx, pid, P.verifying, f"tests pass at {(commit or '')[:10]}")
    elif not goes_on and nxt == "IMPL" and phase.name != "IMPL":
        await _move(ctx, pid, P.implementing, f"back to IMPL: {phase.name} gate {phase.gate} failed")
    update: dict[str, Any] = {
        **gate.update,
        "phase": nxt,
        "phase_rounds": rounds,
        "timeline": [*(state.get("timeline") or []), entry],
        "warnings": warnings,
        "gate_feedback": None if goes_on else {"phase": phase.name, "gate": phase.gate, "why": gate.why},
        "engineering_status": "working",
    }
    if commit:
        update["commit"] = commit
    if goes_on:
        update["guidance"] = None
    return update


async def _complete(
    ctx: Context, contract: Contract, phase: Phase, state: EngineeringState, root: Any
) -> dict[str, Any]:
    """COMPLETE: check the verified commit is the working copy's, its locked tests unchanged, and sign it."""
    pid, name = state["project_id"], state["project_name"]
    commit = state["commit"]
    head = await asyncio.to_thread(workspace.head, root)
    lock = state.get("locked_tests") or {}
    problem = None
    if head != commit:
        problem = f"the branch moved since the tests passed ({commit[:10]} -> {head[:10]}): verify it again"
    elif locked_digest(contract, root) != lock.get("hash"):
        problem = "the locked tests differ from the ones TDD locked"
    if problem is not None:  # never signed: back to IMPL, which tests the branch as it is now
        gate = GateResult(False, problem, waivable=False)
        return await _decide(ctx, contract, replace(phase, on_fail="IMPL"), state, Round(), gate, commit)
    tree = await asyncio.to_thread(workspace.tree_of, root, commit)
    tests = state.get("tests") or {}
    rounds = sum((state.get("phase_rounds") or {}).values())
    attestation = Attestation(
        project=name,
        project_id=pid,
        commit=commit,
        tree=tree,
        tests_hash=lock.get("hash", ""),
        tests={
            "passed": tests.get("passed", 0),
            "failed": tests.get("failed", 0),
            "command": tests.get("command", ""),
            "rounds": rounds,
        },
        contract_version=contract.version,
        contract_digest=contract.digest,
        mode=contract.mode,
        warnings=tuple(state.get("warnings") or ()),
    )
    token = sign(ctx.settings, attestation)
    await _move(ctx, pid, P.verified, f"verified and signed at {commit[:10]} (tree {tree[:10]})")
    design = state["design"]
    entry = _entry(phase, 1, "passed", f"signed: commit {commit[:10]}, tree {tree[:10]}", commit, 0)
    timeline = [*(state.get("timeline") or []), entry]
    claims = attestation.claims()
    result = EngineeringResult(
        status="verified",
        commit=commit,
        entrypoint=design["entrypoint"],
        health_path=design["health_path"],
        tests={**tests, "rounds": rounds},
        verification=token,
        attestation=claims,
        timeline=timeline,
    )
    return {
        "phase": None,
        "timeline": timeline,
        "verification": token,
        "engineering": result,
        "engineering_status": "verified",
    }


def _entry(phase: Phase, rnd: int, outcome: str, why: str, commit: str | None, refused: int) -> dict[str, Any]:
    """One timeline entry: ``{"phase", "role", "round", "outcome", "gate", "why", "commit", "refused", "at"}``."""
    return {
        "phase": phase.name,
        "role": phase.role,
        "round": rnd,
        "outcome": outcome,
        "gate": phase.gate,
        "why": why,
        "commit": commit,
        "refused": refused,
        "at": utcnow().isoformat(),
    }


async def _enter(ctx: Context, pid: int, phase: Phase, state: EngineeringState) -> None:
    """Move to the phase's working status, unless a re-run or a later round finds it there (or past it)."""
    working = WORKING_STATUS.get(phase.name)
    if working is None:
        return
    if phase.name == "PLAN":
        async with ctx.db.session() as s:
            await enter_project_status(
                s,
                pid,
                P.designing,
                finished={P.designed},
                reason="architect planning",
                thread_id=ctx.thread_id,
                actor=ctx.actor,
            )
        return
    await _move(ctx, pid, working, f"{phase.role} working in {phase.name}", unless=REACHED.get(phase.name, set()))


async def _move(ctx: Context, pid: int, to: P, reason: str, unless: set[P] | frozenset[P] = frozenset()) -> None:
    """Move the project to ``to`` unless it is there already or in ``unless`` (a re-run); forbidden moves raise."""
    async with ctx.db.session() as s:
        current = await s.get(Project, pid)
        assert current is not None
        if P(current.status) == to or P(current.status) in unless:
            return
        await transition_project(s, pid, to, reason=reason, thread_id=ctx.thread_id, actor=ctx.actor)


async def _planned(ctx: Context, pid: int, design: dict[str, Any]) -> None:
    """Designing -> designed, with the names of the secrets the service reads, in one transaction."""
    async with ctx.db.session() as s:
        await transition_project(
            s,
            pid,
            P.designed,
            reason=f"plan: {str(design.get('summary', ''))[:120]}",
            thread_id=ctx.thread_id,
            actor=ctx.actor,
        )
        await s.exec(
            update(Project).where(col(Project.id) == pid).values(required_secrets=design.get("secrets") or [])  # type: ignore[call-overload]
        )


def _messages(contract: Contract, phase: Phase, state: EngineeringState, root: Any) -> list[dict[str, Any]]:
    """The round's opening messages: the phase's instructions, then the project, the plan, and what to fix."""
    spec = state.get("spec") or {}
    design = state.get("design") or {}
    plan = ""
    if design and phase.name != "PLAN":
        plan = prompts.PLAN_TEXT.format(
            summary=design.get("summary", ""),
            entrypoint=design.get("entrypoint", ""),
            health_path=design.get("health_path", ""),
            test_command=design.get("test_command") or "python -m pytest -q",
            criteria="\n".join(f"- {c['id']}: {c['text']}" for c in design.get("acceptance_criteria", [])),
            files="\n".join(f"- {f['path']}: {f['purpose']}" for f in design.get("files", [])),
        )
    files = prompts.FILES.format(tree="\n".join(f"- {p}" for p in workspace.working_files(root)) or "(empty)")
    diff = ""
    if phase.name == "REVIEW":
        base = (state.get("locked_tests") or {}).get("commit")
        head = state.get("commit") or "HEAD"
        diff = prompts.DIFF.format(base=(base or "")[:10], head=head[:10], diff=workspace.diff(root, base, head))
    feedback = ""
    if state.get("feedback"):
        feedback += prompts.PERSON_FEEDBACK.format(feedback=state["feedback"])
    gate = state.get("gate_feedback")
    if gate and gate.get("phase") == "REVIEW" and phase.name == "IMPL":
        feedback += prompts.REVIEW_BLOCKING.format(issues=gate["why"])
    elif gate and gate.get("phase") == phase.name:
        feedback += prompts.GATE_FAILED.format(
            gate=gate["gate"], round=(state.get("phase_rounds") or {}).get(phase.name, 0), why=gate["why"]
        )
    elif gate:
        feedback += prompts.SENT_BACK.format(phase=gate["phase"], gate=gate["gate"], why=gate["why"])
    if state.get("guidance"):
        feedback += prompts.GUIDANCE.format(guidance=state["guidance"])
    example = phase.example()
    system = (
        prompts.COMMON.format(phase=phase.name)
        + (prompts.EXAMPLE.format(example=json.dumps(example)) if example else "")
        + "\n\n"
        + prompts.SYSTEM.get(phase.name, "").format(health_path="/health", test_dir=contract.test_dir)
    )
    user = prompts.USER.format(
        phase=phase.name,
        name=state["project_name"],
        summary=spec.get("summary", ""),
        requirements="\n".join(f"- {r}" for r in spec.get("requirements", [])),
        plan=plan,
        files=files,
        diff=diff,
        feedback=feedback,
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
