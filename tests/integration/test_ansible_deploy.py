"""Real ansible-runner runs of playbooks/deploy.yml and stop.yml against localhost (no mocks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from infra.ansible import PlaybookResult, inventory_for, run_playbook
from tests.fixtures import git_http

GIT_ENV = {**os.environ, **git_http.GIT_ENV}

GOOD_APP = """\
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = json.dumps({"status": "ok"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b"not found"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

CRASH_APP = """\
import sys

print("FATAL: missing DATABASE_URL, refusing to start", file=sys.stderr, flush=True)
raise SystemExit(3)
"""

LOCAL = inventory_for(name="localhost", address="127.0.0.1", connection="local")


def git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def commit_app(work: Path, source: str, message: str) -> str:
    (work / "app.py").write_text(source)
    git("add", "app.py", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pids_with(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def pid_gone(pid: int, wait_s: float = 10.0) -> bool:
    """Wait until ``os.kill(pid, 0)`` raises; orphans are reaped by PID 1, which can take a moment."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


class Deployment:
    def __init__(self, tmp_path: Path, release_root: Path) -> None:
        self.tmp = tmp_path
        self.bare = tmp_path / "origin.git"
        self.work = tmp_path / "work"
        self.release_root = release_root / "srv"  # outside tmp_path (0700): the service's user must reach it
        self.runner_root = tmp_path / "runner"
        self.project = "demo"
        self.port = free_port()
        git("init", "-q", "--bare", "-b", "main", str(self.bare))
        git("clone", "-q", str(self.bare), str(self.work))

    @property
    def project_root(self) -> Path:
        return self.release_root / self.project

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def release_dir(self, commit: str) -> Path:
        return self.project_root / "releases" / commit

    async def deploy(
        self, commit: str, health_timeout: int = 15, tree: str = "", keep: int = 5, **more: object
    ) -> PlaybookResult:
        extravars = {
            **more,
            "keep_releases": keep,
            "tree": tree,
            "project": self.project,
            "repo_url": str(self.bare),
            "commit": commit,
            "port": self.port,
            "entrypoint": "app.py",
            "health_path": "/health",
            "release_root": str(self.release_root),
            "service_python": "/usr/bin/python3",
            "health_timeout": health_timeout,
        }
        return await run_playbook(
            "deploy.yml", inventory=LOCAL, extravars=extravars, work_root=self.runner_root, timeout_s=120
        )

    async def stop(self) -> PlaybookResult:
        extravars = {"project": self.project, "release_root": str(self.release_root)}
        return await run_playbook(
            "stop.yml", inventory=LOCAL, extravars=extravars, work_root=self.runner_root, timeout_s=60
        )


async def stop_everything(d: Deployment) -> None:
    """Stop what a test deployed; then kill whatever of it still runs (releases, the switch)."""
    try:
        await d.stop()
    finally:
        for pid in pids_with(str(d.project_root / "releases")) + pids_with(str(d.project_root / "bin")):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
async def deployment(tmp_path: Path, settings: Settings) -> AsyncIterator[Deployment]:
    d = Deployment(tmp_path, settings.release_root)
    try:
        yield d
    finally:
        await stop_everything(d)  # nothing started from this tmp dir may outlive the test


@pytest.mark.slow
@pytest.mark.parametrize("mitogen", ["1", "0"], ids=["mitogen", "ansible-linear"])
async def test_deploy_is_idempotent_and_stop_stops(
    deployment: Deployment, mitogen: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same playbooks under both strategies: Mitogen's (the default) and Ansible's own (ORCH_ANSIBLE_MITOGEN=0)."""
    monkeypatch.setenv("ORCH_ANSIBLE_MITOGEN", mitogen)
    sha = commit_app(deployment.work, GOOD_APP, "good app")

    first = await deployment.deploy(sha)
    assert first.ok, first.summary
    assert first.summary.startswith("ok=")
    assert httpx.get(deployment.health_url, timeout=5, trust_env=False).json() == {"status": "ok"}
    pid_file = deployment.project_root / "run" / "service.pid"
    pid = int(pid_file.read_text())
    assert (deployment.project_root / "run" / "service.commit").read_text().split() == [sha, str(deployment.port)]

    second = await deployment.deploy(sha)
    assert second.ok, second.summary
    assert "changed=0" in second.summary
    assert int(pid_file.read_text()) == pid
    assert pids_with(str(deployment.release_dir(sha))) == [pid]
    assert httpx.get(deployment.health_url, timeout=5, trust_env=False).status_code == 200
    assert not list(deployment.runner_root.iterdir()), "private data dirs of successful runs are removed"

    stopped = await deployment.stop()
    assert stopped.ok, stopped.summary
    assert "changed=1" in stopped.summary
    assert pid_gone(pid)
    assert not pid_file.exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(deployment.health_url, timeout=2, trust_env=False)

    again = await deployment.stop()
    assert again.ok and "changed=0" in again.summary, again.summary


@pytest.mark.slow
async def test_a_checkout_whose_tree_differs_from_the_signed_one_deploys_nothing(deployment: Deployment) -> None:
    sha = commit_app(deployment.work, GOOD_APP, "good app")
    tree = git("rev-parse", f"{sha}^{{tree}}", cwd=deployment.work)
    other = "0" * 40
    refused = await deployment.deploy(sha, tree=other)
    assert not refused.ok and f"the signed verification attests {other}" in refused.summary
    assert tree in refused.summary and not deployment.release_dir(sha).exists()
    assert not pids_with(str(deployment.project_root / "releases"))
    signed = await deployment.deploy(sha, tree=tree)  # the tree it attests: deployed
    assert signed.ok, signed.summary
    assert httpx.get(deployment.health_url, timeout=5, trust_env=False).status_code == 200


@pytest.mark.slow
async def test_crashing_commit_fails_with_log_tail(deployment: Deployment) -> None:
    commit_app(deployment.work, GOOD_APP, "good app")
    bad = commit_app(deployment.work, CRASH_APP, "crashing app")

    result = await deployment.deploy(bad, health_timeout=4)

    assert not result.ok
    assert result.status == "failed"
    assert "Report the unhealthy service" in result.summary
    assert "Wait for the service port" in result.summary
    assert "FATAL: missing DATABASE_URL" in result.summary
    assert not pids_with(str(deployment.release_dir(bad)))
    kept = list(deployment.runner_root.iterdir())
    assert len(kept) == 1 and str(kept[0]) in result.summary, "failed runs keep their private data dir"


def test_inventory_for_local() -> None:
    inv = inventory_for(name="box", address="ignored", connection="local")
    assert inv == {
        "all": {
            "children": {
                "targets": {
                    "hosts": {"box": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
                }
            }
        }
    }


def test_inventory_for_ssh() -> None:
    inv = inventory_for(name="vps1", address="203.0.113.7", connection="ssh", ssh_port=2222, ssh_user="deploy")
    host = inv["all"]["children"]["targets"]["hosts"]["vps1"]
    assert host == {
        "ansible_host": "203.0.113.7",
        "ansible_port": 2222,
        "ansible_user": "deploy",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=yes",  # strict even with ssh's default known_hosts
    }
    keyed = inventory_for(
        name="v", address="h", connection="ssh", key_path=Path("/k/id"), known_hosts=Path("/k/known_hosts")
    )["all"]["children"]["targets"]["hosts"]["v"]
    assert keyed["ansible_ssh_private_key_file"] == "/k/id" and (keyed["ansible_port"], keyed["ansible_user"]) == (
        22,
        "root",
    )
    assert keyed["ansible_ssh_common_args"] == (
        "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/k/known_hosts -o IdentitiesOnly=yes"
    )


def test_inventory_for_rejects_unknown_connection() -> None:
    with pytest.raises(ValueError):
        inventory_for(name="x", address="y", connection="winrm")


STRANGER = """\
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


print("ready", flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.mark.slow
async def test_a_stranger_answering_on_the_port_fails_the_deploy(deployment: Deployment, tmp_path: Path) -> None:
    """Another process holds the leased port and answers 200 to anything: the new service cannot bind, and the
    deploy must not be called a success because someone answered."""
    sha = commit_app(deployment.work, GOOD_APP, "good app")
    script = tmp_path / "stranger.py"
    script.write_text(STRANGER)
    stranger = subprocess.Popen([sys.executable, str(script), str(deployment.port)], stdout=subprocess.PIPE, text=True)
    try:
        assert stranger.stdout is not None and stranger.stdout.readline().strip() == "ready"
        assert httpx.get(deployment.health_url, timeout=5, trust_env=False).status_code == 200  # it answers

        result = await deployment.deploy(sha, health_timeout=6)

        assert not result.ok and result.status == "failed"
        assert f"port {deployment.port} is held by another process: pid {stranger.pid}" in result.summary
        assert "stranger.py" in result.summary and "Address already in use" in result.summary  # the service's log
    finally:
        stranger.kill()
        stranger.wait(timeout=5)

    fine = await deployment.deploy(sha)  # the port is free again: the same commit deploys and proves itself
    assert fine.ok, fine.summary


@pytest.mark.slow
async def test_a_release_that_fails_its_check_is_rolled_back_and_the_old_one_answers(deployment: Deployment) -> None:
    good = commit_app(deployment.work, GOOD_APP, "good app")
    assert (await deployment.deploy(good)).ok
    bad = commit_app(deployment.work, CRASH_APP, "crashing app")

    result = await deployment.deploy(bad, health_timeout=4)

    assert not result.ok and f"rolled back to {good}: it answers on port {deployment.port} again" in result.summary
    assert "FATAL: missing DATABASE_URL" in result.summary  # what the failed release said
    assert httpx.get(deployment.health_url, timeout=5, trust_env=False).json() == {"status": "ok"}
    pid = int((deployment.project_root / "run" / "service.pid").read_text())
    assert pids_with(str(deployment.release_dir(good))) == [pid] and not pids_with(str(deployment.release_dir(bad)))
    state = (deployment.project_root / "run" / "service.commit").read_text().split()
    assert state == [good, str(deployment.port)]
    assert (deployment.project_root / "current").resolve() == deployment.release_dir(good)  # still the live one
    again = await deployment.deploy(good)  # the old release is simply what runs
    assert again.ok and "changed=0" in again.summary, again.summary


@pytest.mark.slow
async def test_only_the_newest_releases_are_kept_and_never_the_live_one(deployment: Deployment) -> None:
    shas = [commit_app(deployment.work, GOOD_APP + f"# release {i}\n", f"release {i}") for i in range(3)]
    for sha in shas:
        result = await deployment.deploy(sha, keep=2)
        assert result.ok, result.summary
    kept = {p.name for p in (deployment.project_root / "releases").iterdir()}
    assert kept == {shas[1], shas[2]}  # the first is pruned; the live one and the one before it stay
    assert (deployment.project_root / "current").resolve() == deployment.release_dir(shas[2])
    again = await deployment.deploy(shas[2], keep=2)
    assert again.ok and "changed=0" in again.summary, again.summary  # nothing more to prune, nothing restarted
