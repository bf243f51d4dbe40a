"""Which process serves a port: the deployed service or a stranger (``playbooks/files/port_owner.py``).

The deploy runs the script on the target through Ansible; the health checker runs the same file here (local servers)
or on the host over SSH, so both tell a service that answers from one that something else answers for. Behind the
blue/green deploy switch (``playbooks/files/switch_proxy.py``) the proof is a chain: the switch holds the port, and
the port it forwards to is held by the service.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from dataclasses import dataclass

from infra.ansible import PLAYBOOK_DIR

PORT_OWNER = PLAYBOOK_DIR / "files" / "port_owner.py"


@dataclass(frozen=True)
class PortOwner:
    """The script's verdict on one port.

    ``code`` 0: the service listens; 1: another process, nothing, or the service is not running; 2: cannot tell
    while the service runs. ``text`` says which in words (a stranger's pid and command).
    """

    code: int
    text: str

    @property
    def stranger(self) -> bool:
        """Whether the port is not (provably) the service's."""
        return self.code == 1


def port_owner_command(python: str, port: int, pid_file: str) -> str:
    """The shell command that runs the script on a remote host with its ``python`` (the script travels inline)."""
    return f"{shlex.quote(python)} -c {shlex.quote(PORT_OWNER.read_text())} {int(port)} {shlex.quote(pid_file)}"


async def port_owner_here(port: int, pid_file: str, timeout_s: float = 10.0) -> PortOwner:
    """Run the script on this machine (a child process, so a slow /proc walk never holds the event loop).

    Raises:
        TimeoutError: it did not answer within ``timeout_s`` seconds (it is killed).
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PORT_OWNER), str(int(port)), pid_file, stdout=asyncio.subprocess.PIPE
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return PortOwner(proc.returncode if proc.returncode in (0, 1, 2) else 1, out.decode(errors="replace").strip())
