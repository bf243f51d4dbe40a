"""SQLModel tables. ``table=True`` models do not validate: validate at the boundary before building rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Enum, Index, Integer, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from models.enums import AccessRole, DeploymentStatus, ProjectStatus, ServerStatus


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(UTC)


REPO_ID = BigInteger().with_variant(Integer(), "sqlite")
"""GitHub's repository ids are 64-bit: ``bigint`` on PostgreSQL; SQLite's INTEGER already holds 64 bits."""


def _enum(cls: type) -> Any:
    return Column(Enum(cls, values_callable=lambda e: [m.value for m in e], native_enum=False, length=32))


class Project(SQLModel, table=True):
    """A project: a repository, its lifecycle status, and where it runs."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    description: str = ""
    status: ProjectStatus = Field(sa_column=_enum(ProjectStatus))
    spec: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    github_repo_id: int | None = Field(default=None, unique=True, sa_type=REPO_ID)
    """The forge's immutable repository id: GitHub's are 64-bit and positive, the local forge's negative."""
    repo_full_name: str | None = None
    repo_url: str | None = None
    clone_url: str | None = None
    default_branch: str = "main"
    archived: bool = False
    server_id: int | None = Field(default=None, foreign_key="server.id")
    port: int | None = None
    setup_required: bool = False
    """A project found by the sync lacks what a deploy needs (a design, a verified commit, a server and port) until
    its first successful deploy, which clears the flag (ask the PO to update it to get there). Also set while a
    secret its design requires is not stored."""
    required_secrets: list[str] | None = Field(default=None, sa_column=Column(JSON))
    """Environment variable names the service reads, as the Architect's design declared them (values: ``Secret``)."""
    sync_fail_count: int = 0
    last_synced_at: datetime | None = None
    thread_id: str | None = None
    requested_by: str | None = None
    """The identity whose message created the project or asked for its latest change (see ``Event.actor``)."""
    cancel_requested_by: str | None = None
    """Who asked to cancel the work in flight (``services/cancel.py``); cleared once the work has stopped. Every
    engineering round and each agent step reads it, so a run in another process stops before its next model call."""
    cancel_reason: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Server(SQLModel, table=True):
    """A machine projects deploy to. ``connection`` is Ansible's: ``local`` or ``ssh``."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    address: str
    ssh_port: int = 22
    ssh_user: str = "root"
    connection: str = "ssh"
    status: ServerStatus = Field(sa_column=_enum(ServerStatus))
    port_range_start: int = 8100
    port_range_end: int = 8199
    facts: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    fail_count: int = 0
    last_seen_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class PortLease(SQLModel, table=True):
    """One port on one server held by one project. The unique keys make double leasing impossible."""

    __table_args__ = (UniqueConstraint("server_id", "port"), UniqueConstraint("project_id"))

    id: int | None = Field(default=None, primary_key=True)
    server_id: int = Field(foreign_key="server.id")
    port: int
    project_id: int = Field(foreign_key="project.id")
    created_at: datetime = Field(default_factory=utcnow)


class Secret(SQLModel, table=True):
    """One environment variable of a project's service, its value Fernet-encrypted (see services/secrets.py).

    Only names ever leave this table in clear (listings, graph state, approvals); values are decrypted only to
    hand them to a deploy.
    """

    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str = Field(max_length=128)
    value_encrypted: str
    """A Fernet token (url-safe base64 text)."""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Deployment(SQLModel, table=True):
    """A deploy of one commit to one server:port; ``idempotency_key`` stops a retried deploy duplicating."""

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    commit_sha: str
    server_id: int = Field(foreign_key="server.id")
    port: int
    status: DeploymentStatus = Field(sa_column=_enum(DeploymentStatus))
    ansible_rc: int | None = None
    summary: str = ""
    url: str | None = None
    entrypoint: str = "app.py"
    health_path: str = "/health"
    idempotency_key: str = Field(unique=True)
    thread_id: str | None = None
    approved_by: str | None = None
    """The identity that approved this deploy (``Event.actor`` form), None for a redeploy recovery."""
    verification: str | None = None
    """The signed verification token (a JWT, not a secret) the deployed commit was checked against; None for a
    deploy made before verifications were signed."""
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class Event(SQLModel, table=True):
    """Audit trail: every status change and every action on the record (subject, from, to, why, who, thread, time).

    ``to_status`` is the status moved to; for an action that moves no status (an approval, a token or secret
    change) it names the action, e.g. ``deploy_approved`` or ``token_revoked``, and ``from_status`` is None.
    """

    id: int | None = Field(default=None, primary_key=True)
    subject_type: str = Field(index=True)
    subject_id: int = Field(index=True)
    from_status: str | None = None
    to_status: str
    reason: str
    thread_id: str | None = None
    actor: str | None = None
    """Who made the change: an API identity (``token:<name>``), ``cli:<OS user>`` or ``system:<worker>``."""
    created_at: datetime = Field(default_factory=utcnow)


class LLMCall(SQLModel, table=True):
    """One model call: who asked, which model, tokens, cost (USD), latency (ms), outcome."""

    id: int | None = Field(default=None, primary_key=True)
    role: str
    model: str
    thread_id: str | None = Field(default=None, index=True)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ok: bool = True
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    run_id: str | None = Field(default=None, index=True, max_length=64)
    """The run (``models.time_tables.Run``) the call was made in; None outside a run."""
    node: str | None = Field(default=None, max_length=512)
    """The node that made the call, with its subgraph path (``engineering/run_phase``)."""


class ToolCall(SQLModel, table=True):
    """One tool call of an agent, as the phase contract judged it: the tool audit log.

    ``args`` are redacted before they are stored (see ``services.audit.redact_args``): file contents and long
    strings never enter this table.
    """

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    thread_id: str | None = Field(default=None, index=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    role: str
    """The agent that called: ``architect``, ``developer``, ``tester``..."""
    phase: str
    """The contract's phase at the time of the call (``PLAN``, ``TDD``, ``IMPL``, ``REVIEW``...)."""
    tool: str
    args: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    outcome: str
    """``allowed``, ``refused`` (the contract said no), ``warned`` (allowed, with a note) or ``failed`` (it ran and
    raised)."""
    reason: str | None = None
    duration_ms: float = 0.0


