"""Project secrets end to end on the real path: the CLI stores them, Ansible hands them to the service, nothing leaks.

Deploys run the real ``services.deploys.run_deploy`` (ansible-runner, playbooks/deploy.yml, connection local) of a
small service whose health JSON reports a hash of the secret it reads from its environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import pwd
import select as select_
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from core.db import Database
from core.settings import Settings
from graphs.state import ServerInfo
from models.enums import ProjectStatus
from models.tables import Project, Server
from nodes.devops import preflight
from services.deploys import local_server, run_deploy, stop_service
from services.leases import ensure_default_server, lease_port
from services.secrets import deploy_env, load_keys, service_env
from tests.integration.helpers import REPO_ROOT, cli, cli_env
from tests.integration.test_ansible_deploy import CRASH_APP, commit_app, git, pids_with
from tests.integration.test_deploy_private_repo import Watch, files_holding

NAME = "secret-api"
# Quotes, $, backticks and a newline: the env file's quoting must carry them intact to the service.
FIRST = "first-VALUE-7f3a 'q' \"dq\" $HOME `id`\nline-two"
SECOND = "second-VALUE-9b2c"
NEEDLES = [b"first-VALUE-7f3a", b"line-two", b"second-VALUE-9b2c"]

SECRET_APP = """\
import hashlib
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = os.environ.get("API_TOKEN", "")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Stage:
    def __init__(self, tmp_path: Path, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.db_url)
        self.bare = tmp_path / "origin.git"
        self.work = tmp_path / "work"
        git("init", "-q", "--bare", "-b", "main", str(self.bare))
        git("clone", "-q", str(self.bare), str(self.work))
        self.info: ServerInfo | None = None
        self.pid = 0

    async def setup(self) -> None:
        self.settings.ensure_data_dir()
        await self.db.migrate()
        await ensure_default_server(self.db, self.settings)
        async with self.db.session() as s:
            project = Project(
                name=NAME, status=ProjectStatus.verified, clone_url=str(self.bare), required_secrets=["API_TOKEN"]
            )
            s.add(project)
            await s.flush()
            assert project.id is not None
            self.pid = project.id
            server = (await s.exec(select(Server))).one()
        port = await lease_port(self.db, project_id=self.pid, server=server)
        assert port is not None and server.id is not None
        self.info = ServerInfo(
            server_id=server.id,
            name=server.name,
            address=server.address,
            connection=server.connection,
            ssh_port=server.ssh_port,
            ssh_user=server.ssh_user,
            port=port,
        )

    def set_secret(self, value: str) -> subprocess.CompletedProcess[str]:
        """``orchestrator secret-set`` in a new process, the value on its stdin."""
        return cli(self.settings, "secret-set", NAME, "API_TOKEN", stdin=value)

    async def deploy(
        self, commit: str, *, watch_argv: bool = True, health_timeout_s: float = 5
    ) -> tuple[bool, str, Watch]:
        """Deploy ``commit`` with the stored secrets; ``watch_argv``: scan every command line meanwhile."""
        async with self.db.session() as s:
            project = await s.get(Project, self.pid)
        assert project is not None and self.info is not None
        env = await service_env(self.settings, self.db, self.pid)
        watch = Watch(NEEDLES, self.settings.data_dir / "ansible")
        with watch if watch_argv else contextlib.nullcontext():
            result = await run_deploy(
                self.settings.model_copy(update={"health_timeout_s": health_timeout_s}),
                project=project,
                server=local_server(),
                commit=commit,
                port=self.info["port"],
                entrypoint="app.py",
                health_path="/health",
                env=env,
            )
        return result.ok, result.summary, watch

    def health(self) -> dict[str, str]:
        assert self.info is not None
        return dict(httpx.get(f"http://127.0.0.1:{self.info['port']}/health", timeout=5, trust_env=False).json())

    @property
    def project_root(self) -> Path:
        return self.settings.release_root.resolve() / NAME

    def service_pid(self) -> int:
        return int((self.project_root / "run" / "service.pid").read_text())


@pytest.fixture
async def stage(tmp_path: Path, settings: Settings) -> AsyncIterator[Stage]:
    st = Stage(tmp_path, settings)
    await st.setup()
    try:
        yield st
    finally:
        try:
            await stop_service(st.settings, project=NAME, server=local_server())
        finally:
            for pid in pids_with(str(st.project_root / "releases")) + pids_with(str(st.project_root / "bin")):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            await st.db.dispose()


