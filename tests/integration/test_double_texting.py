"""Double texting: a second message to a thread whose run is going, with each ``multitask_strategy``.

Real parts only: the API (`orchestrator api`) or two `orchestrator chat` processes, a real SQLite data dir, and the
model served over real HTTP by the OpenAI-format fake of tests/fixtures/openai_server.py. The fake holds its answer
to the first message's model call until the test lets it go (after the second message has asked the run to stop,
seen as the stop-request file beside the thread's lock), so the first run is mid-step when the second message
arrives, without any timing guess. The thread's history is read from what the PO model was last sent (the
conversation on the wire) and from the thread's checkpoint.

A full first turn is four nodes: surface_incidents, call_po (asks for list_projects), run_po_tools, call_po (answers).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from core.checkpoints import open_saver
from core.db import Database
from core.replay import Scenario, last_text
from core.settings import Settings
from graphs.product_owner import build_product_owner
from models.tables import ThreadRecord
from runtime.errors import ThreadStateConflict
from runtime.multitask import hold_thread, run_control, thread_files
from tests.fixtures.api_server import ApiServer, make_key, orchestrator_env, start_api, stop_api
from tests.fixtures.openai_server import OpenAIServer
from tests.integration.helpers import REPO_ROOT, cli, cli_env

API_KEY = "sk-local-test"
FIRST = "FIRST: which projects exist?"
SCENARIO = {
    "name": "double",
    "exchanges": [
        {"id": "zero", "role": "po", "when": {"contains": ["ZERO"]}, "reply": {"content": "ANSWER-ZERO"}},
        {
            "id": "first",
            "role": "po",
            "when": {"contains": ["FIRST"]},
            "reply": {"content": "", "tool_calls": [{"name": "list_projects", "arguments": {}}]},
        },
        {"id": "listed", "role": "po", "when": {"contains": ["[]"]}, "reply": {"content": "ANSWER-FIRST"}},
        {"id": "second", "role": "po", "when": {"contains": ["SECOND"]}, "reply": {"content": "ANSWER-SECOND"}},
    ],
}
FULL_TURN = ["surface_incidents", "call_po", "run_po_tools", "call_po"]


class GatedServer(OpenAIServer):
    """The fake model, holding its answer to the first message's model call until ``gate`` is set."""

    def __init__(self, scenario: Scenario, api_key: str) -> None:
        super().__init__(scenario, api_key=api_key)
        self.arrived = threading.Event()
        """Set when the held request has arrived."""
        self.gate = threading.Event()

    def answer(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        if isinstance(body, dict) and "FIRST" in last_text(body.get("messages", [])):
            self.arrived.set()
            self.gate.wait(120)
        return super().answer(path, headers, body)


@pytest.fixture
def model(tmp_path: Path) -> Iterator[GatedServer]:
    (tmp_path / "double.json").write_text(json.dumps(SCENARIO))
    srv = GatedServer(Scenario.load(tmp_path / "double.json"), api_key=API_KEY)
    with srv:
        try:
            yield srv
        finally:
            srv.gate.set()  # a held request lets go before the server closes


@pytest.fixture
def cfg(settings: Settings, model: GatedServer) -> Settings:
    update = {"model": "openai/po", "api_base": model.base_url + "/v1", "api_key": SecretStr(API_KEY), "llm_retries": 0}
    return settings.model_copy(update=update)


@pytest.fixture
async def api(cfg: Settings, tmp_path: Path) -> AsyncIterator[ApiServer]:
    env = {
        "ORCH_MODEL": cfg.model,
        "ORCH_API_BASE": str(cfg.api_base),
        "ORCH_API_KEY": API_KEY,
        "ORCH_LLM_RETRIES": "0",
    }
    server = await asyncio.to_thread(start_api, cfg, tmp_path / "api.log", roles=False, **env)
    server.keys["operator"] = await asyncio.to_thread(
        make_key, cfg.data_dir, "operator", "operator", orchestrator_env(cfg, **env)
    )
    try:
        yield server
    finally:
        stop_api(server)


class Run:
    """One message posted over the API, streamed in a task: its status and its events."""

    def __init__(self, client: httpx.AsyncClient, thread_id: str, body: dict[str, Any]) -> None:
        self.status: int | None = None
        self.detail: Any = None
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._go(client, f"/threads/{thread_id}/messages", body))

    async def _go(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
        async with client.stream("POST", path, json=body) as response:
            self.status = response.status_code
            if response.status_code != 200:
                self.detail = json.loads(await response.aread())["detail"]
                return
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    event = json.loads(line.removeprefix("data:").strip())
                    self.events.append(event)

    async def done(self) -> Run:
        await asyncio.wait_for(self.task, 120)
        return self

    def ended(self) -> list[str]:
        return [e["node"] for e in self.events if e["kind"] == "node_end" and not e["path"]]

    def said(self) -> list[str]:
        return [e["text"] for e in self.events if e["kind"] == "message"]

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]


