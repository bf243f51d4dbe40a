"""State schemas of the three graphs. Keys written by parallel branches are distinct or carry reducers."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


class ServerInfo(TypedDict):
    """Where a project will run, as leased by Zavhoz."""

    server_id: int
    name: str
    address: str
    connection: str
    ssh_port: int
    ssh_user: str
    port: int


class EngineeringResult(TypedDict):
    """What the Engineering subgraph hands back to the PO."""

    status: str
    """``verified`` (tests pass at ``commit``)."""
    commit: str
    entrypoint: str
    health_path: str
    tests: dict[str, Any]
    """``{"passed": bool, "iterations": int, "output_tail": str}``."""


class OrchestratorState(TypedDict, total=False):
    """The PO thread's state: the conversation and the project in flight."""

    messages: Annotated[list[AnyMessage], add_messages]
    """The conversation (person, PO, tool results)."""
    project_id: int | None
    project_name: str | None
    spec: dict[str, Any] | None
    new_project: bool
    """Set by the tool step when ``create_project_intent`` created a project this turn."""
    change: str | None
    """Set by the tool step when ``update_project_intent`` asked Engineering to change an existing project."""
    deploy_again: bool
    """Set by the tool step when ``deploy_project_intent`` asks to deploy this thread's verified commit after all."""
    server_info: ServerInfo | None
    """Written by the Zavhoz branch only."""
    zavhoz_status: str
    """idle | done | waiting_for_resources."""
    missing_secrets: list[str]
    """Names (never values) of secrets the project requires that are not stored, as Zavhoz found them."""
    engineering: EngineeringResult | None
    """Written by the Engineering branch only."""
    engineering_status: str
    """idle | working | verified | blocked."""
    approval: dict[str, Any] | None
    deployment: dict[str, Any] | None


class ZavhozInput(TypedDict):
    """The Send payload to Zavhoz."""

    project_id: int
    project_name: str


class ZavhozState(ZavhozInput, total=False):
    """Zavhoz's working state."""

    server_id: int | None
    server_info: ServerInfo | None
    zavhoz_status: str
    missing_secrets: list[str]


class ZavhozOutput(TypedDict, total=False):
    """Only these keys return to the PO."""

    server_info: ServerInfo | None
    zavhoz_status: str
    missing_secrets: list[str]


class EngineeringInput(TypedDict, total=False):
    """The Send payload to Engineering. ``feedback`` is a person's request for changes (None at first)."""

    project_id: int
    project_name: str
    spec: dict[str, Any]
    feedback: str | None


class EngineeringState(EngineeringInput, total=False):
    """Engineering's working state across the Architect -> Developer -> Tester loop."""

    design: dict[str, Any]
    commit: str
    tests: dict[str, Any]
    failure: str | None
    """The last failing test output plus the Tester's diagnosis, for the Developer."""
    iteration: int
    """Developer rounds since the design or the last guidance."""
    rounds: int
    """Developer rounds in total."""
    guidance: str | None
    engineering: EngineeringResult
    engineering_status: str


class EngineeringOutput(TypedDict, total=False):
    """Only these keys return to the PO."""

    engineering: EngineeringResult
    engineering_status: str
