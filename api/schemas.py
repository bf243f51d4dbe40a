"""Request bodies and public response shapes of the API (no secrets, no clone URLs, no server facts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.enums import AccessRole, ProjectStatus, ServerStatus
from models.tables import Deployment, Project, Server
from runtime.answers import Answer
from runtime.multitask import DEFAULT_STRATEGY, Strategy
from services.budgets import ITEMS, BudgetLimits, BudgetView
from services.live import project_url
from services.servers import HOSTNAME_RE, ServerCreate

MAX_MESSAGE_CHARS = 16_000
"""Longest message or answer text (a person's words, not a file upload: they go into every checkpoint after)."""
THREAD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""Thread ids: 1-64 letters, digits, dots, hyphens and underscores, starting with a letter or digit."""
NOT_BLANK_PATTERN = r"[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
"""Some character that is not white space (as Python's ``str.strip`` sees it, spelled out for any regex dialect)."""


class ErrorOut(BaseModel):
    """What every refused request answers: a sentence, or for a malformed request (422) a list of problems.

    The list items are FastAPI's: ``loc``, ``msg``, ``type`` and ``input``.
    """

    detail: str | list[dict[str, Any]]


class HealthOut(BaseModel):
    """Liveness of the API process."""

    status: Literal["ok"] = "ok"


class ThreadCreated(BaseModel):
    """A new thread id; nothing has run on it yet."""

    thread_id: str


class MessageIn(BaseModel):
    """A person's message to the PO."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1,
        max_length=MAX_MESSAGE_CHARS,
        description="what the person says; white space alone is refused (422)",
        json_schema_extra={"pattern": NOT_BLANK_PATTERN},  # documents the runtime's check (its 422 is a sentence)
    )
    multitask_strategy: Strategy = Field(
        default=DEFAULT_STRATEGY,
        description=(
            "what to do if a run of the thread is going (LangGraph Platform's double texting): reject (409), enqueue "
            "(run after it), interrupt (stop it at its next step, keep its progress, run this), rollback (stop it, "
            "drop its progress, run this from where it started); a thread waiting for an answer refuses all (409)"
        ),
    )


class CancelIn(BaseModel):
    """Why a project's work is cancelled (on the audit trail)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        default="cancelled over the API", min_length=1, max_length=300, description="why, for the trail"
    )


class CancelOut(BaseModel):
    """What a cancel did: ``stopped`` False means a run in another process was asked to stop and will."""

    project: str
    status: ProjectStatus
    """The project's status now: ``cancelled``, ``active`` (an update of a live release was dropped), or where it
    was while a run elsewhere stops."""
    stopped: bool
    thread_id: str | None
    message: str
    said: list[str] = Field(default_factory=list, description="what the PO told the thread while it ended")


class RollbackIn(BaseModel):
    """Which earlier good release to run again."""

    model_config = ConfigDict(extra="forbid")

    to: int | None = Field(
        default=None, ge=1, description="a succeeded deployment's id; null: the one before the live one"
    )


class DeploymentPublic(BaseModel):
    """One deploy of one commit (its Ansible summary and signed verification are left out)."""

    id: int
    commit_sha: str
    status: str
    url: str | None
    approved_by: str | None
    started_at: datetime
    finished_at: datetime | None


class LifecycleOut(BaseModel):
    """What a stop, start, undeploy or delete did."""

    project: str
    status: ProjectStatus
    message: str


class ResumeIn(BaseModel):
    """An answer to a pending interrupt.

    ``approve``; ``reject`` with ``text`` as the reason; ``answer`` with ``text`` as feedback or guidance.
    ``interrupt_id`` is needed only when several questions are pending.
    """

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "reject", "answer"]
    text: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)
    interrupt_id: str | None = Field(default=None, max_length=64)

    def to_answer(self) -> Answer:
        """The runtime's ``Answer`` for this body (``answer`` is the runtime's ``text`` kind)."""
        return Answer(kind="text" if self.action == "answer" else self.action, text=self.text)


