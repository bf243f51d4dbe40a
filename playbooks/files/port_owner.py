"""Prove which process serves a TCP port: the deployed service, or a stranger.

Usage: python3 port_owner.py PORT PID_FILE

The service was started with ``setsid``, so its pid is the id of a session holding every process it starts. The
LISTEN sockets on PORT are read from /proc/net/tcp and /proc/net/tcp6 (their inodes), and the process holding one
of them is found through /proc/<pid>/fd (a ``socket:[inode]`` link); its session (``os.getsid``) says whose it is.

Prints one line and exits 0 when a process of the service's session listens on PORT; 1 when another process does,
nothing does, or the service is not running; 2 when it cannot tell (no permission to read the other processes'
fds) while the service itself is alive. Standard library only: it runs on the target with its system python3.
Linux only (procfs), like the services it checks.
"""

from __future__ import annotations

import os
import sys

LISTEN = "0A"


def listening_inodes(port: int) -> set[str]:
    """Inodes of the LISTEN sockets bound to ``port`` (IPv4 and IPv6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def holder(inodes: set[str]) -> tuple[int | None, bool]:
    """``(pid holding one of the sockets, whether some process's fds could not be read)``."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    denied = False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except PermissionError:
            denied = True
            continue
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                    return int(entry), denied
            except OSError:
                continue
    return None, denied


def command_of(pid: int) -> str:
    """The process's command line, shortened."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(port: int, pid_file: str) -> int:
    """Print the verdict and return the exit code (see the module docstring)."""
    try:
        with open(pid_file) as fh:
            service = int(fh.read().strip())
    except (OSError, ValueError):
        service = None
    inodes = listening_inodes(port)
    if not inodes:
        print(f"nothing listens on port {port}")
        return 1
    pid, denied = holder(inodes)
    if pid is None:
        if denied and service is not None and alive(service):
            print(f"cannot see which process listens on port {port} (no permission); the service (pid {service}) runs")
            return 2
        print(f"port {port} is held by a process this user cannot see; the service is not running")
        return 1
    try:
        session = os.getsid(pid)
    except OSError:
        session = None
    if service is not None and session == service:
        print(f"port {port} is served by the deployed service (pid {pid}, session {service})")
        return 0
    who = "not running" if service is None or not alive(service) else f"pid {service}, running"
    print(f"port {port} is held by another process: pid {pid} ({command_of(pid)}); the deployed service is {who}")
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        print("usage: port_owner.py PORT PID_FILE", file=sys.stderr)
        sys.exit(64)
    sys.exit(main(int(sys.argv[1]), sys.argv[2]))
