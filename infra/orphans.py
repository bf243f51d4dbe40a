"""What a killed process leaves behind, found by the owner it names and removed once that owner is gone.

Two things outlive a ``kill -9`` of the process that made them:

* private folders (the deploy's secrets file, a git Authorization header), made in RAM under /dev/shm, else the
  system temp dir, by :func:`owned_mkdtemp`;
* the processes of a playbook run: ansible-runner starts ``ansible-playbook`` in a session of its own that ignores
  SIGHUP, and Ansible's workers call ``setsid()``, so neither the parent's death nor a kill of its process group
  reaches them.

Ownership: each of them names its owner, the process that made it, by pid, start time (field 22 of
``/proc/<pid>/stat``, clock ticks after boot) and pid namespace (the inode of ``/proc/<pid>/ns/pid``). A folder
carries it in its name (``<prefix><pid>-<start>-<ns>-<random>``), a playbook run in the environment variable
:data:`OWNER_ENV` (``<pid>-<start>-<ns>-<run id>``), which every process of the run inherits across ``fork``,
``exec`` and ``setsid`` (a process started with ``env -i``, like the deployed service and the deploy switch, drops
it and is not part of the run). The owner is gone when ``/proc/<pid>/stat`` is missing, shows a zombie, or shows
another start time (a reused pid). An owner of another pid namespace (a container sharing this /dev/shm, or seen
from the host) is not judged: its pids mean nothing here, so what it owns is left to its own starts. Nothing is
recorded anywhere else (no pid file, no database row, which a kill between the spawn and the write would leave
empty), so nothing can disagree with reality.

Why an inherited variable rather than a parent-death signal or a process group: ``PR_SET_PDEATHSIG`` reaches only
the direct child (``fork`` clears it, so Ansible's workers never have it), fires when the forking thread ends
(ansible-runner runs in a pool thread), and ansible-runner's pexpect spawn offers no hook to set it; every
``setsid()`` leaves the process group. A cgroup would hold them all but needs privileges a plain install lacks.

:func:`sweep_orphans` removes what gone owners left: every process start-up calls it (the CLI's entry point, before
any command), :func:`owned_mkdtemp` sweeps folders before making one, and infra/ansible.py ends orphaned runs
before each new run and a run's own leftovers after it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_ENV = "ORCH_RUN_OWNER"
"""Environment variable every process of a playbook run inherits: ``<owner pid>-<start>-<pid namespace>-<run id>``."""
RAM_DIR = Path("/dev/shm")
LEGACY_STALE_AFTER_S = 3600.0
"""Age (seconds) after which a private folder named without an owner (made before owners were named) is removed:
no deploy keeps its files that long."""
_OWNED_NAME = re.compile(r"^orchestrator-[a-z-]+?-(?P<owner>\d+-\d+-\d+)-[a-z0-9_]{8}$")
_LEGACY_NAME = re.compile(r"^orchestrator-(env|git-auth)-[a-z0-9_]{8}$")
_PROC = Path("/proc")


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot), or None when it is gone or a zombie."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return None if fields[0] in ("Z", "X") else int(fields[19])


def pid_namespace(pid: int | str = "self") -> int:
    """The inode of process ``pid``'s pid namespace (``/proc/<pid>/ns/pid``), or 0 when it cannot be read."""
    try:
        return int(os.readlink(_PROC / str(pid) / "ns" / "pid").partition("[")[2].rstrip("]"))
    except (OSError, ValueError):
        return 0


