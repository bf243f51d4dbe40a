"""A project's tests as the Tester runs them: its own venv, in the sandbox, against hostile code too.

Each hostile test below *passes only if its attack worked*: a contained attack is a failed run, with its reason in
the output, and the orchestrator carries on.
"""

from __future__ import annotations

import os
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from infra.testrun import UNCONFINED, run_tests
from infra.venvs import ensure_project_env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "workspaces" / "hostile"
    root.mkdir(parents=True)
    return root


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on the host's 127.0.0.1 (the sandbox has its own loopback: it must not reach this one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def write(root: Path, files: dict[str, str]) -> None:
    for name, body in files.items():
        (root / name).write_text(textwrap.dedent(body))


async def test_a_declared_dependency_is_there_and_an_undeclared_one_is_not(settings: Settings, project: Path) -> None:
    write(
        project,
        {
            "requirements.txt": "flask>=3,<4\n",
            "app.py": "from flask import Flask\napp = Flask(__name__)\n\n@app.get('/health')\ndef health():\n"
            "    return {'status': 'ok'}\n",
            "test_app.py": "from app import app\n\ndef test_health():\n"
            "    assert app.test_client().get('/health').json == {'status': 'ok'}\n",
        },
    )
    run = await run_tests(project, settings)
    assert run.passed and run.sandboxed, run.output
    assert "1 passed" in run.output
    env = await ensure_project_env(
        project, settings.sandbox_dir / "venvs", python=settings.sandbox_python, find_links=settings.sandbox_find_links
    )
    assert env.reused and list(env.root.glob("lib/python*/site-packages/flask/__pycache__/*.pyc")), (
        "installed byte-compiled: the sandbox mounts the venv read-only and runs write no bytecode"
    )

    (project / "requirements.txt").unlink()
    undeclared = await run_tests(project, settings)
    assert not undeclared.passed and "No module named 'flask'" in undeclared.output, undeclared.output
    fastapi = await run_tests_of(project, settings, "def test_x():\n    import fastapi  # the orchestrator has it\n")
    assert not fastapi.passed and "No module named 'fastapi'" in fastapi.output


async def run_tests_of(project: Path, settings: Settings, test_source: str) -> object:
    for old in project.glob("test_*.py"):
        old.unlink()
    (project / "test_it.py").write_text(test_source)
    return await run_tests(project, settings)


async def test_a_requirement_that_cannot_be_installed_is_a_failed_run(settings: Settings, project: Path) -> None:
    write(project, {"requirements.txt": "no-such-package-7f3a9==1.0\n", "test_x.py": "def test_x():\n    pass\n"})
    run = await run_tests(project, settings)
    assert not run.passed and run.rc is None
    assert run.reason is not None and "requirements not installed" in run.reason
    assert "no-such-package-7f3a9" in run.output


async def test_hostile_tests_are_contained_and_reported(
    settings: Settings, project: Path, listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_SECRETS_KEY", "leak-me-key")
    settings.ensure_data_dir()
    (settings.data_dir / "secrets.key").write_text("the-key")
    data = settings.data_dir.resolve()
    me = os.getpid()
    write(
        project,
        {
            "test_hostile.py": f"""
            import os, socket

            def test_reads_the_secrets_key():
                assert open({str(data / "secrets.key")!r}).read() == "the-key"

            def test_reads_the_database():
                assert os.path.getsize({str(data / "orchestrator.db")!r}) >= 0

            def test_reads_the_orchestrators_environment():
                assert b"leak-me-key" in open("/proc/{me}/environ", "rb").read()

            def test_sees_the_variable_itself():
                assert os.environ.get("ORCH_SECRETS_KEY") == "leak-me-key"

            def test_connects_to_the_host():
                socket.create_connection(("127.0.0.1", {listener}), timeout=2).close()

            def test_resolves_a_name():
                socket.getaddrinfo("pypi.org", 443)

            def test_writes_outside_its_copy():
                open("/usr/hostile", "w").write("x")
            """,
        },
    )
    run = await run_tests(project, settings)
    assert not run.passed and run.sandboxed
    assert "7 failed" in run.output, run.output
    for name in ("FileNotFoundError", "ConnectionRefusedError", "gaierror"):
        assert name in run.output, name
    assert "leak-me-key" not in run.output.replace("== 'leak-me-key'", "").replace('"leak-me-key"', "")


async def test_runaway_tests_are_stopped_by_their_limits(settings: Settings, project: Path) -> None:
    tight = settings.model_copy(
        update={"test_timeout_s": 4, "sandbox_file_size_mb": 10, "sandbox_memory_mb": 512, "sandbox_processes": 64}
    )
    marker = "orch-daemon-marker-5c1e"
    write(
        project,
        {
            "test_limits.py": f"""
            import os, time

            def test_writes_5_gb():
                with open("big", "wb") as f:
                    for _ in range(5 * 1024):
                        f.write(b"x" * 1024 * 1024)

            def test_allocates_8_gb():
                block = bytearray(8 * 1024 ** 3)
                assert len(block)

            def test_fork_bomb():
                children = []
                try:
                    for _ in range(1000):
                        pid = os.fork()
                        if pid == 0:
                            time.sleep(3)
                            os._exit(0)
                        children.append(pid)
                finally:
                    for pid in children:
                        os.waitpid(pid, 0)

            def test_leaves_a_daemon():
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        os.execvp("sleep", ["sleep", "60", "{marker}"])
                    os._exit(0)
            """,
        },
    )
    run = await run_tests(project, tight)
    assert not run.passed, run.output
    assert "test_writes_5_gb FAILED" in run.output or "File too large" in run.output or "SIGXFSZ" in run.output
    assert "MemoryError" in run.output
    assert "BlockingIOError" in run.output or "Resource temporarily unavailable" in run.output
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and marker.encode() in _cmdline(p)]
    assert leftovers == [], "nothing of the run is left running"

    write(project, {"test_limits.py": "import time\n\ndef test_sleeps():\n    time.sleep(60)\n"})
    slow = await run_tests(project, tight)
    assert slow.rc is None and slow.reason is not None and "timed out" in slow.reason
    assert slow.duration_s < 30


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


async def test_unconfined_runs_say_so(settings: Settings, project: Path) -> None:
    write(project, {"test_x.py": "def test_x():\n    pass\n"})
    run = await run_tests(project, settings.model_copy(update={"sandbox": "none"}))
    assert run.passed and not run.sandboxed
    assert run.output.startswith(UNCONFINED)


async def test_the_designs_test_command_runs_with_the_projects_own_tools(settings: Settings, project: Path) -> None:
    write(project, {"test_x.py": "import sys\n\ndef test_x():\n    print('PREFIX', sys.prefix)\n"})
    run = await run_tests(project, settings, "pytest -q -s")
    assert run.passed and run.command == "pytest -q -s -rA", run.output  # -rA: a line per test for the gates
    assert run.outcomes == {"test_x.py::test_x": "PASSED"}
    assert "PREFIX " + str(settings.sandbox_dir / "venvs") in run.output, "pytest came from the project's venv"
