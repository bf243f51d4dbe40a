"""Deploying from a private https repository (the GitHub forge): the token gets git in, and is left nowhere.

The repository is served by :class:`~tests.fixtures.git_http.GitHttpServer`, a real smart-HTTP git host on
127.0.0.1 that refuses any request without GitHub's ``x-access-token`` Basic header. Deploys run the real
``services.deploys.run_deploy`` (ansible-runner, playbooks/deploy.yml, connection local).
"""

from __future__ import annotations

import base64
import os
import signal
import stat
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from core.settings import Settings
from infra.ansible import PlaybookResult
from infra.git import NO_AUTH, GitAuth
from models.enums import ProjectStatus
from models.tables import Project
from services import deploys
from services.deploys import auth_header_file, local_server, run_deploy, stop_service
from tests.fixtures.git_http import GIT_ENV, GitHttpServer
from tests.integration.test_ansible_deploy import CRASH_APP, GOOD_APP, free_port, pids_with

TOKEN = "ghp_deploySECRET0123456789abcdef"
WRONG = "ghp_wrongDEPLOY9876543210fedcba"
NAME = "hello-api"


def secrets_of(token: str) -> list[bytes]:
    """The raw token and its base64 Basic credential, as they would appear in a file or a command line."""
    return [token.encode(), base64.b64encode(f"x-access-token:{token}".encode())]


def files_holding(root: Path, needles: list[bytes]) -> list[Path]:
    """Every file under ``root`` whose bytes contain one of ``needles``."""
    hits = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if any(n in data for n in needles):
                hits.append(path)
    return hits


class Watch:
    """Scan every process's command line (and the target's remote tmp folder) while a deploy runs."""

    def __init__(self, needles: list[bytes], remote_tmp: Path) -> None:
        self.needles = needles
        self.remote_tmp = remote_tmp
        self.argv_hits: list[bytes] = []
        self.file_hits: list[Path] = []
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = Path(entry.path, "cmdline").read_bytes()
                except OSError:
                    continue
                if any(n in cmdline for n in self.needles):
                    self.argv_hits.append(cmdline)
            self.file_hits += files_holding(self.remote_tmp, self.needles)
            self.scans += 1

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class PrivateRepo:
    def __init__(self, tmp_path: Path, host: GitHttpServer, settings: Settings) -> None:
        self.tmp = tmp_path
        self.host = host
        self.url = host.create_repo(f"acme/{NAME}", {"app.py": GOOD_APP})
        self.good = host.head(f"acme/{NAME}")
        self.port = free_port()
        self.settings = settings
        self.remote_tmp = tmp_path / "remote-tmp"
        self.ram = tmp_path / "ram"
        self.ram.mkdir()

    def push(self, source: str) -> str:
        seed = self.host.root.parent / f"{self.host.root.name}-seed" / f"acme/{NAME}"
        (seed / "app.py").write_text(source)
        bare = self.host.root / f"acme/{NAME}.git"
        for args in (["commit", "-qam", "next"], ["push", "-q", str(bare), "HEAD:main"]):
            subprocess.run(["git", *args], cwd=seed, env={**os.environ, **GIT_ENV}, check=True, capture_output=True)
        return self.host.head(f"acme/{NAME}")

    def settings_with(self, token: str) -> Settings:
        return self.settings.model_copy(
            update={"github_token": SecretStr(token), "github_org": "acme", "github_base_url": self.host.base_url}
        )

    async def deploy(self, commit: str, token: str = TOKEN) -> tuple[PlaybookResult, Watch]:
        project = Project(name=NAME, status=ProjectStatus.verified, clone_url=self.url)
        with Watch(secrets_of(token), self.remote_tmp) as watch:
            result = await run_deploy(
                self.settings_with(token),
                project=project,
                server=local_server(),
                commit=commit,
                port=self.port,
                entrypoint="app.py",
                health_path="/health",
            )
        assert watch.scans > 3, "the watcher ran throughout the deploy"
        return result, watch

    @property
    def releases(self) -> Path:
        return self.settings.release_root.resolve() / NAME / "releases"


@pytest.fixture
def host(tmp_path: Path) -> Iterator[GitHttpServer]:
    with GitHttpServer(tmp_path / "repos", token=TOKEN) as server:
        yield server


