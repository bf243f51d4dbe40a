"""A killed orchestrator leaves secrets files in RAM and a live playbook run; the next start removes both.

Real processes throughout: the orchestrator side is a child process running the project's own code, killed with
SIGKILL together with its process group; the start that follows is the ``orchestrator`` CLI in a new process.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from infra.ansible import inventory_for, run_playbook
from infra.orphans import OWNER_ENV, RAM_DIR, sweep_orphans
from tests.integration.helpers import REPO_ROOT, cli

HOLD_SECRETS = """
import sys, time
from infra.git import GitAuth
from services.deploys import auth_header_file, private_file
from services.secrets import env_file_text

env_text = env_file_text({"API_TOKEN": sys.argv[1]})
with private_file(env_text, prefix="orchestrator-env-", name="service.env") as env_file, auth_header_file(
    GitAuth(header="Authorization: Basic " + sys.argv[2])
) as header_file:
    print(env_file, header_file, flush=True)
    time.sleep(120)
"""
"""What run_deploy does with a project's secrets and a forge's header while the playbook runs; then it waits."""

RUN_PLAYBOOK = """
import asyncio, sys
from pathlib import Path
from infra.ansible import inventory_for, run_playbook

local = inventory_for(name="localhost", address="127.0.0.1", connection="local")
asyncio.run(run_playbook(sys.argv[1], inventory=local, extravars={}, work_root=Path(sys.argv[2]), timeout_s=120))
"""

SLEEPY_PLAYBOOK = """
- hosts: targets
  gather_facts: false
  tasks:
    - ansible.builtin.command: sleep 60
"""

QUICK_PLAYBOOK = """
- hosts: targets
  gather_facts: false
  tasks:
    - ansible.builtin.command: "true"
"""


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """The project's code in a new process, leading a process group of its own (as the CLI would be)."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process and its group, and reap it (a zombie is no owner)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def files_holding(root: Path, value: str) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``value``."""
    hits = []
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                if value.encode() in Path(folder, name).read_bytes():
                    hits.append(Path(folder, name))
            except OSError:
                continue
    return hits


def run_processes(owner_pid: int) -> dict[int, str]:
    """pid -> command line of the live processes whose ORCH_RUN_OWNER names ``owner_pid`` as their owner."""
    marker = f"{OWNER_ENV}={owner_pid}-".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ):
            found[int(entry.name)] = cmdline
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; each is killed with its group, and its playbook processes ended, whatever happened."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        kill_group(proc)
    sweep_orphans()


@pytest.mark.slow
def test_secrets_files_of_a_killed_deploy_are_gone_after_the_next_start(
    settings: Settings, started: list[subprocess.Popen[str]]
) -> None:
    killed_token, killed_header = secrets.token_hex(16), secrets.token_hex(16)
    live_token = secrets.token_hex(16)
    killed = spawn(HOLD_SECRETS, killed_token, killed_header)
    live = spawn(HOLD_SECRETS, live_token, secrets.token_hex(16))
    started += [killed, live]
    assert killed.stdout is not None and live.stdout is not None
    killed_files = [Path(p) for p in killed.stdout.readline().split()]
    live_files = [Path(p) for p in live.stdout.readline().split()]
    assert len(killed_files) == 2 and all(p.is_relative_to(RAM_DIR) for p in killed_files + live_files)

    kill_group(killed)
    assert files_holding(RAM_DIR, killed_token) == [killed_files[0]]  # the hole: the kill left them in RAM
    assert files_holding(RAM_DIR, killed_header) == [killed_files[1]]

    settings.ensure_data_dir()
    start = cli(settings, "servers", "--json")
    assert start.returncode == 0, start.stderr

    assert files_holding(RAM_DIR, killed_token) == []
    assert files_holding(RAM_DIR, killed_header) == []
    assert not killed_files[0].parent.exists() and not killed_files[1].parent.exists()
    assert files_holding(RAM_DIR, live_token) == [live_files[0]]  # its owner runs: kept
    assert live.poll() is None


