"""Owners named by pid and start time: what a gone owner left is swept, what a live one owns is kept."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.orphans import (
    LEGACY_STALE_AFTER_S,
    OWNER_ENV,
    Owner,
    current_owner,
    end_orphaned_runs,
    owned_mkdtemp,
    pid_namespace,
    start_time,
    sweep_private_dirs,
)


def gone_owner() -> Owner:
    """A process that ran, ended and was reaped: its pid and start time name nobody now."""
    proc = subprocess.Popen(["sleep", "5"])
    started = start_time(proc.pid)
    assert started is not None
    proc.kill()
    proc.wait()
    return Owner(proc.pid, started, pid_namespace())


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def marked() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by the test, killed at the end whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_an_owner_is_alive_only_with_its_own_start_time() -> None:
    me = current_owner()
    assert me.pid == os.getpid() and me.alive()
    assert me.ns == pid_namespace() != 0
    reused = Owner(me.pid, me.start + 1, me.ns)  # the same pid, another process
    assert not reused.alive() and reused.gone()
    dead = gone_owner()
    assert not dead.alive() and dead.gone()
    assert not Owner(dead.pid, dead.start, me.ns + 1).gone()  # another pid namespace's pids mean nothing here
    assert Owner.parse(f"{me.token}-0123abcd") == me
    assert Owner.parse("not-an-owner") is None


def test_a_zombie_is_gone() -> None:
    proc = subprocess.Popen(["true"])
    path = Path(f"/proc/{proc.pid}/stat")
    wait_for(lambda: path.read_text().rsplit(")", 1)[1].split()[0] == "Z")
    try:
        assert start_time(proc.pid) is None
    finally:
        proc.wait()


def test_folders_of_gone_owners_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    mine = Path(owned_mkdtemp(prefix="orchestrator-env-", dir=str(tmp_path)))
    assert mine.name.startswith(f"orchestrator-env-{current_owner().token}-")
    assert mine.stat().st_mode & 0o777 == 0o700
    me, dead = current_owner(), gone_owner()
    orphan = tmp_path / f"orchestrator-env-{dead.token}-abcd1234"
    reused = tmp_path / f"orchestrator-git-auth-{me.pid}-{me.start + 1}-{me.ns}-abcd1234"
    elsewhere = tmp_path / f"orchestrator-env-{dead.pid}-{dead.start}-{me.ns + 1}-abcd1234"
    old_legacy, new_legacy = tmp_path / "orchestrator-env-old12345", tmp_path / "orchestrator-git-auth-new12345"
    unrelated = tmp_path / "orchestrator-test-releases-1-2-abcd1234x"
    for folder in (orphan, reused, elsewhere, old_legacy, new_legacy, unrelated):
        folder.mkdir()
        (folder / "service.env").write_text("API_TOKEN=value\n")
    past = time.time() - LEGACY_STALE_AFTER_S - 60
    os.utime(old_legacy, (past, past))

    removed = sweep_private_dirs([tmp_path])

    assert sorted(removed) == sorted([orphan, reused, old_legacy])
    assert sorted(tmp_path.iterdir()) == sorted([mine, elsewhere, new_legacy, unrelated])


def test_making_a_folder_sweeps_its_place_first(tmp_path: Path) -> None:
    orphan = tmp_path / f"orchestrator-env-{gone_owner().token}-abcd1234"
    orphan.mkdir()
    made = owned_mkdtemp(prefix="orchestrator-env-", dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == [Path(made)]


def test_a_prefix_the_sweep_would_not_recognise_is_refused(tmp_path: Path) -> None:
    for prefix in ("secrets-", "orchestrator-env", "orchestrator-Env-", "orchestrator-1-"):
        with pytest.raises(ValueError, match="must look like"):
            owned_mkdtemp(prefix=prefix, dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_only_processes_of_runs_whose_owner_is_gone_are_ended(marked: list[subprocess.Popen[bytes]]) -> None:
    def start(marker: str, argv0: str = "sleep") -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["bash", "-c", f'exec -a "{argv0}" sleep 30'], env={**os.environ, OWNER_ENV: marker})
        marked.append(proc)
        return proc

    dead = gone_owner()
    orphan = start(f"{dead.token}-run1")
    live = start(f"{current_owner().token}-run2")
    mux = start(f"{dead.token}-run1", argv0="ssh: /root/.ansible/cp/0123abcd [mux]")  # shared by later runs
    elsewhere = start(f"{dead.pid}-{dead.start}-{dead.ns + 1}-run3")  # a container's run, seen from the host
    unmarked = subprocess.Popen(["sleep", "30"])
    marked.append(unmarked)
    wait_for(lambda: not any(Path(f"/proc/{p.pid}/cmdline").read_bytes().startswith(b"bash") for p in marked))

    ended = end_orphaned_runs(grace_s=1.0)

    assert orphan.pid in ended and orphan.wait(timeout=5) == -15  # SIGTERM was enough
    assert {live.pid, mux.pid, elsewhere.pid, unmarked.pid}.isdisjoint(ended)
    assert all(p.poll() is None for p in (live, mux, elsewhere, unmarked))
