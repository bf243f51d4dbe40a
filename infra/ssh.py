"""SSH to managed servers over asyncssh: options, one command per connection, readable errors.

Connection options carry an explicit known-hosts policy; :func:`describe_error` turns a failure into a short text.

Key authentication only; a host not in the known_hosts file is refused, never trusted on first use (asyncssh
turns host key checking off for ``known_hosts=None``, so the file is always loaded and passed as an object).
See asyncssh's client docs: https://asyncssh.readthedocs.io/en/latest/api.html#specifying-known-hosts
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.breakers import Breakers, ServiceUnavailable
from core.settings import Settings
from models.tables import Server

if TYPE_CHECKING:
    import asyncssh  # imported where used: a process that never opens SSH never pays for it (~70 ms)

_MAX_ERROR = 300


class HostUnavailable(ConnectionError):
    """The host's circuit breaker is open: no connection was tried (``ssh:<address>:<port>``, core.breakers)."""


def known_hosts_path(settings: Settings) -> Path:
    """The known_hosts file in force: ``settings.ssh_known_hosts``, else ``~/.ssh/known_hosts``."""
    return settings.ssh_known_hosts or Path("~/.ssh/known_hosts").expanduser()


def client_options(settings: Settings) -> asyncssh.SSHClientConnectionOptions:
    """Connection options shared by every SSH check of a pass: keys, known hosts and timeout, read once.

    The known-hosts policy is explicit: the file is loaded here and passed as an object, so neither a missing
    argument nor an ``UserKnownHostsFile none`` in ``~/.ssh/config`` can turn host key checking off (asyncssh
    disables it for ``known_hosts=None``).

    Args:
        settings: supplies ``ssh_key_path`` (else asyncssh's default keys and agent), ``ssh_known_hosts`` and
            ``ssh_timeout_s`` (the limit on TCP connect + SSH handshake + authentication).

    Returns:
        Options to pass to ``asyncssh.connect(..., options=...)``.

    Raises:
        OSError: the known_hosts file or the key file cannot be read.
        ValueError: and asyncssh's key import errors, for a malformed key or known_hosts file.
    """
    import asyncssh

    path = known_hosts_path(settings)
    if not path.is_file():
        raise FileNotFoundError(f"known_hosts file {path} not found: every host would be refused")
    kwargs: dict[str, Any] = {
        "known_hosts": asyncssh.read_known_hosts(str(path)),
        "connect_timeout": settings.ssh_timeout_s,
    }
    if settings.ssh_key_path is not None:
        kwargs["client_keys"] = [asyncssh.read_private_key(str(settings.ssh_key_path))]
    return asyncssh.SSHClientConnectionOptions(**kwargs)


async def ssh_run(
    settings: Settings,
    server: Server,
    command: str,
    *,
    options: asyncssh.SSHClientConnectionOptions | None = None,
    check: bool = True,
    breakers: Breakers | None = None,
) -> asyncssh.SSHCompletedProcess:
    """Connect to ``server`` and run one command; the one SSH helper of server checks and health checks.

    Args:
        settings: SSH settings (see :func:`client_options`); ``ssh_timeout_s`` bounds the connection and, again,
            the command.
        server: supplies ``address``, ``ssh_port`` and ``ssh_user``.
        command: a shell command line.
        options: pre-built :func:`client_options` (a pass builds them once); built here if None.
        check: raise ``asyncssh.ProcessError`` on a non-zero exit status.
        breakers: runs the call under the host's breaker ``ssh:<address>:<port>`` (see :func:`host_unavailable`
            for what counts); None: no breaker.

    Returns:
        The completed process (``exit_status``, ``stdout``, ``stderr`` as str).

    Raises:
        OSError: refused or unreachable. TimeoutError: no handshake in time. asyncssh.PermissionDenied,
        asyncssh.HostKeyNotVerifiable, asyncssh.TimeoutError, asyncssh.ProcessError and other ``asyncssh.Error``.
        HostUnavailable: the host's breaker is open ("SSH host A:P unavailable since ..., next try at ...").
    """
    opts = options if options is not None else client_options(settings)
    if breakers is None:
        return await _run(server, command, opts, check, settings.ssh_timeout_s)
    where = f"{server.address}:{server.ssh_port}"
    async with breakers.guard(f"ssh:{where}", f"SSH host {where}", counts=host_unavailable, refuse=_refused):
        return await _run(server, command, opts, check, settings.ssh_timeout_s)


async def _run(
    server: Server, command: str, opts: asyncssh.SSHClientConnectionOptions, check: bool, timeout_s: float
) -> asyncssh.SSHCompletedProcess:
    import asyncssh

    async with asyncssh.connect(server.address, server.ssh_port, username=server.ssh_user, options=opts) as conn:
        return await conn.run(command, check=check, timeout=timeout_s)


def host_unavailable(exc: BaseException) -> bool:
    """Whether an SSH failure counts against the host's breaker: no connection, a timeout, a dropped session.

    Not counted: a refused key or host key, or a command that ran and failed (the host answered).
    """
    import asyncssh

    if isinstance(exc, asyncssh.PermissionDenied | asyncssh.HostKeyNotVerifiable):
        return False
    if isinstance(exc, TimeoutError | asyncssh.TimeoutError):
        return True
    if isinstance(exc, asyncssh.ProcessError):
        return False
    return isinstance(exc, OSError | asyncssh.DisconnectError)


def _refused(exc: ServiceUnavailable) -> HostUnavailable:
    return HostUnavailable(str(exc))


def describe_error(exc: BaseException, timeout_s: float) -> str:
    """A short, human text for a failed SSH or HTTP check (no traceback)."""
    import asyncssh

    if isinstance(exc, HostUnavailable):
        text = str(exc)
    elif isinstance(exc, asyncssh.TimeoutError):
        text = f"command timed out after {timeout_s:g}s"
    elif isinstance(exc, asyncssh.ProcessError):
        detail = (str(exc.stderr or "") or str(exc.stdout or "")).strip()
        text = f"command failed (exit {exc.exit_status}){': ' + detail if detail else ''}"
    elif isinstance(exc, TimeoutError):
        text = f"no SSH handshake within {timeout_s:g}s"
    elif isinstance(exc, asyncssh.PermissionDenied):
        text = "authentication failed (key refused)"
    elif isinstance(exc, asyncssh.HostKeyNotVerifiable):
        text = f"host key not verifiable (not in known_hosts or changed): {exc.reason}"
    elif isinstance(exc, ConnectionRefusedError):
        text = "connection refused"
    elif isinstance(exc, asyncssh.DisconnectError):
        text = f"disconnected: {exc.reason}"
    elif isinstance(exc, OSError):
        text = f"{type(exc).__name__}: {exc.strerror or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR else text[:_MAX_ERROR] + "..."
