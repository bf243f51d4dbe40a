"""What the Architect may declare: plain requirements, a test command of the project's own tools."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nodes.schemas import Design

BASE = {
    "summary": "s",
    "acceptance_criteria": [{"id": "AC1", "text": "it answers"}],
    "files": [{"path": "app.py", "purpose": "p"}],
}


def test_dependencies_are_normalised_requirements_and_a_blank_test_command_is_the_default() -> None:
    design = Design.model_validate({**BASE, "dependencies": ["Flask >= 3", "requests"], "test_command": "  "})
    assert design.dependencies == ["Flask>=3", "requests"] and design.test_command is None
    assert Design.model_validate({**BASE, "test_command": "pytest -q tests"}).test_command == "pytest -q tests"


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("dependencies", ["git+https://example.com/x.git"], "not a requirement"),
        ("dependencies", ["x @ https://example.com/x.whl"], "names a URL"),
        ("dependencies", ["not a req !"], "not a requirement"),
        ("test_command", "rm -rf /", "must start with python"),
        ("test_command", "python 'unclosed", "not a command line"),
    ],
)
def test_anything_else_is_refused_so_the_model_is_asked_again(field: str, value: object, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Design.model_validate({**BASE, field: value})
