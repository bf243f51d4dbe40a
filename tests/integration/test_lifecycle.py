"""The end of a project's life through the real CLI on a real deploy: stop, start, undeploy, delete, each on the
trail, the port lease released when it says so, the service really stopped or answering."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from models.tables import Deployment, Event, PortLease, Project
from services.identities import cli_identity
from tests.integration.helpers import REQUEST, cli, rows, run_turn, stop_service

pytestmark = pytest.mark.slow


def answers(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=3, trust_env=False).status_code
    except httpx.TransportError:
        return None


def moved(settings: Settings, *args: str) -> dict[str, str]:
    done = cli(settings, *args, "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


async def test_stop_start_undeploy_delete(settings: Settings, tmp_path: Path) -> None:
    await run_turn(settings, REQUEST, "t-life")
    approved = cli(settings, "resume", "t-life", "--approve")
    assert approved.returncode == 0, approved.stderr
    [deployment] = await rows(settings, Deployment)
    url = deployment.url or ""
    try:
        assert answers(url) == 200

        assert moved(settings, "stop", "hello-api")["status"] == "stopped"
        assert answers(url) is None
        [lease] = await rows(settings, PortLease)  # kept for the start
        again = cli(settings, "stop", "hello-api")
        assert again.returncode == 2 and "only an active project's service can be stopped" in again.stderr

        started = moved(settings, "start", "hello-api")
        assert started["status"] == "active" and url in started["message"]
        assert answers(url) == 200

        unconfirmed = cli(settings, "delete", "hello-api")  # no --yes and no terminal to ask on: nothing happens
        assert unconfirmed.returncode == 2 and "pass --yes" in unconfirmed.stderr
        gone = moved(settings, "undeploy", "hello-api")
        assert gone["status"] == "undeployed" and f"port {lease.port} released" in gone["message"]
        assert answers(url) is None and await rows(settings, PortLease) == []
        [project] = await rows(settings, Project)
        assert (project.port, project.server_id) == (None, None)

        deleted = moved(settings, "delete", "hello-api", "--yes", "--archive-repo")
        assert deleted["status"] == "archived" and "archived (read-only)" in deleted["message"]
        work = tmp_path / "late-change"
        subprocess.run(["git", "clone", "-q", project.clone_url or "", str(work)], check=True)
        (work / "late.txt").write_text("too late\n")
        git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com"]
        subprocess.run([*git, "add", "late.txt"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "late"], check=True)
        pushed = subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], capture_output=True, text=True)
        assert pushed.returncode != 0 and "is archived (read-only)" in pushed.stderr  # the forge keeps it read-only
        twice = cli(settings, "delete", "hello-api", "--yes")
        assert twice.returncode == 2 and "already archived" in twice.stderr
    finally:
        await stop_service(settings)

    me = cli_identity().name
    trail = [(e.from_status, e.to_status, e.actor) for e in await rows(settings, Event) if e.subject_type == "project"]
    for step in [
        ("active", "stopped", me),
        ("stopped", "active", me),
        ("active", "undeployed", me),
        (None, "lease_released", me),
        (None, "repo_archived", me),
        ("undeployed", "archived", me),
    ]:
        assert step in trail, (step, trail)