class PendingPublic(BaseModel):
    """A pending interrupt: its id and typed payload (``payload["kind"]`` names the question)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    payload: dict[str, Any]


class ThreadPublic(BaseModel):
    """A thread with its pending interrupts; ``stopped_mid_run``: POST ``/threads/{id}/continue`` finishes it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str
    updated_at: str
    pending: list[PendingPublic]
    stopped_mid_run: bool


class SecretNamePublic(BaseModel):
    """One stored secret as the API shows it: its name and when it was last set (never its value)."""

    name: str
    updated_at: datetime


class ProjectSecretsPublic(BaseModel):
    """A project's secrets: the stored names, and the names its design requires that are not stored yet."""

    project: str
    secrets: list[SecretNamePublic]
    missing: list[str]


class BudgetAmounts(BaseModel):
    """An amount of each budget item: tokens (prompt + completion), model cost (USD), model calls, working seconds."""

    tokens: int
    cost_usd: float
    calls: int
    seconds: float


class BudgetOut(BaseModel):
    """A project's budget: its limits, what its runs spent, what is left (never below 0), and what ran out.

    ``exhausted`` names the items spent to or past their limit (``tokens``, ``cost_usd``, ``calls``, ``seconds``).
    """

    limits: BudgetAmounts
    spent: BudgetAmounts
    left: BudgetAmounts
    exhausted: list[Literal["tokens", "cost_usd", "calls", "seconds"]]
    summary: str
    """One line: ``tokens 1,234/400,000 · cost $0.00/$5.00 · calls 7/80 · 12s/3600s``."""
    updated_at: datetime

    @classmethod
    def from_view(cls, view: BudgetView) -> BudgetOut:
        """Build from the service's view."""
        return cls.model_validate({**view.as_dict(), "summary": view.describe(), "updated_at": view.updated_at})


def _document_extension(schema: dict[str, Any]) -> None:
    # "At least one item above 0" in the schema itself, so clients (and fuzzers) know what a valid body is.
    schema["anyOf"] = [{"required": [item], "properties": {item: {"exclusiveMinimum": 0}}} for item in ITEMS]


class BudgetExtendIn(BaseModel):
    """How much to raise a project's budget limits by: each item >= 0, at least one above 0 (else 422)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_document_extension)

    tokens: int = Field(default=0, ge=0, le=10**12, description="tokens to add to the limit")
    cost_usd: float = Field(default=0.0, ge=0, le=10**6, allow_inf_nan=False, description="US dollars to add")
    calls: int = Field(default=0, ge=0, le=10**6, description="model calls to add")
    seconds: float = Field(default=0.0, ge=0, le=10**8, allow_inf_nan=False, description="working seconds to add")

    @model_validator(mode="after")
    def _adds_something(self) -> BudgetExtendIn:
        if not any(getattr(self, item) > 0 for item in ITEMS):
            raise ValueError("add something: at least one of tokens, cost_usd, calls, seconds above 0")
        return self

    def to_limits(self) -> BudgetLimits:
        """The service's amounts to add."""
        return BudgetLimits(tokens=self.tokens, cost_usd=self.cost_usd, calls=self.calls, seconds=self.seconds)


class ToolCallPublic(BaseModel):
    """One agent tool call as the phase contract judged it.

    ``args`` are as stored: file contents and long strings replaced by their size and digest, or cut.
    """

    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    thread_id: str | None
    role: str
    phase: str
    tool: str
    args: dict[str, Any]
    outcome: str
    """``allowed``, ``refused``, ``warned`` (allowed, with a note) or ``failed`` (it ran and raised)."""
    reason: str | None
    duration_ms: float