@pytest.mark.slow
async def test_a_killed_orchestrators_playbook_is_ended_by_the_next_start(
    settings: Settings, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    sleepy, quick = tmp_path / "sleepy.yml", tmp_path / "quick.yml"
    sleepy.write_text(SLEEPY_PLAYBOOK)
    quick.write_text(QUICK_PLAYBOOK)
    killed = spawn(RUN_PLAYBOOK, str(sleepy), str(tmp_path / "killed"))
    live = spawn(RUN_PLAYBOOK, str(sleepy), str(tmp_path / "live"))
    started += [killed, live]

    def sleeping(owner: subprocess.Popen[str]) -> Callable[[], bool]:
        return lambda: any(cmd.startswith("sleep 60") for cmd in run_processes(owner.pid).values())

    wait_until(sleeping(killed), 60, "the killed owner's playbook to reach its task")
    wait_until(sleeping(live), 60, "the live owner's playbook to reach its task")
    time.sleep(1)  # about a second into the task

    kill_group(killed)
    time.sleep(0.5)
    survivors = run_processes(killed.pid).values()
    assert any("ansible-playbook" in cmd for cmd in survivors), survivors  # the hole: the run outlives its owner
    assert any(cmd.startswith("sleep 60") for cmd in survivors), survivors

    settings.ensure_data_dir()
    start = cli(settings, "servers", "--json")
    assert start.returncode == 0, start.stderr

    assert run_processes(killed.pid) == {}
    assert sleeping(live)() and live.poll() is None  # a run whose owner is alive is left alone

    again = await run_playbook(
        str(quick),
        inventory=inventory_for(name="localhost", address="127.0.0.1", connection="local"),
        extravars={},
        work_root=tmp_path / "again",
        timeout_s=60,
    )
    assert again.ok, again.summary
    assert sleeping(live)()

    kill_group(live)
    assert run_processes(live.pid) != {}
    assert sweep_orphans().pids and run_processes(live.pid) == {}


def environ_of(pid: int) -> dict[str, str]:
    """A process's environment (empty when it is gone or not ours to read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def processes_owned_by(owner_pid: int) -> list[int]:
    """Live processes of playbook runs that ``owner_pid`` started (their inherited run marker names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and environ_of(int(entry.name)).get(OWNER_ENV, "").startswith(f"{owner_pid}-"):
            found.append(int(entry.name))
    return found


def ram_files_holding(value: str) -> list[Path]:
    found = []
    for path in RAM_DIR.rglob("*"):
        try:
            if path.is_file() and value.encode() in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


@pytest.mark.slow
async def test_kill_9_in_the_middle_of_the_deploy_playbook_then_resume(settings: Settings, tmp_path: Path) -> None:
    """The approved deploy is killed (the CLI's whole process group) while its playbook runs with the service's
    secret in its RAM file; `resume` finishes it: one deployment, the service answers, no file holds the secret,
    no process of the killed run is left."""
    from models.tables import Deployment, Project
    from tests.integration.helpers import REQUEST, cli_env, rows, run_turn, stop_service

    value = f"kill-mid-deploy-{secrets.token_hex(6)}"
    events = await run_turn(settings, REQUEST, "t-kill-deploy")
    assert [e.payload["kind"] for e in events if e.kind == "interrupt" and e.payload] == ["deploy_approval"]
    assert cli(settings, "secret-set", "hello-api", "API_TOKEN", stdin=value).returncode == 0
    out = (tmp_path / "approve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "resume", "t-kill-deploy", "--approve"],
        env=cli_env(settings),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (ram_files_holding(value) and processes_owned_by(proc.pid)):
            assert proc.poll() is None, "the deploy ended early: " + (tmp_path / "approve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the deploy's playbook never ran with the secret's file"
            time.sleep(0.05)
        time.sleep(1.0)  # between tasks: the playbook has started working on the host
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        out.close()
    try:
        survivors = processes_owned_by(proc.pid)
        assert survivors, "the playbook run outlives its killed owner until the next start"
        assert ram_files_holding(value), "the killed deploy's secret file is still in RAM until the next start"

        done = cli(settings, "resume", "t-kill-deploy")
        assert done.returncode == 0, done.stdout + done.stderr

        assert processes_owned_by(proc.pid) == []
        assert ram_files_holding(value) == []
        [project] = await rows(settings, Project)
        deployments = await rows(settings, Deployment)
        assert project.status == "active" and [d.status for d in deployments] == ["succeeded"], deployments
        assert httpx.get(deployments[0].url or "", timeout=5, trust_env=False).status_code == 200
    finally:
        await stop_service(settings)
