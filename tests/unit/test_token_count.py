"""The recording's token counts equal litellm's ``token_counter`` (gpt-4o) on the project's real tool schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core import token_count
from core.contract import load_contract
from core.llm import load_litellm
from nodes.po_tools import openai_tools

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are the Developer. Write the code that makes the locked tests pass.\n" * 3},
    {"role": "user", "content": "Project: tokens-demo\nTests failed:\n" + "E   assert 404 == 200\n" * 80},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "write_file", "arguments": json.dumps({"path": "app/main.py", "content": "x=1"})},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "write_file", "content": "wrote app/main.py (3 bytes)"},
    {"role": "user", "content": [{"type": "text", "text": "And the héalth route, please — “quickly”."}]},
]


def phase_tools() -> list[list[dict[str, Any]]]:
    """The OpenAI tools each phase of the default contract sends, and the PO's."""
    return [phase.tool_specs() for phase in load_contract().phases.values()] + [openai_tools()]


@pytest.mark.parametrize("with_system", [True, False])
def test_prompt_counts_equal_litellms_for_every_phase_and_the_po(with_system: bool) -> None:
    litellm = load_litellm()
    messages = CONVERSATION if with_system else CONVERSATION[1:]
    for tools in phase_tools():
        assert token_count.format_tools(tools).startswith("namespace functions {")
        ours = token_count.count_prompt(messages, tools)
        assert ours == litellm.token_counter(model=token_count.TOKENIZER_MODEL, messages=messages, tools=tools)
    assert token_count.count_prompt(messages) == litellm.token_counter(
        model=token_count.TOKENIZER_MODEL, messages=messages
    )


def test_long_text_and_completions_count_as_litellm_does() -> None:
    litellm = load_litellm()
    text = "def handler(request):\n    return {'status': 'ok', 'n': 12345}\n" * 200  # many 1,024-char chunks
    assert token_count.count_text(text) == litellm.token_counter(model=token_count.TOKENIZER_MODEL, text=text)
    reply = CONVERSATION[2]
    expected = litellm.token_counter(
        model=token_count.TOKENIZER_MODEL,
        text="\n" + "write_file" + reply["tool_calls"][0]["function"]["arguments"],
        count_response_tokens=True,
    )
    assert token_count.count_completion(reply) == expected > 0


def test_the_tool_schemas_are_written_out_with_types_enums_and_required_marks() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "plan",
                "description": "Hand in a plan.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "kind": {"type": "string", "enum": ["http", "worker"], "description": "What it is."},
                        "steps": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"n": {"type": "integer"}}},
                        },
                        "ok": {"type": "boolean"},
                    },
                    "required": ["kind"],
                },
            },
        },
        {"type": "function", "function": {"name": "ping"}},
    ]
    text = token_count.format_tools(tools)
    assert '// What it is.\nkind: "http" | "worker",' in text
    assert "steps?: {\n  n?: number,\n}[]," in text and "ok?: boolean," in text
    assert "type ping = () => any;" in text and text.endswith("} // namespace functions")
