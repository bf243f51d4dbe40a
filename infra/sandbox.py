"""The one sandbox every command on model-written code runs in: bubblewrap, an unprivileged uid, resource limits.

Model-written code (a project's tests, its build, its app) is hostile until proven otherwise. Each command runs as:

* an ordinary unprivileged user (``uid``/``gid``, default 65534 ``nobody``): the process that execs ``bwrap``
  drops to it first, so host file permissions still protect everything even if a path were bound by mistake
  (the data dir and root's home are 0700 root), and ``RLIMIT_NPROC`` is really enforced (the kernel does not
  enforce it for root);
* inside bubblewrap namespaces (``--unshare-all``): its own network namespace with only its own loopback (no
  network at all), its own pid namespace (the orchestrator's processes and their ``/proc/<pid>/environ`` are not
  visible; every process inside dies with the sandbox), its own ipc and uts namespaces;
* on a minimal read-only system: ``/usr``, the merged-usr links, a handful of files of ``/etc`` (never all of it),
  a private ``/proc``, a minimal read-only ``/dev``, private size-capped ``/tmp`` and ``/dev/shm``; plus the caller's
  ``read_only`` paths and ``workdir`` (read-write), each at its own path. The root itself is read-only. Nothing else:
  no ``/root``, ``/home``, ``/var``, ``/work``, no data dir;
* with an environment that is exactly the caller's ``env`` (plus ``PWD``, which bwrap sets);
* under resource limits (:class:`Limits`) applied before ``bwrap`` is exec'ed, so bwrap and everything under it
  inherit them, and a wall-clock timeout after which every process of the sandbox is killed.

Mode ``"none"`` runs the command unconfined (same env, workdir, limits and uid drop; no namespaces): it exists for
machines without bubblewrap, is never chosen silently, and callers must report it loudly.

This module is an adapter: it imports nothing of the project.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SandboxMode = Literal["bwrap", "none"]

REMEDY = (
    "install bubblewrap (make sandbox / apt-get install bubblewrap) "
    "or set ORCH_SANDBOX=none to run generated code unconfined"
)
"""What an operator can do when bubblewrap is missing or cannot create its namespaces here."""

NOBODY = 65534
"""The default uid and gid commands run as: Debian's ``nobody``/``nogroup``, which owns nothing on the host."""

# Files and folders of /etc the sandbox sees (when they exist): user and host name lookups, the dynamic linker's
# cache, the time zone, TLS roots and Debian's alternatives links. Never the rest of /etc (shadow, ssh keys, ...).
_ETC_ENTRIES = (
    "passwd",
    "group",
    "hosts",
    "nsswitch.conf",
    "ld.so.cache",
    "localtime",
    "ssl",
    "ca-certificates",
    "alternatives",
)
# Top-level names that merged-usr systems make links into /usr (older layouts have real folders).
_USR_LINKS = ("bin", "sbin", "lib", "lib64", "lib32", "libx32")
# Paths the sandbox builds itself: binding a caller's path over one of them would undo the isolation.
_RESERVED = frozenset({"/", "/usr", "/etc", "/proc", "/dev", "/tmp", *(f"/{name}" for name in _USR_LINKS)})
# pid 1 inside the sandbox: a POSIX shell that runs the command as its child and exits with its status. See
# _bwrap_argv for why the command is not pid 1 and bwrap's own reaper is not used.
_INIT = ("/bin/sh", "-c", '"$@"; exit $?', "sh")
# After killing a sandbox's pid 1 at the timeout, how long bwrap gets to reap it and exit before its group is killed.
_KILL_GRACE_S = 3.0
# After the command ended, how long its output pipe may stay open (mode "none": an escaped daemon holds it).
_DRAIN_GRACE_S = 1.0

_SIGNAL_WORDS: dict[int, str] = {
    signal.SIGXFSZ: "file size limit",
    signal.SIGXCPU: "CPU time limit",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGABRT: "aborted",
    signal.SIGFPE: "arithmetic error",
    signal.SIGILL: "illegal instruction",
    signal.SIGPIPE: "broken pipe",
    signal.SIGTERM: "terminated",
    signal.SIGINT: "interrupted",
    signal.SIGHUP: "hung up",
}


