"""The file sync lock (SQLite default) knows when it is no longer the lock: its watchdog sets ``on_lost``."""

from __future__ import annotations

import asyncio
import os

from core.settings import Settings
from sync_workers.lock import SyncLock


async def test_still_held_is_true_only_while_held(settings: Settings) -> None:
    lock = SyncLock(settings, check_s=0)
    assert not await lock.still_held(), "never acquired"
    assert await lock.acquire(wait=False)
    assert await lock.still_held() and lock.held
    await lock.release()
    assert not await lock.still_held() and not lock.held
    await lock.release()  # idempotent


async def test_a_deleted_lock_file_is_a_lost_lock_and_the_watchdog_says_so(settings: Settings) -> None:
    lost = asyncio.Event()
    first = SyncLock(settings, check_s=0.05, on_lost=lost)
    assert await first.acquire(wait=False)
    first.path.unlink()  # a cleanup script, a person: the flock now guards a file nobody can open

    second = SyncLock(settings, check_s=0)
    assert await second.acquire(wait=False), "a new file is a free lock: this is why the holder must stop"
    await asyncio.wait_for(lost.wait(), 5)
    assert first.lost.is_set() and not first.held
    assert first.lost_reason is not None and "deleted" in first.lost_reason
    assert not await first.still_held()

    await first.release()
    assert second.path.read_text().strip() == str(os.getpid()), "the lost holder leaves the new holder's file alone"
    assert await second.still_held()
    await second.release()

    assert await first.acquire(wait=False), "a lost lock can be taken again"
    assert not first.lost.is_set() and first.lost_reason is None
    await first.release()


async def test_a_replaced_lock_file_is_noticed(settings: Settings) -> None:
    lock = SyncLock(settings, check_s=0)
    assert await lock.acquire(wait=False)
    replacement = lock.path.with_suffix(".new")
    replacement.write_text("")
    os.replace(replacement, lock.path)
    assert not await lock.still_held()
    assert lock.lost_reason is not None and "replaced" in lock.lost_reason
    await lock.release()
