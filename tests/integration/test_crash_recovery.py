"""kill -9 in the middle of the Engineering loop, then resume: the same end, nothing duplicated."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from core.settings import Settings
from models.tables import Deployment, Event, PortLease, Project
from tests.integration.helpers import REPO_ROOT, REQUEST, cli, cli_env, rows, scenario_variant, stop_service
from tests.integration.test_main_job import HAPPY_TRAIL, trail

pytestmark = pytest.mark.slow


def wait_for_status(settings: Settings, status: str, timeout: float = 90) -> None:
    db = settings.data_dir / "orchestrator.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            with sqlite3.connect(db, timeout=5) as conn:
                try:
                    row = conn.execute("select status from project where name = 'hello-api'").fetchone()
                except sqlite3.OperationalError:
                    row = None
            if row and row[0] == status:
                return
        time.sleep(0.1)
    raise AssertionError(f"project never reached {status!r}")


async def test_kill_9_during_engineering_then_resume(settings: Settings, tmp_path) -> None:
    # The project's tests sleep, so the Tester is reliably mid-run when the kill comes.
    settings = settings.model_copy(
        update={
            "model": "replay/slow-tests",
            "replay_dir": scenario_variant(tmp_path / "rec", "slow-tests", test_prelude="import time\ntime.sleep(3)\n"),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "chat", "--thread", "t-kill", "-m", REQUEST],
        env=cli_env(settings),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_status(settings, "verifying")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    listed = json.loads(cli(settings, "threads", "--json").stdout)
    assert listed[0]["id"] == "t-kill" and listed[0]["stopped_mid_run"] is True
    refused = cli(settings, "chat", "--thread", "t-kill", "-m", "hello?")  # would abandon the stopped run
    assert refused.returncode == 2 and "stopped mid-run" in refused.stderr

    try:
        cont = cli(settings, "resume", "t-kill")
        assert cont.returncode == 0, cont.stderr
        assert "deploy_approval" in cont.stdout
        done = cli(settings, "resume", "t-kill", "--approve")
        assert done.returncode == 0, done.stderr

        [project] = await rows(settings, Project)
        assert project.status == "active"
        registry = json.loads((settings.data_dir / "forge" / "registry.json").read_text())
        assert list(registry) == ["hello-api"]
        assert len(list((settings.data_dir / "forge").glob("*.git"))) == 1
        assert len(await rows(settings, PortLease)) == 1
        [deployment] = await rows(settings, Deployment)
        assert deployment.status == "succeeded"
        assert httpx.get(deployment.url, timeout=5).status_code == 200
        assert trail(await rows(settings, Event), "t-kill") == [
            *HAPPY_TRAIL,
            ("verified", "deploying"),
            ("deploying", "active"),
        ]
    finally:
        await stop_service(settings)


async def test_sigterm_drains_after_the_running_step_and_resume_finishes(settings: Settings, tmp_path) -> None:
    settings = settings.model_copy(
        update={
            "model": "replay/slow-tests",
            "replay_dir": scenario_variant(tmp_path / "rec", "slow-tests", test_prelude="import time\ntime.sleep(3)\n"),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "chat", "--thread", "t-term", "-m", REQUEST],
        env=cli_env(settings),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_status(settings, "verifying")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped between steps" in out
    assert "✓ engineering › run_tests" in out  # the running Tester finished its step before the stop

    listed = json.loads(cli(settings, "threads", "--json").stdout)
    assert listed[0]["stopped_mid_run"] is True
    cont = cli(settings, "resume", "t-term")
    assert cont.returncode == 0, cont.stderr
    assert "deploy_approval" in cont.stdout
    [project] = await rows(settings, Project)
    assert project.status == "verified"
