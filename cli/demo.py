"""``orchestrator demo``: the main job end to end, the approval answered by a second process.

1. A person asks the PO for hello-api (this process): Zavhoz || Engineering run, the graph stops at the deploy
   approval and this process exits the run.
2. A second process, ``orchestrator resume THREAD --approve``, answers it as a person would, hours later or now:
   Ansible deploys to localhost and checks the health URL.
3. This process reads the project from the database, fetches its health URL, and undeploys it unless
   ``--keep-running`` (service stopped, port released: ``orchestrator undeploy``'s path).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cli.render import Renderer

if TYPE_CHECKING:
    from core.settings import Settings

REQUEST = "I need a small HTTP service called hello-api with a /health endpoint and unit tests."
RECORDED_MODEL = "replay/hello-api"


def run_demo(data_dir: Path | None, model: str | None, keep_running: bool, console: Console) -> int:
    """Run the demo; return the process exit code (0 when the project is active and its health URL answers 200)."""
    from core.settings import Settings

    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    settings = Settings(data_dir=data_dir)
    if model or "model" not in settings.model_fields_set:  # --model, else ORCH_MODEL, else the recording
        settings = settings.model_copy(update={"model": model or RECORDED_MODEL})
    model = settings.model
    if model == RECORDED_MODEL:
        console.print(
            "[bold]The model's words in this demo are RECORDED[/bold] (core/scenarios/hello-api.json, "
            "served by the replay provider, offline). Everything else is real: git, the test runs, "
            "SQLite, checkpoints, Ansible, the service."
        )
    else:
        console.print(f"Live model: {model}. Its answers decide what happens.", markup=False)
    console.print(f"data dir: {data_dir}\n", markup=False)
    renderer = Renderer(console)
    started = time.perf_counter()
    from core.llm_failures import ModelUnreachable

    try:
        thread_id, approval = asyncio.run(_first_turn(settings, renderer, console))
    except ModelUnreachable as exc:
        console.print(f"model error: {exc}", highlight=False, markup=False)
        return 1
    if thread_id == "":
        console.print(
            f"[red]error:[/red] {data_dir} already holds a hello-api project from an earlier demo: "
            "give a fresh --data-dir (or none, for a temporary one)"
        )
        return 2
    if thread_id is None:
        console.print("[red]the run did not stop at a deploy approval; see the messages above[/red]")
        return 1
    console.print(phase_table(approval or {}))
    console.print(f"\n[bold]A second process answers the approval:[/bold] orchestrator resume {thread_id} --approve\n")
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "--data-dir",
        str(data_dir),
        "--model",
        model,
        "resume",
        thread_id,
        "--approve",
    ]
    resumed = subprocess.run(cmd, check=False)
    console.print(renderer.timeline_table("node timeline of the first process (the resume process's is above)"))
    status, url = asyncio.run(_project(settings))
    code = _health(url)
    after = asyncio.run(_undeploy(settings)) if not keep_running and status == "active" else ""
    console.print(f"total {time.perf_counter() - started:.1f}s; the resume process exited {resumed.returncode}")
    ok = resumed.returncode == 0 and status == "active" and code == 200
    stopped = f"; then {after} (use --keep-running to keep it)" if after else ""
    console.print(f"[bold]{'✓' if ok else '✗'} hello-api: {status} at {url} (health answered {code}){stopped}[/bold]")
    console.print(
        f"Look at this run in the console: orchestrator --data-dir {data_dir} api, then open http://127.0.0.1:8000/ "
        f"and sign in with a key from: orchestrator --data-dir {data_dir} token create me --role approver",
        markup=False,
        highlight=False,
    )
    return 0 if ok else 1


def phase_table(payload: dict[str, Any]) -> Table:
    """The engineering contract's phase timeline (from a deploy approval's payload) and what was signed."""
    table = Table(title="engineering phases (contract: PLAN -> TDD -> IMPL -> REVIEW -> COMPLETE)")
    for column in ("phase", "round", "outcome", "gate said"):
        table.add_column(column)
    colors = {"passed": "green", "failed": "red", "waived": "yellow"}
    for line in payload.get("phases") or []:
        head, _, why = line.partition(": ")
        phase, rnd, outcome = (head.split() + ["", "", ""])[:3]
        table.add_row(phase, rnd, Text(outcome, style=colors.get(outcome, "white")), Text(why))
    if payload.get("attested"):
        table.caption = payload["attested"]
    return table


async def _first_turn(
    settings: Settings, renderer: Renderer, console: Console
) -> tuple[str | None, dict[str, Any] | None]:
    """Stream the person's request.

    Returns:
        The thread id if the run stopped at the deploy approval (None if not, "" if the data dir already holds a
        hello-api project: nothing was run), and the approval's payload.
    """
    from sqlmodel import select

    from models.tables import Project
    from runtime.threads import OrchestratorRuntime
    from services.identities import cli_identity

    async with OrchestratorRuntime(settings) as rt:
        async with rt.db.session() as s:
            if (await s.exec(select(Project).where(Project.name == "hello-api"))).first() is not None:
                return "", None
        thread_id = f"demo-{uuid.uuid4().hex[:8]}"
        console.print(f"[bold]you>[/bold] {REQUEST}")
        approval = None
        async for ev in rt.start_turn(REQUEST, thread_id, actor=cli_identity()):
            renderer.event(ev)
            if ev.kind == "interrupt" and (ev.payload or {}).get("kind") == "deploy_approval":
                approval = ev
        return (thread_id, approval.payload) if approval else (None, None)


async def _project(settings: Settings) -> tuple[str, str | None]:
    from sqlmodel import col, select

    from core.db import Database
    from models.tables import Deployment, Project

    db = Database(settings.db_url)
    async with db.session() as s:
        project = (await s.exec(select(Project).where(Project.name == "hello-api"))).first()
        dep = (await s.exec(select(Deployment).order_by(col(Deployment.id).desc()))).first()
    await db.dispose()
    return (project.status.value if project else "absent"), (dep.url if dep else None)


def _health(url: str | None) -> int | None:
    if not url:
        return None
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


async def _undeploy(settings: Settings) -> str:
    """Undeploy hello-api the way `orchestrator undeploy` does; return what happened, in words.

    The service is stopped, its port released, on the trail: the demo leaves no active project behind a dead URL.
    """
    from core.db import Database
    from services.identities import cli_identity
    from services.lifecycle import LifecycleRefused, undeploy_project

    db = Database(settings.db_url)
    try:
        outcome = await undeploy_project(settings, db, "hello-api", actor=cli_identity().name)
    except LifecycleRefused as exc:
        return f"not undeployed: {exc}"
    finally:
        await db.dispose()
    return outcome.message.removeprefix("hello-api is ")
