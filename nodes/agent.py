"""The agent loop of an engineering phase: the phase's role acts through the contract's tools until it calls finish.

The shape is the usual tool-calling loop (the model answers with tool calls, each result goes back as a ``tool``
message, OpenAI's function-calling protocol: https://platform.openai.com/docs/guides/function-calling), with the
contract in the middle: every call is checked against the phase's tool rules before it runs (strict: refused with
the reason, which the model reads; permissive: run, with a warning), and every call, allowed or not, is written to
the tool audit table. ``finish`` submits the phase's artifact; it is accepted only when the artifact validates
against the phase's JSON Schema and, in strict mode, no other call of the same answer was refused (so the model
always reads a refusal before the phase ends). The budget is checked before every model call.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.contract import Contract, Phase, normalize_arguments
from core.llm import INVALID_ARGUMENTS
from core.text_tool_calls import json_values
from graphs.context import Context
from infra import workspace
from infra.testrun import run_tests
from prompts import engineering as prompts
from services.audit import record_tool_call
from services.budgets import budget_of, charge
from services.cancel import cancel_request

MAX_STEPS = 12
"""Model answers in one round of a phase before the round ends without a ``finish`` (a failed round)."""


@dataclass
class Round:
    """What one round of a phase produced.

    Attributes:
        artifact: the accepted ``finish`` arguments, or None (no finish within :data:`MAX_STEPS`, or the budget).
        refused: reasons of the calls refused in this round (strict mode).
        warnings: reasons of the calls let through in permissive mode.
        steps: model answers used.
        exhausted: the budget view (``BudgetView.as_dict()``) when the budget ran out before a model call.
        cancelled: ``(who, why)`` when a cancel of the project was asked before a model call (the round ends there).
    """

    artifact: dict[str, Any] | None = None
    refused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    steps: int = 0
    exhausted: dict[str, Any] | None = None
    cancelled: tuple[str, str] | None = None


class Toolbox:
    """The tools of one phase on one working copy, checked against the contract and audited.

    Args:
        ctx: the run's context (settings, database, thread id).
        contract: the loaded contract (its mode decides refuse or warn).
        phase: the phase being worked.
        project_id: the project (audit rows and budget charges name it).
        root: the project's working copy.
        test_command: the plan's test command (None: the default).
    """

    def __init__(
        self, ctx: Context, contract: Contract, phase: Phase, project_id: int, root: Path, test_command: str | None
    ) -> None:
        self.ctx, self.contract, self.phase = ctx, contract, phase
        self.project_id, self.root, self.test_command = project_id, root, test_command

    async def call(self, name: str, args: dict[str, Any], *, refused_before: list[str]) -> tuple[str, Any, str | None]:
        """Run one tool call; return ``(outcome, result, reason)``.

        ``outcome`` is ``allowed``, ``refused``, ``warned`` (permissive: run despite the rule) or ``failed`` (allowed
        but it raised, e.g. a missing file); ``result`` is the text the model reads, or the artifact for an accepted
        ``finish``; ``reason`` says why it was refused, warned or failed. ``refused_before``: reasons of calls
        refused earlier in the same answer. Arguments under a common other name (``file_path``, ``code``) are taken
        as the tool's own (:func:`core.contract.normalize_arguments`) and the model is told so.
        """
        started = time.perf_counter()
        args, renamed = normalize_arguments(name, args)
        outcome, reason, result = await self._run(name, args, refused_before)
        if renamed and isinstance(result, str):  # it worked this time; say the real names for the next call
            result += f"\n(note: took your arguments {', '.join(renamed)}; call {name} with its own argument names)"
        await record_tool_call(
            self.ctx.db,
            thread_id=self.ctx.thread_id,
            project_id=self.project_id,
            role=self.phase.role,
            phase=self.phase.name,
            tool=name,
            args=args,
            outcome=outcome,
            reason=reason,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        return outcome, result, reason

    async def _run(self, name: str, args: dict[str, Any], refused_before: list[str]) -> tuple[str, str | None, Any]:
        if INVALID_ARGUMENTS in args:
            why = f"{name}: the arguments are not a JSON object: {args[INVALID_ARGUMENTS][:200]}"
            return "refused", why, f"refused: {why}"
        if name == "finish":
            return self._finish(args, refused_before)
        rule = self.phase.check_tool(name, args)
        outcome = "allowed"
        if rule is not None:
            if self.contract.mode == "strict" or name not in _RUNNERS:  # an unknown tool cannot run in any mode
                return "refused", rule, f"refused: {rule}"
            outcome = "warned"
        try:
            text = await _RUNNERS[name](self, args)
        except (OSError, ValueError, KeyError) as exc:  # a missing file, a bad path, a missing argument
            why = f"{name} failed: {type(exc).__name__}: {exc}"
            return "failed", why, why
        if outcome == "warned":
            return outcome, rule, f"{text}\n(warning, permissive mode: {rule})"
        return outcome, None, text

    def _finish(self, artifact: dict[str, Any], refused_before: list[str]) -> tuple[str, str | None, Any]:
        errors = self.phase.check_artifact(artifact)
        if errors:
            why = f"the {self.phase.name} artifact is invalid: " + "; ".join(errors[:10])
            return "refused", why, f"refused: {why}. Call finish again with a corrected artifact."
        if refused_before and self.contract.mode == "strict":
            why = "a call of this answer was refused: " + "; ".join(refused_before[-3:])
            return "refused", why, f"refused: {why}. Deal with it, then call finish again."
        return "allowed", None, artifact

    async def _list_files(self, args: dict[str, Any]) -> str:
        files = workspace.working_files(self.root)
        return "\n".join(files) if files else "(the repository is empty)"

    async def _read_file(self, args: dict[str, Any]) -> str:
        return workspace.read_text(self.root, str(args["path"]))

    async def _write_file(self, args: dict[str, Any]) -> str:
        content = str(args["content"])
        workspace.write_files(self.root, [(str(args["path"]), content)])
        return f"wrote {args['path']} ({len(content.encode())} bytes)"

    async def _run_tests(self, args: dict[str, Any]) -> str:
        run = await run_tests(self.root, self.ctx.settings, self.test_command)
        async with self.ctx.db.session() as s:
            await charge(s, self.project_id, seconds=run.duration_s)
        failing = sorted(t for t, o in run.outcomes.items() if o in ("FAILED", "ERROR"))
        head = f"exit code {run.rc}" + (f"; failing: {', '.join(failing[:20])}" if failing else "")
        return f"{head}\n{run.output[-2500:]}"


_RUNNERS = {
    "list_files": Toolbox._list_files,
    "read_file": Toolbox._read_file,
    "write_file": Toolbox._write_file,
    "run_tests": Toolbox._run_tests,
}


def bare_artifact(text: str, phase: Phase) -> tuple[dict[str, Any] | None, str | None]:
    """The phase's artifact written in an answer's text without a ``finish`` call around it.

    Small models often answer "Here is the design:" and the object, fenced or not, instead of calling ``finish``.
    The first JSON object in ``text`` (:func:`core.text_tool_calls.json_values`) that validates against the phase's
    artifact schema is taken as its ``finish`` arguments.

    Returns:
        ``(artifact, None)``; or ``(None, errors)`` when the text holds a JSON object that is not a valid artifact
        (the first one's validation errors, for a re-ask that quotes them); or ``(None, None)`` when it holds none.
    """
    objects = [value for _, _, value in json_values(text) if isinstance(value, dict)]
    first_errors = None
    for value in objects:
        errors = phase.check_artifact(value)
        if not errors:
            return value, None
        if first_errors is None:
            first_errors = "; ".join(errors[:10])
    return None, first_errors


async def run_round(box: Toolbox, messages: list[dict[str, Any]]) -> Round:
    """One round of the phase: model answers and tool calls until an accepted ``finish`` or :data:`MAX_STEPS`.

    Args:
        box: the phase's tools.
        messages: the system and user messages that open the round.

    Returns:
        The :class:`Round`; its ``exhausted`` is set (and nothing else happens) when the budget is spent, its
        ``cancelled`` when a cancel of the project stands (both read before every model call).

    Raises:
        ModelUnreachable: as :meth:`core.llm.LLM.chat`.
    """
    ctx, phase = box.ctx, box.phase
    convo = list(messages)
    out = Round()
    tools = phase.tool_specs()
    while out.steps < MAX_STEPS:
        out.cancelled = await cancel_request(ctx.db, box.project_id)
        if out.cancelled is not None:
            return out
        async with ctx.db.session() as s:
            view = await budget_of(s, box.project_id)
        if view is not None and view.exhausted:
            out.exhausted = {**view.as_dict(), "summary": view.describe()}
            return out
        reply = await ctx.llm.chat(
            phase.role,  # type: ignore[arg-type]
            convo,
            tools=tools,
            thread_id=ctx.thread_id,
            project_id=box.project_id,
        )
        out.steps += 1
        if reply.cut_off:  # its last tool call is likely incomplete: none of it runs, the model is told why
            await ctx.llm.mark_unused(reply, "cut off at the token limit")
            cut = {"role": "assistant", "content": reply.content or "(cut off)"}
            convo += [cut, {"role": "user", "content": prompts.CUT_OFF}]
            continue
        if not reply.tool_calls:
            artifact, errors = bare_artifact(reply.content, phase)
            if artifact is None:
                await ctx.llm.mark_unused(reply, "answered without a tool call")
                nudge = prompts.NUDGE if errors is None else prompts.BARE_ARTIFACT_INVALID.format(errors=errors)
                convo += [{"role": "assistant", "content": reply.content}, {"role": "user", "content": nudge}]
                continue
            reply.tool_calls = [{"id": f"text_call_{uuid.uuid4().hex[:12]}", "name": "finish", "args": artifact}]
        convo.append(
            {
                "role": "assistant",
                "content": reply.content or None,
                "tool_calls": [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
                    }
                    for c in reply.tool_calls
                ],
            }
        )
        refused: list[str] = []
        for call in reply.tool_calls:
            outcome, result, reason = await box.call(call["name"], call["args"], refused_before=refused)
            if call["name"] == "finish" and outcome == "allowed":
                out.artifact = result
                return out
            if outcome == "refused":
                refused.append(reason or call["name"])
            elif outcome == "warned":
                out.warnings.append(reason or call["name"])
            convo.append({"role": "tool", "tool_call_id": call["id"], "content": str(result)})
        out.refused += refused
    return out
