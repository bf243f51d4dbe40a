"""The recorded ``replay`` model: stateless matching, loud mismatches, and the real litellm path through LLM.chat."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sqlmodel import select

from core.db import Database
from core.llm import LLM
from core.llm_failures import ModelUnreachable
from core.replay import BUILTIN_DIR, MISMATCH_PREFIX, ReplayMismatch, Scenario, last_text
from core.settings import Settings
from models.tables import LLMCall
from nodes.po_tools import CreateProjectIntent, openai_tools

HELLO = BUILTIN_DIR / "hello-api.json"
PO_ASK = "Please build hello-api: a small HTTP service with a /health endpoint."


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are the PO."}, {"role": "user", "content": text}]


def write_scenario(folder: Path, name: str, exchanges: list[dict]) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"name": name, "exchanges": exchanges}))
    return path


def test_builtin_scenario_loads() -> None:
    scenario = Scenario.load(HELLO)
    assert scenario.name == "hello-api"
    ids = [ex.id for ex in scenario.exchanges]
    assert len(ids) == len(set(ids)) >= 5
    assert {"po-new-project", "developer-first-version", "developer-fix"} <= set(ids)


def test_find_po_request() -> None:
    exchange = Scenario.load(HELLO).find("po", user(PO_ASK))
    assert exchange.id == "po-new-project"
    assert exchange.reply["tool_calls"][0]["name"] == "create_project_intent"


def test_role_is_part_of_the_match() -> None:
    with pytest.raises(ReplayMismatch, match="no recorded exchange"):
        Scenario.load(HELLO).find("architect", user(PO_ASK))


def test_developer_fix_after_failed_tests() -> None:
    scenario = Scenario.load(HELLO)
    first = scenario.find("developer", user("Phase IMPL of project hello-api.\nWrite the code."))
    fix = scenario.find(
        "developer", user("Phase IMPL of project hello-api.\nThe tests_green gate refused your last round")
    )
    review = scenario.find("developer", user("Phase IMPL of project hello-api.\nThe review found blocking issues"))
    assert (first.id, fix.id, review.id) == ("developer-first-version", "developer-fix", "developer-review-fix")


def test_the_tool_results_of_one_answer_are_the_question_together() -> None:
    messages = [
        {"role": "user", "content": "Phase IMPL"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "a", "content": "refused: tests/** is locked"},
        {"role": "tool", "tool_call_id": "b", "content": "refused: a call of this answer was refused"},
    ]
    text = last_text(messages)
    assert "tests/** is locked" in text and "a call of this answer" in text and "Phase IMPL" not in text


def test_mismatch_is_loud() -> None:
    text = "Tell me a joke about databases " + "x" * 400
    with pytest.raises(ReplayMismatch) as err:
        Scenario.load(HELLO).find("po", user(text))
    message = str(err.value)
    assert message.startswith(MISMATCH_PREFIX) and "replay mismatch" in message
    assert "Tell me a joke about databases" in message
    assert "'hello-api'" in message


def test_ambiguous_request_names_both_exchanges(tmp_path: Path) -> None:
    path = write_scenario(
        tmp_path,
        "twice",
        [
            {"id": "first-one", "role": "po", "when": {"contains": ["hello"]}, "reply": {"content": "a"}},
            {"id": "second-one", "role": "po", "when": {"contains": ["api"]}, "reply": {"content": "b"}},
            {"id": "other-role", "role": "tester", "when": {"contains": ["hello"]}, "reply": {"content": "c"}},
        ],
    )
    with pytest.raises(ReplayMismatch) as err:
        Scenario.load(path).find("po", user("hello api"))
    assert "2 exchanges (first-one, second-one)" in str(err.value)


def test_malformed_exchange_names_its_index(tmp_path: Path) -> None:
    path = write_scenario(
        tmp_path,
        "broken",
        [
            {"id": "ok", "role": "po", "reply": {"content": "a"}},
            {"id": "no-reply", "role": "po", "when": {"contains": ["x"]}},
        ],
    )
    with pytest.raises(ValueError, match=r"exchange #1 lacks 'reply'"):
        Scenario.load(path)


async def test_llm_chat_returns_recorded_tool_call(settings: Settings, db: Database) -> None:
    reply = await LLM(settings, db).chat("po", user(PO_ASK), tools=openai_tools(), thread_id="t-replay")
    assert [c["name"] for c in reply.tool_calls] == ["create_project_intent"]
    args = CreateProjectIntent.model_validate(reply.tool_calls[0]["args"])
    assert args.name == "hello-api"
    assert args.requirements and "GET /health" in args.requirements[0]
    assert "hello-api" in reply.content
    async with db.session() as s:
        rows = (await s.exec(select(LLMCall))).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.role, row.model, row.thread_id, row.ok, row.error) == ("po", "replay/hello-api", "t-replay", True, None)
    assert row.prompt_tokens > 0 and row.completion_tokens > 0
    assert row.latency_ms > 0


async def test_llm_chat_mismatch_is_model_unreachable(
    settings: Settings, db: Database, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ModelUnreachable) as err:
        await LLM(settings, db).chat("po", user("What is the weather like?"))
    assert str(err.value).startswith("replay mismatch:")
    printed = capfd.readouterr()
    shown = printed.out + printed.err + caplog.text
    assert "Traceback" not in shown and "bug" not in shown  # not reported as a crash inside litellm
    assert "What is the weather like?" in str(err.value)
    async with db.session() as s:
        rows = (await s.exec(select(LLMCall))).all()
    assert [(r.ok, MISMATCH_PREFIX in (r.error or "")) for r in rows] == [(False, True)]


async def test_unknown_scenario_is_model_unreachable(settings: Settings) -> None:
    with pytest.raises(ModelUnreachable, match="no recorded scenario named 'nope'"):
        await LLM(settings.model_copy(update={"model": "replay/nope"}), None).chat("po", user(PO_ASK))