async def until_asked_to_stop(data_dir: Path, thread_id: str) -> None:
    """Wait until a stop request for the thread's run exists (a newer message asked; the run has not drained yet)."""
    stop = thread_files(data_dir, thread_id)[1]
    for _ in range(1200):
        if stop.exists():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no stop request was written")


async def first_then_second(
    api: ApiServer, model: GatedServer, strategy: str, *, before: bool = False
) -> tuple[str, Run, Run]:
    """Post FIRST on a new thread, then SECOND with ``strategy`` while FIRST's first model call is held."""
    async with api.client("operator", timeout=120) as client:
        thread_id = (await client.post("/threads")).json()["thread_id"]
        if before:  # an earlier finished turn, for a rollback to go back to
            zero = await Run(client, thread_id, {"text": "ZERO"}).done()
            assert zero.kinds()[-1] == "done" and zero.said() == ["ANSWER-ZERO"], zero.events
        first = Run(client, thread_id, {"text": FIRST})
        assert await asyncio.to_thread(model.arrived.wait, 60), "the first run reached its model call"
        second = Run(client, thread_id, {"text": "SECOND question", "multitask_strategy": strategy})
        if strategy in ("interrupt", "rollback"):
            await until_asked_to_stop(api.data_dir, thread_id)
        elif strategy == "reject":
            await second.done()
        else:  # enqueue asks nothing of the run: give the request time to reach the lock (the order is asserted)
            await asyncio.sleep(1.0)
        model.gate.set()
        await second.done()
        await first.done()
    return thread_id, first, second


def conversation(model: GatedServer) -> list[str]:
    """The conversation the PO model was last sent: ``role: content`` (tool calls as ``calls <names>``)."""
    out = []
    for m in model.requests_of("po")[-1]["messages"]:
        if m["role"] == "system":
            continue
        calls = [c["function"]["name"] for c in m.get("tool_calls") or []]
        out.append(f"{m['role']}: {m.get('content') or ''}" + (f" calls {','.join(calls)}" if calls else ""))
    return out


async def checkpoint_texts(cfg: Settings, thread_id: str) -> list[str]:
    """The messages of the thread's latest checkpoint, read from the data dir's checkpoint database."""
    async with open_saver(cfg) as saver:
        graph = build_product_owner().compile(checkpointer=saver)
        state = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    return [str(m.content) for m in state.values["messages"]]


async def record(cfg: Settings, thread_id: str) -> ThreadRecord:
    db = Database(cfg.db_url)
    try:
        async with db.session() as s:
            row = await s.get(ThreadRecord, thread_id)
    finally:
        await db.dispose()
    assert row is not None
    return row


@pytest.mark.slow
async def test_reject_refuses_with_409_and_the_first_run_finishes(api: ApiServer, model: GatedServer) -> None:
    thread_id, first, second = await first_then_second(api, model, "reject")

    assert second.status == 409 and "running elsewhere" in second.detail and "enqueue" in second.detail
    assert first.kinds()[-1] == "done" and first.ended() == FULL_TURN and first.said() == ["ANSWER-FIRST"]
    assert not any("SECOND" in line for line in conversation(model))
    async with api.client("operator") as client:
        for bad in ("later", "", "REJECT", 3, None):
            response = await client.post(
                f"/threads/{thread_id}/messages", json={"text": "hi", "multitask_strategy": bad}
            )
            assert response.status_code == 422, (bad, response.text)
            assert response.json()["detail"][0]["loc"] == ["body", "multitask_strategy"]
        schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["MessageIn"]
    assert schema["properties"]["multitask_strategy"]["enum"] == ["reject", "enqueue", "interrupt", "rollback"]


