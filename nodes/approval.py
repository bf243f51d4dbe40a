"""Interrupt nodes: each asks a person one typed question and does nothing else (they re-run on resume)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from core.contract import load_for
from graphs.context import Context
from graphs.state import EngineeringResult, EngineeringState, OrchestratorState
from models.interrupts import (
    BudgetAnswer,
    BudgetRequest,
    DeployApprovalRequest,
    DeployDecision,
    GuidanceAnswer,
    GuidanceRequest,
    ResourcesAnswer,
    ResourcesRequest,
)
from services.budgets import BudgetLimits, budget_of, set_budget
from services.cancel import cancel_request
from services.deadlines import deadline_fields
from services.secrets import missing_secrets, secret_set_commands
from services.verification import decode


async def request_deploy_approval(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask whether to deploy the verified commit to the leased server:port; returns ``approval``.

    Secrets the design requires and nobody stored yet are listed (names, and the command that sets each): the
    person can set them while the question waits, then approve. Reading them is the only thing done before the
    interrupt (a read: harmless when the node re-runs on resume).
    """
    eng, server = state["engineering"], state["server_info"]
    assert eng is not None and server is not None and state["project_id"] is not None
    host = "127.0.0.1" if server["connection"] == "local" else server["address"]
    name = state["project_name"] or ""
    missing = await missing_secrets(runtime.context.db, state["project_id"])
    question = f"Deploy {name} commit {eng['commit'][:10]} to {server['name']}:{server['port']}?"
    if missing:
        question += (
            f" First set the missing secret(s) {', '.join(missing)}: {secret_set_commands(name, missing)}"
            " (the deploy refuses without them)."
        )
    async with runtime.context.db.session() as s:
        budget = await budget_of(s, state["project_id"])
    request = DeployApprovalRequest(
        question=question,
        project=state["project_name"] or "",
        commit=eng["commit"],
        server=server["name"],
        port=server["port"],
        url=f"http://{host}:{server['port']}{eng['health_path']}",
        tests=eng["tests"],
        missing_secrets=missing,
        attested=decode(runtime.context.settings, eng["verification"]).describe() if eng.get("verification") else "",
        attestation=eng.get("attestation") or {},
        phases=[f"{t['phase']} {t['round']} {t['outcome']}: {t['why']}" for t in eng.get("timeline") or []],
        budget={**budget.as_dict(), "summary": budget.describe()} if budget else None,
        **deadline_fields(runtime.context.settings, "deploy_approval"),
    )
    answer = interrupt(request.model_dump())
    decision = DeployDecision.model_validate(answer)
    return {"approval": decision.model_dump()}


def ask_for_guidance(state: EngineeringState, runtime: Runtime[Context]) -> dict[str, Any]:
    """A phase reached its round limit: ask a person; the answer goes to that phase's next round (count reset).

    The answer ``stop`` (or ``cancel``) ends the work instead, as stopping at a spent budget does.
    """
    contract = load_for(runtime.context.settings)
    phase = contract.phase(state.get("phase") or contract.first)
    rounds = (state.get("phase_rounds") or {}).get(phase.name, 0)
    why = (state.get("gate_feedback") or {}).get("why") or ""
    request = GuidanceRequest(
        question=(
            f"{state['project_name']}: the {phase.name} phase did not pass its gate ({phase.gate}) after {rounds} "
            f"rounds. What should the {phase.role} do?"
        ),
        project=state["project_name"],
        phase=phase.name,
        role=phase.role,
        iterations=rounds,
        last_failure=why[-1500:],
        **deadline_fields(runtime.context.settings, "engineering_guidance"),
    )
    answer = GuidanceAnswer.model_validate(interrupt(request.model_dump()))
    if answer.answer.strip().lower() in STOP_WORDS:
        return stopped(state, by=answer.by or runtime.context.actor, why=f"guidance answered {answer.answer.strip()!r}")
    rounds_now = {**(state.get("phase_rounds") or {}), phase.name: 0}
    return {"guidance": answer.answer, "phase_rounds": rounds_now, "engineering_status": "working"}


