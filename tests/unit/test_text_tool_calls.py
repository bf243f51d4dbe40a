"""Tool calls written as text in the formats open models use are recognised; other JSON and prose are left alone."""

from __future__ import annotations

import json

import pytest

from core.text_tool_calls import calls_in_text

NAMES = {"create_project_intent", "write_file", "finish"}
ARGS = {"name": "hello-api", "summary": "a service", "requirements": ["GET /health"]}


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "create_project_intent", "arguments": ' + json.dumps(ARGS) + "}\n</tool_call>",
        '{"name": "create_project_intent", "parameters": ' + json.dumps(ARGS) + "}",
        '<|python_tag|>{"name": "create_project_intent", "parameters": ' + json.dumps(ARGS) + "}<|eom_id|>",
        "```json\n"
        + json.dumps({"type": "function", "function": {"name": "create_project_intent", "arguments": json.dumps(ARGS)}})
        + "\n```",
    ],
    ids=["hermes-qwen", "llama-3.1", "llama-python-tag", "openai-shape-fenced"],
)
def test_each_format_becomes_one_call_and_leaves_no_residue(text: str) -> None:
    calls, rest = calls_in_text("I will create it now.\n" + text, NAMES)
    assert calls == [{"name": "create_project_intent", "args": ARGS}]
    assert rest == "I will create it now."


def test_several_calls_in_a_list_and_in_sequence_keep_their_order() -> None:
    listed = json.dumps(
        [
            {"name": "write_file", "arguments": {"path": "a.py", "content": "x"}},
            {"name": "finish", "arguments": {"message": "m"}},
        ]
    )
    calls, _ = calls_in_text(listed, NAMES)
    assert [c["name"] for c in calls] == ["write_file", "finish"]
    seq = (
        '<tool_call>{"name": "write_file", "arguments": {"path": "b.py", "content": "{}"}}</tool_call>\n'
        '<tool_call>{"name": "finish", "arguments": {"message": "done"}}</tool_call>'
    )
    calls, rest = calls_in_text(seq, NAMES)
    assert [c["args"] for c in calls] == [{"path": "b.py", "content": "{}"}, {"message": "done"}] and rest == ""


@pytest.mark.parametrize(
    "text",
    [
        'The health document is {"status": "ok", "service": "hello-api"}.',
        '{"name": "delete_everything", "arguments": {}}',  # not a tool this request offered
        '[{"name": "finish", "arguments": {}}, {"not": "a call"}]',  # a list that is not all calls
        '{"name": "finish", "arguments": "not json"}',
        "no json at all {",
    ],
)
def test_prose_other_json_and_unoffered_tools_are_left_alone(text: str) -> None:
    assert calls_in_text(text, NAMES) == ([], text)


def test_calls_wrapped_in_a_tool_calls_object_are_recognised() -> None:
    text = (
        '{"tool_calls": [{"name": "read_file", "arguments": {"path": "app.py"}}, {"name": "finish", "arguments": {}}]}'
    )
    calls, rest = calls_in_text(text, {"read_file", "finish"})
    assert calls == [{"name": "read_file", "args": {"path": "app.py"}}, {"name": "finish", "args": {}}]
    assert rest == ""
    assert calls_in_text('{"tool_calls": [{"name": "rm_rf", "arguments": {}}]}', {"finish"})[0] == []
