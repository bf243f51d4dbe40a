"""The provider path over real HTTP: litellm's ``openai/<model>`` -> the openai SDK -> a local OpenAI-format server.

The replay provider proves the graph; these tests prove the seam sends what settings say (model per role, api_base,
api_key), re-asks an invalid structured answer, records the provider's token usage, retries only what a retry can fix
(429, 5xx, no connection) with every attempt its own ``llmcall`` row, and fails with the cause and fitting advice.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from core.db import Database
from core.llm import LLM
from core.llm_failures import ModelUnreachable
from core.replay import BUILTIN_DIR, Scenario, last_text
from core.settings import ROLES, Settings
from models.tables import LLMCall, Project, ToolCall
from runtime.threads import OrchestratorRuntime, RunEvent
from services.identities import cli_identity
from tests.fixtures.openai_server import USAGE, OpenAIServer, role_of
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


def quick_retries(settings: Settings, **update: Any) -> Settings:
    """Two retries with a 10 ms backoff base, so a test of retries takes no time waiting."""
    return settings.model_copy(update={"llm_retries": 2, "llm_retry_wait_s": 0.01, **update})


async def po_calls(settings: Settings) -> list[LLMCall]:
    return sorted((c for c in await rows(settings, LLMCall) if c.role == "po"), key=lambda c: c.id or 0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    with pytest.raises(ModelUnreachable, match=r"'openai/po'.*failed \(auth\): AuthenticationError") as err:
        await run_turn(cfg)

    # A 401 is not retried: retrying cannot fix a bad key.
    assert err.value.cause == "auth" and "ORCH_API_KEY" in str(err.value)
    assert server.roles() == ["po"]
    assert all(h["authorization"] == "Bearer sk-wrong" for _, _, h in server.log)
    assert await rows(cfg, Project) == []
    [call] = await rows(cfg, LLMCall)
    assert call.role == "po" and not call.ok and (call.error or "").startswith("auth (401): AuthenticationError")
    assert "not retried" in (call.error or "")


async def test_server_error_is_model_unreachable_after_bounded_retries(
    settings: Settings, server: OpenAIServer
) -> None:
    cfg = quick_retries(wire_settings(settings, server))
    server.fail_with(500)

    with pytest.raises(
        ModelUnreachable, match=r"'openai/po'.*failed \(server_error\) after 3 attempts: InternalServerError"
    ) as err:
        await run_turn(cfg)

    # Our retries (llm_retries=2, core/llm.py): one request and two more with backoff, each its own row.
    assert err.value.cause == "server_error"
    assert server.roles() == ["po"] * 3
    assert await rows(cfg, Project) == []
    calls = await po_calls(cfg)
    assert len(calls) == 3 and not any(c.ok for c in calls)
    assert all((c.error or "").startswith("server_error (500): InternalServerError") for c in calls)
    assert ["retried after" in (c.error or "") for c in calls] == [True, True, False]
    assert (calls[-1].error or "").endswith("gave up after 3 attempts")


async def test_a_rate_limit_is_waited_out_and_every_attempt_recorded(
    settings: Settings, db: Database, server: OpenAIServer
) -> None:
    cfg = quick_retries(wire_settings(settings, server))
    server.fail_with(429, count=1, retry_after=1)

    reply = await LLM(cfg, db).chat("po", [{"role": "user", "content": ASK}], thread_id=THREAD)

    assert [c["name"] for c in reply.tool_calls] == ["create_project_intent"]  # the call went on after the 429
    assert server.roles() == ["po", "po"]
    first, second = await po_calls(cfg)
    assert not first.ok and (first.error or "").startswith("rate_limited (429): RateLimitError")
    assert "; retried after 1.0 s" in (first.error or "")  # the provider's Retry-After, not the 10 ms backoff
    assert second.ok and second.error is None and second.id == reply.call_id
    assert (first.prompt_tokens, second.prompt_tokens) == (0, USAGE["prompt_tokens"])


async def test_a_provider_that_reports_no_usage_is_counted_with_the_tool_schemas(
    settings: Settings, db: Database, server: OpenAIServer
) -> None:
    from core.llm import load_litellm
    from nodes.po_tools import openai_tools

    cfg = wire_settings(settings, server)
    server.report_usage = False
    ask = [{"role": "user", "content": ASK}]

    reply = await LLM(cfg, db).chat("po", ask, tools=openai_tools(), thread_id=THREAD)

    assert [c["name"] for c in reply.tool_calls] == ["create_project_intent"] and server.roles() == ["po"]
    (call,) = await po_calls(cfg)
    litellm = load_litellm()
    assert call.prompt_tokens == litellm.token_counter(model="openai/po", messages=ask, tools=openai_tools())
    assert call.prompt_tokens > litellm.token_counter(model="openai/po", messages=ask), "tool schemas counted"
    assert call.completion_tokens > 0


async def test_a_rate_limit_asking_for_a_long_wait_fails_at_once(settings: Settings, server: OpenAIServer) -> None:
    cfg = quick_retries(wire_settings(settings, server))
    server.fail_with(429, retry_after=3600)

    with pytest.raises(ModelUnreachable, match=r"'openai/po'.*failed \(rate_limited\): RateLimitError") as err:
        await run_turn(cfg)

    assert err.value.cause == "rate_limited"
    assert "wait 3600 s" in str(err.value) and "ORCH_LLM_RETRY_AFTER_MAX_S (30 s)" in str(err.value)
    assert server.roles() == ["po"]
    [call] = await po_calls(cfg)
    assert (call.error or "").endswith("not retried: the provider asked to wait 3600 s")


async def test_a_slow_model_times_out_once_with_the_timeout_to_raise(settings: Settings, server: OpenAIServer) -> None:
    cfg = quick_retries(wire_settings(settings, server), llm_timeout_s_po=0.5)
    server.delay(3.0, count=1)

    with pytest.raises(ModelUnreachable, match=r"'openai/po'.*failed \(timeout\): Timeout") as err:
        await run_turn(cfg)

    # A timeout is not retried: the same model would be as slow again.
    assert err.value.cause == "timeout"
    assert "longer than 0.5 s" in str(err.value) and "ORCH_LLM_TIMEOUT_S_PO" in str(err.value)
    assert server.roles() == ["po"]
    [call] = await po_calls(cfg)
    assert not call.ok and (call.error or "").startswith("timeout: Timeout") and call.latency_ms < 3000


async def test_nothing_listening_is_a_connection_failure_naming_the_api_base(
    settings: Settings, server: OpenAIServer
) -> None:
    api_base = f"http://127.0.0.1:{closed_port()}/v1"
    cfg = quick_retries(wire_settings(settings, server), api_base=api_base)

    with pytest.raises(ModelUnreachable, match=r"'openai/po' at .* failed \(connection\) after 3 attempts") as err:
        await run_turn(cfg)

    assert err.value.cause == "connection"
    assert f"Nothing answered at {api_base}" in str(err.value) and "ollama serve" in str(err.value)
    assert server.requests == []
    calls = await po_calls(cfg)
    assert [(c.ok, (c.error or "").split(":", 1)[0]) for c in calls] == [(False, "connection")] * 3
    assert (calls[-1].error or "").endswith("gave up after 3 attempts")


async def test_an_unknown_model_is_not_found_and_not_retried(settings: Settings, server: OpenAIServer) -> None:
    cfg = quick_retries(wire_settings(settings, server))
    server.fail_with(404)

    with pytest.raises(ModelUnreachable, match=r"'openai/po'.*failed \(not_found\): NotFoundError") as err:
        await run_turn(cfg)

    assert err.value.cause == "not_found"
    assert "ORCH_MODEL_PO" in str(err.value) and "`ollama pull po`" in str(err.value)
    assert server.roles() == ["po"]
    [call] = await po_calls(cfg)
    assert (call.error or "").startswith("not_found (404): NotFoundError")


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


@pytest.mark.parametrize(
    ("name", "ask", "passed"),
    [("hello-api", ASK, 4), ("todo-api", "I need a to-do service called todo-api.", 3)],
)
async def test_a_messy_model_still_takes_each_built_in_service_to_its_deploy_approval(
    settings: Settings, name: str, ask: str, passed: int
) -> None:
    """Every role answers the way 7B-class models served without a tool-call parser do (prose, fenced calls,
    renamed arguments, a bare artifact, a second code block), the provider rate-limits the first request and cuts
    the Developer's first answer off at the token limit: the main job still ends at its deploy approval."""
    with OpenAIServer(Scenario.load(BUILTIN_DIR / f"{name}.json"), api_key=API_KEY) as server:
        cfg = quick_retries(wire_settings(settings, server))
        server.deliver_calls_as_text(*ROLES, style="messy")
        server.fail_with(429, count=1, retry_after="1")
        server.cut_off_once("developer")
        async with OrchestratorRuntime(cfg) as rt:
            events = [ev async for ev in rt.start_turn(ask, f"t-messy-{name}", actor=cli_identity())]

    [approval] = [ev for ev in events if ev.kind == "interrupt"]
    assert approval.payload is not None and approval.payload["kind"] == "deploy_approval", [ev.error for ev in events]
    assert approval.payload["project"] == name and approval.payload["tests"]["passed"] == passed
    said = " ".join(ev.text or "" for ev in events if ev.kind == "message")
    assert "```json" not in said and '"arguments"' not in said  # the calls never reach the person as words
    [project] = await rows(cfg, Project)
    assert project.status == "verified"

    calls = await rows(cfg, LLMCall)
    [limited] = [c for c in calls if (c.error or "").startswith("rate_limited (429)")]
    assert limited.role == "po" and "retried" in (limited.error or "")
    [cut] = [c for c in calls if "cut off at the token limit" in (c.error or "")]
    assert cut.role == "developer"
    tools = await rows(cfg, ToolCall)
    written = [c for c in tools if c.tool == "write_file" and c.outcome == "allowed"]
    assert {c.phase for c in written} == {"TDD", "IMPL"}
    assert all("path" in (c.args or {}) and "file_path" not in (c.args or {}) for c in written)  # renamed back
    finishes = {c.phase for c in tools if c.tool == "finish" and c.outcome == "allowed"}
    assert finishes == {"PLAN", "TDD", "IMPL", "REVIEW"}  # PLAN and REVIEW handed in as bare objects
    assert not [c for c in tools if c.outcome == "refused"], [(c.phase, c.tool, c.reason) for c in tools]


