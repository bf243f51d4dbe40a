"""What small models write instead of a clean tool call, read for what it means: JSON values in prose, a phase's
artifact without its ``finish`` call, and tool arguments under another name."""

from __future__ import annotations

import json

import pytest

from core.contract import DEFAULT_CONTRACT, load_contract, normalize_arguments
from core.text_tool_calls import json_values
from nodes.agent import bare_artifact

PLAN = load_contract(DEFAULT_CONTRACT).phase("PLAN")
DESIGN = {
    "summary": "one file",
    "acceptance_criteria": [{"id": "AC1", "text": "GET /health answers 200"}],
    "files": [{"path": "app.py", "purpose": "the service"}],
    "entrypoint": "app.py",
    "health_path": "/health",
}


def test_json_values_skip_prose_fences_and_nested_values() -> None:
    text = 'Here is the design:\n```json\n{"a": {"b": [1, 2]}}\n```\nand then [3, {"c": 4}] plus {broken'
    assert [value for _, _, value in json_values(text)] == [{"a": {"b": [1, 2]}}, [3, {"c": 4}]]
    start, end, _ = json_values(text)[0]
    assert text[start:end] == '{"a": {"b": [1, 2]}}'
    assert json_values("no JSON here at all {") == []


def test_a_design_written_after_prose_and_before_another_code_block_is_taken() -> None:
    text = (
        "Sure! Here is the design:\n```json\n"
        + json.dumps(DESIGN, indent=2)
        + '\n```\nRun it with:\n```bash\npython app.py\n```\n{"not": "this"}'
    )
    assert bare_artifact(text, PLAN) == (DESIGN, None)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("Here is the design: app.py serves /health.", None),
        ('Here is the design: {"summary": "no files"}', "acceptance_criteria"),
        (
            "```json\n" + json.dumps({**DESIGN, "acceptance_criteria": [{"id": "X1", "text": "t"}]}) + "\n```",
            "'X1' does not match",
        ),
    ],
    ids=["prose-only", "missing-field", "invalid-criterion-id"],
)
def test_no_valid_artifact_is_taken_and_an_invalid_one_is_quoted(text: str, quoted: str | None) -> None:
    artifact, errors = bare_artifact(text, PLAN)
    assert artifact is None
    if quoted is None:
        assert errors is None
    else:
        assert errors is not None and quoted in errors


def test_renamed_arguments_are_taken_as_the_tools_own() -> None:
    args, renamed = normalize_arguments("write_file", {"file_path": "app.py", "code": "print(1)\n"})
    assert args == {"path": "app.py", "content": "print(1)\n"}
    assert renamed == ["file_path -> path", "code -> content"]
    assert normalize_arguments("read_file", {"filename": "app.py"}) == ({"path": "app.py"}, ["filename -> path"])


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("write_file", {"path": "a.py", "file_path": "b.py", "content": "x"}),  # its own name wins; the alias stays
        ("write_file", {"file_path": "a.py", "filename": "b.py", "content": "x"}),  # two aliases: which one?
        ("run_tests", {"file_path": "a.py"}),  # a tool without that argument
        ("finish", {"code": "x"}),  # an artifact is checked by its schema, never renamed
    ],
)
def test_ambiguous_or_foreign_arguments_are_left_for_the_checks_to_refuse(tool: str, args: dict[str, str]) -> None:
    assert normalize_arguments(tool, args) == (args, [])