@pytest.fixture
async def repo(
    tmp_path: Path, host: GitHttpServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[PrivateRepo]:
    settings.ensure_data_dir()
    r = PrivateRepo(tmp_path, host, settings.model_copy(update={"health_timeout_s": 4}))
    monkeypatch.setattr(deploys, "_RAM_DIR", r.ram)
    monkeypatch.setenv("ANSIBLE_REMOTE_TMP", str(r.remote_tmp))  # the target's module tmp dir, watched
    try:
        yield r
    finally:
        try:
            await stop_service(r.settings, project=NAME, server=local_server())
        finally:
            for pid in pids_with(str(r.releases)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.mark.slow
async def test_private_repo_deploys_with_the_header_and_leaves_no_token(repo: PrivateRepo) -> None:
    result, watch = await repo.deploy(repo.good)

    assert result.ok, result.summary
    assert httpx.get(f"http://127.0.0.1:{repo.port}/health", timeout=5, trust_env=False).json() == {"status": "ok"}
    assert repo.host.authorized >= 2 and repo.host.unauthorized == 0  # every git request carried the header
    assert watch.argv_hits == [], "no command line (git's, ansible's, the target shell's) held the token"
    assert watch.file_hits == [], "no file on the target held the token, even while the deploy ran"
    assert files_holding(repo.settings.data_dir, secrets_of(TOKEN)) == []
    assert list(repo.ram.iterdir()) == [], "the header file is gone once the run ends"
    config = (repo.releases / repo.good / ".git" / "config").read_text()
    assert f"url = {repo.url}\n" in config and "extraHeader" not in config

    again, watch = await repo.deploy(repo.good)
    assert again.ok and "changed=0" in again.summary, again.summary
    assert watch.argv_hits == []


@pytest.mark.slow
async def test_failed_deploy_keeps_artifacts_but_not_the_token(repo: PrivateRepo) -> None:
    bad = repo.push(CRASH_APP)

    result, watch = await repo.deploy(bad)

    assert not result.ok
    assert "Report the unhealthy service" in result.summary, result.summary  # the checkout itself succeeded
    assert repo.host.authorized >= 2 and repo.host.unauthorized == 0
    kept = list((repo.settings.data_dir / "ansible").iterdir())
    assert len(kept) == 1 and str(kept[0]) in result.summary, "a failed run keeps its private data dir"
    assert (kept[0] / "env" / "extravars").is_file()
    assert list((kept[0] / "artifacts").rglob("job_events/*.json")), "the events are kept too"
    assert files_holding(kept[0], secrets_of(TOKEN)) == []
    assert files_holding(repo.settings.data_dir, secrets_of(TOKEN)) == []
    assert list(repo.ram.iterdir()) == []
    assert watch.argv_hits == [] and watch.file_hits == []


@pytest.mark.slow
async def test_wrong_token_is_refused_and_reported_without_it(repo: PrivateRepo) -> None:
    result, watch = await repo.deploy(repo.good, token=WRONG)

    assert not result.ok
    assert "Report a failed checkout" in result.summary, result.summary
    assert f"git could not check out {repo.good} from {repo.url}" in result.summary
    assert "Authentication failed" in result.summary or "could not read Username" in result.summary
    assert repo.host.unauthorized >= 1 and repo.host.authorized == 0
    assert all(s.decode() not in result.summary for s in secrets_of(WRONG))
    assert files_holding(repo.settings.data_dir, secrets_of(WRONG)) == []
    assert list(repo.ram.iterdir()) == []
    assert watch.argv_hits == [] and watch.file_hits == []
    assert not (repo.releases / repo.good).exists()


def test_header_file_is_private_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploys, "_RAM_DIR", tmp_path)
    auth = GitAuth(header="Authorization: Basic c2VjcmV0", secrets=("secret",))
    with pytest.raises(RuntimeError), auth_header_file(auth) as path:
        file = Path(path)
        assert file.parent.parent == tmp_path
        assert file.read_text() == auth.header
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
        raise RuntimeError("the run failed")
    assert list(tmp_path.iterdir()) == []
    with auth_header_file(NO_AUTH) as none:
        assert none == ""
    assert list(tmp_path.iterdir()) == []
