"""`orchestrator demo` in a real process: the main job to an active project, and its refusals."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from core.settings import Settings
from models.tables import Project
from tests.integration.helpers import REPO_ROOT, cli_env, rows


def demo(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in cli_env(settings).items() if k not in ("ORCH_MODEL", "ORCH_DATA_DIR")}
    env["COLUMNS"] = "200"  # one line per message, whatever the terminal
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--data-dir", str(settings.data_dir), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_demo_ends_active_then_refuses_the_same_data_dir(settings: Settings) -> None:
    done = demo(settings)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "RECORDED" in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert "hello-api: active at http://127.0.0.1:" in done.stdout and "health answered 200" in done.stdout, last
    assert "--approve" in done.stdout and "the resume process exited 0" in done.stdout
    assert "then undeployed: its service is stopped; port" in " ".join(done.stdout.split())
    [project] = asyncio.run(rows(settings, Project))  # no active project is left behind a dead URL
    assert (project.status, project.port) == ("undeployed", None)

    again = demo(settings)
    assert again.returncode == 2
    assert "already holds a hello-api project" in again.stdout


def test_demo_takes_the_model_from_the_environment_and_fails_clearly(settings: Settings) -> None:
    env_model = "openai/gpt-4o-mini"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--data-dir", str(settings.data_dir)],
        env={**cli_env(settings), "ORCH_MODEL": env_model, "ORCH_API_BASE": "http://127.0.0.1:9", "ORCH_API_KEY": "k"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert f"Live model: {env_model}" in done.stdout.replace("\n", " ")
    assert "model error" in done.stdout and "Traceback" not in done.stdout + done.stderr