async def test_the_default_ollama_route_takes_the_main_job_to_its_deploy_approval(settings: Settings) -> None:
    """``ollama_chat/`` (the default model's route) over Ollama's own ``/api/chat``: tools sent, no JSON mode forced
    (the ``ollama/`` route's bug: the PO could never answer in words), the context size and answer length sent as
    Ollama options; the PO and the Developer write their calls as text, as qwen2.5-coder on Ollama does."""
    with OpenAIServer(Scenario.load(BUILTIN_DIR / "hello-api.json"), api_key=None) as server:
        cfg = settings.model_copy(
            update={
                "model": "ollama_chat/po",
                **{f"model_{role}": f"ollama_chat/{role}" for role in ROLES},
                "api_base": server.base_url,
                "llm_context_tokens": 16384,
                "llm_max_tokens": 4096,
                "llm_context_tokens_developer": 65536,
            }
        )
        server.deliver_calls_as_text("po", "developer", style="hermes")
        async with OrchestratorRuntime(cfg) as rt:
            events = [ev async for ev in rt.start_turn(ASK, "t-ollama", actor=cli_identity())]

    [approval] = [ev for ev in events if ev.kind == "interrupt"]
    assert approval.payload is not None and approval.payload["kind"] == "deploy_approval", [ev.error for ev in events]
    assert approval.payload["tests"]["passed"] == 4
    assert {path for _, path, _ in server.log} == {"/api/chat", "/api/show"}  # litellm asks /api/show itself
    assert len(server.requests) == len([p for _, p, _ in server.log if p == "/api/chat"])
    for body in server.requests:
        assert "format" not in body and body["stream"] is False and body["tools"]
        context = 65536 if role_of(body) == "developer" else 16384
        assert (body["options"]["num_ctx"], body["options"]["num_predict"]) == (context, 4096)
    calls = await rows(cfg, LLMCall)
    assert {c.model for c in calls} == {f"ollama_chat/{role}" for role in ROLES}
    assert all(
        c.prompt_tokens == USAGE["prompt_tokens"] and c.completion_tokens == USAGE["completion_tokens"] for c in calls
    )