async def ask_for_budget(state: EngineeringState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The project's budget ran out: ask to extend it or stop.

    Extending sets each limit to what was spent when it ran out (the payload's figures) plus the amount given, so a
    re-run of this node after a crash sets the same limits again instead of adding twice. Stopping ends
    Engineering with status ``stopped`` and an Event; the project keeps its status and can be changed later.
    """
    ctx = runtime.context
    view = state.get("budget_exhausted") or {}
    pid, name = state["project_id"], state["project_name"]
    exhausted = list(view.get("exhausted") or [])
    request = BudgetRequest(
        question=(
            f"{name}: the budget ran out ({', '.join(exhausted)}): {view.get('summary', '')}. Extend it (how much?) "
            "or stop?"
        ),
        project=name,
        project_id=pid,
        exhausted=exhausted,
        budget=view,
        **deadline_fields(ctx.settings, "budget_exhausted"),
    )
    answer = BudgetAnswer.model_validate(interrupt(request.model_dump()))
    if answer.action == "stop":
        return stopped(state, by=answer.by or ctx.actor, why=f"the budget ran out ({', '.join(exhausted)})")
    await extend_from(ctx, pid, view, answer)
    return {"budget_exhausted": None}


STOP_WORDS = {"stop", "cancel"}
"""Guidance that ends the work instead of directing it."""


def stopped(state: EngineeringState, *, by: str, why: str) -> dict[str, Any]:
    """Engineering's end when a person stops it (``stop`` to a question, or a cancel).

    Status ``stopped``, nothing to deploy, ``stopped_by``/``stop_reason`` naming who and why; the PO's
    ``settle_project`` then leaves the project consistent (:func:`services.cancel.settle`).
    """
    design = state.get("design") or {}
    result = EngineeringResult(
        status="stopped",
        stopped_by=by,
        stop_reason=why,
        commit=state.get("commit") or "",
        entrypoint=design.get("entrypoint", ""),
        health_path=design.get("health_path", ""),
        tests=state.get("tests") or {},
        timeline=state.get("timeline") or [],
    )
    return {"budget_exhausted": None, "phase": None, "engineering": result, "engineering_status": "stopped"}


async def wait_for_resources(state: OrchestratorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Park the thread until a server can take the project; the resume sends the work back to Zavhoz.

    A cancel of the project that stands when the thread is resumed ends the wait instead (``zavhoz_status``
    ``cancelled``: the graph settles the project rather than leasing a port for it).
    """
    request = ResourcesRequest(
        question=f"{state['project_name']} waits for a ready server with a free port. Retry now?",
        project=state["project_name"] or "",
        project_id=state["project_id"] or 0,
        need="a ready server with a free port",
        **deadline_fields(runtime.context.settings, "waiting_for_resources"),
    )
    answer = ResourcesAnswer.model_validate(interrupt(request.model_dump()))
    if state["project_id"] is not None and await cancel_request(runtime.context.db, state["project_id"]):
        return {"zavhoz_status": "cancelled"}
    return {"zavhoz_status": "working", "messages": [AIMessage(content=f"Retrying resources: {answer.reason}.")]}


async def extend_from(ctx: Context, pid: int, view: dict[str, Any], answer: BudgetAnswer) -> None:
    """Set each limit to the spent figure of ``view`` plus the answer's amount, recorded with who answered.

    An answer that names no amount adds one default budget of each exhausted item.
    """
    spent, limits = view.get("spent") or {}, view.get("limits") or {}
    default = BudgetLimits.from_settings(ctx.settings)
    add = {"tokens": answer.tokens, "cost_usd": answer.cost_usd, "calls": answer.calls, "seconds": answer.seconds}
    if not any(add.values()):
        for item in view.get("exhausted") or []:
            add[item] = getattr(default, item)
    new = {
        key: max(float(limits.get(key, 0)), float(spent.get(key, 0)) + amount) if amount else float(limits.get(key, 0))
        for key, amount in add.items()
    }
    async with ctx.db.session() as s:
        await set_budget(
            s,
            pid,
            BudgetLimits(
                tokens=int(new["tokens"]), cost_usd=new["cost_usd"], calls=int(new["calls"]), seconds=new["seconds"]
            ),
            actor=answer.by or ctx.actor,
        )


__all__ = ["ask_for_budget", "ask_for_guidance", "request_deploy_approval", "wait_for_resources"]
