"""infra.sandbox against real bubblewrap and real processes: a tiny hostile project tries to escape, and cannot.

Every test runs Debian's /usr/bin/python3 (outside root's 0700 home, so uid 65534 can run it) on a script written into
a workdir owned by uid 65534, under a world-traversable scratch folder of our own (pytest's tmp_path is 0700 root).
Nothing here reaches beyond 127.0.0.1: the only network probes are made from inside the sandbox, after checking that
its network namespace has nothing but a loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.settings import Settings
from infra.sandbox import Limits, SandboxResult, SandboxUnavailable, run_sandboxed, sandbox_ready

NOBODY = 65534
PY = "/usr/bin/python3"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates uid-65534 folders and drops to that uid"),
    pytest.mark.skipif(not Path(PY).exists(), reason="needs Debian's /usr/bin/python3"),
]

HOSTILE = r'''
"""A model-written project gone bad: each command tries one way out, prints what it saw as JSON, and ends by
re-raising its last failure (as an uncaught exception would), so the run fails."""
import json, os, socket, sys, time

def attempt(label, fn):
    try:
        out = fn()
        print(json.dumps({label: ["ok", out]}), flush=True)
        return None
    except BaseException as exc:
        print(json.dumps({label: [type(exc).__name__, str(exc)]}), flush=True)
        return exc

def read(path):
    with open(path, "rb") as fh:
        return fh.read().decode(errors="replace")

def write(path, size=3):
    with open(path, "wb") as fh:
        fh.write(b"x" * size)
    return size

def finish(error):
    if error is not None:
        raise error

cmd, args = sys.argv[1], sys.argv[2:]

if cmd == "read":  # args: paths to probe; the last one is read for real
    for path in args[:-1]:
        attempt("exists " + path, lambda: os.path.exists(path))
        attempt("read " + path, lambda: read(path))
    finish(attempt("read " + args[-1], lambda: read(args[-1])))

elif cmd == "environ":  # args: the orchestrator's pid, the secret to look for
    pid, secret = args
    print(json.dumps({"environ": dict(os.environ)}), flush=True)
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    print(json.dumps({"pids": pids}), flush=True)
    seen = []
    for other in pids:
        try:
            if secret in read(f"/proc/{other}/environ"):
                seen.append(other)
        except OSError:
            pass
    print(json.dumps({"secret seen in": seen}), flush=True)
    finish(attempt("read orchestrator environ", lambda: read(f"/proc/{pid}/environ")))

elif cmd == "network":  # args: a port listening on the host's 127.0.0.1
    port = int(args[0])
    names = [name for _, name in socket.if_nameindex()]
    print(json.dumps({"interfaces": names}), flush=True)
    if names != ["lo"]:
        sys.exit("NOT ISOLATED: refusing to probe the network")
    error = attempt("connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=3).close())
    resolve = attempt("resolve", lambda: socket.getaddrinfo("example.com", 80))
    finish(error or resolve)

elif cmd == "forkbomb":  # args: marker (kept in every child's cmdline), cap on forks
    cap = int(args[1])
    count = 0
    try:
        while count < cap:
            if os.fork() == 0:
                time.sleep(5)
                os._exit(0)
            count += 1
    except OSError as exc:
        print(json.dumps({"forked": count}), flush=True)
        raise
    print(json.dumps({"forked": count}), flush=True)

elif cmd == "bigfile":  # args: size in MB
    total = int(args[0]) * 1024 * 1024
    def fill():
        with open("big.bin", "wb") as fh:
            for _ in range(total // (1024 * 1024)):
                fh.write(b"\0" * (1024 * 1024))
                fh.flush()
        return total
    finish(attempt("write big.bin", fill))

elif cmd == "memory":  # args: size in MB
    finish(attempt("allocate", lambda: len(bytearray(int(args[0]) * 1024 * 1024))))

elif cmd == "sleep":  # args: marker, seconds
    time.sleep(float(args[1]))

elif cmd == "daemon":  # args: marker; leaves a double-forked, setsid'd sleeper behind and exits 0
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open("daemon.pid", "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(60)
            os._exit(0)
        os._exit(0)
    for _ in range(200):
        if os.path.exists("daemon.pid"):
            break
        time.sleep(0.01)
    print("daemon started", flush=True)

elif cmd == "write":  # args: a marker name; tries to write outside the workdir
    for path in ["/usr/evil", "/etc/evil", "/evil", "/proc/evil", "/dev/evil", "/dev/shm/../evil"]:
        attempt("write " + path, lambda: write(path))
    attempt("write /tmp/" + args[0], lambda: write("/tmp/" + args[0]))
    attempt("read /tmp/" + args[0], lambda: read("/tmp/" + args[0]))
    attempt("write workdir", lambda: write("inside.txt"))
    finish(attempt("write /usr/bin/python3", lambda: write("/usr/bin/python3")))

elif cmd == "whoami":
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "pids": len(pids), "work": os.path.exists("/work"),
                      "cwd": os.getcwd()}), flush=True)

elif cmd == "kill":  # args: signal name
    import signal
    os.kill(os.getpid(), getattr(signal, args[0]))

elif cmd == "spin":
    while True:
        pass
'''


@dataclass
class Scratch:
    base: Path
    """World-traversable (0755) folder of our own under /tmp."""
    work: Path
    """The hostile project's workdir, owned by uid 65534."""

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.work), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}

    async def run(self, *args: str, limits: Limits | None = None, **kwargs: object) -> SandboxResult:
        return await run_sandboxed(
            [PY, "hostile.py", *args],
            workdir=self.work,
            env=self.env,
            limits=limits or Limits(timeout_s=30),
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def bwrap_ready() -> None:
    problem = sandbox_ready()
    if problem is not None:
        pytest.fail(f"{problem} (scripts/ensure-bubblewrap.sh installs it)")


@pytest.fixture
def scratch(bwrap_ready: None) -> Iterator[Scratch]:
    base = Path(tempfile.mkdtemp(prefix="orch-sandbox-test-", dir="/tmp"))
    try:
        base.chmod(0o755)
        work = base / "work"
        work.mkdir(mode=0o755)
        (work / "hostile.py").write_text(HOSTILE)
        os.chown(work, NOBODY, NOBODY)
        yield Scratch(base=base, work=work)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def events(result: SandboxResult) -> dict[str, object]:
    """The hostile script's JSON lines, merged."""
    merged: dict[str, object] = {}
    for line in result.output.splitlines():
        if line.startswith("{"):
            merged.update(json.loads(line))
    return merged


def live_processes(marker: str) -> list[int]:
    """Pids of processes (zombies excepted) whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != b"Z":
            found.append(int(entry))
    return found


def processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


async def test_data_dir_is_out_of_reach(scratch: Scratch) -> None:
    data = scratch.base / "data"
    data.mkdir(mode=0o700)
    (data / "secrets.key").write_text("fake-fernet-key")
    (data / "orchestrator.db").write_text("fake database")
    own_data_dir = Settings().data_dir.resolve()
    probes = [str(own_data_dir), "/root", "/home", "/var", "/work", str(data)]

    result = await scratch.run("read", *probes, str(data / "secrets.key"))
    seen = events(result)
    for path in probes:
        assert seen[f"exists {path}"] == ["ok", False], path
    assert seen[f"read {data / 'secrets.key'}"][0] == "FileNotFoundError"  # type: ignore[index]
    assert result.rc == 1 and "FileNotFoundError" in result.output and result.sandboxed

    # Bound by mistake (the scratch folder above it, read-only): the 0700 root folder still protects its files.
    result = await scratch.run(
        "read", str(data / "orchestrator.db"), str(data / "secrets.key"), read_only=[scratch.base]
    )
    seen = events(result)
    assert seen[f"read {data / 'orchestrator.db'}"][0] == "PermissionError"  # type: ignore[index]
    assert result.rc == 1 and "PermissionError" in result.output and "fake" not in result.output

    # Binding the data dir itself is refused before anything runs, naming the path.
    with pytest.raises(ValueError, match=str(data)):
        await scratch.run("read", str(data / "secrets.key"), read_only=[data])


async def test_workdir_precondition_is_checked(scratch: Scratch) -> None:
    root_owned = scratch.base / "root-owned"
    root_owned.mkdir(mode=0o755)
    with pytest.raises(ValueError, match=f"workdir {root_owned} needs rwx for uid 65534"):
        await run_sandboxed([PY, "-c", "pass"], workdir=root_owned, env=scratch.env, limits=Limits())
    hidden = scratch.base / "hidden"
    hidden.mkdir(mode=0o700)
    (hidden / "w").mkdir()
    os.chown(hidden / "w", NOBODY, NOBODY)
    with pytest.raises(ValueError, match=f"cannot traverse {hidden}"):
        await run_sandboxed([PY, "-c", "pass"], workdir=hidden / "w", env=scratch.env, limits=Limits())


async def test_orchestrator_environment_is_invisible(scratch: Scratch, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"fake-orch-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("ORCH_SECRETS_KEY", secret)

    result = await scratch.run("environ", str(os.getpid()), secret)

    assert secret not in result.output
    seen = events(result)
    assert seen["environ"] == {**scratch.env, "PWD": str(scratch.work)}
    assert seen["secret seen in"] == []
    assert max(seen["pids"]) < 10  # type: ignore[type-var, arg-type]  # its own pid namespace: sh, python
    assert result.rc == 1 and "FileNotFoundError" in result.output


async def test_no_network(scratch: Scratch) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]

        result = await scratch.run("network", str(port))

        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody came
    seen = events(result)
    assert seen["interfaces"] == ["lo"]
    assert seen["connect"][0] == "ConnectionRefusedError"  # type: ignore[index]
    assert seen["resolve"][0] == "gaierror"  # type: ignore[index]
    assert result.rc == 1 and "ConnectionRefusedError" in result.output


async def test_fork_bomb_hits_the_process_limit(scratch: Scratch) -> None:
    marker = f"forkbomb-{uuid.uuid4().hex}"
    budget = 40
    before = processes_of(NOBODY)
    limits = Limits(timeout_s=30, processes=before + budget)

    started = time.monotonic()
    result = await scratch.run("forkbomb", marker, "300", limits=limits)

    assert time.monotonic() - started < 5, "the run waited for the children instead of ending with the main process"
    assert 0 < events(result)["forked"] < budget  # type: ignore[operator]
    assert result.rc == 1 and "Resource temporarily unavailable" in result.output
    assert live_processes(marker) == []
    assert processes_of(NOBODY) <= before


async def test_file_size_limit(scratch: Scratch) -> None:
    limit = 10 * 1024 * 1024
    limits = Limits(timeout_s=30, file_size_bytes=limit)

    result = await scratch.run("bigfile", "50", limits=limits)  # Python ignores SIGXFSZ: the write fails, EFBIG
    assert result.rc == 1 and "File too large" in result.output
    assert (scratch.work / "big.bin").stat().st_size == limit

    dd = await run_sandboxed(  # dd does not: SIGXFSZ kills it, and bwrap reports 128+25
        ["/usr/bin/dd", "if=/dev/zero", "of=dd.bin", "bs=1M", "count=50"],
        workdir=scratch.work,
        env=scratch.env,
        limits=limits,
    )
    assert dd.rc == 128 + 25
    assert dd.reason is not None and "SIGXFSZ: file size limit" in dd.reason
    assert (scratch.work / "dd.bin").stat().st_size == limit


async def test_memory_limit(scratch: Scratch) -> None:
    result = await scratch.run("memory", "2048", limits=Limits(timeout_s=30, memory_bytes=512 * 1024 * 1024))
    assert events(result)["allocate"][0] == "MemoryError"  # type: ignore[index]
    assert result.rc == 1 and "MemoryError" in result.output


async def test_timeout_kills_everything(scratch: Scratch) -> None:
    marker = f"sleeper-{uuid.uuid4().hex}"

    result = await scratch.run("sleep", marker, "60", limits=Limits(timeout_s=2))

    assert result.rc is None
    assert result.reason == "timed out after 2s (every process killed)"
    assert 1.9 < result.duration_s < 6
    assert live_processes(marker) == []


async def test_cancelled_run_leaves_nothing(scratch: Scratch) -> None:
    marker = f"cancelled-{uuid.uuid4().hex}"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(scratch.run("sleep", marker, "60"), 1.5)
    assert live_processes(marker) == []


async def test_daemon_does_not_survive(scratch: Scratch) -> None:
    marker = f"daemon-{uuid.uuid4().hex}"

    result = await scratch.run("daemon", marker)

    assert result.rc == 0 and result.reason is None and "daemon started" in result.output
    assert (scratch.work / "daemon.pid").exists()  # it did run
    assert live_processes(marker) == []


async def test_writes_outside_workdir_fail(scratch: Scratch) -> None:
    name = f"sandbox-tmp-{uuid.uuid4().hex}"

    result = await scratch.run("write", name)

    seen = events(result)
    for path in ["/usr/evil", "/etc/evil", "/evil", "/proc/evil", "/dev/evil", "/usr/bin/python3"]:
        assert seen[f"write {path}"][0] in {"OSError", "PermissionError", "FileNotFoundError"}, path  # type: ignore[index]
    assert seen[f"write /tmp/{name}"] == ["ok", 3]
    assert seen[f"read /tmp/{name}"] == ["ok", "xxx"]
    assert not Path("/tmp", name).exists()  # the sandbox's /tmp is its own
    assert (scratch.work / "inside.txt").stat().st_uid == NOBODY
    assert result.rc == 1


async def test_signals_are_named(scratch: Scratch) -> None:
    segv = await scratch.run("kill", "SIGSEGV")
    assert segv.rc == 128 + 11 and segv.reason == "killed by signal SIGSEGV: segmentation fault (exit status 139)"

    spin = await scratch.run("spin", limits=Limits(timeout_s=20, cpu_s=1))
    assert spin.rc == 128 + 24 and spin.reason is not None and "SIGXCPU: CPU time limit" in spin.reason


async def test_no_bwrap_is_an_error_and_mode_none_runs_unconfined(
    scratch: Scratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = scratch.base / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    problem = sandbox_ready()
    assert problem is not None and "bubblewrap" in problem
    with pytest.raises(SandboxUnavailable, match="ORCH_SANDBOX=none"):
        await scratch.run("whoami")

    result = await scratch.run("whoami", mode="none")

    assert result.sandboxed is False and result.rc == 0 and result.reason is None
    seen = events(result)
    assert seen["uid"] == NOBODY and seen["gid"] == NOBODY  # still not root
    assert seen["work"] is True and seen["pids"] > 10  # type: ignore[operator]  # it sees the whole host
    assert seen["cwd"] == str(scratch.work)
