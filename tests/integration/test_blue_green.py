"""Blue/green deploys for real: deploy.yml's switch (files/switch_proxy.py) against localhost, with a client polling.

A client asks the project's port for the release's version all through a deploy: the new release is proven on its
own port first, so no request fails and the answers change once, from the old version to the new, never back; a
release that fails its checks never answers a single request. The `recreate` strategy stays available and both
strategies can follow each other on one project.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from infra.ports import port_owner_here
from tests.integration.test_ansible_deploy import (
    CRASH_APP,
    STRANGER,
    Deployment,
    commit_app,
    free_port,
    pid_gone,
    pids_with,
    stop_everything,
)

VERSIONED_APP = """\
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "{version}"
time.sleep({startup_s})  # a slow start-up: with a stop-then-start switch the port would be dead meanwhile


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = VERSION.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("version", VERSION, "listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def app(version: str, startup_s: float = 0.0) -> str:
    return VERSIONED_APP.format(version=version, startup_s=startup_s)


class Poller:
    """Ask ``url`` every 20 ms on a thread, each time on a new connection; keep every answer or error in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url)
                    self.answers.append(f"{response.status_code} {response.text}")
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.02)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
async def target(tmp_path: Path, settings: Settings) -> AsyncIterator[Deployment]:
    d = Deployment(tmp_path, settings.release_root)
    try:
        yield d
    finally:
        await stop_everything(d)


def switch_pid(d: Deployment) -> int:
    return int((d.project_root / "run" / "proxy.pid").read_text())


@pytest.mark.slow
async def test_the_new_release_takes_the_traffic_only_once_it_answers_and_a_failing_one_never_does(
    target: Deployment,
) -> None:
    d = target
    url = f"http://127.0.0.1:{d.port}/"
    v1 = commit_app(d.work, app("v1"), "v1")
    first = await d.deploy(v1)
    assert first.ok, first.summary
    switch = switch_pid(d)
    old = int((d.project_root / "run" / "service.pid").read_text())
    own_port = int((d.project_root / "run" / "service.port").read_text())
    assert own_port != d.port and (d.project_root / "run" / "upstream").read_text().strip() == str(own_port)
    proof = await port_owner_here(d.port, str(d.project_root / "run" / "service.pid"))
    assert proof.code == 0 and f"served by the deploy switch (pid {switch}" in proof.text, proof.text
    assert f"forwarding to port {own_port} is served by the deployed service (pid {old}" in proof.text

    v2 = commit_app(d.work, app("v2", startup_s=2.0), "v2, slow to start")
    with Poller(url) as poll:
        time.sleep(0.3)
        second = await d.deploy(v2, drain_s=1)
        time.sleep(0.3)
    assert second.ok, second.summary
    assert not poll.errors, poll.errors[:5]
    seen = [answer for i, answer in enumerate(poll.answers) if i == 0 or poll.answers[i - 1] != answer]
    assert seen == ["200 v1", "200 v2"], seen  # one switch, never back, never a failed request
    assert switch_pid(d) == switch  # the switch kept the port all along
    assert pid_gone(old), "the previous release is stopped after its drain"
    new = int((d.project_root / "run" / "service.pid").read_text())
    assert pids_with(str(d.release_dir(v2))) == [new] and not pids_with(str(d.release_dir(v1)))
    assert (d.project_root / "run" / "service.commit").read_text().split() == [v2, str(d.port)]
    assert (d.project_root / "current").resolve() == d.release_dir(v2)

    bad = commit_app(d.work, CRASH_APP, "crashing")
    with Poller(url) as poll:
        time.sleep(0.3)
        failed = await d.deploy(bad, health_timeout=4)
        time.sleep(0.3)
    assert not failed.ok
    assert f"rolled back to {v2}: it answers on port {d.port} again (the new release never took the traffic)" in (
        failed.summary
    )
    assert "FATAL: missing DATABASE_URL" in failed.summary
    assert not poll.errors and set(poll.answers) == {"200 v2"}, (poll.errors[:5], set(poll.answers))
    assert int((d.project_root / "run" / "service.pid").read_text()) == new  # never stopped
    assert not (d.project_root / "run" / "next.pid").exists() and not pids_with(str(d.release_dir(bad)))

    again = await d.deploy(v2)
    assert again.ok and "changed=0" in again.summary, again.summary


@pytest.mark.slow
async def test_the_switch_is_proven_like_the_service_and_restarted_when_it_died(
    target: Deployment, tmp_path: Path
) -> None:
    d = target
    v1 = commit_app(d.work, app("v1"), "v1")
    assert (await d.deploy(v1)).ok
    pid_file = str(d.project_root / "run" / "service.pid")

    # Someone points the switch at a port a stranger serves: the proof names the stranger behind the switch.
    script = tmp_path / "stranger.py"
    script.write_text(STRANGER)
    stranger_port = free_port()
    stranger = subprocess.Popen([sys.executable, str(script), str(stranger_port)], stdout=subprocess.PIPE, text=True)
    upstream = d.project_root / "run" / "upstream"
    live_port = upstream.read_text().strip()
    try:
        assert stranger.stdout is not None and stranger.stdout.readline().strip() == "ready"
        upstream.write_text(f"{stranger_port}\n")
        proof = await port_owner_here(d.port, pid_file)
        assert proof.stranger and f"port {stranger_port} is held by another process: pid {stranger.pid}" in proof.text
        healed = await d.deploy(v1)  # the same commit: the switch is pointed back at the live release
        assert healed.ok and "changed=1" in healed.summary, healed.summary
        assert upstream.read_text().strip() == live_port
    finally:
        stranger.kill()
        stranger.wait(timeout=5)

    # The switch died: the project's port is dead although the release runs; a deploy of the same commit restarts
    # the switch alone.
    switch = switch_pid(d)
    service = int(Path(pid_file).read_text())
    os.kill(switch, 9)
    assert pid_gone(switch)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{d.port}/", timeout=2, trust_env=False)
    restarted = await d.deploy(v1)
    assert restarted.ok, restarted.summary
    assert switch_pid(d) != switch and int(Path(pid_file).read_text()) == service
    assert httpx.get(f"http://127.0.0.1:{d.port}/", timeout=5, trust_env=False).text == "v1"

    # A deploy killed after it started its release and pointed the switch at it, before that release became the
    # live one: the next deploy points the switch back at the live release and stops the unfinished one.
    unfinished_port = free_port()
    unfinished = subprocess.Popen(
        [sys.executable, str(d.release_dir(v1) / "app.py")],
        env={"PORT": str(unfinished_port), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        (d.project_root / "run" / "next.pid").write_text(f"{unfinished.pid}\n")
        upstream.write_text(f"{unfinished_port}\n")
        recovered = await d.deploy(v1)
        assert recovered.ok and "changed=1" in recovered.summary, recovered.summary
        assert unfinished.wait(timeout=10) is not None  # stopped by the deploy
        assert upstream.read_text().strip() == live_port and not (d.project_root / "run" / "next.pid").exists()
        assert int(Path(pid_file).read_text()) == service
    finally:
        if unfinished.poll() is None:
            unfinished.kill()
            unfinished.wait(timeout=5)


@pytest.mark.slow
async def test_recreate_and_blue_green_follow_each_other_on_one_project(target: Deployment) -> None:
    d = target
    url = f"http://127.0.0.1:{d.port}/"
    v1 = commit_app(d.work, app("v1"), "v1")
    v2 = commit_app(d.work, app("v2"), "v2")
    v3 = commit_app(d.work, app("v3"), "v3")

    recreated = await d.deploy(v1, deploy_strategy="recreate")
    assert recreated.ok, recreated.summary
    assert not (d.project_root / "run" / "proxy.pid").exists()
    proof = await port_owner_here(d.port, str(d.project_root / "run" / "service.pid"))
    assert proof.code == 0 and "served by the deployed service" in proof.text  # the release holds the port itself

    switched = await d.deploy(v2)  # blue_green takes over: the old release gives up the port to the switch
    assert switched.ok, switched.summary
    assert httpx.get(url, timeout=5, trust_env=False).text == "v2"
    switch = switch_pid(d)

    back = await d.deploy(v3, deploy_strategy="recreate")  # and back: the switch is stopped, the release holds the port
    assert back.ok, back.summary
    assert pid_gone(switch) and not (d.project_root / "run" / "upstream").exists()
    assert httpx.get(url, timeout=5, trust_env=False).text == "v3"
    assert not pids_with(str(d.release_dir(v2)))

    stopped = await d.stop()
    assert stopped.ok and not pids_with(str(d.project_root / "releases"))
