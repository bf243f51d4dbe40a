"""The Developer's working copy follows the remote: leftovers of a crashed attempt are dropped, others' pushes kept."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from infra import workspace
from tests.fixtures.git_http import GIT_ENV


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    bare = tmp_path / "remote.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    return str(bare)


def test_an_empty_remote_is_cloned_and_a_second_prepare_keeps_it_working(tmp_path: Path, remote: str) -> None:
    root = workspace.prepare(tmp_path / "ws", remote, branch="main")
    workspace.write_files(root, [("app.py", "print('v1')\n")])
    first = workspace.commit_and_push(root, "v1", branch="main")
    assert workspace.prepare(root, remote, branch="main") == root
    assert git("rev-parse", "HEAD", cwd=root) == first and (root / "app.py").read_text() == "print('v1')\n"


def test_leftovers_are_dropped_and_work_pushed_elsewhere_becomes_the_base(tmp_path: Path, remote: str) -> None:
    root = workspace.prepare(tmp_path / "ws", remote, branch="main")
    workspace.write_files(root, [("app.py", "print('v1')\n")])
    workspace.commit_and_push(root, "v1", branch="main")

    other = tmp_path / "person"
    git("clone", "--quiet", remote, str(other))
    (other / "README.md").write_text("pushed by a person\n")
    git("add", "-A", cwd=other)
    git("commit", "--quiet", "-m", "readme", cwd=other)
    git("push", "--quiet", "origin", "HEAD:main", cwd=other)
    theirs = git("rev-parse", "HEAD", cwd=other)

    (root / "half_written.py").write_text("partial")  # a crashed attempt's file, never committed
    (root / "app.py").write_text("print('unpushed')\n")
    git("commit", "--quiet", "-am", "committed, never pushed", cwd=root)

    workspace.prepare(root, remote, branch="main")

    assert git("rev-parse", "HEAD", cwd=root) == theirs
    assert not (root / "half_written.py").exists() and (root / "app.py").read_text() == "print('v1')\n"
    workspace.write_files(root, [("app.py", "print('v2')\n")])
    sha = workspace.commit_and_push(root, "v2", branch="main")  # a fast-forward of the person's commit
    assert git("rev-parse", "main", cwd=Path(remote)) == sha
    assert git("rev-parse", f"{sha}~1", cwd=root) == theirs
