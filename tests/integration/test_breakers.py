"""Circuit breakers against failing local servers: open after N unavailable calls, refuse at once, close on recovery.

The model provider is the OpenAI-format server of tests/fixtures/openai_server.py on 127.0.0.1; the state is read
back the way ``orchestrator status`` and ``GET /status`` read it, from the shared database.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import re
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.breakers import Breakers, breaker_states, sync_breakers
from core.db import Database
from core.llm import LLM
from core.llm_failures import ModelUnreachable
from core.replay import Scenario
from core.settings import Settings
from infra.forge.base import ForgeError, ForgeUnavailable
from infra.forge.github import GitHubForge
from infra.ssh import HostUnavailable, describe_error, host_unavailable, ssh_run
from models.enums import ServerStatus
from models.tables import Server
from tests.fixtures.api_server import make_key, orchestrator, orchestrator_env, start_api, stop_api
from tests.fixtures.fake_github import FakeGitHub
from tests.fixtures.openai_server import OpenAIServer
from tests.fixtures.real_sshd import RealSSHD

API_KEY = "sk-local-test"
GH_TOKEN = "ghp_breakertest"
GH_ORG = "acme"
ASK = [{"role": "user", "content": "say hello"}]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OpenAIServer]:
    scenario = {"name": "hello", "exchanges": [{"id": "hi", "role": "po", "reply": {"content": "hello"}}]}
    (tmp_path / "hello.json").write_text(json.dumps(scenario))
    with OpenAIServer(Scenario.load(tmp_path / "hello.json"), api_key=API_KEY) as srv:
        yield srv


def breaker_settings(settings: Settings, server: OpenAIServer) -> Settings:
    return settings.model_copy(
        update={
            "model": "openai/po",
            "api_base": server.base_url + "/v1",
            "api_key": SecretStr(API_KEY),
            "llm_retries": 0,
            "breaker_failures": 3,
            "breaker_cooldown_s": 0.5,
        }
    )


@pytest.mark.slow
async def test_the_model_breaker_opens_on_5xx_refuses_at_once_and_closes_when_the_server_recovers(
    settings: Settings, db: Database, server: OpenAIServer
) -> None:
    cfg = breaker_settings(settings, server)
    llm = LLM(cfg, db)
    server.fail_with(503)
    for _ in range(3):
        with pytest.raises(ModelUnreachable) as err:
            await llm.chat("po", ASK)
        assert err.value.cause == "server_error"
    assert len(server.requests) == 3

    # Open: refused without a request, in words naming since when and the next try; another process sees it.
    started = time.monotonic()
    with pytest.raises(ModelUnreachable, match=r"unavailable since \d\d:\d\d:\d\dZ \(3 failures in a row\), next try"):
        await LLM(cfg, db).chat("po", ASK)
    assert time.monotonic() - started < 0.3 and len(server.requests) == 3
    [state] = await breaker_states(db, cfg)
    assert (state.name, state.state, state.failures) == (f"model:{cfg.api_base}", "open", 3)
    assert state.opened_at is not None and state.next_try_at is not None

    # After the cool-down one trial call goes through; still failing, it opens again at once.
    await asyncio.sleep(0.6)
    with pytest.raises(ModelUnreachable, match="server_error"):
        await llm.chat("po", ASK)
    with pytest.raises(ModelUnreachable, match="unavailable since"):
        await llm.chat("po", ASK)
    assert len(server.requests) == 4

    # Recovered: the trial succeeds and the breaker closes.
    server.fail_with(503, count=0)
    await asyncio.sleep(0.6)
    assert (await llm.chat("po", ASK)).content == "hello"
    assert (await llm.chat("po", ASK)).content == "hello"
    [state] = await breaker_states(db, cfg)
    assert (state.state, state.failures, state.opened_at) == ("closed", 0, None)


async def test_answers_like_401_do_not_count_and_a_success_resets_the_count(
    settings: Settings, db: Database, server: OpenAIServer
) -> None:
    cfg = breaker_settings(settings, server)
    llm = LLM(cfg, db)
    wrong_key = LLM(cfg.model_copy(update={"api_key": SecretStr("sk-wrong")}), db)
    for _ in range(4):
        with pytest.raises(ModelUnreachable) as err:
            await wrong_key.chat("po", ASK)
        assert err.value.cause == "auth"
    server.fail_with(500, count=2)
    for _ in range(2):
        with pytest.raises(ModelUnreachable, match="server_error"):
            await llm.chat("po", ASK)
    assert (await llm.chat("po", ASK)).content == "hello"
    server.fail_with(500, count=2)
    for _ in range(2):
        with pytest.raises(ModelUnreachable, match="server_error"):
            await llm.chat("po", ASK)
    [state] = await breaker_states(db, cfg)
    assert (state.state, state.failures) == ("closed", 2)
    assert len(server.requests) == 9


async def test_the_github_breaker_opens_on_5xx_is_shared_through_the_database_and_closes_on_recovery(
    settings: Settings, db: Database
) -> None:
    cfg = settings.model_copy(update={"breaker_failures": 2, "breaker_cooldown_s": 0.5})
    with FakeGitHub(token=GH_TOKEN, org=GH_ORG) as gh:
        gh.add_repo("kept")
        forge = github_forge(gh, cfg)
        assert forge.get_repo("gone") is None  # a 404 is an answer: it does not count
        gh.fail_next(503, count=2)
        for _ in range(2):
            with pytest.raises(ForgeError, match="503"):
                await asyncio.to_thread(forge.get_repo, "kept")
        requests_before = gh.count("GET")

        # Another forge (another process: state from the database) is refused at once, without a request.
        with pytest.raises(ForgeUnavailable, match=r"^GitHub unavailable since .*\(2 failures in a row\), next try at"):
            await asyncio.to_thread(github_forge(gh, cfg).get_repo, "kept")
        assert gh.count("GET") == requests_before
        [state] = await breaker_states(db, cfg)
        assert (state.name, state.label, state.state, state.failures) == ("github", "GitHub", "open", 2)

        await asyncio.sleep(0.6)
        info = await asyncio.to_thread(forge.get_repo, "kept")
        assert info is not None and info.name == "kept"
        [state] = await breaker_states(db, cfg)
        assert (state.state, state.failures, state.next_try_at) == ("closed", 0, None)


def github_forge(gh: FakeGitHub, cfg: Settings) -> GitHubForge:
    return GitHubForge(
        token=GH_TOKEN,
        org=GH_ORG,
        base_url=gh.base_url,
        retries=0,
        backoff_s=0,
        timeout_s=5,
        breakers=sync_breakers(cfg),
    )


async def test_an_ssh_host_breaker_opens_while_nothing_listens_and_closes_once_sshd_is_up(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    sshd = RealSSHD(tmp_path / "sshd")
    server = Server(
        name="box", address="127.0.0.1", ssh_port=sshd.port, ssh_user=getpass.getuser(), status=ServerStatus.ready
    )
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cfg = settings.model_copy(
        update={"ssh_known_hosts": empty, "ssh_timeout_s": 5, "breaker_failures": 2, "breaker_cooldown_s": 0.5}
    )
    breakers = Breakers(cfg, db)
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError):
            await ssh_run(cfg, server, "true", breakers=breakers)
    with pytest.raises(HostUnavailable) as err:
        await ssh_run(cfg, server, "true", breakers=breakers)
    where = f"127.0.0.1:{sshd.port}"
    assert str(err.value).startswith(f"SSH host {where} unavailable since ")
    assert describe_error(err.value, 5).startswith(f"SSH host {where} unavailable since ")
    [state] = await breaker_states(db, cfg)
    assert (state.name, state.state, state.failures) == (f"ssh:{where}", "open", 2)

    with sshd:
        up = cfg.model_copy(update={"ssh_key_path": sshd.client_key, "ssh_known_hosts": sshd.known_hosts})
        with pytest.raises(HostUnavailable):  # still cooling down: refused although sshd now listens
            await ssh_run(up, server, "true", breakers=breakers)
        await asyncio.sleep(0.6)
        done = await ssh_run(up, server, "echo up", breakers=breakers)
        assert done.stdout == "up\n"
        failed = await ssh_run(up, server, "exit 3", breakers=breakers, check=False)  # a failing command is an answer
        assert failed.exit_status == 3
    [state] = await breaker_states(db, cfg)
    assert (state.state, state.failures) == ("closed", 0)


@pytest.mark.slow
async def test_orchestrator_status_and_get_status_show_the_same_open_breaker(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    nothing = Server(name="gone", address="127.0.0.1", ssh_port=closed_port(), status=ServerStatus.ready)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cfg = settings.model_copy(update={"ssh_known_hosts": empty, "breaker_failures": 1, "breaker_cooldown_s": 600})
    with pytest.raises(ConnectionRefusedError):
        await ssh_run(cfg, nothing, "true", breakers=Breakers(cfg, db))
    env = orchestrator_env(cfg, ORCH_BREAKER_COOLDOWN_S="600", COLUMNS="160")

    done = await asyncio.to_thread(orchestrator, cfg.data_dir, "status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    [shown] = json.loads(done.stdout)["breakers"]
    where = f"127.0.0.1:{nothing.ssh_port}"
    assert {k: shown[k] for k in ("name", "label", "state", "failures")} == {
        "name": f"ssh:{where}",
        "label": f"SSH host {where}",
        "state": "open",
        "failures": 1,
    }
    opened = datetime.fromisoformat(shown["opened_at"])
    assert datetime.fromisoformat(shown["next_try_at"]) - opened == timedelta(seconds=600)
    table = await asyncio.to_thread(orchestrator, cfg.data_dir, "status", env=env)
    assert table.returncode == 0 and re.search(rf"ssh:{where} +SSH host {where} +open +1 ", table.stdout)

    viewer = await asyncio.to_thread(make_key, cfg.data_dir, "watcher", "viewer", env)
    api = await asyncio.to_thread(start_api, cfg, tmp_path / "api.log", roles=False, ORCH_BREAKER_COOLDOWN_S="600")
    api.keys["viewer"] = viewer
    try:
        async with api.client("viewer") as client:
            response = await client.get("/status")
        assert response.status_code == 200, response.text
        assert response.json() == json.loads(done.stdout)
    finally:
        stop_api(api)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_many_first_uses_of_a_new_breaker_at_once_each_get_through(settings: Settings) -> None:
    """50 checks of hosts behind one new ``ssh:`` breaker (server_sync's concurrency) all find no row at first."""
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    await db.migrate()
    breakers = Breakers(settings.model_copy(update={"breaker_failures": 1000}), db)
    entered = 0

    async def check(i: int) -> None:
        nonlocal entered
        with contextlib.suppress(ConnectionRefusedError):
            async with breakers.guard("ssh:127.0.0.1:2222", "SSH host 127.0.0.1:2222", counts=host_unavailable):
                entered += 1
                await asyncio.sleep(0)
                if i % 2:
                    raise ConnectionRefusedError(111, "Connection refused")

    try:
        await asyncio.gather(*(check(i) for i in range(50)))
        (state,) = await breaker_states(db, settings)
    finally:
        await db.dispose()
    assert entered == 50
    assert (state.name, state.state) == ("ssh:127.0.0.1:2222", "closed")