@dataclass(frozen=True)
class Limits:
    """Resource limits applied to every process in the sandbox (and to ``bwrap`` itself).

    The ``RLIMIT_*`` values are per process (``RLIMIT_NPROC`` excepted) and are set as both soft and hard limits
    (``RLIMIT_CPU``'s hard limit is one second higher, so ``SIGXCPU`` comes first), so code inside cannot raise
    them. Core dumps are always off (``RLIMIT_CORE`` 0): they would land in ``workdir`` or be handed to the host's
    core handler. When the orchestrator does not run as root, limits above its own hard limits are clamped to them.

    Attributes:
        timeout_s: Wall clock, seconds. After it every process of the sandbox is killed (``SIGKILL``) and the
            result has ``rc=None``. The only limit on a whole process tree's duration.
        cpu_s: ``RLIMIT_CPU``, CPU seconds per process: ``SIGXCPU`` at the limit, ``SIGKILL`` one second later.
        memory_bytes: ``RLIMIT_AS``, bytes of virtual address space per process: allocations beyond it fail
            (``MemoryError`` in Python). Virtual, not resident: runtimes that reserve large address ranges up front
            (the JVM, Go) need more than they use.
        processes: ``RLIMIT_NPROC``: processes (threads included) the sandbox's REAL UID may have on the whole host,
            the sandbox's own bwrap and shell (two) included. Counted per uid, not per sandbox: concurrent sandboxes
            running as the same uid share it.
        file_size_bytes: ``RLIMIT_FSIZE``, bytes: the largest file a process may write. A write beyond it fails with
            ``EFBIG``, or kills the writer with ``SIGXFSZ`` if it does not ignore that signal (Python does).
        open_files: ``RLIMIT_NOFILE``: open file descriptors per process.
        tmp_bytes: Size of each of the sandbox's private ``/tmp`` and ``/dev/shm``, bytes (tmpfs: RAM that no
            rlimit counts, hence the cap). Mode ``"none"`` has neither.
    """

    timeout_s: float = 120.0
    cpu_s: int = 300
    memory_bytes: int = 2 * 1024**3
    processes: int = 256
    file_size_bytes: int = 1024**3
    open_files: int = 1024
    tmp_bytes: int = 512 * 1024**2

    def __post_init__(self) -> None:
        """Refuse limits that are not positive: a zero limit would make every run fail in a confusing way."""
        for name in ("timeout_s", "cpu_s", "memory_bytes", "processes", "file_size_bytes", "open_files", "tmp_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SandboxResult:
    """How one sandboxed command ended.

    Attributes:
        command: The argv as run inside, shlex-joined (for logs and reports).
        rc: The exit status; ``None`` when the command was killed for the timeout. A signal shows as ``128+N``
            under bwrap (that is how bwrap and its shell report a child killed by signal N) and as ``-N`` in mode
            ``"none"``; ``reason`` names the signal either way.
        output: The last ``tail_chars`` characters of stdout and stderr, interleaved as written, decoded as UTF-8
            with ``errors="replace"``.
        duration_s: Wall-clock seconds from start to the end of every process.
        reason: Human words for an abnormal end, e.g. ``"timed out after 5s (every process killed)"`` or
            ``"killed by signal SIGXFSZ: file size limit (exit status 153)"``; ``None`` when the command exited by
            itself, whatever its status.
        sandboxed: ``False`` only in mode ``"none"``: the command ran unconfined, and the caller must say so.
    """

    command: str
    rc: int | None
    output: str
    duration_s: float
    reason: str | None
    sandboxed: bool

    @property
    def ok(self) -> bool:
        """True when the command exited by itself with status 0."""
        return self.rc == 0 and self.reason is None


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing, or cannot create its namespaces here; the message says what to do.

    Mode ``"bwrap"`` raises it and never falls back to running unconfined.
    """


def sandbox_ready() -> str | None:
    """Check that mode ``"bwrap"`` works on this machine, for clear errors and ``make`` checks.

    Looks ``bwrap`` up on the orchestrator's ``PATH`` and runs ``/bin/true`` in a minimal sandbox as the default
    unprivileged uid (or as the current user when not root), the way :func:`run_sandboxed` would. Blocks for about
    20 ms; a success is remembered for the process's lifetime.

    Returns:
        ``None`` if sandboxed runs work here, else a sentence saying why not and what to do.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return f"bwrap (bubblewrap) is not on PATH: {REMEDY}"
    uid, gid = _identity(NOBODY, NOBODY)
    return _probe(bwrap, uid, gid)


async def run_sandboxed(
    argv: Sequence[str],
    *,
    workdir: Path,
    env: Mapping[str, str],
    limits: Limits,
    mode: SandboxMode = "bwrap",
    read_only: Sequence[Path] = (),
    uid: int = NOBODY,
    gid: int = NOBODY,
    tail_chars: int = 4000,
) -> SandboxResult:
    """Run ``argv`` on model-written code, confined, and wait for every process it started to end.

    Preconditions (checked before anything runs, with mode bits only: ACLs are not consulted): ``bwrap`` runs as
    ``uid``/``gid`` with no supplementary groups, so every path it binds must be reachable by that uid.
    ``workdir`` must be an existing directory that ``uid`` can write (typically owned by it), every folder above it
    traversable (``x``) by it; each ``read_only`` path must be readable by it (``r``, and ``x`` for a folder), with
    traversable parents. Nothing is chmod'ed to make this true. Paths are resolved (symlinks followed) and bound at
    their resolved path; none may be ``/`` or a path the sandbox builds itself (``/usr``, ``/etc``, ``/tmp``, ...).
    Binds are made parents first, so a ``read_only`` path may contain ``workdir`` or lie inside it.

    Inside, the command starts in ``workdir``, as ``uid``/``gid`` (as the orchestrator's own user when it is not
    root: only root can switch users), with exactly ``env`` plus ``PWD``. ``argv[0]`` is looked up on ``env``'s
    ``PATH`` by a POSIX shell, which runs it as its child, so a shell builtin of the same name (``echo``, ``test``)
    wins over the program. When the command exits, every process left inside (daemons included) is killed
    before this returns.

    Args:
        argv: The command and its arguments, as seen inside the sandbox (e.g. ``["/usr/bin/python3", "-m",
            "pytest"]``). Must not be empty.
        workdir: The project's folder, bound read-write at the same path; the command's working directory.
        env: The whole environment inside (``PATH``, ``HOME``, ``LANG``...): nothing of the orchestrator's own
            environment is passed. It reaches bwrap through a memory file, never a command line, so values are not
            visible in the host's ``/proc/<pid>/cmdline``.
        limits: Resource limits and the wall-clock timeout.
        mode: ``"bwrap"`` (the sandbox) or ``"none"`` (unconfined: ``argv`` runs directly with the same env,
            workdir, limits and uid drop, but sees the whole host and its network; ``read_only`` is not needed
            then; daemons it leaves can survive). Only ``"none"`` when the operator asked for it.
        read_only: Extra host paths bound read-only at the same path (a venv, a toolchain, a cache).
        uid: The unprivileged user the command runs as, when the orchestrator runs as root. Not 0.
        gid: Its group, likewise. Not 0.
        tail_chars: How many characters of output to keep (the last ones).

    Returns:
        How the command ended; ``rc`` is ``None`` after the timeout.

    Raises:
        SandboxUnavailable: Mode ``"bwrap"`` and no working ``bwrap`` on the orchestrator's ``PATH``.
        ValueError: Empty ``argv``, uid or gid 0, a path that breaks the preconditions above (the message names it),
            an environment name or value that cannot be passed (``=`` in a name, a NUL byte), an unknown mode.
    """
    if not argv:
        raise ValueError("argv is empty: nothing to run")
    if mode not in ("bwrap", "none"):
        raise ValueError(f"unknown sandbox mode {mode!r}: 'bwrap' or 'none'")
    if uid == 0 or gid == 0:
        raise ValueError("generated code never runs as root: give an unprivileged uid and gid")
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"environment variable {key!r} cannot be passed: empty name, '=' in it, or a NUL byte")
    run_uid, run_gid = _identity(uid, gid)
    groups = {run_gid} if os.geteuid() == 0 else {os.getegid(), *os.getgroups()}
    workdir = _check_path(Path(workdir), run_uid, groups, want=stat.S_IRWXO, what="workdir", must_be_dir=True)
    binds = [(_check_path(Path(p), run_uid, groups, want=4, what="read_only path"), False) for p in read_only]
    binds.append((workdir, True))
    command = shlex.join(argv)

    if mode == "none":
        return await _run(
            list(argv), env=dict(env), cwd=workdir, limits=limits, uid=run_uid, gid=run_gid, pass_fds=(),
            sandboxed=False, command=command, tail_chars=tail_chars,
        )  # fmt: skip

    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(f"bwrap (bubblewrap) is not on PATH: {REMEDY}")
    if (bwrap, run_uid, run_gid) not in _WORKING:
        problem = await asyncio.to_thread(_probe, bwrap, run_uid, run_gid)
        if problem is not None:
            raise SandboxUnavailable(problem)

    env_fd = _env_memfd(env)
    try:
        full_argv = [
            bwrap, "--args", str(env_fd), *_system_args(limits.tmp_bytes), *_bind_args(binds),
            "--remount-ro", "/", "--chdir", str(workdir), "--", *_INIT, *argv,
        ]  # fmt: skip
        return await _run(
            full_argv, env={}, cwd=workdir, limits=limits, uid=run_uid, gid=run_gid, pass_fds=(env_fd,),
            sandboxed=True, command=command, tail_chars=tail_chars,
        )  # fmt: skip
    finally:
        os.close(env_fd)


