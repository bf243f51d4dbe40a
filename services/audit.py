"""The tool audit log: every agent tool call as the phase contract judged it, stored redacted, read back in order.

What goes in is what a person needs to follow a run (which tool, which path, allowed or refused and why, how long),
never what was written: file contents, and any long string that might carry a secret or a whole file, are replaced
by their size and a digest or cut short (:func:`redact_args`). The table is read by viewers over the API and by
anyone who can read the data dir; a secret that reached a tool's arguments must not be copied into it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db import Database
from models.tables import ToolCall

MAX_STRING_CHARS = 500
"""Longest string kept whole in stored arguments; longer ones are cut with a marker naming the full length."""
OUTCOMES = frozenset({"allowed", "refused", "warned", "failed"})
"""What the contract made of a call: allowed, refused, allowed with a warning, or it ran and failed."""
_MAX_DEPTH = 8


def redact_args(tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of a tool call's arguments, fit for the audit table.

    Why: the audit table is shown to every viewer and kept for as long as the project; a file the Developer writes
    may hold a secret or a key, and a long string is as likely to be a file by another name. So ``content`` (what
    ``write_file`` writes) becomes ``"<N bytes, sha256 1234abcd…>"`` (enough to tell two versions apart, nothing to
    read), every other string longer than :data:`MAX_STRING_CHARS` is cut with a marker, and values JSON cannot
    hold become their ``repr``, cut the same way. The ``finish`` tool's artifact (a summary the agent hands back) is
    kept, each long string in it cut.

    Args:
        tool: the tool's name (``write_file``, ``read_file``, ``finish``...).
        args: its arguments as the model sent them (not changed).

    Returns:
        A new dict of JSON types only.
    """
    del tool  # every tool is redacted the same way today; kept so a tool-specific rule has its place
    return {str(key): _redact(str(key), value, 0) for key, value in args.items()}


def _redact(key: str, value: Any, depth: int) -> Any:
    if key == "content" and isinstance(value, (str, bytes)):
        return _digest(value)
    if isinstance(value, str):
        return _cut(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= _MAX_DEPTH:
        return _cut(repr(value))
    if isinstance(value, dict):
        return {str(k): _redact(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact("", v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return _digest(value)
    return _cut(repr(value))


def _digest(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return f"<{len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()[:8]}…>"


def _cut(text: str) -> str:
    if len(text) <= MAX_STRING_CHARS:
        return text
    return f"{text[:MAX_STRING_CHARS]}… <cut: {len(text)} chars>"


async def record_tool_call(
    db: Database,
    *,
    thread_id: str | None,
    project_id: int,
    role: str,
    phase: str,
    tool: str,
    args: dict[str, Any],
    outcome: str,
    reason: str | None,
    duration_ms: float,
) -> None:
    """Store one tool call, its arguments redacted (:func:`redact_args`), in a transaction of its own.

    Args:
        db: the database.
        thread_id: the conversation thread the call ran in, if any.
        project_id: the project's id.
        role: the agent that called (``developer``...).
        phase: the contract's phase then (``IMPL``...).
        tool: the tool's name.
        args: its arguments as the model sent them.
        outcome: ``allowed``, ``refused``, ``warned`` or ``failed``.
        reason: why (the contract's words for a refusal or warning, the error for a failure).
        duration_ms: how long the call took, in milliseconds.

    Raises:
        ValueError: an outcome not in :data:`OUTCOMES` (nothing stored).
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r}: use one of {', '.join(sorted(OUTCOMES))}")
    row = ToolCall(
        thread_id=thread_id,
        project_id=project_id,
        role=role,
        phase=phase,
        tool=tool,
        args=json.loads(json.dumps(redact_args(tool, args))),
        outcome=outcome,
        reason=_cut(reason) if reason is not None else None,
        duration_ms=float(duration_ms),
    )
    async with db.session() as s:
        s.add(row)


async def audit_trail(
    session: AsyncSession, project_id: int, *, limit: int = 200, phase: str | None = None
) -> list[ToolCall]:
    """A project's tool calls, oldest first: the latest ``limit`` of them (of one ``phase`` if given).

    Args:
        session: an open session.
        project_id: the project's id.
        limit: how many calls at most (the most recent ones).
        phase: only the calls made in this phase.
    """
    stmt = select(ToolCall).where(ToolCall.project_id == project_id)
    if phase is not None:
        stmt = stmt.where(ToolCall.phase == phase)
    latest = (await session.exec(stmt.order_by(col(ToolCall.id).desc()).limit(limit))).all()
    return list(reversed(latest))
