"""kill -9 of the whole CLI while git holds ``.git/index.lock`` in the Developer's working copy, then resume.

The first commit of ``app.py`` (IMPL, the project ``implementing``) is held inside ``git add`` by a clean filter
that sleeps, set through git's environment for the chat process only; the test kills the process group there, so
the lock stays behind. The resumed thread must clear it, re-run the phase and finish with one commit per change.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.settings import Settings
from infra.git import lock_files, run_git
from models.tables import Event, Project
from tests.integration.helpers import REPO_ROOT, REQUEST, cli, cli_env, rows, stop_service
from tests.integration.test_crash_recovery import project_status
from tests.integration.test_main_job import HAPPY_TRAIL, trail

pytestmark = pytest.mark.slow


def slow_first_app_commit(tmp: Path) -> tuple[dict[str, str], Path]:
    """Git config (as environment) whose clean filter sleeps, once, on ``app.py`` in a working copy; and its mark."""
    held = tmp / "held"
    script = tmp / "slow-clean"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = app.py ] && [ ! -e "{held}" ] && pwd | grep -q /workspaces/; then touch "{held}"; sleep 120; fi\n'
        "exec cat\n"
    )
    script.chmod(0o755)
    attributes = tmp / "attributes"
    attributes.write_text("* filter=slow\n")
    env = {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "filter.slow.clean",
        "GIT_CONFIG_VALUE_0": f"{script} %f",
        "GIT_CONFIG_KEY_1": "core.attributesFile",
        "GIT_CONFIG_VALUE_1": str(attributes),
    }
    return env, held


async def test_kill_9_while_git_holds_the_index_lock_then_resume(settings: Settings, tmp_path: Path) -> None:
    slow, held = slow_first_app_commit(tmp_path)
    working_copy = settings.data_dir / "workspaces" / "hello-api"
    out = (tmp_path / "chat.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "chat", "--thread", "t-git", "-m", REQUEST],
        env={**cli_env(settings), **slow},
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (held.exists() and (working_copy / ".git" / "index.lock").exists()):
            assert proc.poll() is None, "the chat ended early: " + (tmp_path / "chat.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Developer's commit never took .git/index.lock"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        out.close()
    assert lock_files(working_copy) == [working_copy / ".git" / "index.lock"]
    assert project_status(settings) == "implementing"

    try:
        cont = cli(settings, "resume", "t-git")
        assert cont.returncode == 0, cont.stdout + cont.stderr
        assert "deploy_approval" in cont.stdout
        done = cli(settings, "resume", "t-git", "--approve")
        assert done.returncode == 0, done.stdout + done.stderr

        [project] = await rows(settings, Project)
        assert project.status == "active"
        assert lock_files(working_copy) == []
        forge = settings.data_dir / "forge"
        assert list(json.loads((forge / "registry.json").read_text())) == ["hello-api"]
        # the initial commit, the tests, three versions of app.py: the killed commit was made once, on the re-run
        assert run_git("--git-dir", str(forge / "hello-api.git"), "rev-list", "--count", "main") == "5"
        assert trail(await rows(settings, Event), "t-git") == [
            *HAPPY_TRAIL,
            (None, "deploy_approved"),
            ("verified", "deploying"),
            ("deploying", "active"),
        ]
    finally:
        await stop_service(settings)
