"""Servers: registering one, checking one, provisioning one; called by the CLI, the API, the sync and recovery.

A new server starts ``discovered`` (server_sync checks it over SSH and moves it to ``ready``) or, asked to be
provisioned, ``provisioning`` (the sync's provisioner_trigger runs ``playbooks/provision.yml`` on it first).
A check reads uptime, load, free disk and memory (``/proc`` here for connection ``local``, else one command over
SSH); provisioning runs the playbook and records ``ready``, or ``error`` with a ``provision_failed`` incident.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlmodel import select

from core.breakers import Breakers
from core.db import Database
from core.settings import Settings
from infra.ansible import PlaybookResult
from infra.ssh import describe_error, ssh_run
from infra.venvs import uv_binary
from models.enums import ServerStatus
from models.tables import Event, Server, utcnow
from models.transitions import transition_server
from services.deploys import release_root, run_on_server
from services.incidents import open_incident, resolve_incident

if TYPE_CHECKING:
    import asyncssh

PROVISION_INCIDENT = "provision_failed"

HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")


class ServerExists(ValueError):
    """A server of that name is already registered; nothing was written."""


class ServerCreate(BaseModel):
    """A server to register: where it is, how Ansible and the sync reach it, and which ports it lends."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=NAME_RE.pattern,
        description="inventory name: 1-63 lower-case letters, digits, dots and hyphens, starting with a letter or "
        "digit, e.g. web-1",
    )
    address: str = Field(
        min_length=1,
        max_length=253,
        description="an IP address (v4 or v6) or a DNS host name (labels of letters, digits and hyphens)",
    )
    ssh_port: int = Field(default=22, ge=1, le=65535)
    ssh_user: str = Field(default="root", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    connection: Literal["ssh", "local"] = "ssh"
    port_range_start: int = Field(default=8100, ge=1, le=65535)
    port_range_end: int = Field(default=8199, ge=1, le=65535)
    provision: bool = False
    """Run the provisioning playbook before the server takes projects."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("use 1-63 lower-case letters, digits, dots and hyphens, starting with a letter or digit")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not HOSTNAME_RE.fullmatch(value):
                raise ValueError(f"{value!r} is neither an IP address nor a host name") from None
        return value

    @model_validator(mode="after")
    def _ports(self) -> ServerCreate:
        if self.port_range_start > self.port_range_end:
            raise ValueError(f"port range {self.port_range_start}-{self.port_range_end} is empty")
        return self


async def add_server(db: Database, spec: ServerCreate, *, actor: str, thread_id: str | None = None) -> Server:
    """Register ``spec`` as a ``discovered`` (or ``provisioning``) server, with its first Event naming ``actor``.

    Raises:
        ServerExists: a server of that name exists.
    """
    status = ServerStatus.provisioning if spec.provision else ServerStatus.discovered
    async with db.session() as s:
        if (await s.exec(select(Server).where(Server.name == spec.name))).first() is not None:
            raise ServerExists(f"a server named {spec.name!r} is already registered")
        server = Server(**spec.model_dump(exclude={"provision"}), status=status)
        s.add(server)
        await s.flush()
        assert server.id is not None
        why = "registered; provisioning next" if spec.provision else "registered; the next server_sync checks it"
        s.add(
            Event(
                subject_type="server",
                subject_id=server.id,
                to_status=status.value,
                reason=why,
                thread_id=thread_id,
                actor=actor,
            )
        )
    return server


CHECK_COMMAND = "cat /proc/uptime /proc/loadavg; df -Pk /; grep MemAvailable /proc/meminfo"
"""The one command a check runs on an SSH host; :func:`parse_check_output` reads its output."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one server check.

    Attributes:
        ok: whether the check ran and its output made sense.
        facts: on success ``uptime_s``, ``load`` ([1, 5, 15] min), ``disk_free_bytes`` (of ``/``),
            ``mem_available_bytes`` and ``checked_at`` (ISO 8601, UTC); empty on failure.
        error: a short description of the failure, None on success.
        duration_s: wall time of the check.
    """

    ok: bool
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0


def parse_check_output(text: str) -> dict[str, Any]:
    """Read the output of :data:`CHECK_COMMAND` into facts (without ``checked_at``).

    Raises:
        ValueError: the output is not what the command prints on Linux.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        uptime_s = float(lines[0].split()[0])
        load = [float(x) for x in lines[1].split()[:3]]
        df_header = next(i for i, line in enumerate(lines) if line.startswith("Filesystem"))
        disk_free_kb = int(lines[df_header + 1].split()[-3])
        mem_line = next(line for line in lines if line.startswith("MemAvailable:"))
        mem_kb = int(mem_line.split()[1])
    except (IndexError, ValueError, StopIteration) as exc:
        raise ValueError(f"unexpected check output: {text[:120]!r}") from exc
    if len(load) != 3:
        raise ValueError(f"unexpected load line: {lines[1]!r}")
    return {
        "uptime_s": uptime_s,
        "load": load,
        "disk_free_bytes": disk_free_kb * 1024,
        "mem_available_bytes": mem_kb * 1024,
    }


def local_facts() -> dict[str, Any]:
    """The same facts as :data:`CHECK_COMMAND` gives, read on this machine (``/proc`` and ``statvfs``)."""
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    mem_line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable:"))
    st = os.statvfs("/")
    return {
        "uptime_s": uptime_s,
        "load": load,
        "disk_free_bytes": st.f_bavail * st.f_frsize,
        "mem_available_bytes": int(mem_line.split()[1]) * 1024,
    }


def overall_timeout(settings: Settings) -> float:
    """The limit on one whole check: connecting, then the command, each bounded by ``ssh_timeout_s``."""
    return 2 * settings.ssh_timeout_s + 1.0


async def check_server(
    settings: Settings,
    server: Server,
    *,
    options: asyncssh.SSHClientConnectionOptions | None = None,
    breakers: Breakers | None = None,
) -> CheckResult:
    """Check one server; every failure is a result (ok=False, short error), never an exception.

    Args:
        settings: SSH settings (see :func:`client_options`).
        server: the server; connection ``local`` is checked here without SSH, anything else over SSH with
            :data:`CHECK_COMMAND`.
        options: pre-built :func:`client_options`, shared by the checks of a pass; built here if None.
        breakers: the circuit breakers (:mod:`core.breakers`) the SSH call goes through, under the host's
            ``ssh:<address>:<port>``; while it is open the check fails at once with "SSH host A:P unavailable
            since ..., next try at ..." and no connection is tried. Every production caller passes the shared,
            database-backed ones; None (tests of the check alone) guards nothing.

    Returns:
        The :class:`CheckResult`, within :func:`overall_timeout` seconds.
    """
    t0 = time.monotonic()
    limit = overall_timeout(settings)
    deadline = asyncio.timeout(limit)
    try:
        async with deadline:
            if server.connection == "local":
                facts = await asyncio.to_thread(local_facts)
            else:
                done = await ssh_run(settings, server, CHECK_COMMAND, options=options, breakers=breakers)
                facts = parse_check_output(str(done.stdout or ""))
    except Exception as exc:  # noqa: BLE001 - the contract: a failed check is a result
        if deadline.expired():
            error = f"check took longer than {limit:g}s"
        else:
            error = describe_error(exc, settings.ssh_timeout_s)
        return CheckResult(ok=False, error=error, duration_s=time.monotonic() - t0)
    facts["checked_at"] = utcnow().isoformat()
    return CheckResult(ok=True, facts=facts, duration_s=time.monotonic() - t0)


async def provision_server(settings: Settings, db: Database, server: Server, *, actor: str) -> PlaybookResult:
    """Run ``playbooks/provision.yml`` on one server in ``provisioning`` and record the outcome, naming ``actor``.

    Success: ``ready`` and the ``provision_failed`` incident resolved; failure: ``error`` and that incident opened
    (or refreshed) with Ansible's summary. A failed playbook is the server's state, not an exception.

    Returns:
        The playbook's result (``ok``, ``summary``).

    Raises:
        IllegalTransition / StaleStatus: the server is no longer in ``provisioning``.
    """
    assert server.id is not None
    settings.ensure_data_dir()
    extravars: dict[str, object] = {
        "release_root": release_root(settings, server),
        "service_user": settings.service_user,
        "uv_src": uv_binary(),
        "uv_arch": platform.machine(),
    }
    result = await run_on_server(settings, server, "provision.yml", extravars)
    async with db.session() as s:
        if result.ok:
            await transition_server(
                s, server.id, ServerStatus.ready, reason=f"provisioned: {result.summary}", actor=actor
            )
            await resolve_incident(s, kind=PROVISION_INCIDENT, subject_type="server", subject_id=server.id)
        else:
            await transition_server(
                s, server.id, ServerStatus.error, reason=f"provisioning failed: {result.summary}"[:2000], actor=actor
            )
            await open_incident(
                s,
                kind=PROVISION_INCIDENT,
                severity="critical",
                subject_type="server",
                subject_id=server.id,
                message=f"provisioning server {server.name} failed: {result.summary}",
            )
    return result