@pytest.mark.slow
async def test_enqueue_answers_both_in_order_the_second_after_the_first_ended(
    api: ApiServer, model: GatedServer, cfg: Settings
) -> None:
    thread_id, first, second = await first_then_second(api, model, "enqueue")

    assert first.kinds()[-1] == "done" and first.ended() == FULL_TURN and first.said() == ["ANSWER-FIRST"]
    assert second.status == 200 and second.kinds()[-1] == "done" and second.said() == ["ANSWER-SECOND"]
    assert conversation(model) == [
        f"user: {FIRST}",
        "assistant:  calls list_projects",
        "tool: []",
        "assistant: ANSWER-FIRST",
        "user: SECOND question",
    ], "the second message joined the thread after the first run's answer"
    assert (await checkpoint_texts(cfg, thread_id))[-1] == "ANSWER-SECOND"


@pytest.mark.slow
async def test_interrupt_stops_the_first_run_keeps_its_progress_and_answers_the_second(
    api: ApiServer, model: GatedServer, cfg: Settings
) -> None:
    thread_id, first, second = await first_then_second(api, model, "interrupt")

    assert first.kinds()[-1] == "drained" and "interrupts this run" in first.events[-1]["text"], first.events
    assert first.ended() == ["surface_incidents", "call_po"], "stopped at the superstep after its model call"
    assert "ANSWER-FIRST" not in first.said()
    assert second.status == 200 and second.kinds()[-1] == "done" and second.said() == ["ANSWER-SECOND"]
    assert second.ended() == ["surface_incidents", "call_po"], "the new message runs from START"
    sent = conversation(model)
    assert sent[:2] == [f"user: {FIRST}", "assistant:  calls list_projects"], "progress kept"
    assert "not run: a newer message interrupted this turn" in sent[2] and sent[2].startswith("tool:")
    assert sent[3:] == ["user: SECOND question"]
    texts = await checkpoint_texts(cfg, thread_id)
    assert texts[0] == FIRST and texts[-1] == "ANSWER-SECOND"
    row = await record(cfg, thread_id)
    assert (row.stopped_mid_run, row.pending, row.model) == (False, [], "openai/po")


@pytest.mark.slow
async def test_rollback_drops_the_first_runs_progress_and_answers_the_second_from_where_it_started(
    api: ApiServer, model: GatedServer, cfg: Settings
) -> None:
    thread_id, first, second = await first_then_second(api, model, "rollback", before=True)

    assert first.kinds()[-1] == "drained" and "rolls this run back" in first.events[-1]["text"], first.events
    assert len(first.ended()) < len(FULL_TURN)
    assert second.status == 200 and second.kinds()[-1] == "done" and second.said() == ["ANSWER-SECOND"]
    assert conversation(model) == ["user: ZERO", "assistant: ANSWER-ZERO", "user: SECOND question"]
    assert await checkpoint_texts(cfg, thread_id) == ["ZERO", "ANSWER-ZERO", "SECOND question", "ANSWER-SECOND"]


@pytest.mark.slow
async def test_rollback_of_a_threads_first_run_leaves_only_the_second_message(
    api: ApiServer, model: GatedServer, cfg: Settings
) -> None:
    thread_id, first, second = await first_then_second(api, model, "rollback")

    assert first.kinds()[-1] == "drained" and second.said() == ["ANSWER-SECOND"]
    assert conversation(model) == ["user: SECOND question"]
    assert await checkpoint_texts(cfg, thread_id) == ["SECOND question", "ANSWER-SECOND"]