class Budget(SQLModel, table=True):
    """What one project's runs may spend (``limit_*``) and have spent (``spent_*``): tokens, USD, model calls, seconds.

    ``spent_*`` only ever grow through one atomic ``UPDATE ... SET spent_x = spent_x + :x`` (see
    ``services.budgets.charge``), so concurrent writers never lose each other's charges. Counts are 64-bit: a
    project's tokens over its lifetime may pass PostgreSQL's 32-bit ``integer``.
    """

    project_id: int = Field(primary_key=True, foreign_key="project.id", sa_column_kwargs={"autoincrement": False})
    limit_tokens: int = Field(sa_type=BigInteger)
    limit_cost_usd: float
    limit_calls: int = Field(sa_type=BigInteger)
    limit_seconds: float
    spent_tokens: int = Field(default=0, sa_type=BigInteger)
    spent_cost_usd: float = 0.0
    spent_calls: int = Field(default=0, sa_type=BigInteger)
    spent_seconds: float = 0.0
    updated_at: datetime = Field(default_factory=utcnow)


class ThreadRecord(SQLModel, table=True):
    """Our index of conversation threads (LangGraph has no cross-thread listing)."""

    __tablename__ = "thread"

    id: str = Field(primary_key=True)
    title: str = ""
    owner: str | None = Field(default=None, index=True)
    """The identity that created the thread; operators see and use only their own (None: made before owners)."""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)
    pending: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    """The thread's pending interrupts ``[{"id", "payload"}]`` as its last run left them, written when a run ends
    (listings read this, not the checkpoints); None: not indexed yet (a thread from before the index)."""
    stopped_mid_run: bool = False
    """A run began and has not ended (a crash, a kill, a failed node, a drain; or it is still going)."""
    run_base_checkpoint: str | None = Field(default=None, max_length=64)
    """The checkpoint id the run in progress (or the last run) started from: a ``rollback`` double text returns
    the thread there."""
    notice: str | None = None
    """What happened on the thread while nobody watched (a deadline's default answer): said on the next turn, then
    cleared."""
    model: str | None = Field(default=None, max_length=200)
    """The model the thread last ran with, so a resume after a crash uses the same one."""
    archived_at: datetime | None = None
    """When the thread was archived (``DELETE /threads/{id}``): listings leave it out; its checkpoints stay."""
    run_abandoned_at: datetime | None = None
    """When its stopped run was cancelled (``thread cancel``): that run is never continued; the next run clears it."""


class ApiToken(SQLModel, table=True):
    """An API key's identity: its name, role and the SHA-256 of the key (never the key itself).

    See :mod:`services.identities` for why a plain SHA-256 is the right hash for a random 256-bit key.
    """

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    role: AccessRole = Field(sa_column=_enum(AccessRole))
    key_hash: str = Field(unique=True, max_length=64)
    """Hex SHA-256 of the whole key."""
    hint: str = Field(max_length=16)
    """The key's prefix and first characters (``orch_AbC``), to tell keys apart in a listing."""
    created_by: str
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class Incident(SQLModel, table=True):
    """Something that went wrong in reality (a repository gone, a server down), until reality agrees again.

    At most one open incident per ``(kind, subject_type, subject_id)``: re-detecting the same problem updates it.
    ``surfaced_at`` is set once the PO has told the person about it.
    """

    __table_args__ = (
        Index(
            "uq_incident_open",
            "kind",
            "subject_type",
            "subject_id",
            unique=True,
            sqlite_where=text("resolved_at IS NULL"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)
    """``repo_missing``, ``repo_transferred``, ``repo_inaccessible``, ``github_unreachable``, ``mass_missing``,
    ``server_down``, ``provision_failed``, ``service_unhealthy``."""
    severity: str
    """``critical``, ``warning`` or ``info``."""
    subject_type: str
    subject_id: int
    message: str
    opened_at: datetime = Field(default_factory=utcnow)
    resolved_at: datetime | None = None
    surfaced_at: datetime | None = None


class SyncCursor(SQLModel, table=True):
    """Per-request state of the sync workers: the ETag last seen for a URL, and when the worker may call again."""

    key: str = Field(primary_key=True)
    """A URL (with query) or a worker name."""
    etag: str | None = None
    cached: Any = Field(default=None, sa_column=Column(JSON))
    """What the last 200 answer carried that a later 304 stands for (e.g. the repo ids of a listing page)."""
    paused_until: datetime | None = None
    consecutive_failures: int = 0
    updated_at: datetime = Field(default_factory=utcnow)