class ProjectPublic(BaseModel):
    """A project as the API shows it; ``url`` is its health URL once it has a server and a port."""

    name: str
    description: str
    status: ProjectStatus
    repo_full_name: str | None
    repo_url: str | None
    default_branch: str
    server: str | None
    port: int | None
    url: str | None
    setup_required: bool
    last_synced_at: datetime | None
    thread_id: str | None
    requested_by: str | None
    """Who asked for the project or its latest change."""
    approved_by: str | None
    """Who approved the deploy that runs now (None: never deployed)."""
    budget: BudgetOut | None
    """What its runs may spend and have spent (None: no budget opened yet)."""
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(
        cls, project: Project, server: Server | None, live: Deployment | None, *, budget: BudgetView | None = None
    ) -> ProjectPublic:
        """Build from a project row, its server row, its live deployment and its budget (each None when none)."""
        fields = project.model_dump(include=set(cls.model_fields) - {"server", "url", "approved_by", "budget"})
        return cls(
            **fields,
            server=server.name if server else None,
            url=project_url(project, server),
            approved_by=live.approved_by if live else None,
            budget=BudgetOut.from_view(budget) if budget else None,
        )


class ServerPublic(BaseModel):
    """A server as the API shows it (no facts: they may carry the host's environment)."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    address: str
    ssh_port: int
    ssh_user: str
    connection: str
    status: ServerStatus
    port_range_start: int
    port_range_end: int
    fail_count: int
    last_seen_at: datetime | None
    created_at: datetime


def _document_address(schema: dict[str, Any]) -> None:
    # HOSTNAME_RE's length lookahead is the field's maxLength already (and makes example generation crawl).
    host_name = HOSTNAME_RE.pattern.replace("(?=.{1,253}$)", "")
    schema["properties"]["address"]["anyOf"] = [{"format": "ipv4"}, {"format": "ipv6"}, {"pattern": host_name}]


class ServerIn(ServerCreate):
    """A server to register: where it is, how Ansible and the sync reach it, and which ports it lends.

    ``port_range_start`` may not be above ``port_range_end`` (422: a JSON schema cannot compare two fields).
    """

    # Validated exactly as ServerCreate; this class only puts its address rule in the schema.
    model_config = ConfigDict(json_schema_extra=_document_address)


class IncidentPublic(BaseModel):
    """An incident: what went wrong in reality, on which subject, and whether reality agrees again."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    severity: str
    subject_type: str
    subject_id: int
    message: str
    opened_at: datetime
    resolved_at: datetime | None


class EventPublic(BaseModel):
    """One entry of the audit trail: a status change or an action, who made it, why, from which thread."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    subject_type: str
    subject_id: int
    from_status: str | None
    to_status: str
    reason: str
    actor: str | None
    thread_id: str | None
    created_at: datetime


class TokenIn(BaseModel):
    """A token to create: its unique name (the identity is ``token:<name>``) and its role."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    role: AccessRole


class TokenCreated(BaseModel):
    """A new token; ``key`` is shown this once and never stored (only its SHA-256 is)."""

    name: str
    role: AccessRole
    key: str


