"""The one seam every model call goes through: litellm ``acompletion``, per-role models, validation, tracing.

litellm is imported lazily (it costs 3-4 s and would otherwise go to the network for its price list), with
``LITELLM_LOCAL_MODEL_COST_MAP=True`` set first. Structured answers are validated with pydantic and re-asked with the
validation error a bounded number of times (litellm's ``response_format`` does not validate what comes back).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import update
from sqlmodel import col

from core.db import Database
from core.settings import Role, Settings
from core.text_tool_calls import calls_in_text
from models.tables import Budget, LLMCall
from prompts.common import JSON_INSTRUCTION, REASK

T = TypeVar("T", bound=BaseModel)
log = logging.getLogger(__name__)
_litellm: Any = None


class ModelUnreachable(RuntimeError):
    """The model provider could not be reached or failed; says which model and where."""


class InvalidModelOutput(RuntimeError):
    """The model kept answering something that does not validate, after every re-ask."""


@dataclass
class LLMReply:
    """A model's answer: text and/or tool calls ``[{"id", "name", "args"}]``.

    ``finish_reason`` is the provider's (``stop``, ``tool_calls``, ``length``...): ``length`` means the answer was cut
    off at ``max_tokens`` and its tool calls may be incomplete.
    """

    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    call_id: int | None = None
    """The ``llmcall`` row of this answer (None when not traced)."""

    @property
    def cut_off(self) -> bool:
        """Whether the answer stopped at the token limit (OpenAI's ``finish_reason: length``)."""
        return self.finish_reason == "length"


def load_litellm() -> Any:
    """Import litellm once, offline-safe, quiet, with the replay provider registered."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        from core.replay import make_handler

        litellm.suppress_debug_info = True
        logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
        litellm.custom_provider_map = [{"provider": "replay", "custom_handler": make_handler()}]
        _litellm = litellm
    return _litellm


class LLM:
    """Per-process model client.

    Args:
        settings: chooses the model per role, the API base/key, re-ask bound and timeout.
        db: where each call's trace (tokens, cost, latency) is written; None to skip tracing.
    """

    def __init__(self, settings: Settings, db: Database | None) -> None:
        self.settings = settings
        self.db = db

    def _call_kwargs(self, model: str, role: Role) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": model, "metadata": {"role": role}, "timeout": self.settings.llm_timeout_s}
        if model.startswith("replay/"):
            kw["api_base"] = str(self.settings.replay_dir) if self.settings.replay_dir else None
        else:
            kw["max_retries"] = 2  # the SDK's retries: 5xx/429 with backoff, never a 4xx (litellm's num_retries would)
            if self.settings.api_base:
                kw["api_base"] = self.settings.api_base
            if self.settings.api_key:
                kw["api_key"] = self.settings.api_key.get_secret_value()
            if self.settings.llm_max_tokens:
                kw["max_tokens"] = self.settings.llm_max_tokens
            if model.startswith(("ollama/", "ollama_chat/")) and self.settings.llm_context_tokens:
                kw["num_ctx"] = self.settings.llm_context_tokens  # Ollama's own default (2048) cuts long prompts
        return kw

    async def chat(
        self,
        role: Role,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        thread_id: str | None = None,
        project_id: int | None = None,
    ) -> LLMReply:
        """Send OpenAI-format ``messages`` (and optional OpenAI ``tools``) to the role's model.

        The call is traced (tokens, cost, latency) and, with ``project_id``, charged to that project's budget in the
        same transaction (one call, its tokens, cost and latency in seconds); a failed call is charged too.

        Raises:
            ModelUnreachable: connection error, timeout, 5xx, auth error, or a replay mismatch (message says which).
        """
        litellm = load_litellm()
        model = self.settings.model_for(role)
        started = time.perf_counter()
        try:
            resp = await litellm.acompletion(messages=messages, tools=tools or None, **self._call_kwargs(model, role))
        except Exception as exc:  # litellm maps every provider failure onto its own exception family
            await self._trace(role, model, thread_id, started, None, error=str(exc)[:500], project_id=project_id)
            raise ModelUnreachable(self._explain(model, exc)) from exc
        call_id = await self._trace(role, model, thread_id, started, resp, project_id=project_id)
        msg = resp.choices[0].message
        calls = [
            {"id": c.id, "name": c.function.name, "args": _tool_args(c.function.arguments)}
            for c in (msg.tool_calls or [])
        ]
        content = msg.content or ""
        if tools and not calls and content:  # a call written as text (see core/text_tool_calls.py)
            names = {t["function"]["name"] for t in tools if isinstance(t.get("function"), dict)}
            found, content = calls_in_text(content, names)
            calls = [{"id": f"text_call_{uuid.uuid4().hex[:12]}", **c} for c in found]
            if calls:
                log.info("%s's reply wrote %d tool call(s) as text; taken as tool calls", role, len(calls))
        finish = getattr(resp.choices[0], "finish_reason", None)
        return LLMReply(
            content=content, tool_calls=calls, finish_reason=str(finish) if finish else None, call_id=call_id
        )

    async def structured(
        self,
        role: Role,
        messages: list[dict[str, Any]],
        schema: type[T],
        *,
        thread_id: str | None = None,
        project_id: int | None = None,
    ) -> T:
        """Ask for a JSON answer of ``schema``; re-ask with the validation error up to ``llm_reasks`` times.

        Raises:
            InvalidModelOutput: still invalid after the last re-ask (the error names the schema and the problem).
            ModelUnreachable: as :meth:`chat`.
        """
        convo = list(messages)
        convo[0] = {**convo[0], "content": convo[0]["content"] + _json_instruction(schema)}
        last_error = ""
        for _attempt in range(self.settings.llm_reasks + 1):
            reply = await self.chat(role, convo, thread_id=thread_id, project_id=project_id)
            try:
                return schema.model_validate_json(_strip_fences(reply.content))
            except ValidationError as exc:
                last_error = str(exc)
                convo += [
                    {"role": "assistant", "content": reply.content},
                    {"role": "user", "content": REASK.format(error=last_error[:1500], schema=schema.__name__)},
                ]
        raise InvalidModelOutput(
            f"the {role} model ({self.settings.model_for(role)}) did not return a valid {schema.__name__} after "
            f"{self.settings.llm_reasks + 1} tries; last error: {last_error[:500]}"
        )

    def _explain(self, model: str, exc: Exception) -> str:
        from core.replay import MISMATCH_PREFIX

        text = str(exc)
        if MISMATCH_PREFIX in text:
            return text[text.index(MISMATCH_PREFIX) :]
        where = f" at {self.settings.api_base}" if self.settings.api_base else ""
        return (
            f"model {model!r}{where} failed: {type(exc).__name__}: {text[:300]}. "
            "Check ORCH_MODEL / ORCH_API_BASE / ORCH_API_KEY, or run the recorded demo model (replay/hello-api)."
        )

    async def _trace(
        self,
        role: str,
        model: str,
        thread_id: str | None,
        started: float,
        resp: Any,
        error: str | None = None,
        project_id: int | None = None,
    ) -> int | None:
        """Write the call's ``llmcall`` row (and charge the budget); return the row's id."""
        if self.db is None:
            return None
        usage = getattr(resp, "usage", None)
        seconds = time.perf_counter() - started
        row = LLMCall(
            role=role,
            model=model,
            thread_id=thread_id,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            cost_usd=_cost(resp, model) if resp is not None else 0.0,
            latency_ms=seconds * 1000,
            ok=error is None,
            error=error,
        )
        async with self.db.session() as s:
            s.add(row)
            if project_id is not None:  # one atomic UPDATE: concurrent calls of one project never lose a charge
                await s.exec(
                    update(Budget)
                    .where(col(Budget.project_id) == project_id)
                    .values(
                        spent_tokens=Budget.spent_tokens + row.prompt_tokens + row.completion_tokens,
                        spent_cost_usd=Budget.spent_cost_usd + row.cost_usd,
                        spent_calls=Budget.spent_calls + 1,
                        spent_seconds=Budget.spent_seconds + seconds,
                    )
                )  # type: ignore[call-overload]
            await s.flush()
        return row.id

    async def mark_unused(self, reply: LLMReply, why: str) -> None:
        """Record that ``reply`` was not used (cut off, no tool call, a claim without its tool).

        Its ``llmcall`` row gets ``ok = false`` and ``why`` with the start of the answer, so a trace tells what the
        model really did.
        """
        if self.db is None or reply.call_id is None:
            return
        text = f"unused: {why}; the answer began: {reply.content[:400]!r}"
        async with self.db.session() as s:
            await s.exec(update(LLMCall).where(col(LLMCall.id) == reply.call_id).values(ok=False, error=text[:500]))  # type: ignore[call-overload]


def _cost(resp: Any, model: str) -> float:
    """USD cost from litellm's local price map; 0.0 for models it has no price for (replay, local servers)."""
    try:
        return float(load_litellm().completion_cost(completion_response=resp, model=model))
    except Exception:  # litellm raises several unrelated types for "no price known"
        return 0.0


INVALID_ARGUMENTS = "__invalid_arguments__"
"""The key a tool call's arguments are kept under when they are not a JSON object (tools refuse unknown keys)."""


def _tool_args(raw: str | None) -> dict[str, Any]:
    """A tool call's arguments as a dict.

    Text that is not a JSON object is kept under ``INVALID_ARGUMENTS``, so the tool step reports it to the model
    as a validation error instead of the run crashing.
    """
    try:
        args = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {INVALID_ARGUMENTS: (raw or "")[:500]}
    return args if isinstance(args, dict) else {INVALID_ARGUMENTS: str(raw)[:500]}


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def _json_instruction(schema: type[BaseModel]) -> str:
    return JSON_INSTRUCTION.format(schema=json.dumps(schema.model_json_schema()))
