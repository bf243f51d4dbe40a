"""The ``replay`` model provider: serves a recorded scenario through litellm, offline and deterministic.

A scenario is a JSON file ``<name>.json`` with ``exchanges``; each names a ``role`` (po, architect, developer,
tester), a ``when`` rule on the request's last message, and the ``reply`` to return::

    {"id": "developer-fix", "role": "developer",
     "when": {"contains": ["Tests failed"], "absent": []},
     "reply": {"content": "..."} | {"json": {...}} | {"tool_calls": [{"name": ..., "arguments": {...}}]}}

Matching is stateless (it works across processes and after a crash): the request must match exactly one exchange
of its role, else :class:`ReplayMismatch` says so loudly rather than answering something else.

Token usage reported by replay is counted by litellm's ``token_counter`` with a real tokenizer (OpenAI's o200k),
tool schemas included, as a provider would report it; cost is zero.

Registered as litellm's custom provider (https://docs.litellm.ai/docs/providers/custom_llm_server): call with
``model="replay/<name>"``, ``api_base=<folder of recordings>``, ``metadata={"role": role}``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def make_handler() -> Any:
    """Build the litellm ``CustomLLM`` handler (imports litellm: call only from the lazy LLM seam)."""
    import litellm

    class ReplayLLM(litellm.CustomLLM):  # type: ignore[misc]
        """Serves recorded exchanges; the scenario name is the model name after ``replay/``."""

        async def acompletion(
            self, model: str, messages: list[dict[str, Any]], api_base: str | None, *args: Any, **kwargs: Any
        ) -> Any:
            litellm_params = kwargs.get("litellm_params") or {}
            role = (litellm_params.get("metadata") or {}).get("role", "")
            try:
                exchange = Scenario.load(resolve(model, api_base)).find(role, messages)
            except ReplayMismatch as exc:  # as litellm's own 404, so it is not reported as a bug in litellm
                raise litellm.NotFoundError(message=str(exc), model=f"replay/{model}", llm_provider="replay") from exc
            message = to_message(exchange.reply)
            tools = (kwargs.get("optional_params") or {}).get("tools")
            prompt, completion = count_tokens(litellm, messages, tools, message)
            return litellm.ModelResponse(
                model=f"replay/{model}",
                choices=[{"message": message, "finish_reason": "tool_calls" if "tool_calls" in message else "stop"}],
                usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            )

    return ReplayLLM()


TOKENIZER_MODEL = "gpt-4o"
"""The tokenizer a recording is counted with (OpenAI's o200k, through litellm's ``token_counter``)."""


def count_tokens(
    litellm: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, reply: dict[str, Any]
) -> tuple[int, int]:
    """Prompt and completion tokens of one exchange, as a provider would count them.

    Args:
        litellm: the imported litellm module.
        messages: the OpenAI-format request messages.
        tools: the OpenAI ``tools`` sent with them (their schemas count as prompt tokens), or None.
        reply: the assistant message returned (its text and tool calls count as completion tokens).

    Returns:
        ``(prompt_tokens, completion_tokens)`` by litellm's ``token_counter`` with :data:`TOKENIZER_MODEL`'s tokenizer.
    """
    prompt = litellm.token_counter(model=TOKENIZER_MODEL, messages=messages, tools=tools or None)
    calls = [c["function"]["name"] + c["function"]["arguments"] for c in reply.get("tool_calls") or []]
    text = "\n".join([str(reply.get("content") or ""), *calls])
    completion = litellm.token_counter(model=TOKENIZER_MODEL, text=text, count_response_tokens=True)
    return int(prompt), int(completion)
