"""The PO's claims of action are held against the tools this turn really ran."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from core.llm import LLMReply
from nodes.product_owner import unbacked_claim


def state(*messages: Any) -> dict[str, Any]:
    return {"messages": [HumanMessage("make me hello-api"), *messages]}


@pytest.mark.parametrize(
    "text",
    [
        "I've created hello-api; the teams are working.",
        "Done! hello-api has been deployed.",
        "I have started the project for you.",
        "The team is on it.",
    ],
)
def test_a_claim_without_an_acting_tool_this_turn_is_caught(text: str) -> None:
    assert unbacked_claim(LLMReply(content=text), state()) is not None


def test_a_claim_backed_by_this_turns_tool_is_fine_and_an_earlier_turn_does_not_count() -> None:
    done = ToolMessage(content='{"created": "hello-api"}', tool_call_id="c1", name="create_project_intent")
    call = AIMessage(content="", tool_calls=[{"id": "c1", "name": "create_project_intent", "args": {}}])
    said = LLMReply(content="I've created hello-api.")
    assert unbacked_claim(said, state(call, done)) is None
    later = {"messages": [*state(call, done)["messages"], AIMessage("ok"), HumanMessage("and now?")]}
    assert unbacked_claim(said, later) == "I've created"
    failed = ToolMessage(content='{"error": "exists"}', tool_call_id="c1", name="create_project_intent")
    assert unbacked_claim(said, state(call, failed)) == "I've created"


@pytest.mark.parametrize(
    "reply",
    [
        LLMReply(content="hello-api is verified and waits for your approval."),
        LLMReply(
            content="I will create it now.", tool_calls=[{"id": "c", "name": "create_project_intent", "args": {}}]
        ),
        LLMReply(content="What should the service be called?"),
    ],
)
def test_answers_and_replies_that_call_tools_claim_nothing(reply: LLMReply) -> None:
    assert unbacked_claim(reply, state()) is None
