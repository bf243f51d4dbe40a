"""A person's answer to a pending interrupt, mapped onto the typed answer its kind expects.

The CLI, the API and the sync's provisioner all answer through :func:`answer_value`, so one answer means the same
wherever it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from models.interrupts import ANSWER_SCHEMAS
from runtime.errors import RuntimeInputError


@dataclass(frozen=True)
class Answer:
    """A person's answer: ``approve``, ``reject`` (with ``text`` as the reason) or ``text`` (feedback/guidance)."""

    kind: Literal["approve", "reject", "text"]
    text: str | None = None


def answer_value(payload: dict[str, Any], answer: Answer, by: str | None = None) -> dict[str, Any]:
    """Map a person's answer onto the typed answer of this interrupt's kind; ``by`` names a deploy's approver.

    Raises:
        RuntimeInputError: the answer does not fit the question (e.g. ``approve`` to a guidance request).
    """
    kind = payload.get("kind", "")
    if answer.kind not in ("approve", "reject", "text"):
        raise RuntimeInputError(f"unknown answer kind {answer.kind!r}: use approve, reject or text")
    raw: dict[str, Any]
    if kind == "deploy_approval":
        decision = {"approve": "approve", "reject": "reject", "text": "feedback"}[answer.kind]
        raw = {
            "decision": decision,
            "reason": answer.text if decision == "reject" else None,
            "feedback": answer.text if decision == "feedback" else None,
            "by": by,
        }
    elif kind == "engineering_guidance":
        if answer.kind == "approve":
            raise RuntimeInputError(
                "this thread asks for guidance, not approval: answer with text (--answer TEXT), or --reject to stop"
            )
        raw = {"answer": "stop" if answer.kind == "reject" else answer.text, "by": by}
    elif kind == "budget_exhausted":
        raw = {"action": "stop", "by": by} if answer.kind == "reject" else {"action": "extend", "by": by}
        if answer.kind == "text":
            raw.update(parse_budget_text(answer.text or ""))
    elif kind == "waiting_for_resources":
        if answer.kind == "reject":
            raise RuntimeInputError("a resource wait is retried, not rejected: answer with --approve or text")
        raw = {"reason": answer.text if answer.kind == "text" else "a person asked to retry"}
    else:
        raise RuntimeInputError(f"unknown interrupt kind {kind!r}")
    try:
        return ANSWER_SCHEMAS[kind].model_validate(raw).model_dump()
    except ValidationError as exc:
        raise RuntimeInputError(f"answer does not fit a {kind} question: {exc.errors()[0]['msg']}") from exc


CANCEL_ANSWERS = {
    "engineering_guidance": Answer("text", "stop"),
    "budget_exhausted": Answer("reject", "cancelled"),
    "waiting_for_resources": Answer("text", "cancelled"),
}
"""How a cancel answers each kind of pending question (anything else, a deploy approval included: ``reject``)."""


def parse_budget_text(text: str) -> dict[str, Any]:
    """``"stop"`` or ``"tokens=100000 calls=20 cost=1.5 seconds=600"`` (any of them) as a budget answer's fields.

    Raises:
        RuntimeInputError: a word that is neither ``stop`` nor ``item=number`` of a known item.
    """
    if text.strip().lower() in ("stop", "no"):
        return {"action": "stop"}
    names = {"tokens": "tokens", "cost": "cost_usd", "cost_usd": "cost_usd", "calls": "calls", "seconds": "seconds"}
    out: dict[str, Any] = {}
    for word in text.replace(",", " ").split():
        key, _, number = word.partition("=")
        if key.lower() not in names or not number:
            raise RuntimeInputError(
                f"{word!r}: answer a budget question with stop, or extend amounts like tokens=100000 calls=20 "
                "cost=1.5 seconds=600 (or --approve for one more default budget)"
            )
        out[names[key.lower()]] = number
    return out
