"""The PO's closing message of a run: what happened, in plain words, from the state (no model needed)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage

from graphs.state import OrchestratorState


def report_to_user(state: OrchestratorState) -> dict[str, Any]:
    """Tell the person the outcome: deployed, deploy failed, rejected, or waiting for resources."""
    name = state.get("project_name") or "the project"
    eng, dep, approval = state.get("engineering"), state.get("deployment"), state.get("approval")
    if state.get("zavhoz_status") == "waiting_for_resources":
        text = f"{name} is built and tested (commit {eng['commit'][:10]})" if eng else f"{name} is in progress"
        text += ", but no server is ready with a free port, so it is waiting for resources. It continues by itself"
        text += " once a server is ready (or answer this thread to retry now)."
    elif eng and eng["status"] == "stopped":
        text = f"Stopped work on {name} as you asked. Nothing was deployed; ask me to change it to go on (if its "
        text += "budget ran out, raise it first: orchestrator budget " + name + " --add-calls N)."
    elif approval and approval["decision"] == "reject":
        text = f"Understood: {name} is not deployed ({approval['reason']}). It stays verified at commit "
        text += f"{eng['commit'][:10] if eng else '?'}; ask me to deploy it after all, or to change it."
    elif dep and dep["status"] == "succeeded":
        text = f"{name} is live: {dep['url']} answers (commit {dep['commit'][:10]}, its signed verification checked)."
    elif dep:
        text = f"The deploy of {name} failed: {dep['summary']}. The project stays verified; ask me to change it "
        text += "(an update goes through the teams again and asks before deploying)."
    else:
        text = f"{name}: nothing to deploy yet."
    return {"messages": [AIMessage(content=text)]}
