"""Rows for the ``projects`` and ``servers`` commands (plain dicts: tables and ``--json`` share them).

What only projects need (their live deploys, budgets and URLs) is imported when a project listing runs, from
:mod:`services.live` rather than the deploy machinery (Ansible, SSH), so neither listing imports those.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from core.db import Database
from models.tables import Project, Server


async def project_rows(db: Database) -> list[dict[str, Any]]:
    """One dict per project: name, status, repo, server, port, url, who approved its live deploy, budget, updated.

    ``budget`` is ``BudgetView.as_dict()``, or None for a project without one (a table shows :func:`budget_cell`).
    """
    from services.budgets import budget_of
    from services.live import live_deployment, project_url

    async with db.session() as s:
        servers = {srv.id: srv for srv in (await s.exec(select(Server))).all()}
        projects = (await s.exec(select(Project).order_by(Project.name))).all()
        live = {p.id: await live_deployment(s, p.id or 0) for p in projects}
        budgets = {p.id: await budget_of(s, p.id or 0) for p in projects}
    return [
        {
            "name": p.name,
            "status": p.status.value,
            "repo": p.repo_full_name,
            "server": servers[p.server_id].name if p.server_id in servers else None,
            "port": p.port,
            "url": project_url(p, servers.get(p.server_id)),
            "approved_by": dep.approved_by if (dep := live[p.id]) else None,
            "budget": view.as_dict() if (view := budgets[p.id]) else None,
            "updated": p.updated_at.isoformat()[:19],
        }
        for p in projects
    ]


def budget_cell(budget: dict[str, Any] | None) -> str:
    """A project row's budget for a table: spent calls/limit and cost (``7/80 calls · $0.12``), or ``-``."""
    if budget is None:
        return "-"
    spent, limits = budget["spent"], budget["limits"]
    cell = f"{spent['calls']}/{limits['calls']} calls · ${spent['cost_usd']:.2f}"
    return f"{cell} (out: {', '.join(budget['exhausted'])})" if budget["exhausted"] else cell


async def server_rows(db: Database) -> list[dict[str, Any]]:
    """One dict per server: name, address, connection, status, ports, last seen."""
    async with db.session() as s:
        rows = (await s.exec(select(Server).order_by(Server.name))).all()
    return [
        {
            "name": r.name,
            "address": r.address,
            "connection": r.connection,
            "status": r.status.value,
            "ports": f"{r.port_range_start}-{r.port_range_end}",
            "last_seen": r.last_seen_at,
        }
        for r in rows
    ]
