"""Start-ups import only what the command needs: ``projects`` lists live deploys without the deploy machinery,
and ``--help`` prints every command's whole first paragraph without Rich's Markdown and traceback rendering."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from core.db import Database
from models.enums import DeploymentStatus, ProjectStatus, ServerStatus
from models.tables import Deployment, Project, Server
from tests.conftest import REPO_ROOT
from tests.unit.test_cli_fast import LISTING_PROBE

DEPLOY_STACK = ("asyncssh", "ansible_runner", "alembic", "langgraph", "litellm", "cryptography")


def run_probe(data_dir: Path, *args: str, heavy: tuple[str, ...]) -> tuple[str, list[str]]:
    """``orchestrator ARGS`` in a new process on ``data_dir``: its stdout and the modules of ``heavy`` it imported."""
    env = {"PATH": "/usr/bin:/bin", "ORCH_DATA_DIR": str(data_dir), "ORCH_REGISTER_LOCALHOST": "false"}
    cmd = [sys.executable, "-c", LISTING_PROBE.format(heavy=heavy), *args]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stderr.splitlines() if line.startswith("LOADED "))
    return out.stdout, list(ast.literal_eval(line.removeprefix("LOADED ")))


async def test_projects_lists_a_live_deploy_without_the_deploy_machinery(tmp_path) -> None:
    tmp_path.chmod(0o700)
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/orchestrator.db")
    await db.migrate()
    async with db.session() as s:
        web = Server(name="web-1", address="10.0.0.7", status=ServerStatus.ready)
        s.add(web)
        await s.flush()
        shop = Project(name="shop", status=ProjectStatus.active, server_id=web.id, port=8123)
        s.add(shop)
        s.add(Project(name="draft-one", status=ProjectStatus.draft))
        await s.flush()
        for n, status in enumerate((DeploymentStatus.succeeded, DeploymentStatus.failed)):
            s.add(
                Deployment(
                    project_id=shop.id or 0,
                    commit_sha=f"{n}" * 40,
                    server_id=web.id or 0,
                    port=8123,
                    status=status,
                    idempotency_key=f"k{n}",
                    approved_by=f"cli:approver-{n}",
                )
            )
    await db.dispose()

    out, loaded = run_probe(tmp_path, "projects", "--json", heavy=DEPLOY_STACK)
    assert loaded == [], f"a project listing imported {loaded}"
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["shop"]["url"] == "http://10.0.0.7:8123/health"
    assert rows["shop"]["approved_by"] == "cli:approver-0", "the newest SUCCEEDED deploy is the live one"
    assert rows["shop"]["server"] == "web-1" and rows["shop"]["status"] == "active"
    assert rows["draft-one"]["url"] is None and rows["draft-one"]["approved_by"] is None


def test_help_prints_each_commands_first_paragraph_whole_without_rich_help_rendering(tmp_path) -> None:
    heavy = ("rich.markdown", "rich.traceback", "pydantic", "sqlalchemy")
    out, loaded = run_probe(tmp_path, "--help", heavy=heavy)
    assert loaded == [], f"--help imported {loaded}"
    flat = " ".join(out.split())
    # past the first sentence and past 80 columns: Click's own list would have cut both
    assert "chat Talk with the Product Owner. Shows each node as it runs and asks pending approvals inline." in flat
    assert "servers Servers, their status and port ranges." in flat
    assert "--data-dir <path> Data dir (DB, checkpoints, forge). Env: ORCH_DATA_DIR." in flat
    sub, _ = run_probe(tmp_path, "thread", "cancel", "--help", heavy=heavy)
    flat = " ".join(sub.split())
    assert "A thread waiting for an answer is refused" in flat, "a command's help keeps every paragraph"
    assert "[default: 120.0; 0.1<=x<=900]" in flat


COLLECTOR_PROBE = (
    "import gc, sys\n"
    "from cli.main import app\n"
    "sys.argv = ['orchestrator', *sys.argv[1:]]\n"
    "try:\n    app()\n"
    "except SystemExit as e:\n    code = e.code\n"
    "print('GC', gc.isenabled(), gc.get_freeze_count(), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def test_the_heap_is_frozen_for_the_exit_and_the_collector_left_on(tmp_path) -> None:
    tmp_path.chmod(0o700)
    env = {"PATH": "/usr/bin:/bin", "ORCH_DATA_DIR": str(tmp_path)}
    for args, at_least in ((["servers"], 50_000), (["--help"], 10_000)):
        cmd = [sys.executable, "-c", COLLECTOR_PROBE, *args]
        out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        _, enabled, frozen = next(line for line in out.stderr.splitlines() if line.startswith("GC ")).split()
        assert enabled == "True", f"{args}: the collector was left off after a listing paused it"
        assert int(frozen) >= at_least, f"{args}: only {frozen} objects frozen for the exit"
