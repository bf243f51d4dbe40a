"""A person's answer is mapped onto the typed answer of the pending question, or refused before anything resumes."""

from __future__ import annotations

from typing import Any

import pytest

from models.interrupts import DeployDecision, GuidanceAnswer
from runtime.answers import Answer, answer_value
from runtime.errors import RuntimeInputError

DEPLOY: dict[str, Any] = {"kind": "deploy_approval", "question": "Deploy?", "project": "hello-api"}
GUIDANCE: dict[str, Any] = {"kind": "engineering_guidance", "question": "Help?", "project": "hello-api"}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Answer("approve"), {"decision": "approve", "reason": None, "feedback": None, "by": "token:ann"}),
        (
            Answer("reject", "port clash"),
            {"decision": "reject", "reason": "port clash", "feedback": None, "by": "token:ann"},
        ),
        (
            Answer("text", "add /version"),
            {"decision": "feedback", "reason": None, "feedback": "add /version", "by": "token:ann"},
        ),
    ],
    ids=["approve", "reject", "feedback"],
)
def test_deploy_answers(answer: Answer, expected: dict[str, Any]) -> None:
    value = answer_value(DEPLOY, answer, by="token:ann")
    assert value == expected
    assert DeployDecision.model_validate(value).model_dump() == expected


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_reject_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(RuntimeInputError, match="reject needs a reason"):
        answer_value(DEPLOY, Answer("reject", reason))


@pytest.mark.parametrize("text", [None, "", "  \n"])
def test_feedback_needs_text(text: str | None) -> None:
    with pytest.raises(RuntimeInputError, match="deploy_approval"):
        answer_value(DEPLOY, Answer("text", text))


def test_guidance_text() -> None:
    value = answer_value(GUIDANCE, Answer("text", "compare status case-insensitively"), by="cli:ann")
    assert value == {"answer": "compare status case-insensitively", "by": "cli:ann"}
    assert GuidanceAnswer.model_validate(value).answer == "compare status case-insensitively"


def test_guidance_refuses_approval_and_a_reject_stops() -> None:
    with pytest.raises(RuntimeInputError, match="--answer"):
        answer_value(GUIDANCE, Answer("approve", "some reason"))
    assert answer_value(GUIDANCE, Answer("reject", "enough"), by="cli:ann") == {"answer": "stop", "by": "cli:ann"}


@pytest.mark.parametrize("text", [None, ""])
def test_guidance_needs_text(text: str | None) -> None:
    with pytest.raises(RuntimeInputError, match="engineering_guidance"):
        answer_value(GUIDANCE, Answer("text", text))


@pytest.mark.parametrize("payload", [{"kind": "provision_server"}, {}, {"kind": None}])
def test_unknown_kind(payload: dict[str, Any]) -> None:
    with pytest.raises(RuntimeInputError, match="unknown interrupt kind"):
        answer_value(payload, Answer("approve"))


def test_runtime_input_error_is_a_value_error() -> None:
    assert issubclass(RuntimeInputError, ValueError)


def test_blank_guidance_is_refused():
    with pytest.raises(RuntimeInputError):
        answer_value({"kind": "engineering_guidance"}, Answer("text", "   "))


def test_unknown_answer_kind_is_a_clear_error():
    with pytest.raises(RuntimeInputError, match="unknown answer kind"):
        answer_value({"kind": "deploy_approval"}, Answer("maybe"))  # type: ignore[arg-type]


def test_a_failed_node_reports_its_error_as_text() -> None:
    from runtime.threads import OrchestratorRuntime

    started: dict[str, float] = {}
    begin = OrchestratorRuntime._task_event({"id": "t1", "name": "write_code", "input": {}}, ("engineering",), started)
    assert begin is not None and begin.kind == "node_start"
    end = OrchestratorRuntime._task_event(
        {"id": "t1", "name": "write_code", "error": ValueError("path leaves the workspace"), "result": None},
        ("engineering",),
        started,
    )
    assert end is not None and end.error == "ValueError: path leaves the workspace"
    assert isinstance(end.duration_s, float) and end.path == ("engineering",)
