"""playbooks/files/port_owner.py as the deploy runs it: wait for the port, prove its owner, ask the health URL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infra.ports import PORT_OWNER


def serving(status: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def session_pid_file(tmp_path: Path) -> Path:
    """A pid file naming this process's session, as deploy.yml's setsid start makes the service's pid its session."""
    path = tmp_path / "service.pid"
    path.write_text(f"{os.getsid(0)}\n")
    return path


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), serving(request.param))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def check(port: int, pid_file: Path, wait_s: float = 3) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(PORT_OWNER), "--direct", "--wait", str(wait_s), "--health", "/health"]
    return subprocess.run([*argv, str(port), str(pid_file)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("server", [200], indirect=True)
def test_a_release_that_owns_its_port_and_answers_200_passes(server: int, session_pid_file: Path) -> None:
    done = check(server, session_pid_file)
    assert done.returncode == 0, done.stdout
    assert f"port {server} is served by the deployed service" in done.stdout


@pytest.mark.parametrize("server", [500], indirect=True)
def test_a_health_url_that_answers_500_fails_naming_the_step(server: int, session_pid_file: Path) -> None:
    done = check(server, session_pid_file)
    assert done.returncode == 1
    assert "Check the health URL: Status code was 500 and not [200]" in done.stdout


@pytest.mark.parametrize("server", [200], indirect=True)
def test_a_port_served_by_another_session_fails_before_the_health_url(server: int, tmp_path: Path) -> None:
    other = tmp_path / "service.pid"
    other.write_text("1\n")  # init's session: not this process's
    done = check(server, other)
    assert done.returncode == 1 and f"port {server} is held by another process: pid {os.getpid()}" in done.stdout
    assert "Check the health URL" not in done.stdout


def test_nothing_listening_fails_at_the_wait(session_pid_file: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])  # bound, never listening: nothing accepts
        done = check(port, session_pid_file, wait_s=1)
    assert done.returncode == 1
    assert done.stdout.strip() == f"Wait for the service port: Timeout when waiting for 127.0.0.1:{port}"
