"""The provider path over real HTTP: litellm's ``openai/<model>`` -> the openai SDK -> a local OpenAI-format server.

The replay provider proves the graph; these tests prove the seam sends what settings say (model per role, api_base,
api_key), re-asks an invalid structured answer, records the provider's token usage, and fails clearly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from core.llm import ModelUnreachable
from core.replay import BUILTIN_DIR, Scenario, last_text
from core.settings import ROLES, Settings
from models.tables import LLMCall, Project, ToolCall
from runtime.threads import OrchestratorRuntime, RunEvent
from services.identities import cli_identity
from tests.fixtures.openai_server import USAGE, OpenAIServer
from tests.integration.helpers import rows

pytestmark = pytest.mark.slow

API_KEY = "sk-local-test"
ASK = "I need a small HTTP service called hello-api with a /health endpoint and unit tests."
THREAD = "t-wire"


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(Scenario.load(BUILTIN_DIR / "hello-api.json"), api_key=API_KEY) as srv:
        yield srv


def wire_settings(settings: Settings, server: OpenAIServer, api_key: str = API_KEY) -> Settings:
    return settings.model_copy(
        update={
            "model": "openai/po",
            **{f"model_{role}": f"openai/{role}" for role in ROLES},
            "api_base": server.base_url + "/v1",
            "api_key": SecretStr(api_key),
        }
    )


async def run_turn(settings: Settings) -> list[RunEvent]:
    async with OrchestratorRuntime(settings) as rt:
        return [ev async for ev in rt.start_turn(ASK, THREAD, actor=cli_identity())]


def tool_names(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools") or []]


async def test_main_job_over_http_until_deploy_approval(settings: Settings, server: OpenAIServer) -> None:
    cfg = wire_settings(settings, server)
    server.script_invalid_once("architect")

    events = await run_turn(cfg)

    interrupts = [ev for ev in events if ev.kind == "interrupt"]
    assert len(interrupts) == 1, [(ev.kind, ev.node, ev.error) for ev in events]
    payload = interrupts[0].payload or {}
    assert payload["kind"] == "deploy_approval"
    assert payload["project"] == "hello-api"
    assert (payload["tests"]["passed"], payload["tests"]["failed"]) == (4, 0)
    assert not any(ev.error for ev in events)

    # Every request went through the wire with the configured key, to the configured base, non-streaming.
    assert {path for _, path, _ in server.log} == {"/v1/chat/completions"}
    assert all(h["authorization"] == f"Bearer {API_KEY}" for _, _, h in server.log)
    assert not any(body.get("stream") for body in server.requests)

    po = server.requests_of("po")
    assert len(po) == 1
    assert "create_project_intent" in tool_names(po[0])
    assert "hello-api" in last_text(po[0]["messages"])

    architect = server.requests_of("architect")
    assert len(architect) == 4  # the scripted answer without a tool call, the plan after the nudge, two reviews
    assert "Act through the tools only" not in last_text(architect[0]["messages"])
    assert "Act through the tools only" in last_text(architect[1]["messages"])
    assert architect[1]["messages"][-2] == {"role": "assistant", "content": "this is not json"}
    [unused] = [c for c in await rows(cfg, LLMCall) if not c.ok]  # the answer without a tool call was not used
    assert unused.role == "architect" and "this is not json" in (unused.error or "")
    assert all(any(t["function"]["name"] == "finish" for t in r["tools"]) for r in architect)

    developer = server.requests_of("developer")
    assert len(developer) == 3  # the first version fails a test, the fix passes, the review's fix
    assert "gate refused your last round" not in last_text(developer[0]["messages"])
    assert "gate refused your last round" in last_text(developer[1]["messages"])
    assert "review found blocking issues" in last_text(developer[2]["messages"])
    assert len(server.requests_of("tester")) == 1
    assert server.roles()[:3] == ["po", "architect", "architect"]

    calls = [c for c in await rows(cfg, LLMCall) if c.thread_id == THREAD]
    assert sorted(c.role for c in calls) == sorted(server.roles())
    for role in ROLES:
        mine = [c for c in calls if c.role == role]
        assert mine, f"no LLMCall row for {role}"
        for c in mine:
            assert c.model == f"openai/{role}"
            assert c.ok == (c.error is None) and (c.ok or c.role == "architect")  # only the scripted bad answer
            assert c.prompt_tokens == USAGE["prompt_tokens"] == 111
            assert c.completion_tokens == USAGE["completion_tokens"]

    [project] = await rows(cfg, Project)
    assert project.name == "hello-api"
    assert project.status == "verified"
    assert project.thread_id == THREAD


async def test_wrong_api_key_is_model_unreachable(settings: Settings, server: OpenAIServer) -> None:
    cfg = wire_settings(settings, server, api_key="sk-wrong")

    with pytest.raises(ModelUnreachable, match=r"'openai/po'.*AuthenticationError"):
        await run_turn(cfg)

    # A 401 is not retried: retrying cannot fix a bad key.
    assert server.roles() == ["po"]
    assert all(h["authorization"] == "Bearer sk-wrong" for _, _, h in server.log)
    assert await rows(cfg, Project) == []
    [call] = await rows(cfg, LLMCall)
    assert call.role == "po" and not call.ok and call.error


async def test_server_error_is_model_unreachable_after_bounded_retries(
    settings: Settings, server: OpenAIServer
) -> None:
    cfg = wire_settings(settings, server)
    server.fail_with(500)

    with pytest.raises(ModelUnreachable, match=r"'openai/po'.*InternalServerError"):
        await run_turn(cfg)

    # The SDK's max_retries=2 (core/llm.py): one request and two retries with backoff, no more.
    assert server.roles() == ["po"] * 3
    assert await rows(cfg, Project) == []
    [call] = await rows(cfg, LLMCall)
    assert call.role == "po" and not call.ok


@pytest.mark.parametrize("style", ["hermes", "llama"])
async def test_tool_calls_written_as_text_still_drive_the_main_job(
    settings: Settings, server: OpenAIServer, style: str
) -> None:
    """Qwen 2.5 on Ollama writes ``<tool_call>`` blocks, Llama 3.1 bare JSON: every role's calls arrive as text."""
    cfg = wire_settings(settings, server)
    server.deliver_calls_as_text(*ROLES, style=style)
    events = await run_turn(cfg)
    [ask] = [ev for ev in events if ev.kind == "interrupt"]
    assert ask.payload is not None and ask.payload["kind"] == "deploy_approval", [ev.error for ev in events]
    assert ask.payload["tests"]["passed"] == 4
    said = [ev.text or "" for ev in events if ev.kind == "message"]
    assert not any("<tool_call>" in text or '"parameters"' in text for text in said)  # never shown as words
    done = [(c.phase, c.tool, c.outcome) for c in await rows(cfg, ToolCall)]  # the text became real tool calls
    assert ("TDD", "write_file", "allowed") in done and ("IMPL", "write_file", "allowed") in done


async def test_an_answer_cut_off_at_the_token_limit_is_asked_again_not_run(
    settings: Settings, server: OpenAIServer
) -> None:
    cfg = wire_settings(settings, server)
    server.cut_off_once("developer")
    events = await run_turn(cfg)
    [ask] = [ev for ev in events if ev.kind == "interrupt"]
    assert ask.payload is not None and ask.payload["kind"] == "deploy_approval", [ev.error for ev in events]
    developer = server.requests_of("developer")
    assert len(developer) == 4  # the cut answer, asked again, then the two rounds after it
    assert "cut off at the token limit" in last_text(developer[1]["messages"])
    assert all(body["max_tokens"] == cfg.llm_max_tokens for body in server.requests)
    written = [c for c in await rows(cfg, ToolCall) if c.phase == "IMPL" and c.tool == "write_file"]
    assert len(written) == 3  # nothing of the cut answer ran
    [unused] = [c for c in await rows(cfg, LLMCall) if not c.ok]
    assert unused.role == "developer" and "unused: cut off at the token limit" in (unused.error or "")
