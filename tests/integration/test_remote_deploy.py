"""A remote server for real: Debian's sshd on a loopback port stands in for another machine. Registered, provisioned
over SSH, chosen by Zavhoz, deployed to by Ansible over SSH (the local forge's code travelling as a git bundle),
health-checked over SSH, undeployed."""

from __future__ import annotations

import json
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.db import Database
from core.settings import Settings
from infra.venvs import uv_binary
from models.tables import Deployment, PortLease, Project, Server
from services.deploys import REMOTE_RELEASE_ROOT, redeploy, run_deploy
from sync_workers import health_checker
from sync_workers.base import SyncContext
from tests.fixtures.real_sshd import RealSSHD
from tests.integration.helpers import (
    REQUEST,
    VERSION_UPDATE,
    cli,
    rows,
    run_turn,
    scenario_variant,
    version_update_exchanges,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[RealSSHD]:
    with RealSSHD(tmp_path / "sshd") as host:
        yield host


async def test_add_provision_deploy_check_and_undeploy_over_real_ssh(
    settings: Settings, sshd: RealSSHD, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={
            "register_localhost": False,
            "ssh_key_path": sshd.client_key,
            "ssh_known_hosts": sshd.known_hosts,
            "model": "replay/update",
            "replay_dir": scenario_variant(tmp_path / "rec", "update", extra=version_update_exchanges()),
        }
    )
    shutil.rmtree(Path(REMOTE_RELEASE_ROOT) / "hello-api", ignore_errors=True)  # the "remote" host is this machine
    ports = f"{settings.port_range_start}-{settings.port_range_end}"
    added = cli(
        settings,
        "add-server", "web-1", "--address", "127.0.0.1", "--ssh-port", str(sshd.port), "--ports", ports, "--provision",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    synced = cli(settings, "sync", "--once")  # provisioner_trigger runs provision.yml over SSH; server_sync checks
    assert synced.returncode == 0, synced.stdout + synced.stderr
    [server] = await rows(settings, Server)
    assert server.status == "ready", synced.stdout

    try:
        events = await run_turn(settings, REQUEST, "t-remote")
        [ask] = [e for e in events if e.kind == "interrupt"]
        assert ask.payload is not None and ask.payload["kind"] == "deploy_approval", [e.error for e in events]
        done = cli(settings, "resume", "t-remote", "--approve")
        assert done.returncode == 0, done.stderr
        [deployment] = await rows(settings, Deployment)
        [project] = await rows(settings, Project)
        assert (deployment.status, project.status, deployment.server_id) == ("succeeded", "active", server.id)
        assert httpx.get(deployment.url or "", timeout=5, trust_env=False).status_code == 200

        release = Path(REMOTE_RELEASE_ROOT) / "hello-api" / "releases" / deployment.commit_sha
        origin = subprocess.run(
            ["git", "-C", str(release), "remote", "get-url", "origin"], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert origin.endswith("/run/repo.bundle")  # cloned from the bundle the deploy carried, not the forge

        db = Database(settings.db_url)
        try:
            summary = await health_checker.run_pass(SyncContext(settings=settings, db=db))
        finally:
            await db.dispose()
        assert summary.requests == 1 and summary.transient_failures == 0, summary.notes  # curl and proof over SSH

        pid_file = Path(REMOTE_RELEASE_ROOT) / "hello-api" / "run" / "service.pid"
        pid = pid_file.read_text().strip()
        db = Database(settings.db_url)
        try:  # the same commit deployed again: the running process is left alone, no second copy
            again = await redeploy(settings, db, project, deployment, server)
        finally:
            await db.dispose()
        assert again.ok and "changed=0" in again.summary and pid_file.read_text().strip() == pid, again.summary

        # An update over SSH (a second good release), then `rollback` to the first and `rollback --to` the second.
        events = await run_turn(settings, VERSION_UPDATE, "t-remote")
        [approval] = [e for e in events if e.kind == "interrupt"]
        assert approval.payload is not None and approval.payload["kind"] == "deploy_approval"
        assert cli(settings, "resume", "t-remote", "--approve").returncode == 0
        first, second = sorted(
            (d for d in await rows(settings, Deployment) if d.status == "succeeded"), key=lambda d: d.id or 0
        )
        version = (deployment.url or "").replace("/health", "/version")
        assert httpx.get(version, timeout=5, trust_env=False).json() == {"version": "1.0.0"}
        back = cli(settings, "rollback", "hello-api")
        assert back.returncode == 0, back.stderr
        assert httpx.get(version, timeout=5, trust_env=False).status_code == 404  # the first release: no /version
        current = Path(REMOTE_RELEASE_ROOT) / "hello-api" / "current"
        assert current.resolve().name == first.commit_sha
        forward = cli(settings, "rollback", "hello-api", "--to", str(second.id))
        assert forward.returncode == 0, forward.stderr
        assert httpx.get(version, timeout=5, trust_env=False).json() == {"version": "1.0.0"}
        assert current.resolve().name == second.commit_sha
        [project] = await rows(settings, Project)
        assert project.status == "active"

        # A release that fails its checks on the remote host: stopped, never switched to; the live one still answers.
        crash = push_commit(project.clone_url or "", tmp_path / "crash", "app.py", CRASH)
        result = await run_deploy(
            settings, project=project, server=server, commit=crash, port=deployment.port, entrypoint="app.py",
            health_path="/health",
        )  # fmt: skip
        assert not result.ok and f"rolled back to {second.commit_sha}" in result.summary, result.summary
        assert "(the new release never took the traffic)" in result.summary, result.summary
        assert httpx.get(version, timeout=5, trust_env=False).json() == {"version": "1.0.0"}

        # stop, a stranger takes the port, start refuses to call that a success; the port freed, start works
        assert cli(settings, "stop", "hello-api").returncode == 0
        stranger = subprocess.Popen([sys.executable, "-m", "http.server", str(deployment.port), "-b", "127.0.0.1"])
        try:
            wait_listening(deployment.port)
            refused = cli(settings, "start", "hello-api")
            assert refused.returncode == 2 and f"held by another process: pid {stranger.pid}" in refused.stderr
        finally:
            stranger.kill()
            stranger.wait(timeout=5)
        started = cli(settings, "start", "hello-api")
        assert started.returncode == 0, started.stderr
        assert httpx.get(deployment.url or "", timeout=5, trust_env=False).status_code == 200
    finally:
        gone = cli(settings, "delete", "hello-api", "--yes", "--json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["status"] == "archived"
    assert await rows(settings, PortLease) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(deployment.url or "", timeout=3, trust_env=False)


CRASH = "import sys\nprint('FATAL: no database', file=sys.stderr)\nraise SystemExit(3)\n"


def push_commit(repo: str, work: Path, path: str, content: str) -> str:
    """Clone ``repo``, commit ``content`` at ``path`` on main, push; return the commit."""
    subprocess.run(["git", "clone", "-q", repo, str(work)], check=True)
    (work / path).write_text(content)
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "commit", "-q", "-am", "a release that cannot start"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def wait_listening(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


async def test_provisioning_twice_changes_nothing_and_a_changed_host_key_is_refused(
    settings: Settings, sshd: RealSSHD
) -> None:
    from infra.ansible import PlaybookResult, inventory_for, run_playbook

    uv_dest = sshd.dir / "bin" / "uv"  # where provision.yml puts uv (/usr/local/bin on a real host); not there yet
    uv_dest.parent.mkdir()

    async def provision(known_hosts: Path) -> PlaybookResult:
        inventory = inventory_for(
            name="web-1",
            address="127.0.0.1",
            connection="ssh",
            ssh_port=sshd.port,
            key_path=sshd.client_key,
            known_hosts=known_hosts,
        )
        extravars = {
            "release_root": REMOTE_RELEASE_ROOT,
            "service_user": settings.service_user,
            "uv_src": uv_binary(),
            "uv_arch": platform.machine(),
            "uv_dest": str(uv_dest),
        }
        work = settings.data_dir / "ansible"
        return await run_playbook(
            "provision.yml", inventory=inventory, extravars=extravars, work_root=work, timeout_s=120
        )

    other = sshd.dir / "other_host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = sshd.dir / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]) + "\n")
    # First, before any connection exists (Ansible's ssh keeps one open for a minute and reuses it): the host's key
    # is not the one on record, so nothing connects and nothing is trusted.
    refused = await provision(wrong)
    assert not refused.ok and "unreachable=1" in refused.summary, refused.summary

    first = await provision(sshd.known_hosts)
    assert first.ok, first.summary
    version = subprocess.run([str(uv_dest), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("uv "), version  # the controller's uv, copied over SSH: it builds the release venvs
    second = await provision(sshd.known_hosts)
    assert second.ok and "changed=0" in second.summary, second.summary
