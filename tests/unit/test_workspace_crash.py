"""A git killed (SIGKILL) while it holds a lock in the Developer's working copy: the next attempt recovers.

The kills are real: ``git add`` inside :func:`infra.workspace.commit_and_push`, run in a process of its own, is held
by a clean filter that sleeps while git holds ``.git/index.lock``; ``git update-ref --stdin`` holds ``HEAD.lock`` and
the branch's lock between ``prepare`` and ``commit``. Each is killed with its whole process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import workspace
from infra.git import GitError, clear_stale_locks, git_processes_in, lock_files
from tests.conftest import REPO_ROOT
from tests.fixtures.git_http import GIT_ENV

CHANGE = [(f"src/module_{i:03}.py", f"VALUE = {i}\n" * 40) for i in range(300)]
"""A large-ish change: 300 new modules, written and committed as the Developer's write_code does."""

WRITE_AND_COMMIT = """
import sys
from pathlib import Path
from infra import workspace
from tests.unit.test_workspace_crash import CHANGE
root = Path(sys.argv[1])
workspace.write_files(root, CHANGE)
workspace.commit_and_push(root, "write_code: 300 modules", branch="main")
"""


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bare repository with one commit on main, as the forge creates a project's repository."""
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    bare = tmp_path / "remote.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    seed = tmp_path / "seed"
    git("init", "--quiet", "--initial-branch=main", str(seed))
    (seed / "README.md").write_text("# app\n")
    git("add", "-A", cwd=seed)
    git("commit", "--quiet", "-m", "Initial commit", cwd=seed)
    git("push", "--quiet", str(bare), "HEAD:main", cwd=seed)
    return bare


@pytest.fixture
def root(tmp_path: Path, remote: Path) -> Path:
    return workspace.prepare(tmp_path / "workspaces" / "app", str(remote), branch="main")