@pytest.mark.slow
async def test_cli_interrupt_from_a_second_process_and_a_notice_said_first(cfg: Settings, model: GatedServer) -> None:
    thread_id = "t-cli-double"
    first = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "chat", "--thread", thread_id, "-m", FIRST],
        env=cli_env(cfg),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert await asyncio.to_thread(model.arrived.wait, 120), "the first chat reached its model call"
        db = Database(cfg.db_url)
        try:
            async with db.session() as s:
                row = await s.get(ThreadRecord, thread_id)
                assert row is not None
                row.notice = "NOTICE: the deploy approval timed out and was rejected by system:deadline"
                s.add(row)
        finally:
            await db.dispose()
        second_run = asyncio.create_task(
            asyncio.to_thread(
                cli, cfg, "chat", "--thread", thread_id, "-m", "SECOND question", "--multitask", "interrupt"
            )
        )
        await until_asked_to_stop(cfg.data_dir, thread_id)
        model.gate.set()
        second = await second_run
        out, err = await asyncio.to_thread(first.communicate, timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert "interrupts this run" in " ".join(out.split()) and "ANSWER-FIRST" not in out
    assert second.returncode == 0, second.stderr
    said = " ".join(second.stdout.split())
    assert "NOTICE: the deploy approval timed out" in said and "ANSWER-SECOND" in said
    assert said.index("NOTICE") < said.index("ANSWER-SECOND"), "the notice comes first"
    assert "╭─ notice ─" in second.stdout, "shown as a notice, not as the PO's words"
    assert (await record(cfg, thread_id)).notice is None, "said once, then cleared"
    again = await asyncio.to_thread(cli, cfg, "chat", "--thread", thread_id, "-m", "SECOND question")
    assert again.returncode == 0 and "NOTICE" not in again.stdout


def test_cli_refuses_an_unknown_strategy_and_runs_nothing(settings: Settings) -> None:
    done = cli(settings, "chat", "--thread", "t-x", "-m", "hello", "--multitask", "later")

    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "Invalid value for '--multitask'" in message and "'reject', 'enqueue', 'interrupt', 'rollback'" in message
    assert not (settings.data_dir / "threads").exists(), "nothing ran"


@pytest.mark.slow
async def test_a_resume_runs_on_the_model_the_thread_started_with(cfg: Settings, model: GatedServer) -> None:
    model.gate.set()
    thread_id = "t-same-model"
    env = cli_env(cfg)
    crashed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tests.integration.crash_after", "chat", "--thread", thread_id, "-m", FIRST],
        env={**env, "CRASH_AFTER": "run_po_tools"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert crashed.returncode == -9, crashed.stderr
    assert (await record(cfg, thread_id)).model == "openai/po"
    asked = len(model.requests)

    no_model = {k: v for k, v in env.items() if k != "ORCH_MODEL"}  # this process has only the built-in default
    resumed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", "resume", thread_id],
        env=no_model,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "ANSWER-FIRST" in resumed.stdout
    assert [r["model"] for r in model.requests[asked:]] == ["po"], "the recorded openai/po, not the default"


HOLDER = """
import fcntl, sys
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)
f.truncate(0); f.write("tok-of-the-holder"); f.flush()
print("held", flush=True)
sys.stdin.read()
"""


async def test_a_waiting_message_gives_up_clearly_and_takes_the_lock_once_it_is_free(tmp_path: Path) -> None:
    lock, stop = thread_files(tmp_path, "t-held")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(ThreadStateConflict, match="running elsewhere; wait for that run, or else"):
            async with hold_thread(tmp_path, "t-held", "reject", hint=", or else"):
                pass
        for strategy, verb in (("enqueue", "end"), ("interrupt", "stop")):
            with pytest.raises(ThreadStateConflict, match=f"did not {verb} within 0.6 s; your message was not sent"):
                async with hold_thread(tmp_path, "t-held", strategy, wait_s=0.6):  # type: ignore[arg-type]
                    pass
            assert not stop.exists(), "a waiter that gives up leaves no stop request behind"

        async def release_when_asked() -> None:
            while not stop.exists():
                await asyncio.sleep(0.05)
            assert json.loads(stop.read_text()) == {"token": "tok-of-the-holder", "strategy": "rollback"}
            holder.communicate("")  # the holder ends: the kernel releases its lock

        releasing = asyncio.create_task(release_when_asked())
        async with hold_thread(tmp_path, "t-held", "rollback", wait_s=60) as waited:
            assert waited and not stop.exists()
            mine = lock.read_text()
            assert mine and mine != "tok-of-the-holder", "the new holder's own token"
            control = run_control(tmp_path, "t-held")
            stop.write_text(json.dumps({"token": "tok-of-the-holder", "strategy": "interrupt"}))
            assert not control.drain_requested, "a stale request for the previous run is ignored"
            stop.write_text(json.dumps({"token": mine, "strategy": "interrupt"}))
            assert control.drain_requested and control.drain_reason == "interrupt"
        await releasing
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
