"""Prove which process serves a TCP port: the deployed service, or a stranger.

Usage: python3 port_owner.py [--direct] PORT PID_FILE

The service was started with ``setsid``, so its pid is the id of a session holding every process it starts. The
LISTEN sockets on PORT are read from /proc/net/tcp and /proc/net/tcp6 (their inodes), and the process holding one
of them is found through /proc/<pid>/fd (a ``socket:[inode]`` link); its session (``os.getsid``) says whose it is.

Blue/green releases (deploy.yml's ``blue_green`` strategy) sit behind the project's switch (files/switch_proxy.py):
when a live ``proxy.pid`` lies beside PID_FILE, the proof is a chain of two: PORT is held by the switch's session,
and the port the switch forwards to (the ``upstream`` file beside it) is held by the service's session. ``--direct``
checks PORT against PID_FILE alone (a release being started on its own port, before it takes any traffic).

Prints one line and exits 0 when the service's session serves PORT (itself, or through the switch); 1 when another
process does, nothing does, or the service is not running; 2 when it cannot tell (no permission to read the other
processes' fds) while the service itself is alive. Standard library only: it runs on the target with its system
python3. Linux only (procfs), like the services it checks.
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


def read_int(path: str) -> int | None:
    """The integer a small file holds (a pid, a port), or None when it is missing or holds something else."""
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def owned_by(port: int, session: int | None, what: str) -> tuple[int, str]:
    """``(code, line)``: whether the process listening on ``port`` is in ``session`` (``what`` names it in words)."""
    inodes = listening_inodes(port)
    if not inodes:
        return 1, f"nothing listens on port {port}"
    pid, denied = holder(inodes)
    if pid is None:
        if denied and session is not None and alive(session):
            why = f"cannot see which process listens on port {port} (no permission)"
            return 2, f"{why}; the {what} (pid {session}) runs"
        return 1, f"port {port} is held by a process this user cannot see; the {what} is not running"
    try:
        held_by = os.getsid(pid)
    except OSError:
        held_by = None
    if session is not None and held_by == session:
        return 0, f"port {port} is served by the {what} (pid {pid}, session {session})"
    who = "not running" if session is None or not alive(session) else f"pid {session}, running"
    return 1, f"port {port} is held by another process: pid {pid} ({command_of(pid)}); the {what} is {who}"


def main(port: int, pid_file: str, direct: bool = False) -> int:
    """Print the verdict and return the exit code (see the module docstring)."""
    service = read_int(pid_file)
    run_dir = os.path.dirname(pid_file)
    proxy = None if direct else read_int(os.path.join(run_dir, "proxy.pid"))
    if proxy is None or not alive(proxy):
        code, line = owned_by(port, service, "deployed service")
        print(line)
        return code
    code, line = owned_by(port, proxy, "deploy switch")
    if code == 1:
        print(line)
        return code
    upstream = read_int(os.path.join(run_dir, "upstream"))
    if upstream is None:
        print(f"the deploy switch on port {port} names no release to forward to")
        return 1
    inner, inner_line = owned_by(upstream, service, "deployed service")
    print(f"{line}, forwarding to {inner_line}")
    return 1 if inner == 1 else max(code, inner)


if __name__ == "__main__":
    args = sys.argv[1:]
    direct = args[:1] == ["--direct"]
    args = args[1:] if direct else args
    if len(args) != 2 or not args[0].isdigit():
        print("usage: port_owner.py [--direct] PORT PID_FILE", file=sys.stderr)
        sys.exit(64)
    sys.exit(main(int(args[0]), args[1], direct))