@pytest.mark.slow
async def test_the_service_gets_its_secret_and_the_value_stays_out_of_every_file(stage: Stage) -> None:
    ctx = type("Ctx", (), {"db": stage.db, "settings": stage.settings})()
    refused = await preflight(ctx, stage.pid, stage.info)  # type: ignore[arg-type]
    assert refused is not None and "API_TOKEN" in refused, "a missing secret makes the pre-flight refuse"
    assert f"orchestrator secret-set {NAME} API_TOKEN" in refused
    async with stage.db.session() as s:
        row = await s.get(Project, stage.pid)
    assert row is not None and row.setup_required is True

    stored = stage.set_secret(FIRST + "\n")  # a trailing newline (as `echo` adds) is dropped
    assert stored.returncode == 0, stored.stderr
    assert "first-VALUE" not in stored.stdout + stored.stderr
    assert await preflight(ctx, stage.pid, stage.info) is None  # type: ignore[arg-type]

    sha1 = commit_app(stage.work, SECRET_APP, "service reading API_TOKEN")
    ok, summary, watch = await stage.deploy(sha1)
    assert ok, summary
    assert stage.health()["token_sha256"] == sha(FIRST), "the service saw the exact value"
    assert watch.scans > 3 and watch.argv_hits == [], "no command line held the value while deploying"
    assert watch.file_hits == [], "nor any file in the runner's private data dir, even while it ran"
    first_pid = stage.service_pid()
    assert not any(n in Path(f"/proc/{first_pid}/cmdline").read_bytes() for n in NEEDLES)
    env_file = stage.project_root / "run" / "service.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

    ok, summary, _ = await stage.deploy(sha1, watch_argv=False)  # nothing changed: nothing restarts
    assert ok and "changed=0" in summary, summary
    assert stage.service_pid() == first_pid

    assert stage.set_secret(SECOND).returncode == 0
    ok, summary, watch = await stage.deploy(sha1)  # same commit, new value: the service restarts with it
    assert ok, summary
    assert stage.health()["token_sha256"] == sha(SECOND)
    assert stage.service_pid() != first_pid and watch.argv_hits == [] and watch.file_hits == []

    bad = commit_app(stage.work, CRASH_APP, "crashing")  # a failed run keeps its private data dir: still no value
    ok, summary, _ = await stage.deploy(bad, watch_argv=False, health_timeout_s=2)
    assert not ok and "Report the unhealthy service" in summary, summary
    kept = list((stage.settings.data_dir / "ansible").iterdir())
    assert len(kept) == 1 and (kept[0] / "env" / "extravars").is_file()
    assert list((kept[0] / "artifacts").rglob("job_events/*.json")), "the events are kept too"
    assert all(n.decode() not in summary for n in NEEDLES)

    # No file under the data dir holds a value: the database holds ciphertext only, the kept Ansible artifacts
    # (extravars, events) nothing; the one copy is the target's env file, in the release root outside it.
    assert files_holding(stage.settings.data_dir, NEEDLES) == []
    assert files_holding(stage.settings.release_root, NEEDLES) == [env_file]
    assert b"second-VALUE-9b2c" in env_file.read_bytes() and b"first-VALUE" not in env_file.read_bytes()


@pytest.mark.slow
def test_cli_sets_from_stdin_lists_names_and_refuses_bad_input(stage: Stage) -> None:
    assert stage.set_secret("hunter2-VALUE").returncode == 0
    listed = cli(stage.settings, "secret-list", NAME, "--json")
    assert listed.returncode == 0, listed.stderr
    out = json.loads(listed.stdout)
    assert [s["name"] for s in out["secrets"]] == ["API_TOKEN"] and out["missing"] == []
    assert set(out["secrets"][0]) == {"name", "updated_at"}
    table = cli(stage.settings, "secret-list", NAME)
    assert "API_TOKEN" in table.stdout
    for run in (listed, table):
        assert "hunter2" not in run.stdout + run.stderr

    unknown = cli(stage.settings, "secret-set", "no-such", "API_TOKEN", stdin="v")
    assert unknown.returncode == 2 and "no project named 'no-such'" in unknown.stderr
    badname = cli(stage.settings, "secret-set", NAME, "api-token", stdin="v")
    assert badname.returncode == 2 and "not an environment variable name" in badname.stderr
    empty = cli(stage.settings, "secret-set", NAME, "OTHER", stdin="")
    assert empty.returncode == 2 and "empty" in empty.stderr

    removed = cli(stage.settings, "secret-rm", NAME, "API_TOKEN")
    assert removed.returncode == 0, removed.stderr
    again = cli(stage.settings, "secret-list", NAME, "--json")
    assert json.loads(again.stdout) == {"project": NAME, "secrets": [], "missing": ["API_TOKEN"]}
    assert cli(stage.settings, "secret-rm", NAME, "API_TOKEN").returncode == 2


def run_in_terminal(settings: Settings, answers: list[str], *args: str) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal (its controlling tty), typing ``answers`` at each prompt; (rc, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.chdir(REPO_ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "cli.main", *args], cli_env(settings))
    seen, pending = b"", list(answers)
    try:
        while True:
            ready, _, _ = select_.select([fd], [], [], 30)
            assert ready, f"the CLI stopped answering: {seen!r}"
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if pending and seen.endswith(b": "):  # a new prompt (getpass ends each with ": ")
                os.write(fd, pending.pop(0).encode() + b"\n")
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


