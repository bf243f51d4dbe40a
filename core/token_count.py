"""Prompt and completion tokens of an OpenAI-format request, counted as litellm's ``token_counter`` counts them.

The recorded model (``replay/...``) reports real token counts without importing litellm (seconds and 200 MiB for a
provider that never leaves the process). This module follows litellm's counting for an OpenAI chat model
(``litellm/litellm_core_utils/token_counter.py`` of litellm 1.x, itself after OpenAI's cookbook "How to count tokens
with tiktoken", https://github.com/openai/openai-cookbook/blob/main/examples/How_to_count_tokens_with_tiktoken.ipynb):

- each message costs 3 tokens, a ``name`` one more; every string field is encoded, a tool call counts its arguments;
- the reply primer costs 3;
- tools are written out as OpenAI's TypeScript-like ``namespace functions { ... }`` and encoded, plus 9 tokens, 4 fewer
  when the request has a system message;
- text is encoded in 1,024-character chunks (litellm's ``TIKTOKEN_ENCODE_CHUNK_SIZE_CHARS``).

The tokenizer is tiktoken's ``o200k_base`` (gpt-4o and later), read from the copy litellm ships, so it works
offline. ``tests/unit/test_token_count.py`` checks the counts equal ``litellm.token_counter``'s on both built-in
scenarios' requests.

Written here rather than imported: importing any part of litellm imports all of it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

TOKENIZER_MODEL = "gpt-4o"
"""The model whose tokenizer counts a recording (OpenAI's o200k); the name litellm's ``token_counter`` takes."""
ENCODING = "o200k_base"
CHUNK_CHARS = 1024
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMER = 3

_encoding: Any = None
_lock = threading.Lock()


def encoding() -> Any:
    """Tiktoken's ``o200k_base`` encoding, loaded once (about 0.3 s, blocking; async code awaits :func:`aencoding`).

    Raises:
        RuntimeError: the encoding's file is neither cached nor shipped with litellm (it is never downloaded here).
    """
    global _encoding
    with _lock:
        if _encoding is None:
            if "TIKTOKEN_CACHE_DIR" not in os.environ and (bundled := _bundled_tokenizers()):
                os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)  # what litellm sets at its own import
            import tiktoken

            try:
                _encoding = tiktoken.get_encoding(ENCODING)
            except Exception as exc:  # tiktoken would download a missing file: offline that is an OSError or worse
                raise RuntimeError(
                    f"tiktoken's {ENCODING} tokenizer is not available offline "
                    f"(TIKTOKEN_CACHE_DIR={os.environ.get('TIKTOKEN_CACHE_DIR')}): {exc}"
                ) from exc
    return _encoding


async def aencoding() -> Any:
    """:func:`encoding` without blocking the event loop: the first load runs in a worker thread."""
    if _encoding is not None:
        return _encoding
    return await asyncio.to_thread(encoding)


def _bundled_tokenizers() -> Path | None:
    """Litellm's folder of tokenizer files (found without importing litellm), or None if litellm is absent."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return folder if folder.is_dir() else None


def count_text(text: str) -> int:
    """Tokens of ``text``, encoded in :data:`CHUNK_CHARS`-character chunks as litellm does."""
    enc = encoding()
    return sum(
        len(enc.encode(text[i : i + CHUNK_CHARS], disallowed_special=())) for i in range(0, len(text), CHUNK_CHARS)
    )


def count_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    """Prompt tokens of a request: its ``messages`` and the schemas of its ``tools`` (OpenAI format).

    Content given as a list of parts counts its text parts (images and files are not sent to a recording).
    """
    total = REPLY_PRIMER
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if value is None:
                continue
            if key == "tool_calls":
                total += sum(count_text(str(call["function"].get("arguments", ""))) for call in value)
            elif key == "function_call":
                total += count_text(str(value.get("arguments", "")))
            elif isinstance(value, str):
                total += count_text(value) + (TOKENS_PER_NAME if key == "name" else 0)
            elif key == "content" and isinstance(value, list):
                total += sum(count_text(str(p.get("text", ""))) for p in value if isinstance(p, dict) and "text" in p)
    if tools:
        has_system = any(m.get("role") == "system" for m in messages)
        total += count_text(format_tools(tools)) + 9 - (4 if has_system else 0)
    return total


def count_completion(reply: Mapping[str, Any]) -> int:
    """Completion tokens of an assistant message: its text and each tool call's name and arguments."""
    calls = [c["function"]["name"] + c["function"]["arguments"] for c in reply.get("tool_calls") or []]
    return count_text("\n".join([str(reply.get("content") or ""), *calls]))


def format_tools(tools: Iterable[Mapping[str, Any]]) -> str:
    """OpenAI's rendering of function tools in the prompt (``namespace functions { type name = (_: {...}) => any; }``).

    After litellm's ``_format_function_definitions``, itself after jtokkit's TikTokenUtils
    (https://github.com/forestwanglin/openai-java).
    """
    lines = ["namespace functions {", ""]
    for tool in tools:
        function = tool.get("function")
        if not isinstance(function, Mapping) or not function.get("name"):
            continue
        about = [f"// {function['description']}"] if function.get("description") else []
        parameters = function.get("parameters") or {}
        if isinstance(parameters.get("properties"), Mapping) and parameters["properties"]:
            lines += [*about, f"type {function['name']} = (_: {{", _object(parameters, 0), "}) => any;", ""]
        else:
            lines += [*about, f"type {function['name']} = () => any;", ""]
    lines.append("} // namespace functions")
    return "\n".join(lines)


def _object(parameters: Mapping[str, Any], indent: int) -> str:
    properties = parameters.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return ""
    required = parameters.get("required")
    needed = tuple(required) if isinstance(required, list) else ()
    lines = []
    for key, props in properties.items():
        if isinstance(props, Mapping) and props.get("description"):
            lines.append(f"// {props['description']}")
        lines.append(f"{key}{'' if key in needed else '?'}: {_type(props, indent)},")
    return "\n".join(" " * max(0, indent) + line for line in lines)


def _type(props: Any, indent: int) -> str:
    if not isinstance(props, Mapping):
        return "any"
    kind, enum = props.get("type"), props.get("enum")
    if kind in ("string", "integer", "number") and isinstance(enum, list):
        return " | ".join(f'"{item}"' for item in enum)
    if kind == "array":
        return f"{_type(props.get('items'), indent)}[]"
    if kind == "object":
        return f"{{\n{_object(props, indent + 2)}\n}}"
    return {"string": "string", "integer": "number", "number": "number", "boolean": "boolean", "null": "null"}.get(
        str(kind), "any"
    )
