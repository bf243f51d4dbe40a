"""The one seam every model call goes through: litellm ``acompletion``, per-role models, validation, tracing.

litellm is imported lazily, off the event loop (it costs 3-9 s and would otherwise go to the network for its price
list), with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` set first. A recording (``replay/<scenario>``) is served by
:class:`core.replay.ReplayModel` and never imports it. Every structured answer is a tool call (the agents' ``finish``
takes the phase's artifact schema as its parameters: function calling is the providers' own schema-guided output),
validated by whoever runs the tool; calls written as text are recognised here (:mod:`core.text_tool_calls`).

Retries are ours (tenacity), not the SDK's (``max_retries=0``): the SDK's are invisible, one ``llmcall`` row for
three requests. Only what a retry can fix is retried: 429, 5xx and no connection, at most ``llm_retries`` more
attempts, with exponential backoff and jitter, waiting out a ``Retry-After`` of up to ``llm_retry_after_max_s`` (a
longer one fails at once). A timeout is never retried (a slow model stays slow), nor an auth error, a 404 or a bad
request. Every attempt is its own ``llmcall`` row, charged to the budget; a failed one's ``error`` starts with its
cause and status (``rate_limited (429): ...; retried after 1.2 s``). A final failure raises :class:`ModelUnreachable`
with the cause (:func:`classify`) and advice that fits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlmodel import col
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from core.breakers import Breakers, ServiceUnavailable
from core.db import Database
from core.llm_failures import RETRY_WAIT_MAX_S, Failure, ModelUnreachable, advice, classify, refuses_tools
from core.replay import ReplayModel
from core.settings import ROLES, Role, Settings
from core.text_tool_calls import calls_in_text
from core.trace_position import graph_position
from core.tracing import model_span
from models.tables import Budget, LLMCall
from prompts.tools import PO_TALK, TOOL_LINE, TOOLS_IN_PROMPT

log = logging.getLogger(__name__)
_litellm: Any = None
_litellm_lock = threading.Lock()
_replay = ReplayModel()
"""The recorded model (``replay/<scenario>``), served without litellm."""


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
    """Import litellm once, offline-safe and quiet; return the module.

    Blocking (3-9 s the first time, in the calling thread): async code awaits :func:`aload_litellm` instead. Safe to
    call from several threads at once (one import; the others wait for it). A recording (``replay/...``) never needs
    it.
    """
    global _litellm
    with _litellm_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True
            logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
            _litellm = litellm
    return _litellm


async def aload_litellm() -> Any:
    """:func:`load_litellm` without blocking the event loop: the import runs in a worker thread.

    Returns at once once litellm is loaded; concurrent first callers share the one import.
    """
    if _litellm is not None:
        return _litellm
    return await asyncio.to_thread(load_litellm)


def needs_litellm(settings: Settings) -> bool:
    """Whether any role's model is served through litellm (every model but a recording, ``replay/...``)."""
    return any(not settings.model_for(role).startswith("replay/") for role in ROLES)


def uses_replay(settings: Settings) -> bool:
    """Whether any role's model is a recording (``replay/...``: tokens counted by :mod:`core.token_count`)."""
    return any(settings.model_for(role).startswith("replay/") for role in ROLES)


def litellm_loaded() -> bool:
    """Whether litellm has been imported by this process's seam."""
    return _litellm is not None