# (bwrap path, uid, gid) whose probe succeeded: probing costs a process start, and a working bwrap stays working.
_WORKING: set[tuple[str, int, int]] = set()


def _identity(uid: int, gid: int) -> tuple[int, int]:
    """The uid and gid commands actually run as: the requested ones as root, else our own (we cannot switch)."""
    if os.geteuid() == 0:
        return uid, gid
    return os.geteuid(), os.getegid()


def _system_args(tmp_bytes: int) -> list[str]:
    """The bwrap arguments for the namespaces and the minimal read-only system every sandbox gets (all but the binds).

    ``--unshare-all``: own user, pid, network, ipc, uts and cgroup namespaces. ``--die-with-parent``: if the
    orchestrator (and so bwrap) dies, the sandbox dies too. ``--new-session``: code inside cannot push keystrokes
    into a terminal (TIOCSTI). ``--as-pid-1`` with :data:`_INIT` as pid 1: bwrap's own reaper tells bwrap the exit
    status before it exits itself, so bwrap could return while the pid namespace is still being torn down, and the
    reaper would be left as a zombie of whatever init the host has (the orchestrator itself in a container); with a
    shell as pid 1, bwrap waits for pid 1, whose exit kills and reaps everything left in the namespace first.

    ``/dev`` is bwrap's minimal one (null, zero, random, tty, pts...) made read-only, because it is a tmpfs: RAM no
    rlimit counts. ``/dev/shm`` (POSIX shared memory and semaphores: Python's multiprocessing needs them) and
    ``/tmp`` are private tmpfs of ``tmp_bytes`` each. The caller's binds come after ``/tmp``: a later mount hides
    what an earlier one put under the same path.
    """
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1", "--ro-bind", "/usr", "/usr"]
    for name in _USR_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in _ETC_ENTRIES:
        path = Path("/etc") / name
        if path.is_symlink():  # e.g. /etc/localtime -> /usr/share/zoneinfo/...: keep it a link, /usr is there
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.exists():
            args += ["--ro-bind", str(path), str(path)]
    size = str(tmp_bytes)
    args += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    return [*args, "--size", size, "--tmpfs", "/tmp"]


