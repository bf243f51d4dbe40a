"""The PO's closing message of a run: what happened, in plain words, from the state (no model needed)."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime
from langgraph.types import Command

from graphs.context import Context
from graphs.state import OrchestratorState
from models.enums import ProjectStatus as P
from services.cancel import cancel_request, settle


async def settle_project(
    state: OrchestratorState, runtime: Runtime[Context]
) -> Command[Literal["report_to_user", "__end__"]]:
    """Before the closing message: leave a project whose work was stopped or cancelled consistent, and say so.

    Engineering that ended ``stopped`` (a person answered ``stop``, or a cancel was read), or a cancel request that
    stands (a deploy approval rejected by a cancel, a deploy that did not start), settles the project through
    :func:`services.cancel.settle` (``cancelled`` with its lease released, or back to ``active`` when an update's live
    release keeps running) and ends the run with that news; anything else goes on to :func:`report_to_user`.
    Idempotent: a re-run after a crash finds the project settled and says the same.
    """
    ctx = runtime.context
    pid, name = state.get("project_id"), state.get("project_name") or "the project"
    eng = state.get("engineering")
    if eng and eng["status"] == "stopped":
        by, why = eng.get("stopped_by") or ctx.actor, eng.get("stop_reason") or "stopped"
    elif pid is not None and (standing := await cancel_request(ctx.db, pid)) is not None:
        by, why = standing
    else:
        return Command(goto="report_to_user")
    assert pid is not None
    status = await settle(ctx.db, pid, actor=by, reason=why, thread_id=ctx.thread_id)
    text = f"Stopped work on {name} as you asked ({by}: {why})."
    if status == P.active:
        text += " The update is dropped; the live release keeps running as it was."
    else:
        text += " Nothing was deployed; it is cancelled and its port is released."
    text += " Ask me to change it to start again"
    if "budget" in why:
        text += f" (raise its budget first: orchestrator budget {name} --add-calls N)"
    return Command(update={"messages": [AIMessage(content=text + ".")]}, goto="__end__")


def report_to_user(state: OrchestratorState) -> dict[str, Any]:
    """Tell the person the outcome: deployed, deploy failed, rejected, or waiting for resources."""
    name = state.get("project_name") or "the project"
    eng, dep, approval = state.get("engineering"), state.get("deployment"), state.get("approval")
    if state.get("zavhoz_status") == "waiting_for_resources":
        text = f"{name} is built and tested (commit {eng['commit'][:10]})" if eng else f"{name} is in progress"
        text += ", but no server is ready with a free port, so it is waiting for resources. It continues by itself"
        text += " once a server is ready (or answer this thread to retry now)."
    elif approval and approval["decision"] == "reject":
        text = f"Understood: {name} is not deployed ({approval['reason']}). It stays verified at commit "
        text += f"{eng['commit'][:10] if eng else '?'}; ask me to deploy it after all, or to change it."
    elif dep and dep["status"] == "succeeded":
        text = f"{name} is live: {dep['url']} answers (commit {dep['commit'][:10]}, its signed verification checked)."
    elif dep and dep["status"] == "rolled_back":
        text = f"The deploy of {name} (commit {dep['commit'][:10]}) failed its checks, so it was rolled back: the "
        text += f"release that ran before answers again at {dep['url']}. An incident is open; what failed: "
        text += f"{dep['summary'][-600:]}. Ask me to change it (an update goes through the teams again)."
    elif dep:
        text = f"The deploy of {name} failed: {dep['summary']}. The project stays verified; ask me to change it "
        text += "(an update goes through the teams again and asks before deploying)."
    else:
        text = f"{name}: nothing to deploy yet."
    return {"messages": [AIMessage(content=text)]}
