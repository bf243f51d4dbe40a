"""Tool calls a model wrote as text instead of sending them as tool calls, recognised and turned into real ones.

Several open models served through Ollama or vLLM without a tool-call parser put the call in the message text:

- Hermes / Qwen 2.5: ``<tool_call>{"name": "f", "arguments": {...}}</tool_call>``
  (https://qwen.readthedocs.io/en/latest/framework/function_call.html);
- Llama 3.1: ``{"name": "f", "parameters": {...}}``, sometimes after ``<|python_tag|>``
  (https://www.llama.com/docs/model-cards-and-prompt-formats/llama3_1/#json-based-tool-calling);
- OpenAI's own shape pasted as text: ``{"type": "function", "function": {"name": "f", "arguments": "{...}"}}``;
- any of these in a fenced code block, several in a JSON list, or in ``{"tool_calls": [...]}`` (what a model told
  to write its calls as JSON answers, see ``core.llm.tools_in_prompt``).

Only a JSON object naming one of the tools offered in that request counts, so prose that merely contains JSON is
left alone. Written here (not a library) because no maintained parser covers these formats outside a serving stack.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TAGS = re.compile(r"</?tool_call>|<\|python_tag\|>|<\|eom_id\|>|<\|eot_id\|>")
_DECODER = json.JSONDecoder()


def calls_in_text(text: str, tool_names: set[str]) -> tuple[list[dict[str, Any]], str]:
    """Find the tool calls written in ``text``.

    Args:
        text: the model's message content.
        tool_names: the names of the tools offered in the request.

    Returns:
        ``([{"name", "args"}], rest)``: the calls in order, and the text without them (tags and emptied fences
        removed, stripped). No calls: ``([], text)`` unchanged.
    """
    calls: list[dict[str, Any]] = []
    spans: list[tuple[int, int]] = []
    for start, end, value in json_values(text):
        if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):  # {"tool_calls": [...]}
            value = value["tool_calls"]
        items = value if isinstance(value, list) else [value]
        found = [call for call in (_as_call(item, tool_names) for item in items) if call is not None]
        if found and len(found) == len(items):
            calls += found
            spans.append((start, end))
    if not calls:
        return [], text
    rest, last = [], 0
    for start, end in spans:
        rest.append(text[last:start])
        last = end
    rest.append(text[last:])
    cleaned = _TAGS.sub("", "".join(rest))
    cleaned = re.sub(r"```[a-zA-Z]*\s*```", "", cleaned)  # fences left empty
    return calls, cleaned.strip()


def json_values(text: str) -> list[tuple[int, int, Any]]:
    """Every complete top-level JSON object or array in ``text``, in order: ``[(start, end, value)]``.

    Prose, fences and tags around or between them are skipped; a value nested in another is not listed on its own
    (the outer one is). Scanning is ``json.JSONDecoder.raw_decode`` at each ``{`` or ``[`` outside a value found.
    """
    found: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(text):
        if text[i] not in "{[":
            i += 1
            continue
        try:
            value, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        found.append((i, end, value))
        i = end
    return found


def _as_call(value: Any, tool_names: set[str]) -> dict[str, Any] | None:
    """``{"name", "args"}`` if ``value`` is a call of an offered tool in one of the known shapes, else None."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):  # OpenAI's shape
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or name not in tool_names:
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):  # OpenAI sends arguments as a JSON string
        try:
            args = json.loads(args or "{}")
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return {"name": name, "args": args}
