"""Prove which process serves a TCP port: the deployed service, or a stranger.

Usage: python3 port_owner.py [--direct] [--wait SECONDS] [--health PATH] PORT PID_FILE

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

The deploy's whole check of a release in one run (one interpreter on the target instead of one per step):
``--wait SECONDS`` first waits up to SECONDS for 127.0.0.1:PORT to accept a connection, and ``--health PATH`` then
asks http://127.0.0.1:PORT/PATH until it answers 200 (a try every second, 2 s each, for about SECONDS / 3 tries, as
the playbook's uri retries did). A failure exits 1 with one line naming the step that failed ("Wait for the service
port: ...", the owner's verdict, or "Check the health URL: ..."); 2 from the owner check lets the health URL decide.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request

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


def verdict(port: int, pid_file: str, direct: bool = False) -> tuple[int, str]:
    """``(code, line)`` for the service of ``pid_file`` on ``port`` (see the module docstring)."""
    service = read_int(pid_file)
    run_dir = os.path.dirname(pid_file)
    proxy = None if direct else read_int(os.path.join(run_dir, "proxy.pid"))
    if proxy is None or not alive(proxy):
        return owned_by(port, service, "deployed service")
    code, line = owned_by(port, proxy, "deploy switch")
    if code == 1:
        return code, line
    upstream = read_int(os.path.join(run_dir, "upstream"))
    if upstream is None:
        return 1, f"the deploy switch on port {port} names no release to forward to"
    inner, inner_line = owned_by(upstream, service, "deployed service")
    return (1 if inner == 1 else max(code, inner)), f"{line}, forwarding to {inner_line}"


def wait_listening(port: int, wait_s: float) -> bool:
    """Whether 127.0.0.1:``port`` accepts a connection within ``wait_s`` seconds (tried every 0.2 s)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def health_answer(port: int, path: str, wait_s: float) -> str | None:
    """None when http://127.0.0.1:``port````path`` answers 200 within its tries, else what the last try got."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy from the environment
    url = f"http://127.0.0.1:{port}{path}"
    last = ""
    for attempt in range(max(int(wait_s) // 3, 1) + 1):
        if attempt:
            time.sleep(1)
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return None
                last = f"Status code was {response.status} and not [200] ({url})"
        except urllib.error.HTTPError as exc:
            last = f"Status code was {exc.code} and not [200]: {exc.reason} ({url})"
        except (OSError, http.client.HTTPException) as exc:
            last = f"Request failed: {exc} ({url})"
    return last


def main(port: int, pid_file: str, direct: bool = False, wait_s: float | None = None, health: str = "") -> int:
    """Print the verdict (and, with ``wait_s`` and ``health``, the release check's) and return the exit code."""
    if wait_s is not None and not wait_listening(port, wait_s):
        print(f"Wait for the service port: Timeout when waiting for 127.0.0.1:{port}")
        return 1
    code, line = verdict(port, pid_file, direct)
    print(line)
    if code == 1 or not health:
        return code
    problem = health_answer(port, health, wait_s or 0)
    if problem is not None:
        print(f"Check the health URL: {problem}")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Prove which process serves a TCP port (see the docstring).")
    parser.add_argument("--direct", action="store_true", help="check PORT against PID_FILE alone, not the switch")
    parser.add_argument("--wait", type=float, default=None, help="seconds to wait for PORT to accept connections")
    parser.add_argument("--health", default="", help="a path that must answer 200 on PORT")
    parser.add_argument("port", type=int)
    parser.add_argument("pid_file")
    args = parser.parse_args()
    sys.exit(main(args.port, args.pid_file, args.direct, args.wait, args.health))
