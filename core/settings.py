"""Process settings, read once from the environment (prefix ``ORCH_``) by pydantic-settings.

Nodes never read ``os.environ``: they get a :class:`Settings` through the run's ``Context``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Role = Literal["po", "architect", "developer", "tester"]
ROLES: tuple[Role, ...] = ("po", "architect", "developer", "tester")


class Settings(BaseSettings):
    """Every knob of the orchestrator, with defaults that work on a fresh machine.

    Attributes are documented inline; environment names are ``ORCH_<FIELD>`` (upper case), except
    ``DATABASE_URL`` which is also accepted without the prefix.
    """

    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore")

    data_dir: Path = Path(".orchestrator")
    """Where the database, checkpoints, the local forge, workspaces and releases live."""

    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "ORCH_DATABASE_URL"))
    """SQLAlchemy async URL; default: ``sqlite+aiosqlite:///<data_dir>/orchestrator.db``."""

    model: str = "ollama_chat/qwen2.5-coder:7b"
    """The litellm model used by every role without its own setting."""
    model_po: str | None = None
    model_architect: str | None = None
    model_developer: str | None = None
    model_tester: str | None = None
    api_base: str | None = None
    """Base URL for the model provider (an OpenAI-compatible server, a remote ollama)."""
    api_key: SecretStr | None = None
    replay_dir: Path | None = None
    """Extra folder of recorded scenarios for ``replay/<name>`` models (searched before the built-in ones)."""
    llm_timeout_s: float = 120.0
    """Seconds one model request may take (each attempt); a timeout is never retried (a slow model stays slow)."""
    llm_timeout_s_po: float | None = None
    """The PO's own ``llm_timeout_s`` (likewise ``_architect``, ``_developer``, ``_tester``); None: the default."""
    llm_timeout_s_architect: float | None = None
    llm_timeout_s_developer: float | None = None
    llm_timeout_s_tester: float | None = None
    llm_retries: int = 2
    """Extra attempts of a model request refused with 429, a 5xx or no connection (each attempt its own ``llmcall``
    row); never for a timeout, an auth error, a 404 or a bad request, which a retry cannot fix."""
    llm_retry_wait_s: float = 0.5
    """Base of the backoff between attempts, in seconds: about ``base * 2**n`` plus up to ``base`` of jitter, at
    most 20 s (a provider's ``Retry-After`` is waited out if longer)."""
    llm_retry_after_max_s: float = 30.0
    """Longest ``Retry-After`` (seconds) waited out; a provider asking for longer fails the call at once, saying how
    long it asked to wait."""
    llm_max_tokens: int | None = 8192
    """Longest answer asked of a model (``max_tokens``); an answer cut off there is re-asked in smaller pieces."""
    llm_max_tokens_po: int | None = None
    """The PO's own ``llm_max_tokens`` (likewise ``_architect``, ``_developer``, ``_tester``); None: the default."""
    llm_max_tokens_architect: int | None = None
    llm_max_tokens_developer: int | None = None
    llm_max_tokens_tester: int | None = None
    llm_context_tokens: int | None = 32768
    """Context window asked of Ollama models (``num_ctx``; Ollama's own default of 2048 cuts long prompts)."""
    llm_context_tokens_po: int | None = None
    """The PO's own ``llm_context_tokens`` (likewise ``_architect``, ``_developer``, ``_tester``); None: the
    default. The Developer's prompt, holding the files it reads, is the one that grows."""
    llm_context_tokens_architect: int | None = None
    llm_context_tokens_developer: int | None = None
    llm_context_tokens_tester: int | None = None
    po_max_tool_rounds: int = 6
    """Tool rounds the PO may take in one turn before the turn ends with a message saying so."""

    secrets_key: SecretStr | None = None
    """Fernet key(s) for project secrets, comma-separated: the first encrypts, all decrypt (rotation). Unset: a key
    file ``<data_dir>/secrets.key`` created 0600 on first use."""

    github_token: SecretStr | None = None
    github_org: str | None = None
    github_base_url: str = "https://api.github.com"
    github_retries: int = 3
    """Retries of a 5xx answer from GitHub (with backoff), then a clear ForgeUnavailable."""

    github_sync_interval_s: float = 300.0
    """github_sync runs every 5 minutes, with up to ``sync_jitter_s`` of random delay."""
    server_sync_interval_s: float = 60.0
    health_check_interval_s: float = 60.0
    provisioner_interval_s: float = 60.0
    sync_jitter_s: float = 30.0
    sync_failure_threshold: int = 3
    """Consecutive transient failures (GitHub unreachable, a server check failing) before an incident."""
    sync_max_missing_per_pass: int = 10
    """Most projects github_sync marks ``missing`` in one pass; more answering 404 opens ``mass_missing`` instead."""
    ssh_key_path: Path | None = None
    """Private key for server checks (default: the agent and ~/.ssh)."""
    ssh_known_hosts: Path | None = None
    """known_hosts file checked for every server (default ~/.ssh/known_hosts); unknown hosts are refused."""
    ssh_timeout_s: float = 10.0
    ssh_concurrency: int = 50
    """Server checks running at once."""
    breaker_failures: int = Field(default=5, ge=1)
    """Failures in a row (no connection, timeout, 5xx, 429) that open a circuit breaker (GitHub, an SSH host, the model
    provider); see :mod:`core.breakers`."""
    breaker_cooldown_s: float = Field(default=60.0, gt=0)
    """Seconds an open breaker refuses calls at once before it lets one trial call through."""

    register_localhost: bool = True
    """Register this machine as a ready server (Ansible connection ``local``) on first start."""
    port_range_start: int = 8100
    port_range_end: int = 8199

    contract_path: Path | None = None
    """The engineering contract (YAML); default: the built-in ``core/contracts/engineering.yaml``. Validated at
    start-up: a broken contract stops the process with the file, the line and the problem."""
    contract_mode: Literal["strict", "permissive"] | None = None
    """Overrides the contract's ``mode``: strict refuses a disallowed tool call or a failed gate, permissive logs it
    as a warning and goes on."""
    signing_key: SecretStr | None = None
    """HMAC key that signs verifications (at least 32 bytes). Unset: a key file ``<data_dir>/signing.key`` created
    0600 on first use."""
    verification_ttl_s: int = 7 * 24 * 3600
    """How long a signed verification may be deployed after it was issued."""
    budget_tokens: int = 400_000
    """Default budget of one project run across PO and Engineering: prompt + completion tokens."""
    budget_cost_usd: float = 5.0
    """... model cost in USD (0 for models without a known price, such as local ones)."""
    budget_calls: int = 80
    """... model calls."""
    budget_seconds: float = 3600.0
    """... working seconds: model latency plus test runs (time waiting for a person is not counted)."""
    test_command: str = "{python} -m pytest -q -p no:cacheprovider"
    """How the Tester runs a project's tests, in its working copy; ``{python}`` is this interpreter."""
    test_timeout_s: float = 120.0
    """Wall-clock limit on one test run; the sandbox then kills every process of it."""

    sandbox: Literal["bwrap", "none"] = "bwrap"
    """How generated code runs: in a bubblewrap sandbox (no network, read-only system, only a throwaway copy of the
    working copy writable, nothing of the orchestrator visible, resource limits), or ``none``: unconfined, which
    every run then reports loudly. Missing bubblewrap is an error, never a silent fallback."""
    sandbox_dir: Path = Path("/var/tmp/orchestrator-sandbox")
    """Project venvs (``venvs/``) and throwaway working copies (``runs/``): outside the data dir, which the sandbox's
    user cannot read. Must be owned by this user and not writable by others."""
    sandbox_uid: int = 65534
    """The unprivileged user generated code runs as (default ``nobody``)."""
    sandbox_python: str = "/usr/bin/python3"
    """The system interpreter project venvs are built on (outside any home directory, readable by the sandbox)."""
    sandbox_cpu_s: int = 300
    sandbox_memory_mb: int = 2048
    """Address-space limit per process."""
    sandbox_processes: int = 256
    sandbox_file_size_mb: int = 1024
    sandbox_open_files: int = 1024
    sandbox_find_links: Path | None = None
    """A folder of wheels project requirements may come from (besides the package index, unless offline)."""
    sandbox_offline: bool = False
    """Install project requirements from ``sandbox_find_links`` only, never a package index."""
    install_timeout_s: float = 300.0
    """Limit on building one project venv."""

    release_root: Path = Path("/var/lib/orchestrator/releases")
    """Where this machine keeps deployed releases (remote hosts use /srv/orchestrator): outside the data dir, which
    a service's user cannot read. Every folder above it must be open to others for traversal."""
    service_user: str = "orch-svc"
    """The unprivileged user deployed services run as (created by provision.yml and by the deploy if missing). ""
    runs them as the deploying user instead, knowingly."""
    deploy_timeout_s: float = 300.0
    releases_kept: int = Field(default=5, ge=2)
    """Release folders kept per project on its server after a good deploy (the newest ones; the live one and the one
    before it always stay, so a rollback has somewhere to go)."""
    health_timeout_s: float = 30.0
    deploy_strategy: Literal["blue_green", "recreate"] = "blue_green"
    """How a new release takes over its project's port. ``blue_green``: it starts beside the live one on a port of
    its own and takes the traffic through the project's deploy switch only once proven there (no gap, and a failing
    release never answers a request). ``recreate``: the live release stops, the new one starts on the project's
    port (a gap of its start-up time), for services that cannot run twice at once or ignore PORT. README "How a
    new release takes the traffic"."""
    deploy_drain_s: float = Field(default=2.0, ge=0, le=300)
    """Seconds the previous release keeps its open connections after a blue/green switch, before it is stopped."""

    api_allowed_hosts: Annotated[list[str], NoDecode] = ["127.0.0.1", "localhost", "::1"]
    """Host header values the API answers (comma-separated in the environment; ``*`` allows any): a request naming
    another host is refused with 400, which stops DNS rebinding. Add the public name when serving beyond loopback."""
    api_cors_origins: Annotated[list[str], NoDecode] = []
    """Origins a browser may call the API from (comma-separated); none by default, so no CORS headers are sent."""
    api_max_body_bytes: int = 1024 * 1024
    """Largest request body accepted (413 beyond it)."""
    api_max_runs_per_identity: int = 2
    """Runs (messages, resumes, continues) one identity may have going at once (429 with Retry-After beyond)."""
    api_header_timeout_s: float = 10.0
    """Time a client has to send a request's headers before the connection is closed (slow clients)."""
    api_body_timeout_s: float = 30.0
    """Longest wait for the next piece of a request body (408 after it)."""
    approval_separate_approver: bool = False
    """Whoever asked for a project or its latest change cannot approve its deploy (GitHub's "prevent self-review")."""
    deadline_deploy_approval_s: float = Field(default=86400.0, ge=0)
    """Seconds a deploy approval waits for an answer; then the sync's ``deadlines`` worker rejects it as
    ``system:deadline`` ("no answer within 24 h"). 0: no deadline."""
    deadline_guidance_s: float = Field(default=86400.0, ge=0)
    """Seconds a guidance request (a phase stuck at its round limit) waits; then the work is stopped. 0: none."""
    deadline_budget_s: float = Field(default=86400.0, ge=0)
    """Seconds a spent-budget question waits; then the work is stopped (the budget is not extended). 0: none."""
    deadline_resources_s: float = Field(default=0.0, ge=0)
    """Seconds a wait for a server lasts before the resource search is retried by itself; 0 (the default): no
    deadline, the project waits until a server is ready (the sync's provisioner_trigger retries then)."""
    deadline_reminders: Annotated[list[int], NoDecode] = [3600, 600]
    """Reminder points, in seconds before a deadline, comma-separated (``3600,600``): at each, one
    ``approval.reminded`` webhook event is sent. Empty: no reminders."""
    deadline_interval_s: float = Field(default=30.0, gt=0, le=3600)
    """How often the sync's ``deadlines`` worker runs (seconds): a reminder or a default answer is at most this
    late."""
    cron_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    """How often the sync service looks for due user crons (seconds): a fire is at most this late, and a cron
    added, paused or deleted takes effect within it."""
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    """Attempts of one outgoing webhook delivery before it is marked failed with its last error."""
    webhook_retry_wait_s: float = Field(default=1.0, ge=0, le=60)
    """Base of the backoff between delivery attempts, in seconds (about ``base * 2**n``, at most 60 s)."""
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    """Seconds one delivery attempt may take (connect and answer)."""
    webhook_send_interval_s: float = Field(default=10.0, gt=0, le=3600)
    """How often the sync service's webhook_sender sends the deliveries other processes left pending (seconds)."""
    webhook_sending_timeout_s: float = Field(default=300.0, gt=0)
    """Seconds a ``sending`` delivery's sender may go without renewing its lease (it renews before each attempt)
    before webhook_sender takes it over and sends it again, same delivery id; keep it above one attempt plus its
    backoff (``webhook_timeout_s`` + 60)."""
    event_retention_days: int = Field(default=30, ge=1)
    """Days the domain event journal (``GET /events``) keeps a row; the sync service prunes older ones."""
    github_webhook_secret: SecretStr | None = None
    """The secret of the GitHub webhook that POSTs to ``/webhooks/github``; unset: that route answers 401."""

    @field_validator("api_allowed_hosts", "api_cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("deadline_reminders", mode="before")
    @classmethod
    def _reminder_points(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("deadline_reminders")
    @classmethod
    def _positive_points(cls, value: list[int]) -> list[int]:
        if any(point <= 0 for point in value):
            raise ValueError("ORCH_DEADLINE_REMINDERS: give seconds before the deadline, each > 0 (e.g. 3600,600)")
        return sorted(set(value), reverse=True)

    @model_validator(mode="after")
    def _sane_ranges(self) -> Settings:
        if not 1 <= self.port_range_start <= self.port_range_end <= 65535:
            raise ValueError(
                f"port range {self.port_range_start}-{self.port_range_end} is empty or invalid: set "
                "ORCH_PORT_RANGE_START <= ORCH_PORT_RANGE_END, both within 1-65535"
            )
        for name in ("llm_retries", "llm_retry_wait_s", "llm_retry_after_max_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"ORCH_{name.upper()} must be >= 0")
        for name in ("llm_timeout_s", *(f"llm_timeout_s_{role}" for role in ROLES)):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"ORCH_{name.upper()} must be > 0 seconds")
        return self

    def model_for(self, role: Role) -> str:
        """Return the litellm model name for ``role``: its own setting, else ``model``."""
        own: str | None = getattr(self, f"model_{role}")
        return own or self.model

    def timeout_for(self, role: Role) -> float:
        """Return the seconds one model request of ``role`` may take: its own setting, else ``llm_timeout_s``."""
        own: float | None = getattr(self, f"llm_timeout_s_{role}")
        return own if own is not None else self.llm_timeout_s

    def max_tokens_for(self, role: Role) -> int | None:
        """Return ``role``'s longest answer in tokens: its own setting, else ``llm_max_tokens`` (None: not sent)."""
        own: int | None = getattr(self, f"llm_max_tokens_{role}")
        return own if own is not None else self.llm_max_tokens

    def context_tokens_for(self, role: Role) -> int | None:
        """Return ``role``'s Ollama context window: its own setting, else ``llm_context_tokens`` (None: not sent)."""
        own: int | None = getattr(self, f"llm_context_tokens_{role}")
        return own if own is not None else self.llm_context_tokens

    @property
    def db_url(self) -> str:
        """The database URL in force (explicit ``DATABASE_URL`` or the SQLite file in the data dir)."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'orchestrator.db').resolve()}"

    @property
    def checkpoint_path(self) -> Path:
        """The SQLite file holding LangGraph checkpoints."""
        return self.data_dir / "checkpoints.db"

    @property
    def forge_kind(self) -> Literal["github", "local"]:
        """``github`` when a token and an org are set, else the local forge."""
        return "github" if self.github_token and self.github_org else "local"

    def ensure_data_dir(self) -> Path:
        """Create the data dir if missing, 0700 (only its owner may enter it); return its resolved path.

        It holds the database, the checkpoints, the secrets key and the workspaces: nobody else's to read. A
        directory that already exists keeps its permissions (``--data-dir /tmp`` must not close /tmp to everyone):
        making an existing one private is its owner's choice. Folders created above it get the usual umask mode.

        Raises:
            NotADirectoryError: the path exists and is not a directory (a file, say).
        """
        try:
            self.data_dir.mkdir(parents=True, mode=0o700)
        except FileExistsError:
            if not self.data_dir.is_dir():
                raise NotADirectoryError(
                    f"data dir {self.data_dir} is not a directory; check --data-dir or ORCH_DATA_DIR"
                ) from None
        else:
            self.data_dir.chmod(0o700)  # mkdir's mode is masked by the umask
        return self.data_dir.resolve()
