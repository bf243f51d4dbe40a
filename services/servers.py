"""Registering a server: the way a machine enters the inventory, from the CLI or the API.

A new server starts ``discovered`` (server_sync checks it over SSH and moves it to ``ready``) or, asked to be
provisioned, ``provisioning`` (the sync's provisioner_trigger runs ``playbooks/provision.yml`` on it first).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from sqlmodel import select

from core.db import Database
from models.enums import ServerStatus
from models.tables import Event, Server

HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")


class ServerExists(ValueError):
    """A server of that name is already registered; nothing was written."""


class ServerCreate(BaseModel):
    """A server to register: where it is, how Ansible and the sync reach it, and which ports it lends."""

    name: str = Field(description="inventory name: lower-case letters, digits, dots and hyphens, e.g. web-1")
    address: str = Field(description="IP address or DNS name")
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


async def add_server(db: Database, spec: ServerCreate, *, thread_id: str | None = None) -> Server:
    """Register ``spec`` as a ``discovered`` (or ``provisioning``) server, with its first Event.

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
            Event(subject_type="server", subject_id=server.id, to_status=status.value, reason=why, thread_id=thread_id)
        )
    return server