def _bind_args(binds: Sequence[tuple[Path, bool]]) -> list[str]:
    """``--ro-bind``/``--bind`` arguments, parents first so a nested bind is not hidden by its parent's."""
    args: list[str] = []
    for path, writable in sorted(binds, key=lambda bind: len(bind[0].parts)):
        args += ["--bind" if writable else "--ro-bind", str(path), str(path)]
    return args


def _env_memfd(env: Mapping[str, str]) -> int:
    """A memory file holding ``--clearenv --setenv K V...`` for bwrap's ``--args FD`` (NUL-separated).

    Why: ``--setenv`` on bwrap's command line would show every value in the host's ``/proc/<pid>/cmdline``,
    readable by every local user; and giving ``env`` to bwrap as its own environment would let ``LD_PRELOAD`` or
    ``LD_LIBRARY_PATH`` (which may point into the model-written workdir) load code into bwrap outside the sandbox.
    """
    parts = ["--clearenv"]
    for key, value in env.items():
        parts += ["--setenv", key, value]
    data = b"".join(os.fsencode(part) + b"\0" for part in parts)
    fd = os.memfd_create("orchestrator-sandbox-env", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _probe(bwrap: str, uid: int, gid: int) -> str | None:
    """Run ``/bin/true`` in a minimal sandbox as ``uid``/``gid``: None if it works, else why not (and the remedy)."""
    if (bwrap, uid, gid) in _WORKING:
        return None
    argv = [bwrap, *_system_args(1024 * 1024), "--remount-ro", "/", "--", "/bin/true"]
    user, group, extra_groups = _drop(uid, gid)
    try:
        done = subprocess.run(
            argv, capture_output=True, env={}, cwd="/", timeout=30, check=False, start_new_session=True,
            user=user, group=group, extra_groups=extra_groups,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{bwrap} cannot run here ({exc}): {REMEDY}"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
        return (
            f"{bwrap} cannot create its namespaces here as uid {uid} (exit {done.returncode}: {detail}); "
            f"unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone, "
            f"user.max_user_namespaces, AppArmor, a container's seccomp profile): {REMEDY}"
        )
    _WORKING.add((bwrap, uid, gid))
    return None


def _drop(uid: int, gid: int) -> tuple[int | None, int | None, list[int] | None]:
    """Popen's ``user``, ``group`` and ``extra_groups``: to ``uid``/``gid``, no supplementary groups (root only).

    Done by Popen in C between fork and exec (setgroups, setregid, setreuid, in that order), before the
    ``preexec_fn``: real, effective and saved ids all change, so nothing can switch back. Not root: ``None``s
    (no switch; only root can).
    """
    if os.geteuid() != 0:
        return None, None, None
    return uid, gid, []


def _rlimits(limits: Limits) -> list[tuple[int, tuple[int, int]]]:
    """The ``setrlimit`` calls for ``limits``, computed in the parent (the child only makes the calls)."""
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 1),
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_NPROC, limits.processes, limits.processes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    calls: list[tuple[int, tuple[int, int]]] = []
    for which, soft, hard in wanted:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY and os.geteuid() != 0:
            # Without CAP_SYS_RESOURCE a hard limit can only go down.
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        calls.append((which, (soft, hard)))
    return calls


def _preexec(calls: list[tuple[int, tuple[int, int]]]) -> Callable[[], None]:
    """The function run in the child between fork and exec: it sets the rlimits (the uid is dropped just before).

    Why there: set on the process that execs bwrap, the limits are inherited by bwrap and everything under it, and
    nothing inside can raise them. Only ``setrlimit`` calls, with values computed beforehand, run in the child.
    """

    def apply() -> None:
        for which, values in calls:
            resource.setrlimit(which, values)

    return apply


async def _run(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    limits: Limits,
    uid: int,
    gid: int,
    pass_fds: tuple[int, ...],
    sandboxed: bool,
    command: str,
    tail_chars: int,
) -> SandboxResult:
    """Start ``argv`` in its own session with the uid drop and rlimits, enforce the timeout, collect the output."""
    user, group, extra_groups = _drop(uid, gid)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
        start_new_session=True, pass_fds=pass_fds, preexec_fn=_preexec(_rlimits(limits)),
        user=user, group=group, extra_groups=extra_groups,
    )  # fmt: skip
    assert proc.stdout is not None
    tail = _Tail(tail_chars)
    reader = asyncio.create_task(tail.consume(proc.stdout))
    reason: str | None = None
    try:
        try:
            rc: int | None = await asyncio.wait_for(proc.wait(), limits.timeout_s)
        except TimeoutError:
            await _kill(proc, sandboxed=sandboxed)
            rc = None
            scope = "every process killed" if sandboxed else "its process group killed"
            reason = f"timed out after {limits.timeout_s:g}s ({scope})"
        if not sandboxed:
            # No pid namespace: kill what the command left in its process group (what called setsid escapes).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait({reader}, timeout=_DRAIN_GRACE_S)
    finally:
        if proc.returncode is None:  # cancelled while running: leave nothing behind
            await _kill(proc, sandboxed=sandboxed)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    if rc is not None:
        reason = _describe_exit(rc, sandboxed=sandboxed)
    return SandboxResult(
        command=command,
        rc=rc,
        output=tail.text(),
        duration_s=time.monotonic() - started,
        reason=reason,
        sandboxed=sandboxed,
    )