@pytest.mark.slow
async def test_secret_set_in_a_terminal_asks_twice_without_echo(stage: Stage) -> None:
    rc, out = run_in_terminal(stage.settings, ["typed-VALUE-42", "typed-VALUE-42"], "secret-set", NAME, "API_TOKEN")
    assert rc == 0, out
    assert "value of API_TOKEN (hidden)" in out and "again" in out
    assert "typed-VALUE-42" not in out, "the prompt does not echo the value"
    assert (await service_env(stage.settings, stage.db, stage.pid)).names == ("API_TOKEN",)
    assert await deploy_env(stage.db, stage.pid, keys=load_keys(stage.settings)) == {"API_TOKEN": "typed-VALUE-42"}

    rc, out = run_in_terminal(stage.settings, ["one", "two"], "secret-set", NAME, "OTHER")
    assert rc == 2 and "the two values differ; nothing was stored" in out
    assert (await service_env(stage.settings, stage.db, stage.pid)).names == ("API_TOKEN",)


ENV_APP = """\
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def attempt(path):
    try:
        with open(path, "rb") as f:
            return "read %d bytes" % len(f.read())
    except OSError as exc:
        return type(exc).__name__


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        seen = {"key": attempt(KEY), "database": attempt(DB)}
        body = json.dumps({"status": "ok", "environ": dict(os.environ), "uid": os.getuid(), "seen": seen}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

LEAK_APP = """\
import os
import sys

print("starting with token " + os.environ["API_TOKEN"], file=sys.stderr, flush=True)
raise SystemExit(3)
"""


@pytest.mark.slow
async def test_a_deployed_service_sees_only_its_own_environment(stage: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    assert stage.set_secret(SECOND).returncode == 0
    # What the orchestrator's own environment holds while it deploys (Ansible runs with it):
    monkeypatch.setenv("ORCH_GITHUB_TOKEN", "leak-me-github")
    monkeypatch.setenv("ORCH_SECRETS_KEY", "leak-me-key")
    monkeypatch.setenv("DATABASE_URL", "postgresql://leak-me@db/orchestrator")
    data = stage.settings.data_dir.resolve()
    source = f"KEY = {str(data / 'secrets.key')!r}\nDB = {str(data / 'orchestrator.db')!r}\n" + ENV_APP
    ok, summary, _ = await stage.deploy(commit_app(stage.work, source, "reports its environment"), watch_argv=False)
    assert ok, summary
    health = stage.health()
    assert health["uid"] == pwd.getpwnam("orch-svc").pw_uid != 0, "the service runs as its own unprivileged user"
    assert health["seen"] == {"key": "PermissionError", "database": "PermissionError"}, health["seen"]
    environ = health["environ"]
    assert not [k for k in environ if k.startswith("ORCH_") or k == "DATABASE_URL"], environ
    assert "leak-me" not in json.dumps(environ)
    assert set(environ) <= {"PORT", "PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "API_TOKEN", "PWD", "SHLVL", "_"}
    # PORT is the release's own port (blue/green: the deploy switch holds the project's port and forwards to it)
    own_port = (stage.project_root / "run" / "service.port").read_text().strip()
    assert environ["API_TOKEN"] == SECOND and environ["PORT"] == own_port != str(stage.info and stage.info["port"])
    assert environ["PATH"] == "/usr/local/bin:/usr/bin:/bin"


@pytest.mark.slow
async def test_a_secret_the_service_prints_is_redacted_before_it_leaves_the_target(stage: Stage) -> None:
    assert stage.set_secret(SECOND).returncode == 0
    bad = commit_app(stage.work, LEAK_APP, "prints its secret and dies")
    ok, summary, _ = await stage.deploy(bad, watch_argv=False, health_timeout_s=2)
    assert not ok and "starting with token [secret API_TOKEN]" in summary, summary
    assert SECOND not in summary
    log_file = stage.project_root / "logs" / "service.log"
    env_file = stage.project_root / "run" / "service.env"
    # The service's own log keeps what it printed (it is the service's file, on its host, in the release root);
    # nothing under the data dir does: not the kept Ansible artifacts, not the database.
    assert files_holding(stage.settings.data_dir, [b"second-VALUE-9b2c"]) == []
    assert sorted(files_holding(stage.settings.release_root, [b"second-VALUE-9b2c"])) == sorted([env_file, log_file])


FLASK_APP = """\
import os

from flask import Flask

app = Flask(__name__)


@app.get("/health")
def health():
    return {"status": "ok", "framework": "flask"}


app.run(host="127.0.0.1", port=int(os.environ["PORT"]))
"""


@pytest.mark.slow
async def test_a_service_with_a_third_party_dependency_deploys_in_its_own_venv(stage: Stage) -> None:
    (stage.work / "requirements.txt").write_text("flask>=3,<4\n")
    git("add", "requirements.txt", cwd=stage.work)
    sha = commit_app(stage.work, FLASK_APP, "a Flask service")
    ok, summary, _ = await stage.deploy(sha, watch_argv=False, health_timeout_s=20)
    assert ok, summary
    assert stage.health() == {"status": "ok", "framework": "flask"}
    venv = stage.project_root / "releases" / sha / ".venv"
    assert (venv / ".requirements-installed").is_file()
    assert list((venv / "lib").glob("python3*/site-packages/flask/__init__.py")), "Flask lives in the release's venv"
