"""Typed payloads of the graph's interrupts and the typed answers they accept.

Every payload carries ``kind`` so a resumer (CLI, API, the sync's provisioner) knows which answer fits, and
``deadline``/``on_deadline``: when, unanswered, the sync's ``deadlines`` worker gives the default answer, and what it
is (see :mod:`services.deadlines`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator


class DeployApprovalRequest(BaseModel):
    """Asked before a deploy: what was done, what will happen."""

    kind: Literal["deploy_approval"] = "deploy_approval"
    question: str
    project: str
    commit: str
    server: str
    port: int
    url: str
    tests: dict[str, Any]
    missing_secrets: list[str] = Field(default_factory=list)
    """Secrets the design requires that are not stored (names): the deploy refuses until they are set."""
    attested: str = ""
    """What the signed verification attests, in words (commit, tree, tests, contract, expiry, warnings)."""
    attestation: dict[str, Any] = Field(default_factory=dict)
    """The same as data (``Attestation.claims()``)."""
    phases: list[str] = Field(default_factory=list)
    """The phase timeline, one line per round (``PLAN 1 passed: ...``)."""
    budget: dict[str, Any] | None = None
    """The project's budget: spent and left."""
    deadline: str | None = None
    """When the default answer is given if nobody answers: ISO 8601 UTC; None: no deadline."""
    on_deadline: str | None = None
    """What happens then, in words (``reject``, ``stop``...); None: no deadline."""


class DeployDecision(BaseModel):
    """The answer to a deploy approval: approve, reject with a reason, or feedback that sends the work back."""

    decision: Literal["approve", "reject", "feedback"]
    reason: str | None = None
    feedback: str | None = None
    by: str | None = None
    """Who answered (``Event.actor`` form); the runtime fills it in, the Deployment row keeps it."""

    @model_validator(mode="after")
    def _needs_text(self) -> DeployDecision:
        if self.decision == "reject" and not (self.reason or "").strip():
            raise ValueError("a reject needs a reason")
        if self.decision == "feedback" and not (self.feedback or "").strip():
            raise ValueError("feedback needs its text")
        return self


class GuidanceRequest(BaseModel):
    """Asked when a phase of the engineering contract reached its round limit without passing its gate."""

    kind: Literal["engineering_guidance"] = "engineering_guidance"
    question: str
    project: str
    phase: str = ""
    role: str = ""
    iterations: int
    last_failure: str
    deadline: str | None = None
    """When the default answer is given if nobody answers: ISO 8601 UTC; None: no deadline."""
    on_deadline: str | None = None
    """What happens then, in words (``reject``, ``stop``...); None: no deadline."""


class GuidanceAnswer(BaseModel):
    """A person's guidance for the phase's role; ``stop`` or ``cancel`` ends the work instead."""

    answer: str = Field(min_length=1)
    by: str | None = None
    """Who answered (``Event.actor`` form); a ``stop`` names them as who stopped the work."""

    @model_validator(mode="after")
    def _not_blank(self) -> GuidanceAnswer:
        if not self.answer.strip():
            raise ValueError("guidance cannot be blank")
        return self


class ResourcesRequest(BaseModel):
    """The project waits for a ready server with a free port; the sync's provisioner_trigger (or a person) resumes."""

    kind: Literal["waiting_for_resources"] = "waiting_for_resources"
    question: str
    project: str
    project_id: int
    need: str
    deadline: str | None = None
    """When the default answer is given if nobody answers: ISO 8601 UTC; None: no deadline."""
    on_deadline: str | None = None
    """What happens then, in words (``reject``, ``stop``...); None: no deadline."""


class ResourcesAnswer(BaseModel):
    """Why it is worth trying again (e.g. "server web-2 became ready")."""

    reason: str = Field(min_length=1)


class BudgetRequest(BaseModel):
    """The project's budget ran out: extend it or stop (asked before the next model call, never mid-call)."""

    kind: Literal["budget_exhausted"] = "budget_exhausted"
    question: str
    project: str
    project_id: int
    exhausted: list[str]
    """Which items ran out: tokens, cost, calls, seconds."""
    budget: dict[str, Any]
    """``BudgetView.as_dict()`` when it ran out: limits, spent and left."""
    deadline: str | None = None
    """When the default answer is given if nobody answers: ISO 8601 UTC; None: no deadline."""
    on_deadline: str | None = None
    """What happens then, in words (``reject``, ``stop``...); None: no deadline."""


class BudgetAnswer(BaseModel):
    """Extend (by these amounts; none given: one more default budget of each exhausted item) or stop."""

    action: Literal["extend", "stop"]
    tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    calls: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)
    by: str | None = None
    """Who answered (``Event.actor`` form); the runtime fills it in."""


ANSWER_SCHEMAS: dict[str, type[BaseModel]] = {
    "deploy_approval": DeployDecision,
    "engineering_guidance": GuidanceAnswer,
    "waiting_for_resources": ResourcesAnswer,
    "budget_exhausted": BudgetAnswer,
}