async def _kill(proc: asyncio.subprocess.Process, *, sandboxed: bool) -> None:
    """Kill everything ``proc`` started and wait until it is gone.

    Under bwrap, ``proc`` is bwrap (leader of its own process group) and its only child is the sandbox's pid 1.
    Killing pid 1 first makes the kernel kill and reap every process of the pid namespace, daemons included, then
    bwrap reaps pid 1 and exits: nothing is left, not even a zombie. Then, or if that did not end bwrap in time,
    the whole process group gets ``SIGKILL`` (bwrap's ``--die-with-parent`` then takes pid 1 down). In mode
    ``"none"`` only the process group can be killed.
    """
    if sandboxed:
        for child in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), _KILL_GRACE_S)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``, from ``/proc/*/stat`` (kernel data: nothing in the sandbox can forge it)."""
    children: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        if len(fields) > 1 and int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def _describe_exit(rc: int, *, sandboxed: bool) -> str | None:
    """Words for a signal death: ``-N`` from Popen, or ``128+N`` from bwrap and its shell (sandboxed only).

    A sandboxed program that exits with a status above 128 by itself is indistinguishable from a signal death, as in
    any shell; the status is kept in the words.
    """
    if rc < 0:
        return _signal_words(-rc)
    if sandboxed and rc > 128:
        words = _signal_words(rc - 128)
        if words is not None:
            return f"{words} (exit status {rc})"
    return None


def _signal_words(number: int) -> str | None:
    """``"killed by signal SIGXFSZ: file size limit"`` for 25; None if ``number`` is no signal."""
    try:
        sig = signal.Signals(number)
    except ValueError:
        return None
    words = _SIGNAL_WORDS.get(sig)
    return f"killed by signal {sig.name}" + (f": {words}" if words else "")


def _check_path(path: Path, uid: int, groups: set[int], *, want: int, what: str, must_be_dir: bool = False) -> Path:
    """Resolve ``path`` and check that ``uid`` can reach it and has ``want`` (``rwx`` bits, as ``S_IRWXO``) on it.

    Raises:
        ValueError: Naming the path (or the folder above it) that fails, and why.
    """
    if not path.is_absolute():
        raise ValueError(f"{what} {path} must be an absolute path")
    resolved = path.resolve()
    if str(resolved) in _RESERVED:
        raise ValueError(f"{what} {path} is a path the sandbox builds itself; bind a folder of your own instead")
    try:
        info = resolved.stat()
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be used: {exc.strerror}") from exc
    if must_be_dir and not stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{what} {path} is not a directory")
    for parent in reversed(resolved.parents):
        if not _allowed(parent.stat(), uid, groups, 1):
            raise ValueError(
                f"{what} {path}: uid {uid} cannot traverse {parent} ({_describe_mode(parent.stat())}); "
                "give the folders above it o+x, or use a path elsewhere"
            )
    if stat.S_ISDIR(info.st_mode):
        want |= 1
    if not _allowed(info, uid, groups, want):
        needs = "".join(letter for bit, letter in ((4, "r"), (2, "w"), (1, "x")) if want & bit)
        raise ValueError(
            f"{what} {path} needs {needs} for uid {uid}, which runs the sandbox ({_describe_mode(info)}); "
            f"e.g. chown it to {uid}"
        )
    return resolved


def _allowed(info: os.stat_result, uid: int, groups: set[int], want: int) -> bool:
    """Whether the owner, group or other bits that apply to ``uid`` (as the kernel picks them) grant ``want``."""
    if info.st_uid == uid:
        bits = (info.st_mode >> 6) & 7
    elif info.st_gid in groups:
        bits = (info.st_mode >> 3) & 7
    else:
        bits = info.st_mode & 7
    return bits & want == want


def _describe_mode(info: os.stat_result) -> str:
    """``"mode 0700, owner 0:0"``."""
    return f"mode {stat.S_IMODE(info.st_mode):04o}, owner {info.st_uid}:{info.st_gid}"


class _Tail:
    """The last bytes of a stream, enough for ``chars`` characters (at most 4 bytes each in UTF-8)."""

    def __init__(self, chars: int) -> None:
        self._chars = max(chars, 0)
        self._keep = 4 * self._chars + 4
        self._data = bytearray()

    async def consume(self, stream: asyncio.StreamReader) -> None:
        """Read ``stream`` to its end, keeping only the tail (memory stays bounded whatever the output size)."""
        while chunk := await stream.read(65536):
            self._data += chunk
            if len(self._data) > 2 * self._keep:
                del self._data[: len(self._data) - self._keep]

    def text(self) -> str:
        """The kept tail, decoded with ``errors="replace"``, at most ``chars`` characters."""
        if self._chars == 0:
            return ""
        return bytes(self._data[-self._keep :]).decode("utf-8", errors="replace")[-self._chars :]
