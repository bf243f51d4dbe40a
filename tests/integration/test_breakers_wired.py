"""The circuit breakers in production paths: `orchestrator sync --once` against a failing fake GitHub and a dead SSH
host opens them, `orchestrator status --json` shows them, an open one refuses at once (no request reaches the
server), the forge of another process is refused too, and after the cool-down a pass against the recovered
service closes them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from core.db import Database
from core.settings import Settings
from infra.forge.base import ForgeUnavailable
from infra.forge.factory import make_forge
from models.enums import ServerStatus
from models.tables import Server
from tests.fixtures.dead_host import CountingListener
from tests.fixtures.fake_github import FakeGitHub
from tests.fixtures.real_sshd import RealSSHD
from tests.integration.helpers import REPO_ROOT, cli_env

TOKEN = "ghp_wiredBREAKER0123456789"
ORG = "acme"
FAILURES = 2
LONG_COOLDOWN = "600"
"""While it holds, an open breaker refuses for certain; a process given SHORT_COOLDOWN sees the same one expired."""
SHORT_COOLDOWN = "0.2"


def run(settings: Settings, env: dict[str, str], *args: str) -> Any:
    """``orchestrator *args`` in a new process with ``env`` on top of the test's settings; its JSON output."""
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**cli_env(settings), **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def sync_once(settings: Settings, env: dict[str, str], worker: str) -> dict[str, Any]:
    [summary] = run(settings, env, "sync", "--once", "--only", worker, "--json")
    assert summary["worker"] == worker and summary["ok"], summary
    return summary


def breaker(settings: Settings, env: dict[str, str], name: str) -> dict[str, Any]:
    shown = {b["name"]: b for b in run(settings, env, "status", "--json")["breakers"]}
    assert name in shown, shown
    return shown[name]


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, org=ORG) as server:
        yield server


def github_env(gh: FakeGitHub, cooldown: str) -> dict[str, str]:
    return {
        "ORCH_GITHUB_TOKEN": TOKEN,
        "ORCH_GITHUB_ORG": ORG,
        "ORCH_GITHUB_BASE_URL": gh.base_url,
        "ORCH_GITHUB_RETRIES": "0",
        "ORCH_BREAKER_FAILURES": str(FAILURES),
        "ORCH_BREAKER_COOLDOWN_S": cooldown,
    }


def listing_requests(gh: FakeGitHub) -> int:
    return gh.count("GET", f"/orgs/{ORG}/repos")


async def test_the_github_breaker_opens_through_sync_refuses_at_once_and_closes_after_recovery(
    settings: Settings, gh: FakeGitHub
) -> None:
    gh.add_repos(2)
    env = github_env(gh, LONG_COOLDOWN)
    gh.fail_next(502, count=FAILURES)  # GitHub down for two passes

    for n in range(1, FAILURES + 1):
        summary = sync_once(settings, env, "github_sync")
        assert (summary["transient_failures"], summary["requests"], summary["created"]) == (1, 1, 0), summary
        assert listing_requests(gh) == n
    shown = breaker(settings, env, "github")
    assert (shown["label"], shown["state"], shown["failures"]) == ("GitHub", "open", FAILURES), shown
    assert shown["opened_at"] and shown["next_try_at"]

    # Open: the next pass refuses at once, without a request, and says why and until when.
    refused = sync_once(settings, env, "github_sync")
    assert listing_requests(gh) == FAILURES, "an open breaker sends nothing to GitHub"
    assert (refused["transient_failures"], refused["requests"]) == (1, 0), refused
    [note] = [n for n in refused["notes"] if "GitHub unavailable since" in n]
    assert "failures in a row), next try at" in note, note
    assert TOKEN not in json.dumps(refused)

    # The forge of any other process (the API, a graph run) shares the breaker through the database.
    cfg = settings.model_copy(
        update={
            "github_token": SecretStr(TOKEN),
            "github_org": ORG,
            "github_base_url": gh.base_url,
            "github_retries": 0,
            "breaker_failures": FAILURES,
            "breaker_cooldown_s": float(LONG_COOLDOWN),
        }
    )
    before = len(gh.requests)
    with pytest.raises(ForgeUnavailable, match=r"^GitHub unavailable since .* next try at "):
        await asyncio.to_thread(make_forge(cfg).get_repo, "repo-00000")
    assert len(gh.requests) == before

    # GitHub is back and the cool-down has passed (a process with a short one): the trial pass closes it.
    short = github_env(gh, SHORT_COOLDOWN)
    assert breaker(settings, short, "github")["state"] == "half-open"
    recovered = sync_once(settings, short, "github_sync")
    assert (recovered["transient_failures"], recovered["created"]) == (0, 2), recovered
    assert listing_requests(gh) == FAILURES + 1
    shown = breaker(settings, env, "github")
    assert (shown["state"], shown["failures"], shown["opened_at"]) == ("closed", 0, None), shown


async def test_an_ssh_host_breaker_opens_through_server_sync_and_closes_once_the_host_answers(
    settings: Settings, tmp_path: Path
) -> None:
    dead = CountingListener()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    async with db.session() as s:
        s.add(Server(name="box", address="127.0.0.1", ssh_port=dead.port, ssh_user="root", status=ServerStatus.ready))
    await db.dispose()
    where = f"127.0.0.1:{dead.port}"
    env = {
        "ORCH_SSH_KNOWN_HOSTS": str(empty),
        "ORCH_SSH_TIMEOUT_S": "5",
        "ORCH_BREAKER_FAILURES": str(FAILURES),
        "ORCH_BREAKER_COOLDOWN_S": LONG_COOLDOWN,
        "ORCH_SYNC_FAILURE_THRESHOLD": "10",
    }
    try:
        for n in range(1, FAILURES + 1):
            summary = sync_once(settings, env, "server_sync")
            assert summary["transient_failures"] == 1, summary
            assert dead.accepted == n
        shown = breaker(settings, env, f"ssh:{where}")
        assert (shown["label"], shown["state"], shown["failures"]) == (f"SSH host {where}", "open", FAILURES)

        refused = sync_once(settings, env, "server_sync")
        assert dead.accepted == FAILURES, "an open breaker connects to nothing"
        assert refused["transient_failures"] == 1
        [note] = [n for n in refused["notes"] if n.startswith("box: check failed")]
        assert f"SSH host {where} unavailable since " in note and "next try at" in note, note
    finally:
        dead.close()

    sshd = RealSSHD(tmp_path / "sshd")
    sshd.port = dead.port  # the same host and port: the same breaker
    with sshd:
        up = {
            **env,
            "ORCH_SSH_KEY_PATH": str(sshd.client_key),
            "ORCH_SSH_KNOWN_HOSTS": str(sshd.known_hosts),
            "ORCH_BREAKER_COOLDOWN_S": SHORT_COOLDOWN,
        }
        recovered = sync_once(settings, up, "server_sync")
        assert recovered["transient_failures"] == 0, recovered["notes"]
        shown = breaker(settings, up, f"ssh:{where}")
        assert (shown["state"], shown["failures"]) == ("closed", 0), shown