def held_in_filter(tmp_path: Path, step: str, code: str, root: Path) -> subprocess.Popen[bytes]:
    """Run ``code`` (argv[1] is ``root``) in a new process group, return once its git holds ``.git/index.lock``.

    A ``step`` ("clean": ``git add``; "smudge": a checkout) filter, set for every file through git's environment
    (nothing lands in the repository), marks that it runs, then sleeps: git runs it after taking the index lock.
    """
    running = tmp_path / "filter-running"
    filter_cmd = tmp_path / "slow-filter"
    filter_cmd.write_text(f'#!/bin/sh\ntouch "{running}"\nsleep 60\nexec cat\n')
    filter_cmd.chmod(0o755)
    attributes = tmp_path / "attributes"
    attributes.write_text("* filter=slow\n")
    slow = {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": f"filter.slow.{step}",
        "GIT_CONFIG_VALUE_0": str(filter_cmd),
        "GIT_CONFIG_KEY_1": "core.attributesFile",
        "GIT_CONFIG_VALUE_1": str(attributes),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(root)], cwd=REPO_ROOT, env={**os.environ, **slow}, start_new_session=True
    )
    deadline = time.monotonic() + 20
    while not (running.exists() and (root / ".git" / "index.lock").exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_group(proc)
            raise AssertionError(f"git never held .git/index.lock in {step} (exit {proc.returncode})")
        time.sleep(0.02)
    return proc


@pytest.fixture
def committing(tmp_path: Path, root: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``write_files`` + ``commit_and_push`` in a process of its own, caught while its ``git add`` holds index.lock;
    its process group is SIGKILLed at the end of the test at the latest."""
    proc = held_in_filter(tmp_path, "clean", WRITE_AND_COMMIT, root)
    try:
        yield proc
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``'s process group (python, git and the filter) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def commits_since(root: Path, base: str, head: str) -> list[str]:
    return git("rev-list", f"{base}..{head}", cwd=root).split()


def test_a_commit_killed_while_git_holds_index_lock_is_redone_once(
    root: Path, remote: Path, committing: subprocess.Popen[bytes]
) -> None:
    base = git("rev-parse", "main", cwd=remote)
    kill_group(committing)
    assert committing.returncode == -signal.SIGKILL
    assert lock_files(root) == [root / ".git" / "index.lock"]  # what the dead git left
    assert git_processes_in(root) == []
    stuck = subprocess.run(["git", "add", "-A"], cwd=root, capture_output=True, text=True, check=False)
    assert stuck.returncode != 0 and "index.lock" in stuck.stderr  # every git here fails until it is gone

    # The node's re-run: prepare the working copy, write the files again, commit and push.
    assert workspace.prepare(root, str(remote), branch="main") == root
    workspace.write_files(root, CHANGE)
    sha = workspace.commit_and_push(root, "write_code: 300 modules", branch="main")

    assert lock_files(root) == []
    assert git("rev-parse", "main", cwd=remote) == sha
    assert commits_since(root, base, sha) == [sha]  # exactly one commit of the change
    tracked = git("ls-tree", "-r", "--name-only", sha, cwd=root).splitlines()
    assert sorted(tracked) == sorted(["README.md", *(rel for rel, _ in CHANGE)])
    assert git("status", "--porcelain", cwd=root) == ""


def test_a_lock_whose_git_still_runs_is_kept(root: Path, remote: Path, committing: subprocess.Popen[bytes]) -> None:
    lock = root / ".git" / "index.lock"
    holders = git_processes_in(root)
    assert holders, "the live git add was not seen"

    assert clear_stale_locks(root) == [] and lock.exists()
    with pytest.raises(GitError, match="index.lock"):
        workspace.prepare(root, str(remote), branch="main")  # refused beside the live git, nothing removed
    assert lock.exists()

    kill_group(committing)
    assert clear_stale_locks(root) == [lock] and not lock.exists()


def test_branch_and_head_locks_of_a_killed_ref_update_are_cleared(root: Path, remote: Path) -> None:
    """``git update-ref --stdin`` holds HEAD.lock and refs/heads/main.lock from ``prepare`` until ``commit``."""
    base = git("rev-parse", "HEAD", cwd=root)
    (root / "unpushed.py").write_text("X = 1\n")
    git("add", "-A", cwd=root)
    git("commit", "--quiet", "-m", "never pushed", cwd=root)
    unpushed = git("rev-parse", "HEAD", cwd=root)
    git("reset", "--quiet", "--hard", base, cwd=root)
    proc = subprocess.Popen(
        ["git", "update-ref", "--stdin"],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"start\nupdate HEAD {unpushed}\nprepare\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "start: ok\n" and proc.stdout.readline() == "prepare: ok\n"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert lock_files(root) == [root / ".git" / "HEAD.lock", root / ".git" / "refs" / "heads" / "main.lock"]

    workspace.prepare(root, str(remote), branch="main")

    assert lock_files(root) == []
    assert git("rev-parse", "HEAD", cwd=root) == base == git("rev-parse", "main", cwd=remote)
    workspace.write_files(root, [("app.py", "print('v2')\n")])
    sha = workspace.commit_and_push(root, "v2", branch="main")
    assert commits_since(root, base, sha) == [sha]


def test_a_clone_killed_in_its_checkout_is_completed_by_the_next_prepare(tmp_path: Path, remote: Path) -> None:
    root = tmp_path / "workspaces" / "app"
    cloning = (
        "import sys; from pathlib import Path; from infra import workspace; "
        f"workspace.prepare(Path(sys.argv[1]), {str(remote)!r}, branch='main')"
    )
    kill_group(held_in_filter(tmp_path, "smudge", cloning, root))
    assert lock_files(root) == [root / ".git" / "index.lock"]

    assert workspace.prepare(root, str(remote), branch="main") == root

    assert lock_files(root) == [] and git("status", "--porcelain", cwd=root) == ""
    assert workspace.listing(root) == ["README.md"] and (root / "README.md").read_text() == "# app\n"
    assert workspace.head(root) == git("rev-parse", "main", cwd=remote)


def test_without_a_process_table_only_old_locks_are_stale(tmp_path: Path, root: Path) -> None:
    no_proc = tmp_path / "no-proc"
    fresh, old = root / ".git" / "index.lock", root / ".git" / "ORIG_HEAD.lock"
    fresh.touch()
    old.touch()
    os.utime(old, (time.time() - 3600, time.time() - 3600))

    assert git_processes_in(root, proc=no_proc) is None
    assert clear_stale_locks(root, stale_after_s=600, proc=no_proc) == [old]
    assert fresh.exists() and not old.exists()
