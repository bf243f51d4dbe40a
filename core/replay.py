"""The ``replay`` model provider: serves a recorded scenario, offline and deterministic.

A scenario is a JSON file ``<name>.json`` with ``exchanges``; each names a ``role`` (po, architect, developer,
tester), a ``when`` rule on the request's last message, and the ``reply`` to return::

    {"id": "developer-fix", "role": "developer",
     "when": {"contains": ["Tests failed"], "absent": []},
     "reply": {"content": "..."} | {"json": {...}} | {"tool_calls": [{"name": ..., "arguments": {...}}]}}

Matching is stateless (it works across processes and after a crash): the request must match exactly one exchange
of its role, else :class:`ReplayMismatch` says so loudly rather than answering something else.

Token usage reported by replay is counted as litellm's ``token_counter`` counts it, with a real tokenizer (OpenAI's
o200k), tool schemas included, as a provider would report it (:mod:`core.token_count`); cost is zero.

The seam (:mod:`core.llm`) calls :class:`ReplayModel` itself for ``model="replay/<name>"``: a recording never goes
through litellm, whose import costs seconds.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import token_count

BUILTIN_DIR = Path(__file__).resolve().parent / "scenarios"
MISMATCH_PREFIX = "replay mismatch:"


class ReplayMismatch(LookupError):
    """No recorded exchange (or more than one) matches the request."""


@dataclass(frozen=True)
class Exchange:
    """One recorded request rule and its reply."""

    id: str
    role: str
    contains: tuple[str, ...]
    absent: tuple[str, ...]
    reply: dict[str, Any]

    def matches(self, role: str, text: str) -> bool:
        """Whether a request of ``role`` whose last message is ``text`` is this exchange."""
        return role == self.role and all(s in text for s in self.contains) and not any(s in text for s in self.absent)


@dataclass
class Scenario:
    """A loaded recording."""

    name: str
    exchanges: list[Exchange] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """Read a scenario file. Raises ValueError on a malformed file, naming the bad entry."""
        raw = json.loads(path.read_text())
        exchanges = []
        for i, ex in enumerate(raw["exchanges"]):
            try:
                when = ex.get("when", {})
                exchanges.append(
                    Exchange(
                        ex["id"],
                        ex["role"],
                        tuple(when.get("contains", [])),
                        tuple(when.get("absent", [])),
                        ex["reply"],
                    )
                )
            except KeyError as exc:
                raise ValueError(f"{path}: exchange #{i} lacks {exc}") from exc
        return cls(name=raw.get("name", path.stem), exchanges=exchanges)

    def find(self, role: str, messages: list[dict[str, Any]]) -> Exchange:
        """Return the single exchange matching the request.

        Raises:
            ReplayMismatch: zero or several exchanges match; the message shows the request's last message.
        """
        text = last_text(messages)
        hits = [ex for ex in self.exchanges if ex.matches(role, text)]
        if len(hits) == 1:
            return hits[0]
        what = "no recorded exchange" if not hits else f"{len(hits)} exchanges ({', '.join(h.id for h in hits)})"
        raise ReplayMismatch(
            f"{MISMATCH_PREFIX} {what} of scenario {self.name!r} match a {role!r} request whose last message "
            f"starts: {text[:300]!r}"
        )


def last_text(messages: list[dict[str, Any]]) -> str:
    """The text of the request's question.

    That is the last user message, or every tool result after the last assistant message that called tools (one
    answer's calls come back together), joined by newlines.

    Assistant messages after the question (e.g. the PO telling the person about incidents) are not the question.
    """
    asked = [i for i, m in enumerate(messages) if m.get("role") in ("user", "tool")]
    if not asked:
        return ""
    last = asked[-1]
    if messages[last].get("role") != "tool":
        return _text(messages[last])
    first = last
    while first > 0 and messages[first - 1].get("role") == "tool":
        first -= 1
    return "\n".join(_text(m) for m in messages[first : last + 1])


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def resolve(name: str, folder: str | None) -> Path:
    """Find ``<name>.json`` in ``folder`` (if given) then among the built-in scenarios.

    Raises:
        ReplayMismatch: no such recording.
    """
    for base in ([Path(folder)] if folder else []) + [BUILTIN_DIR]:
        candidate = base / f"{name}.json"
        if candidate.is_file():
            return candidate
    raise ReplayMismatch(f"{MISMATCH_PREFIX} no recorded scenario named {name!r} (looked in {folder}, {BUILTIN_DIR})")


def to_message(reply: dict[str, Any]) -> dict[str, Any]:
    """Turn a recorded reply into an OpenAI chat message dict."""
    if "tool_calls" in reply:
        calls = [
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))},
            }
            for c in reply["tool_calls"]
        ]
        return {"role": "assistant", "content": reply.get("content"), "tool_calls": calls}
    if "json" in reply:
        return {"role": "assistant", "content": json.dumps(reply["json"])}
    return {"role": "assistant", "content": reply["content"]}


@dataclass(frozen=True)
class Function:
    """A tool call's function: its name and JSON ``arguments`` (OpenAI's shape)."""

    name: str
    arguments: str


@dataclass(frozen=True)
class ToolCall:
    """One tool call of a reply (OpenAI's ``tool_calls[i]``)."""

    id: str
    function: Function


@dataclass(frozen=True)
class Message:
    """The assistant message of a reply."""

    content: str | None
    tool_calls: list[ToolCall] | None


@dataclass(frozen=True)
class Choice:
    """The one choice of a reply and why it ended (``stop`` or ``tool_calls``)."""

    message: Message
    finish_reason: str


@dataclass(frozen=True)
class Usage:
    """Token counts of one exchange, as a provider reports them."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class Response:
    """A recorded reply in the shape of an OpenAI chat completion (what the seam reads of litellm's responses)."""

    model: str
    choices: list[Choice]
    usage: Usage


class ReplayModel:
    """Serves recorded exchanges; the scenario name is the model name after ``replay/``.

    Called by the seam directly: litellm is never imported for a recording.
    """

    async def acompletion(
        self,
        model: str,
        messages: list[dict[str, Any]],
        api_base: str | None,
        *,
        role: str,
        tools: list[dict[str, Any]] | None = None,
    ) -> Response:
        """Answer ``messages`` of ``role`` from scenario ``model`` (looked up in ``api_base``, then the built-ins).

        Usage is counted by :mod:`core.token_count` (o200k, the tool schemas included); the cost is zero.

        Raises:
            ReplayMismatch: no recording of that name, or not exactly one exchange matches.
        """
        exchange = Scenario.load(resolve(model, api_base)).find(role, messages)
        raw = to_message(exchange.reply)
        await token_count.aencoding()  # the first load reads the tokenizer in a worker thread
        prompt, completion = token_count.count_prompt(messages, tools), token_count.count_completion(raw)
        calls = [ToolCall(c["id"], Function(**c["function"])) for c in raw.get("tool_calls") or []]
        message = Message(raw.get("content"), calls or None)
        return Response(
            model=f"replay/{model}",
            choices=[Choice(message, "tool_calls" if calls else "stop")],
            usage=Usage(prompt, completion, prompt + completion),
        )