@dataclass(frozen=True)
class Owner:
    """A process named by pid, start time and pid namespace, which never name another process (see the module doc)."""

    pid: int
    start: int
    ns: int

    @property
    def token(self) -> str:
        """``<pid>-<start>-<ns>``, as names and markers carry it."""
        return f"{self.pid}-{self.start}-{self.ns}"

    def alive(self) -> bool:
        """Whether this very process still runs (a zombie, or a reused pid, is gone); for an owner of this namespace."""
        return start_time(self.pid) == self.start

    def gone(self) -> bool:
        """Whether the owner is known to be gone: of this pid namespace, and not :meth:`alive`."""
        return self.ns == pid_namespace() and not self.alive()

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner at the start of ``text`` (``<pid>-<start>-<ns>[-...]``), or None if it names none."""
        parts = text.split("-", 3)[:3]
        return cls(*map(int, parts)) if len(parts) == 3 and all(p.isdigit() for p in parts) else None


@cache
def _owner_of(pid: int) -> Owner:
    started = start_time(pid)
    if started is None:
        raise RuntimeError(f"/proc/{pid}/stat is unreadable: is /proc mounted?")
    return Owner(pid, started, pid_namespace())


def current_owner() -> Owner:
    """The running process as an :class:`Owner`.

    Raises:
        RuntimeError: /proc cannot be read, so no owner could be judged later.
    """
    return _owner_of(os.getpid())


def private_roots() -> list[Path]:
    """Where private folders are made: /dev/shm (when it is a folder) and the system temp dir."""
    return [root for root in (RAM_DIR, Path(tempfile.gettempdir())) if root.is_dir()]


def owned_mkdtemp(*, prefix: str, dir: str | None = None) -> str:
    """Make a new 0700 folder named ``<prefix><pid>-<start>-<ns>-<8 random>`` in ``dir`` (None: the temp dir).

    The name makes this process its owner, so whatever a kill leaves in it is removed by the next sweep. Folders
    that gone owners left in the same place are swept first.

    Args:
        prefix: starts with ``orchestrator-``, lowercase letters and dashes (e.g. ``orchestrator-env-``).
        dir: the parent folder, e.g. "/dev/shm".

    Returns:
        The new folder's absolute path.

    Raises:
        ValueError: a prefix the sweep would not recognise. OSError: the folder cannot be made.
    """
    if not re.fullmatch(r"orchestrator-[a-z-]+-", prefix):
        raise ValueError(f"prefix {prefix!r} must look like 'orchestrator-name-'")
    parent = Path(dir or tempfile.gettempdir())
    sweep_private_dirs([parent])
    return tempfile.mkdtemp(prefix=f"{prefix}{current_owner().token}-", dir=parent)


def sweep_private_dirs(roots: Iterable[Path] | None = None, *, now: float | None = None) -> list[Path]:
    """Remove the private folders whose owner is gone, under ``roots`` (default :func:`private_roots`).

    Only folders of this user named by :func:`owned_mkdtemp` are looked at; one whose owner is alive is kept. A
    folder named the older way, with no owner, is removed once older than :data:`LEGACY_STALE_AFTER_S`.

    Args:
        roots: folders to look in (not recursively).
        now: the clock for the legacy rule (seconds since the epoch; default now).

    Returns:
        The removed folders.
    """
    removed: list[Path] = []
    now = time.time() if now is None else now
    for root in private_roots() if roots is None else roots:
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for entry in entries:
            if _orphaned_dir(entry, now):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
    if removed:
        log.warning("removed %d private folder(s) left by processes that are gone: %s", len(removed), removed)
    return removed


def _orphaned_dir(entry: os.DirEntry[str], now: float) -> bool:
    owned, legacy = _OWNED_NAME.match(entry.name), _LEGACY_NAME.match(entry.name)
    if not (owned or legacy):
        return False
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    if not entry.is_dir(follow_symlinks=False) or info.st_uid != os.geteuid():
        return False
    if owned:
        owner = Owner.parse(owned["owner"])
        return owner is not None and owner.gone()
    return now - info.st_mtime > LEGACY_STALE_AFTER_S


def run_marker() -> str:
    """A new value for :data:`OWNER_ENV`: this process as owner, and a fresh run id (``<pid>-<start>-<ns>-<hex>``)."""
    return f"{current_owner().token}-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class _Marked:
    pid: int
    start: int
    marker: str


def _marked_processes() -> list[_Marked]:
    """Processes whose environment holds :data:`OWNER_ENV` (those this user may read), except ssh connection masters.

    An ssh ControlMaster (``ssh: <path> [mux]``) that a run started is shared by every later connection to that
    host, other owners' runs included; it ends by itself after Ansible's ControlPersist (60 s idle).
    """
    key = OWNER_ENV.encode() + b"="
    found: list[_Marked] = []
    for entry in os.scandir(_PROC) if _PROC.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:  # gone, or another user's
            continue
        marker = next((v[len(key) :] for v in environ.split(b"\0") if v.startswith(key)), None)
        started = start_time(int(entry.name))
        if marker is None or started is None or (cmdline.startswith(b"ssh: ") and b"[mux]" in cmdline):
            continue
        found.append(_Marked(int(entry.name), started, marker.decode(errors="replace")))
    return found


def end_marked(match: Callable[[str], bool], *, grace_s: float = 2.0, rounds: int = 3) -> list[int]:
    """End every process whose :data:`OWNER_ENV` value satisfies ``match``: SIGTERM, then SIGKILL after ``grace_s``.

    SIGTERM first lets ``ansible-playbook`` end its workers' process groups itself. The scan is repeated (up to
    ``rounds`` times) for processes forked in the meantime. A pid is signalled only while it shows the start time it
    was found with, so a pid reused meanwhile is never hit.

    Args:
        match: takes the variable's value (``<pid>-<start>-<ns>-<run id>``).
        grace_s: seconds between SIGTERM and SIGKILL.
        rounds: scans at most.

    Returns:
        The pids signalled.
    """
    ended: list[int] = []
    for _ in range(rounds):
        targets = [p for p in _marked_processes() if match(p.marker)]
        if not targets:
            break
        _signal_all(targets, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(start_time(p.pid) == p.start for p in targets) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_all(targets, signal.SIGKILL)
        ended += [p.pid for p in targets]
    return ended


def _signal_all(targets: list[_Marked], sig: signal.Signals) -> None:
    for proc in targets:
        if start_time(proc.pid) == proc.start:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass


def _owner_gone(marker: str) -> bool:
    owner = Owner.parse(marker)
    return owner is not None and owner.gone()


def end_orphaned_runs(grace_s: float = 2.0) -> list[int]:
    """End the processes of playbook runs whose owner is gone (see the module doc); return the pids signalled."""
    ended = end_marked(_owner_gone, grace_s=grace_s)
    if ended:
        log.warning("ended %d process(es) of playbook runs whose owner is gone: %s", len(ended), ended)
    return ended


@dataclass
class Swept:
    """What :func:`sweep_orphans` removed: private folders and the pids of ended processes."""

    folders: list[Path] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)


def sweep_orphans() -> Swept:
    """Remove the private folders and end the playbook processes whose owner is gone; what every start-up runs.

    Takes well under a second when there is nothing to do (one pass over /dev/shm, the temp dir and /proc); what
    is alive is never touched.
    """
    return Swept(folders=sweep_private_dirs(), pids=end_orphaned_runs())
