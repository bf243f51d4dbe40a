"""Rich rendering of a run's events: the node timeline (parallel branches indented) and the PO's words."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table


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
        """Render one ``runtime.threads.RunEvent``."""
        where = " › ".join([*ev.path, ev.node or ""])
        indent = "    " * len(ev.path)
        if ev.kind == "node_start":
            self.console.print(f"[dim]{indent}▶ {where}[/dim]")
        elif ev.kind == "node_end":
            self.timeline.append(TimelineRow(ev.path, ev.node, ev.duration_s or 0.0))
            mark = "[red]✗[/red]" if ev.error else "[green]✓[/green]"
            self.console.print(f"{indent}{mark} {where} [dim]{ev.duration_s:.2f}s[/dim]")
            if ev.text:  # an engineering phase's outcome
                color = "green" if ": passed" in ev.text else "yellow" if ": waived" in ev.text else "red"
                self.console.print(f"{indent}  [{color}]{ev.text}[/{color}]", highlight=False)
        elif ev.kind == "message":
            self.console.print(Panel(ev.text or "", title="PO", title_align="left", border_style="cyan"))
        elif ev.kind == "interrupt":
            self.pending(ev.payload or {}, ev.interrupt_id)
        elif ev.kind == "drained":
            self.console.print(f"[yellow]{ev.text}[/yellow]")

    def pending(self, payload: dict[str, Any], interrupt_id: str | None) -> None:
        """Show a pending question with its typed payload."""
        hidden = ("question", "kind", "tests", "last_failure", "attestation", "attested", "phases", "budget")
        body = {k: v for k, v in payload.items() if k not in hidden}
        if "tests" in payload:
            tests = payload["tests"]
            body["tests"] = f"{tests.get('passed')} passed, {tests.get('failed')} failed, {tests.get('rounds')} rounds"
        text = f"[bold]{payload.get('question', '')}[/bold]\n" + json.dumps(body, indent=2)
        if payload.get("attested"):
            text += "\nsigned verification: " + payload["attested"]
        if payload.get("phases"):
            text += "\nphases:\n" + "\n".join(f"  {line}" for line in payload["phases"])
        if isinstance(payload.get("budget"), dict) and payload["budget"].get("summary"):
            text += "\nbudget spent: " + payload["budget"]["summary"]
        if payload.get("last_failure"):
            text += "\nlast failure:\n" + payload["last_failure"][-800:]
        title = f"waiting for a person: {payload.get('kind')} ({interrupt_id})"
        self.console.print(Panel(text, title=title, title_align="left", border_style="yellow"))

    def timeline_table(self, title: str = "node timeline") -> Table:
        """The timeline so far as a table (node, branch, seconds)."""
        table = Table(title=title)
        table.add_column("node")
        table.add_column("in", style="dim")
        table.add_column("seconds", justify="right")
        for row in self.timeline:
            table.add_row(row.node, " › ".join(row.path) or "product_owner", f"{row.duration_s:.2f}")
        return table
