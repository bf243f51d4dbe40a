"""Helpers for integration tests: run the real CLI in another process, read the DB, stop deployed services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlmodel import select

from core.db import Database
from core.settings import Settings
from runtime.threads import OrchestratorRuntime, RunEvent
from services import deploys
from services.identities import cli_identity

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUEST = "I need a small HTTP service called hello-api with a /health endpoint and unit tests."


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment that gives a child process the same settings."""
    env = {
        **os.environ,
        "ORCH_DATA_DIR": str(settings.data_dir),
        "ORCH_MODEL": settings.model,
        "ORCH_PORT_RANGE_START": str(settings.port_range_start),
        "ORCH_PORT_RANGE_END": str(settings.port_range_end),
        "ORCH_ENGINEERING_MAX_ITERATIONS": str(settings.engineering_max_iterations),
        "ORCH_REGISTER_LOCALHOST": str(settings.register_localhost).lower(),
        "ORCH_RELEASE_ROOT": str(settings.release_root),
    }
    if settings.replay_dir:
        env["ORCH_REPLAY_DIR"] = str(settings.replay_dir)
    if settings.api_base:
        env["ORCH_API_BASE"] = settings.api_base
    if settings.api_key:
        env["ORCH_API_KEY"] = settings.api_key.get_secret_value()
    return env


def cli(
    settings: Settings, *args: str, timeout: float = 240, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``orchestrator *args`` in a new process (``stdin`` fed to it) and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=cli_env(settings),
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def run_turn(settings: Settings, text: str, thread_id: str) -> list[RunEvent]:
    """One PO turn in this process; returns every event."""
    async with OrchestratorRuntime(settings) as rt:
        return [ev async for ev in rt.start_turn(text, thread_id, actor=cli_identity())]


async def rows(settings: Settings, table: type) -> list[Any]:
    """All rows of a table."""
    db = Database(settings.db_url)
    try:
        async with db.session() as s:
            return list((await s.exec(select(table))).all())
    finally:
        await db.dispose()


async def stop_service(settings: Settings, project: str = "hello-api") -> None:
    """Stop a service deployed to localhost by the tests (idempotent)."""
    await deploys.stop_service(settings, project=project, server=deploys.local_server())


def scenario_variant(tmp: Path, name: str, extra: list[dict[str, Any]] | None = None, test_prelude: str = "") -> Path:
    """Copy the built-in hello-api scenario to ``tmp/<name>.json`` with extra exchanges and a test-file prelude."""
    raw = json.loads((REPO_ROOT / "core" / "scenarios" / "hello-api.json").read_text())
    raw["name"] = name
    if test_prelude:
        for ex in raw["exchanges"]:
            for f in ex["reply"].get("json", {}).get("files", []):
                if f["path"] == "test_app.py" and "content" in f:
                    f["content"] = test_prelude + f["content"]
    raw["exchanges"] += extra or []
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / f"{name}.json").write_text(json.dumps(raw))
    return tmp