@pytest.mark.parametrize("route", ["ollama_chat", "openai"])
async def test_a_server_that_refuses_tool_calls_gets_the_tools_in_the_prompt(settings: Settings, route: str) -> None:
    """An Ollama model without tool support, or vLLM without a tool-call parser, answers 400 to a request with
    ``tools``: each role is asked again with its tools in the prompt (agents in JSON mode), and the main job goes on."""
    ollama = route == "ollama_chat"
    with OpenAIServer(Scenario.load(BUILTIN_DIR / "hello-api.json"), api_key=None if ollama else API_KEY) as server:
        cfg = settings.model_copy(
            update={
                "model": f"{route}/po",
                **{f"model_{role}": f"{route}/{role}" for role in ROLES},
                "api_base": server.base_url if ollama else server.base_url + "/v1",
                "api_key": None if ollama else SecretStr(API_KEY),
            }
        )
        server.refuse_tools(*ROLES)
        async with OrchestratorRuntime(cfg) as rt:
            events = [ev async for ev in rt.start_turn(ASK, "t-no-tools", actor=cli_identity())]

    [approval] = [ev for ev in events if ev.kind == "interrupt"]
    assert approval.payload is not None and approval.payload["kind"] == "deploy_approval", [ev.error for ev in events]
    assert approval.payload["tests"]["passed"] == 4

    def json_mode(body: dict[str, Any]) -> bool:
        if ollama:
            return body.get("format") == "json"
        return (body.get("response_format") or {}).get("type") == "json_object"

    for role in ROLES:
        first, *rest = server.requests_of(role)
        assert first.get("tools") and rest and not any(body.get("tools") for body in rest)  # refused once only
        assert all("cannot take tool calls natively" in body["messages"][0]["content"] for body in rest)
        assert all(json_mode(body) == (role != "po") for body in rest)  # the PO may still talk to the person
    refused = [c for c in await rows(cfg, LLMCall) if not c.ok]
    assert sorted(c.role for c in refused) == sorted(ROLES)
    assert all((c.error or "").startswith("bad_request (400)") for c in refused)
