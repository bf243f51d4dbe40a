"""State schemas of the three graphs. Keys written by parallel branches are distinct or carry reducers."""

from __future__ import annotations

from typing import Annotated, Any, NotRequired, TypedDict

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
    """``verified`` (signed at ``commit``) or ``stopped`` (a person answered ``stop``, or cancelled the project)."""
    stopped_by: NotRequired[str]
    """Who stopped it (``Event.actor`` form), when ``stopped``."""
    stop_reason: NotRequired[str]
    """Why, in words for the trail, when ``stopped``."""
    commit: str
    entrypoint: str
    health_path: str
    tests: dict[str, Any]
    """The last green run: ``{"passed": int, "failed": int, "ok": bool, "command": str, "rounds": int, ...}``."""
    verification: NotRequired[str]
    """The signed verification (a JWT, :mod:`services.verification`) the deploy checks against the commit."""
    attestation: NotRequired[dict[str, Any]]
    """What the verification attests, readable (``Attestation.claims()``)."""
    timeline: NotRequired[list[dict[str, Any]]]
    """Every phase round: ``{"phase", "role", "round", "outcome", "gate", "why", "commit", "at"}``."""


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
    po_tool_rounds: int
    """Tool rounds of the PO in this turn (reset when a turn starts); bounded by ``po_max_tool_rounds``."""
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
    """Engineering's working state across the contract's phases (PLAN -> TDD -> IMPL -> REVIEW -> COMPLETE)."""

    phase: str | None
    """The phase to run next (None: complete); the contract's ``first`` when absent."""
    phase_rounds: dict[str, int]
    """Rounds worked in each phase since the start or a person's guidance; at the phase's limit a person is asked."""
    timeline: list[dict[str, Any]]
    gate_feedback: dict[str, Any] | None
    """Why the last gate refused: ``{"phase", "gate", "why"}``, for the next round of the phase it goes back to."""
    design: dict[str, Any]
    """The PLAN artifact (summary, acceptance criteria, files, entrypoint, health path, test command, secrets)."""
    covers: dict[str, list[str]]
    """Acceptance criterion id -> the test ids that cover it (the TDD artifact)."""
    locked_tests: dict[str, Any]
    """``{"hash", "files": {path: sha256}, "commit"}`` of the files locked when TDD ended."""
    commit: str
    tests: dict[str, Any]
    review: dict[str, Any]
    warnings: list[str]
    """Permissive-mode violations let through; the signed verification lists them."""
    guidance: str | None
    budget_exhausted: dict[str, Any] | None
    """Set (the budget view) when a phase found the budget spent; the person is asked to extend it or stop."""
    verification: str
    engineering: EngineeringResult
    engineering_status: str


class EngineeringOutput(TypedDict, total=False):
    """Only these keys return to the PO."""

    engineering: EngineeringResult
    engineering_status: str