class LLM:
    """Per-process model client.

    Args:
        settings: chooses the model per role, the API base/key, re-ask bound and timeout.
        db: where each call's trace (tokens, cost, latency) is written; None to skip tracing.
    """

    def __init__(self, settings: Settings, db: Database | None) -> None:
        self.settings = settings
        self.db = db
        self._tools_in_prompt: set[str] = set()
        """Models whose server refused native tool calls in this process (their tools go in the prompt)."""
        self.breakers = Breakers(settings, db)
        """One breaker per provider (``model:<api base or provider>``), stored with the traces (core.breakers)."""

    def _call_kwargs(self, model: str, role: Role) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": model, "metadata": {"role": role}, "timeout": self.settings.timeout_for(role)}
        if model.startswith("replay/"):
            kw["api_base"] = str(self.settings.replay_dir) if self.settings.replay_dir else None
        else:
            kw["max_retries"] = 0  # the SDK's retries are invisible: ours (_complete) give each attempt its row
            if self.settings.api_base:
                kw["api_base"] = self.settings.api_base
            if self.settings.api_key:
                kw["api_key"] = self.settings.api_key.get_secret_value()
            if max_tokens := self.settings.max_tokens_for(role):
                kw["max_tokens"] = max_tokens
            if model.startswith(("ollama/", "ollama_chat/")) and (context := self.settings.context_tokens_for(role)):
                kw["num_ctx"] = context  # Ollama's own default (2048) cuts long prompts
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

        Each attempt is traced (tokens, cost, latency) and, with ``project_id``, charged to that project's budget in
        the same transaction (one call, its tokens, cost and latency in seconds); a failed attempt is charged too.
        A 429, a 5xx or no connection is retried (see the module docstring); the rows show every attempt.

        A server that refuses ``tools`` (an Ollama model without tool support, vLLM without a tool-call parser:
        :func:`refuses_tools`) is asked again with the tools described in the system prompt, and so is every later
        call of that model in this process: agents then answer in JSON mode (``response_format: json_object``),
        the PO in words or JSON; their calls are read from the text (:mod:`core.text_tool_calls`).

        Raises:
            ModelUnreachable: its ``cause`` says why: ``connection`` (nothing answers at the API base), ``timeout``
                (over ``timeout_for(role)`` seconds; not retried), ``auth`` (401/403), ``not_found`` (404, unknown
                model), ``rate_limited`` (429 after the retries, or a ``Retry-After`` over
                ``llm_retry_after_max_s``), ``server_error`` (5xx after the retries), ``context_window`` (the prompt
                does not fit), ``bad_request`` (another 4xx), ``replay_mismatch`` (no recorded answer), ``error``.
        """
        model = self.settings.model_for(role)
        sent, convo, extra = tools, messages, {}
        if tools and model in self._tools_in_prompt:
            sent, convo = None, tools_in_prompt(messages, tools, role)
            if role != "po":  # an agent answers only with calls: JSON mode keeps each answer parseable
                extra = {"response_format": {"type": "json_object"}}
        try:
            resp, call_id = await self._complete(role, model, convo, sent, thread_id, project_id, extra)
        except ModelUnreachable as exc:
            if not (sent and exc.cause == "bad_request" and refuses_tools(str(exc))):
                raise
            log.warning("%s's model %s refuses tool calls; its tools go in the prompt from now on", role, model)
            self._tools_in_prompt.add(model)
            return await self.chat(role, messages, tools=tools, thread_id=thread_id, project_id=project_id)
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

    async def _complete(
        self,
        role: Role,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        thread_id: str | None,
        project_id: int | None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[Any, int | None]:
        """One logical call: attempts under the retry policy, each traced; return the response and its row id."""
        kwargs = {**self._call_kwargs(model, role), **(extra or {})}
        attempt = _Attempt()

        async def once() -> Any:
            attempt.number, attempt.started = attempt.number + 1, time.perf_counter()
            if model.startswith("replay/"):  # a recording: no litellm import, routing or price lookup
                name = model.removeprefix("replay/")
                return await _replay.acompletion(name, messages, kwargs.get("api_base"), role=role, tools=tools)
            litellm = await aload_litellm()  # seconds the first time, in a worker thread
            resp = await litellm.acompletion(messages=messages, tools=tools or None, **kwargs)
            return _with_usage(litellm, resp, model, messages, tools)

        async def retried(state: RetryCallState) -> None:  # tenacity's before_sleep: the failed attempt's row
            failure = classify(_exception_of(state))
            why = failure.row(f"retried after {state.upcoming_sleep:.1f} s")
            await self._trace(role, model, thread_id, attempt.started, None, error=why, project_id=project_id)

        retries = 0 if model.startswith("replay/") else self.settings.llm_retries
        try:
            async with self._breaker(model):
                resp: Any = await self._retrying(retries, retried)(once)
        except ModelUnreachable:  # the breaker is open: no request was sent
            raise
        except Exception as exc:  # litellm maps every provider failure onto its own exception family
            failure = classify(exc)
            why = failure.row(self._outcome(failure, attempt.number))
            await self._trace(role, model, thread_id, attempt.started, None, error=why, project_id=project_id)
            raise ModelUnreachable(self._explain(model, role, failure, attempt.number), failure.cause) from exc
        return resp, await self._trace(role, model, thread_id, attempt.started, resp, project_id=project_id)

    def _breaker(self, model: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The provider's breaker: open after ``breaker_failures`` unreachable calls, refusing as ModelUnreachable.

        A recorded model (``replay/...``) runs offline and has none. Counted: no connection, a timeout, a 429 or a
        5xx after the retries; a 4xx (bad key, unknown model) is an answer and resets the count.
        """
        if model.startswith("replay/"):
            return contextlib.nullcontext()
        where = self.settings.api_base or model.split("/", 1)[0]

        def refuse(exc: ServiceUnavailable) -> ModelUnreachable:
            return ModelUnreachable(f"{exc}; model '{model}' was not asked", "connection")

        return self.breakers.guard(
            f"model:{where}", f"the model provider at {where}", counts=_unavailable, refuse=refuse
        )

    def _retrying(self, retries: int, before_sleep: Callable[[RetryCallState], Awaitable[None]]) -> AsyncRetrying:
        """Tenacity's policy: ``1 + retries`` attempts of what :func:`classify` deems retryable, with backoff."""
        backoff = wait_exponential_jitter(
            initial=self.settings.llm_retry_wait_s, max=RETRY_WAIT_MAX_S, jitter=self.settings.llm_retry_wait_s
        )

        def wait(state: RetryCallState) -> float:  # the backoff, or longer when the provider asked for longer
            return max(backoff(state), classify(_exception_of(state)).retry_after_s or 0.0)

        return AsyncRetrying(
            stop=stop_after_attempt(1 + retries),
            retry=retry_if_exception(self._worth_retrying),
            wait=wait,
            before_sleep=before_sleep,
            reraise=True,
        )

    def _worth_retrying(self, exc: BaseException) -> bool:
        """Whether a retry may fix ``exc``: a retryable cause, and no ``Retry-After`` beyond what we wait out."""
        failure = classify(exc)
        return failure.retryable and not self._waits_too_long(failure)

    def _waits_too_long(self, failure: Failure) -> bool:
        """Whether the provider asked to wait longer than ``llm_retry_after_max_s``."""
        return (failure.retry_after_s or 0.0) > self.settings.llm_retry_after_max_s

    def _outcome(self, failure: Failure, attempts: int) -> str:
        """The end of a final failure's row: why it was not (or no longer) retried."""
        if failure.retryable and self._waits_too_long(failure):
            return f"not retried: the provider asked to wait {failure.retry_after_s:g} s"
        if failure.retryable:
            return f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}"
        return "not retried"

    def _explain(self, model: str, role: Role, failure: Failure, attempts: int) -> str:
        """``model '<model>' at <api_base> failed (<cause>)[ after N attempts]: <detail>. <advice>``."""
        if failure.cause == "replay_mismatch":
            return failure.detail
        where = f" at {self.settings.api_base}" if self.settings.api_base else ""
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return (
            f"model {model!r}{where} failed ({failure.cause}){tries}: {failure.detail[:300]}. "
            f"{advice(failure, role=role, settings=self.settings)}"
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
        run_id, node = graph_position()
        row = LLMCall(
            run_id=run_id,
            node=node,
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
        model_span(row)  # an OpenTelemetry span under the calling node, when spans are exported
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


FREE_ROUTES = ("replay/", "ollama/", "ollama_chat/")
"""Models that cost nothing, priced without asking litellm: for Ollama its price lookup sends a synchronous
``POST /api/show`` to the server on every call (blocking the event loop), and a recording has no price."""


def _cost(resp: Any, model: str) -> float:
    """USD cost from litellm's local price map; 0.0 for models it has no price for (replay, local servers)."""
    if model.startswith(FREE_ROUTES):
        return 0.0
    try:
        return float(load_litellm().completion_cost(completion_response=resp, model=model))
    except Exception:  # litellm raises several unrelated types for "no price known"
        return 0.0


def _with_usage(litellm: Any, resp: Any, model: str, messages: list[Any], tools: list[Any] | None) -> Any:
    """``resp``, with token counts when its provider reported none (some OpenAI-format servers send no ``usage``).

    They are counted by litellm's ``token_counter`` with the model's tokenizer where litellm knows it (else its
    default), the tool schemas included, so costs and budgets never rest on zeros.
    """
    usage = getattr(resp, "usage", None)
    reported: int = (getattr(usage, "prompt_tokens", None) or 0) + (getattr(usage, "completion_tokens", None) or 0)
    if reported:
        return resp
    try:
        prompt = int(litellm.token_counter(model=model, messages=messages, tools=tools or None))
        msg = resp.choices[0].message
        calls = [c.function.name + (c.function.arguments or "") for c in msg.tool_calls or []]
        text = "\n".join([msg.content or "", *calls])
        completion = int(litellm.token_counter(model=model, text=text, count_response_tokens=True))
    except Exception:  # a message shape the counter does not know: keep what the provider said
        log.debug("could not count the tokens of a %s answer", model, exc_info=True)
        return resp
    resp.usage = litellm.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    return resp


@dataclass
class _Attempt:
    """The attempt under way of one logical call: its number (1-based) and when it started (``perf_counter``)."""

    number: int = 0
    started: float = 0.0


def _unavailable(exc: BaseException) -> bool:
    """Whether a failed model call counts against the provider's breaker (see :meth:`LLM._breaker`)."""
    return isinstance(exc, Exception) and classify(exc).cause in {
        "connection",
        "timeout",
        "rate_limited",
        "server_error",
    }


def _exception_of(state: RetryCallState) -> BaseException:
    """The exception of tenacity's last attempt (the retry policy only waits after a failed one)."""
    exc = state.outcome.exception() if state.outcome else None
    assert exc is not None, "tenacity waits only after a failed attempt"
    return exc


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


def tools_in_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    """``messages`` with ``tools`` described at the end of the system message (one is added if there is none).

    Args:
        messages: OpenAI-format messages (not changed).
        tools: OpenAI ``tools`` entries.
        role: the PO may also answer in words; other roles answer with calls only.

    Returns:
        A new message list.
    """
    lines = "\n".join(
        TOOL_LINE.format(
            name=t["function"]["name"],
            description=t["function"].get("description", ""),
            parameters=json.dumps(t["function"].get("parameters") or {}, separators=(",", ":")),
        )
        for t in tools
        if isinstance(t.get("function"), dict)
    )
    text = TOOLS_IN_PROMPT.format(talk=PO_TALK if role == "po" else "", tools=lines)
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = str(out[0].get("content") or "") + text
    else:
        out.insert(0, {"role": "system", "content": text.strip()})
    return out
