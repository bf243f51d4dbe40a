"""Rich rendering of run events (node timeline, the PO's words) and the helpers every command prints data with.

Rich reads ``[...]`` in a printed string as markup: a thread titled ``[/health]`` would fail to print, and
``[bold]hi`` would lose its brackets. Data (thread titles, messages, model replies, payloads, names, errors, URLs)
therefore never goes into a markup string: it goes into a :class:`rich.text.Text` (:func:`literal`, :func:`line`),
which Rich prints as it is (https://rich.readthedocs.io/en/stable/markup.html#escaping); markup is kept for fixed
words only.

Rich is imported where something is printed, not with this module: ``--help`` and usage errors never need it
(~15 ms of a ~75 ms start-up).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

Part: TypeAlias = "str | Text | tuple[str, str]"
"""A piece of a :func:`line`: literal text, a Text, or ``(text, style)`` such as ``("error:", "red")``."""


def literal(value: object) -> Text:
    """``value`` as text that prints exactly as it is: ``[bold]`` or ``[/x]`` in it is shown, never interpreted.

    None is the empty text (an empty table cell); anything else is ``str(value)``.
    """
    from rich.text import Text

    return Text("" if value is None else str(value))


def line(*parts: Part) -> Text:
    """One line of literal parts; a ``(text, style)`` pair is styled. No part is read as markup.

    Example: ``err.print(line(("error:", "red"), f" {exc}"))`` prints the error's words whatever brackets they hold.
    """
    from rich.text import Text

    return Text.assemble(*parts)


def error_line(message: object, label: str = "error:") -> Text:
    """``<label> <message>`` with the label in red and the message literal (see :func:`line`)."""
    return line((label, "red"), " ", literal(message))


@dataclass
class TimelineRow:
    """One finished node: where (subgraph path), which, how long (s)."""

    path: tuple[str, ...]
    node: str
    duration_s: float


@dataclass
class Renderer:
    """Prints events as they come and keeps the timeline for a closing table."""

    console: Console
    timeline: list[TimelineRow] = field(default_factory=list)

    def event(self, ev: Any) -> None:
        """Render one ``runtime.threads.RunEvent``; its texts are printed literally (see the module doc)."""
        where = " › ".join([*ev.path, ev.node or ""])
        indent = "    " * len(ev.path)
        if ev.kind == "node_start":
            self.console.print(line((f"{indent}▶ {where}", "dim")))
        elif ev.kind == "node_end":
            self.timeline.append(TimelineRow(ev.path, ev.node, ev.duration_s or 0.0))
            mark = ("✗", "red") if ev.error else ("✓", "green")
            self.console.print(line(indent, mark, f" {where} ", (f"{ev.duration_s:.2f}s", "dim")))
            if ev.text:  # an engineering phase's outcome
                color = "green" if ": passed" in ev.text else "yellow" if ": waived" in ev.text else "red"
                self.console.print(line(f"{indent}  ", (ev.text, color)))
        elif ev.kind == "message":
            from rich.panel import Panel

            title = "notice" if ev.node == "system" else "PO"  # node "system": what happened while nobody watched
            self.console.print(Panel(literal(ev.text), title=title, title_align="left", border_style="cyan"))
        elif ev.kind == "interrupt":
            self.pending(ev.payload or {}, ev.interrupt_id)
        elif ev.kind == "drained":
            self.console.print(line((str(ev.text), "yellow")))

    def pending(self, payload: dict[str, Any], interrupt_id: str | None) -> None:
        """Show a pending question with its typed payload (printed literally)."""
        hidden = ("question", "kind", "tests", "last_failure", "attestation", "attested", "phases", "budget")
        body = {k: v for k, v in payload.items() if k not in hidden}
        if "tests" in payload:
            tests = payload["tests"]
            body["tests"] = f"{tests.get('passed')} passed, {tests.get('failed')} failed, {tests.get('rounds')} rounds"
        text = "\n" + json.dumps(body, indent=2)
        if payload.get("attested"):
            text += "\nsigned verification: " + str(payload["attested"])
        if payload.get("phases"):
            text += "\nphases:\n" + "\n".join(f"  {entry}" for entry in payload["phases"])
        if isinstance(payload.get("budget"), dict) and payload["budget"].get("summary"):
            text += "\nbudget spent: " + str(payload["budget"]["summary"])
        if payload.get("last_failure"):
            text += "\nlast failure:\n" + str(payload["last_failure"])[-800:]
        if deadline_note(payload):
            text += "\n" + deadline_note(payload)
        from rich.panel import Panel

        title = literal(f"waiting for a person: {payload.get('kind')} ({interrupt_id})")
        body_text = line((str(payload.get("question", "")), "bold"), text)
        self.console.print(Panel(body_text, title=title, title_align="left", border_style="yellow"))

    def timeline_table(self, title: str = "node timeline") -> Table:
        """The timeline so far as a table (node, branch, seconds)."""
        from rich.table import Table

        table = Table(title=title)
        table.add_column("node")
        table.add_column("in", style="dim")
        table.add_column("seconds", justify="right")
        for row in self.timeline:
            table.add_row(literal(row.node), literal(" › ".join(row.path) or "product_owner"), f"{row.duration_s:.2f}")
        return table


def deadline_note(payload: dict[str, Any]) -> str:
    """``deadline 2026-12-08 01:22:53 UTC (then: reject)`` for a payload with a deadline; empty without one."""
    from datetime import UTC, datetime

    raw = payload.get("deadline")
    if not raw:
        return ""
    try:
        when = datetime.fromisoformat(str(raw)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        when = str(raw)
    then = payload.get("on_deadline")
    return f"deadline {when}" + (f" (then: {then})" if then else "")
