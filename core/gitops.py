"""Real git, run as subprocesses with a fixed identity (no dependence on the user's global config)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "orchestrator",
    "GIT_AUTHOR_EMAIL": "orchestrator@localhost",
    "GIT_COMMITTER_NAME": "orchestrator",
    "GIT_COMMITTER_EMAIL": "orchestrator@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}


class GitError(RuntimeError):
    """A git command failed; the message carries the command and git's stderr."""


def run_git(*args: str, cwd: Path | None = None, stdin: str | None = None, timeout_s: float = 120) -> str:
    """Run ``git *args`` and return its stripped stdout.

    Raises:
        GitError: non-zero exit or timeout, with git's stderr.
    """
    env = {**os.environ, **GIT_IDENTITY}
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"git {' '.join(args)} timed out after {timeout_s}s") from exc
    if proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed (rc {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()
