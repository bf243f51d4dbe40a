"""The LLM seam: per-role models and timeouts, retries on the record, and provider failures named by their cause."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from core.db import Database
from core.llm import LLM
from core.llm_failures import ModelUnreachable
from core.settings import Settings
from models.tables import LLMCall

MARKER = "Project: reask-demo"
REASKED = "previous answer was not a valid"
GOOD_DESIGN = {
    "summary": "one file",
    "acceptance_criteria": [{"id": "AC1", "text": "it answers /health"}],
    "files": [{"path": "app.py", "purpose": "the service"}],
    "entrypoint": "app.py",
    "health_path": "/health",
}
ASK = [
    {"role": "system", "content": "You are the Architect."},
    {"role": "user", "content": f"{MARKER}\nDesign it."},
]


def replay_settings(settings: Settings, folder: Path, exchanges: list[dict[str, Any]], **kw: Any) -> Settings:
    (folder / "reask.json").write_text(json.dumps({"name": "reask", "exchanges": exchanges}))
    return settings.model_copy(update={"replay_dir": folder, "model": "replay/reask", **kw})


async def calls(db: Database) -> list[LLMCall]:
    async with db.session() as s:
        return list((await s.exec(select(LLMCall).order_by(LLMCall.id))).all())


def test_model_for_role_override_beats_default() -> None:
    cfg = Settings(model="ollama/base", model_architect="openai/big")
    assert cfg.model_for("architect") == "openai/big"
    assert [cfg.model_for(r) for r in ("po", "developer", "tester")] == ["ollama/base"] * 3


def test_model_for_reads_role_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_MODEL", "ollama/base")
    monkeypatch.setenv("ORCH_MODEL_DEVELOPER", "openai/coder")
    cfg = Settings()
    assert (cfg.model_for("developer"), cfg.model_for("tester")) == ("openai/coder", "ollama/base")
    assert Settings(model_developer="explicit/one").model_for("developer") == "explicit/one"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_provider_is_explained(settings: Settings, db: Database) -> None:
    api_base = f"http://127.0.0.1:{closed_port()}/v1"
    cfg = Settings(
        data_dir=settings.data_dir,
        model="openai/x",
        api_base=api_base,
        api_key="k-not-a-secret",
        llm_retries=1,
        llm_retry_wait_s=0.01,
    )
    with pytest.raises(ModelUnreachable) as err:
        await LLM(cfg, db).chat("po", [{"role": "user", "content": "hi"}], thread_id="t-down")
    message = str(err.value)
    assert message.startswith(f"model 'openai/x' at {api_base} failed (connection) after 2 attempts: ")
    assert err.value.cause == "connection" and "ORCH_API_BASE" in message
    assert "k-not-a-secret" not in message
    rows = await calls(db)
    assert [(r.role, r.model, r.ok, r.thread_id) for r in rows] == [("po", "openai/x", False, "t-down")] * 2
    assert all("k-not-a-secret" not in (r.error or "") for r in rows)
    assert "retried after" in (rows[0].error or "") and "gave up after 2 attempts" in (rows[1].error or "")


def test_timeout_for_role_override_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Settings(llm_timeout_s=60, llm_timeout_s_developer=600)
    assert [cfg.timeout_for(r) for r in ("po", "architect", "developer", "tester")] == [60, 60, 600, 60]
    monkeypatch.setenv("ORCH_LLM_TIMEOUT_S_TESTER", "300")
    assert (Settings().timeout_for("tester"), Settings().timeout_for("po")) == (300, 120)
    llm = LLM(cfg, None)
    assert llm._call_kwargs("openai/gpt-4o-mini", "developer")["timeout"] == 600
    assert llm._call_kwargs("openai/gpt-4o-mini", "po")["max_retries"] == 0  # our retries, not the SDK's


@pytest.mark.parametrize(
    "name, value", [("ORCH_LLM_RETRIES", "-1"), ("ORCH_LLM_RETRY_AFTER_MAX_S", "-5"), ("ORCH_LLM_TIMEOUT_S_PO", "0")]
)
def test_negative_retry_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        Settings()


def provider_errors() -> list[tuple[BaseException, str, int | None]]:
    """Exceptions as litellm raises them for an ``openai/x`` model, with their expected cause and status."""
    import httpx
    import litellm

    def answer(status: int, **headers: str) -> httpx.Response:
        return httpx.Response(status, headers=headers, request=httpx.Request("POST", "http://127.0.0.1/v1"))

    who = {"llm_provider": "openai", "model": "x"}
    return [
        (litellm.RateLimitError("slow down", response=answer(429), **who), "rate_limited", 429),
        (litellm.InternalServerError("boom", response=answer(500), **who), "server_error", 500),
        (litellm.ServiceUnavailableError("busy", response=answer(503), **who), "server_error", 503),
        (litellm.APIError(502, "bad gateway", **who), "server_error", 502),
        (litellm.APIConnectionError("refused", **who), "connection", None),
        (litellm.Timeout("too slow", **who), "timeout", None),
        (litellm.AuthenticationError("bad key", **who), "auth", 401),
        (litellm.PermissionDeniedError("no", response=answer(403), **who), "auth", 403),
        (litellm.NotFoundError("no such model", **who), "not_found", 404),
        (litellm.ContextWindowExceededError("too long", **who), "context_window", 400),
        (litellm.BadRequestError("bad", **who), "bad_request", 400),
        (ValueError("something else"), "error", None),
    ]


def test_provider_errors_are_classified_by_cause(settings: Settings) -> None:
    from core.llm_failures import RETRYABLE, advice, classify

    for exc, cause, status in provider_errors():
        failure = classify(exc)
        assert (failure.cause, failure.status) == (cause, status), exc
        assert failure.retryable == (cause in RETRYABLE) and failure.detail.startswith(type(exc).__name__)
        assert advice(failure, role="po", settings=settings)


def test_retry_after_is_read_from_the_headers() -> None:
    from email.utils import format_datetime

    import httpx
    import litellm

    from core.llm_failures import classify, retry_after_s

    def limited(**headers: str) -> BaseException:
        response = httpx.Response(429, headers=headers, request=httpx.Request("POST", "http://127.0.0.1/v1"))
        return litellm.RateLimitError("slow down", llm_provider="openai", model="x", response=response)

    assert classify(limited(**{"Retry-After": "7"})).retry_after_s == 7.0
    assert retry_after_s(limited(**{"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 100 < (retry_after_s(limited(**{"Retry-After": later})) or 0) <= 120
    assert retry_after_s(limited()) is None and retry_after_s(limited(**{"Retry-After": "soon"})) is None


def test_advice_fits_the_cause(settings: Settings) -> None:
    from core.llm_failures import Failure, advice

    cfg = settings.model_copy(update={"model": "ollama_chat/qwen2.5-coder:7b", "api_base": "http://127.0.0.1:11434"})
    said = {
        cause: advice(Failure(cause, None, None, "X: y"), role="developer", settings=cfg)
        for cause in ("connection", "timeout", "auth", "not_found", "rate_limited", "context_window")
    }
    assert "http://127.0.0.1:11434" in said["connection"] and "ollama serve" in said["connection"]
    assert "ORCH_LLM_TIMEOUT_S_DEVELOPER" in said["timeout"] and "120 s" in said["timeout"]
    assert "ORCH_API_KEY" in said["auth"] and "ollama pull qwen2.5-coder:7b" in said["not_found"]
    assert "ORCH_LLM_CONTEXT_TOKENS" in said["context_window"]
    asked = advice(Failure("rate_limited", 429, 3600.0, "X: y"), role="po", settings=cfg)
    assert "3600 s" in asked and "ORCH_LLM_RETRY_AFTER_MAX_S" in asked


def test_an_empty_port_range_is_refused_with_a_clear_error(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("ORCH_PORT_RANGE_START", "18300")
    with pytest.raises(ValidationError, match="ORCH_PORT_RANGE_START <= ORCH_PORT_RANGE_END"):
        Settings()


@pytest.mark.parametrize("raw", ['{"name": "x"', "[1, 2]", "not json"])
def test_tool_arguments_that_are_not_a_json_object_become_a_validation_error(raw: str) -> None:
    from pydantic import ValidationError

    from core.llm import INVALID_ARGUMENTS, _tool_args
    from nodes.po_tools import TOOLS

    args = _tool_args(raw)
    assert list(args) == [INVALID_ARGUMENTS]
    for model in TOOLS.values():
        with pytest.raises(ValidationError):
            model.model_validate(args)
    assert _tool_args('{"name": "hello-api"}') == {"name": "hello-api"} and _tool_args(None) == {}


def test_ollama_gets_a_context_window_and_every_provider_a_max_tokens(settings: Settings) -> None:
    llm = LLM(settings.model_copy(update={"llm_max_tokens": 2000, "llm_context_tokens": 16000}), None)
    ollama = llm._call_kwargs("ollama_chat/qwen2.5-coder:7b", "developer")
    assert (ollama["max_tokens"], ollama["num_ctx"]) == (2000, 16000)
    openai = llm._call_kwargs("openai/gpt-4o-mini", "developer")
    assert openai["max_tokens"] == 2000 and "num_ctx" not in openai
    assert "max_tokens" not in llm._call_kwargs("replay/hello-api", "developer")  # a recording has no limit


def test_a_role_may_have_its_own_answer_length_and_context(settings: Settings) -> None:
    cfg = settings.model_copy(
        update={
            "llm_max_tokens": 2000,
            "llm_context_tokens": 16000,
            "llm_max_tokens_developer": 6000,
            "llm_context_tokens_developer": 65536,
        }
    )
    llm = LLM(cfg, None)
    developer = llm._call_kwargs("ollama_chat/qwen2.5-coder:7b", "developer")
    po = llm._call_kwargs("ollama_chat/qwen2.5-coder:7b", "po")
    assert (developer["max_tokens"], developer["num_ctx"]) == (6000, 65536)
    assert (po["max_tokens"], po["num_ctx"]) == (2000, 16000)
    assert "max_tokens" not in LLM(cfg.model_copy(update={"llm_max_tokens": None}), None)._call_kwargs("openai/x", "po")


def test_tools_go_in_the_system_prompt_when_the_server_refuses_them() -> None:
    from core.llm import tools_in_prompt
    from core.llm_failures import refuses_tools

    assert refuses_tools("OllamaException - registry.ollama.ai/library/llama2:latest does not support tools")
    assert refuses_tools('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set')
    assert not refuses_tools("model 'x' not found")
    tools = [{"type": "function", "function": {"name": "finish", "description": "Hand in.", "parameters": {}}}]
    messages = [{"role": "system", "content": "You are the Tester."}, {"role": "user", "content": "Phase TDD"}]
    agent = tools_in_prompt(messages, tools, "tester")
    assert agent[0]["content"].startswith("You are the Tester.") and "- finish: Hand in." in agent[0]["content"]
    assert '{"tool_calls": [{"name": "<tool>"' in agent[0]["content"] and "plain words" not in agent[0]["content"]
    assert messages[0]["content"] == "You are the Tester."  # the caller's list is left alone
    po = tools_in_prompt([{"role": "user", "content": "hi"}], tools, "po")
    assert (
        po[0]["role"] == "system" and "plain words" in po[0]["content"] and po[1] == {"role": "user", "content": "hi"}
    )