class TokenPublic(BaseModel):
    """A token as listings show it: never the key, only its first characters."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    role: AccessRole
    hint: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class UsageOut(BaseModel):
    """Model calls summed: how many, tokens in, out and together, cost (USD, litellm's price) and latency (ms)."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    tokens: int
    cost_usd: float
    latency_ms: float


class RunPublic(UsageOut):
    """One run of a thread: its entry point (``message``, ``resume``, ``continue``), actor, model, times, outcome.

    ``outcome``: ``done``, ``interrupted`` (stopped at a question), ``drained``, ``failed`` (``error`` says why),
    ``lost`` (its process was killed before it ended; ``error`` names the process); null while it runs. The usage
    fields sum its model calls.
    """

    id: str
    thread_id: str
    kind: str
    actor: str | None
    model: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    outcome: str | None
    error: str | None
    nodes: int


class NodeRunPublic(BaseModel):
    """One node execution: ``where`` is its path through subgraphs, ``offset_ms`` its start after the run's."""

    node: str
    path: str
    where: str
    started_at: datetime
    offset_ms: float
    duration_ms: float
    outcome: Literal["ok", "error", "interrupted"]
    error: str | None
    subgraph: bool
    slowest: bool


class ModelCallPublic(BaseModel):
    """One model call of a run: the role and node that made it, the model, tokens, cost (USD), latency (ms)."""

    id: int
    created_at: datetime
    role: str
    model: str
    node: str | None
    prompt_tokens: int
    completion_tokens: int
    tokens: int
    cost_usd: float
    latency_ms: float
    ok: bool
    error: str | None


class RunTimelineOut(BaseModel):
    """A run's trace: its nodes in start order (the slowest non-subgraph node marked), its model calls, totals."""

    run: RunPublic
    nodes: list[NodeRunPublic]
    calls: list[ModelCallPublic]
    slowest: NodeRunPublic | None
    totals: UsageOut


class CostRowOut(UsageOut):
    """Usage of one project, role and model (``project`` null: threads that made no project)."""

    project: str | None
    role: str
    model: str


class ProjectCostOut(UsageOut):
    """Usage of one project (null: threads that made no project)."""

    project: str | None


class RoleCostOut(UsageOut):
    """Usage of one role (``po``, ``architect``, ``developer``, ``tester``...)."""

    role: str


class ModelCostOut(UsageOut):
    """Usage of one model."""

    model: str


class CostsOut(BaseModel):
    """Model calls grouped by project, role and model, with the sums by each of them and the total."""

    since: datetime | None
    project: str | None
    rows: list[CostRowOut]
    projects: list[ProjectCostOut]
    roles: list[RoleCostOut]
    models: list[ModelCostOut]
    total: UsageOut


class ThreadListedPublic(ThreadPublic):
    """A thread in ``GET /threads``; ``archived_at`` is set only on archived ones (``include_archived=true``)."""

    archived_at: str | None = None


class ThreadMessagePublic(BaseModel):
    """One message of a thread's conversation (``runtime.thread_admin.ThreadMessage``).

    ``index``: its place, 0 for the first; ``role``: ``human`` (a person), ``ai`` (the PO), ``tool`` (a tool's
    answer, summarized: never its content), ``system``; ``tool_calls``: the tools an ``ai`` message asked for, by name.
    """

    model_config = ConfigDict(from_attributes=True)

    index: int
    role: Literal["human", "ai", "tool", "system"]
    text: str
    name: str | None
    tool_calls: list[str]
    id: str | None


class ThreadMessagesOut(BaseModel):
    """A page of a thread's conversation, oldest first; ``earlier``: the ``before`` of the page before (null: none)."""

    model_config = ConfigDict(from_attributes=True)

    thread_id: str
    total: int
    messages: list[ThreadMessagePublic]
    earlier: int | None


class ThreadCancelIn(BaseModel):
    """Why a thread's run is cancelled (on its project's trail), and how long to wait for a run in progress."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        default="cancelled over the API", min_length=1, max_length=300, description="why, for the trail"
    )
    wait_s: float = Field(
        default=120.0, gt=0, le=900, description="seconds to wait for a run in progress to stop (409 after that)"
    )


class ThreadCancelOut(BaseModel):
    """What a thread's cancel did (``runtime.thread_admin.CancelOutcome``).

    ``outcome``: ``stopped`` (a run in progress stopped between steps and was abandoned), ``abandoned`` (a run that
    had stopped mid-way), ``finished`` (the run ended on its own first); ``project``: the project the thread works
    on, if any, and its status, which a thread's cancel does not change.
    """

    model_config = ConfigDict(from_attributes=True)

    thread_id: str
    outcome: Literal["stopped", "abandoned", "finished"]
    message: str
    project: str | None
    project_status: str | None
