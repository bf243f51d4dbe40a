"""kill -9 mid-node or at a node boundary, then resume in a new process: the same end, nothing duplicated."""

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
from infra.git import run_git
from models.tables import Deployment, Event, PortLease, Project
from tests.integration.helpers import REPO_ROOT, REQUEST, cli, cli_env, rows, scenario_variant, stop_service
from tests.integration.test_main_job import HAPPY_TRAIL, trail

pytestmark = pytest.mark.slow


def wait_for_status(settings: Settings, status: str, timeout: float = 90) -> None:
    """Wait until the project has entered ``status``, read from its trail: a status held for a few milliseconds
    (``verifying`` while a recorded review answers) is seen even if no poll falls inside it."""
    db = settings.data_dir / "orchestrator.db"
    deadline = time.monotonic() + timeout
    entered = "select 1 from event where subject_type = 'project' and to_status = ? limit 1"
    while time.monotonic() < deadline:
        if db.exists():
            with sqlite3.connect(db, timeout=5) as conn:
                try:
                    row = conn.execute(entered, (status,)).fetchone()
                except sqlite3.OperationalError:
                    row = None
            if row:
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
            (None, "deploy_approved"),
            ("verified", "deploying"),
            ("deploying", "active"),
        ]
    finally:
        await stop_service(settings)


def project_status(settings: Settings) -> str | None:
    with sqlite3.connect(settings.data_dir / "orchestrator.db", timeout=5) as conn:
        row = conn.execute("select status from project where name = 'hello-api'").fetchone()
    return row[0] if row else None


def killed_after(settings: Settings, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``node`` wrapped to SIGKILL the process right after it returns (see crash_after.py)."""
    return subprocess.run(
        [sys.executable, "-m", "tests.integration.crash_after", *args],
        env={**cli_env(settings), "CRASH_AFTER": node},
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


# (node[:its call number in that process] to die right after, the status its effects left). Each process re-runs
# the node the previous one died after, then dies at the next boundary. ``run_phase`` works one phase round per
# call: PLAN, TDD, IMPL (fails), IMPL (green), REVIEW (blocks), IMPL (green), REVIEW (approves), COMPLETE.
BOUNDARIES = [
    ("run_po_tools", "draft"),  # the project row exists; the re-run must not say "already exists"
    ("provision_repository", "initialized"),  # the repository exists; the re-run must not make a second one
    ("run_phase:2", "implementing"),  # PLAN, then TDD: the tests are committed and locked
    ("run_phase:3", "verifying"),  # TDD again, the failing first version, the green fix
    ("run_phase:5", "verified"),  # the fix again, the blocking review, its fix, the approval, the signature
]


async def test_kill_9_at_node_boundaries_then_resume(settings: Settings) -> None:
    thread = "t-bound"
    try:
        for i, (node, status) in enumerate(BOUNDARIES):
            args = ("chat", "--thread", thread, "-m", REQUEST) if i == 0 else ("resume", thread)
            run = killed_after(settings, node, *args)
            assert run.returncode == -signal.SIGKILL, f"resume after {BOUNDARIES[i - 1][0]}: {run.stdout}{run.stderr}"
            assert project_status(settings) == status, node

        cont = cli(settings, "resume", thread)
        assert cont.returncode == 0, cont.stderr
        assert "deploy_approval" in cont.stdout
        run = killed_after(settings, "deploy_project", "resume", thread, "--approve")
        assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr
        assert project_status(settings) == "active"
        done = cli(settings, "resume", thread)
        assert done.returncode == 0, done.stderr
        assert "hello-api is live" in done.stdout

        [project] = await rows(settings, Project)
        assert project.status == "active"
        forge = settings.data_dir / "forge"
        assert list(json.loads((forge / "registry.json").read_text())) == ["hello-api"]
        assert [p.name for p in forge.glob("*.git")] == ["hello-api.git"]
        # the initial commit, the tests, three versions: re-runs with the same files committed nothing new
        assert run_git("--git-dir", str(forge / "hello-api.git"), "rev-list", "--count", "main") == "5"
        [lease] = await rows(settings, PortLease)
        assert (lease.project_id, lease.port) == (project.id, project.port)
        [deployment] = await rows(settings, Deployment)
        assert deployment.status == "succeeded"
        assert httpx.get(deployment.url, timeout=5).status_code == 200
        assert trail(await rows(settings, Event), thread) == [
            *HAPPY_TRAIL,
            (None, "deploy_approved"),
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
    # implementing lasts seconds (each test run sleeps 3 s); verifying can last under 0.1 s and be missed by the poll
    wait_for_status(settings, "implementing")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped between steps" in out
    assert "✓ engineering › run_phase" in out  # the running phase finished its round before the stop

    listed = json.loads(cli(settings, "threads", "--json").stdout)
    assert listed[0]["stopped_mid_run"] is True
    cont = cli(settings, "resume", "t-term")
    assert cont.returncode == 0, cont.stderr
    assert "deploy_approval" in cont.stdout
    [project] = await rows(settings, Project)
    assert project.status == "verified"
