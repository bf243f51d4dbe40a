"""One sync process at a time: a lock that a crashed holder releases by itself.

- SQLite (the embedded default): an exclusive ``fcntl.flock`` on ``<data_dir>/sync.lock``. The kernel drops the lock
  when the holder's file descriptor closes, which a crash or ``kill -9`` does too, so a stale lock cannot exist. The
  holder writes its pid into the file so a waiting process can say who it waits for (the pid is information only:
  the flock, not the file's content, is the lock). Python opens the descriptor non-inheritable, so a child process
  (ansible-playbook) left behind by a crashed holder does not keep the lock.
- PostgreSQL: ``pg_try_advisory_lock(SYNC_LOCK_KEY)`` held on a dedicated connection for the life of the process.
  The server releases it when that connection ends, which a crashed holder's connection does. The holder tags its
  session's ``application_name`` with its pid, which a waiting process reads back through ``pg_locks``.

Why ``fcntl`` and not the ``filelock`` package (installed as a litellm dependency): on POSIX ``filelock.FileLock`` is
this same ``flock`` call, but it is not our declared dependency, it deletes/recreates lock files on some paths, and it
gives no place for the holder's pid. Twenty lines of ``fcntl`` say exactly what happens. (No Windows support: the
orchestrator deploys with Ansible, which needs a POSIX control node anyway.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.settings import Settings

SYNC_LOCK_KEY = 0x53594E43
"""ASCII "SYNC"; below 2**31, so ``pg_locks`` shows it as classid 0, objid SYNC_LOCK_KEY."""
POLL_S = 1.0
_APP_NAME_PREFIX = "orchestrator-sync pid="


def waiting_message(pid: int | None) -> str:
    """What a waiting process says about the holder."""
    who = f"pid {pid}" if pid is not None else "pid unknown"
    return f"another sync process ({who}) holds the lock; waiting"


class SyncLock:
    """The process-wide sync lock; ``await acquire()``, then ``release()`` (or ``async with``).

    Args:
        settings: chooses the kind (``settings.db_url`` starting with ``sqlite`` → file lock in ``data_dir``,
            anything else → PostgreSQL advisory lock on that database).
        poll_s: how often a waiting process tries again.
    """

    def __init__(self, settings: Settings, *, poll_s: float = POLL_S) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.kind = "file" if settings.db_url.startswith("sqlite") else "postgres"
        self.path: Path = settings.data_dir / "sync.lock"
        self._fd: int | None = None
        self._engine: Any = None
        self._conn: Any = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None or self._conn is not None

    async def acquire(self, wait: bool = True, on_wait: Callable[[int | None], None] | None = None) -> bool:
        """Take the lock.

        Args:
            wait: keep trying every ``poll_s`` until the lock is free; False: try once.
            on_wait: called once, with the holder's pid (None if it cannot be read), when the lock is taken by
                another process; ``waiting_message(pid)`` words it.

        Returns:
            True once held; False only when ``wait`` is False and another process holds it.
        """
        if self.held:
            return True
        told = False
        while True:
            if await self._try():
                return True
            if not told and on_wait is not None:
                on_wait(await self.holder_pid())
                told = True
            if not wait:
                return False
            await asyncio.sleep(self.poll_s)

    async def release(self) -> None:
        """Give the lock back (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor drops the flock
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({SYNC_LOCK_KEY})")
            finally:
                await conn.close()
                await self._engine.dispose()
                self._engine = None

    async def holder_pid(self) -> int | None:
        """The pid of the process holding the lock, if it can be read."""
        if self.kind == "file":
            # The holder writes its pid right after taking the lock: a waiter arriving in between reads nothing.
            for _ in range(10):
                try:
                    text = self.path.read_text().strip()
                except OSError:
                    text = ""
                if text.isdigit():
                    return int(text)
                await asyncio.sleep(0.05)
            return None
        return await self._pg_holder_pid()

    async def __aenter__(self) -> SyncLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def _try(self) -> bool:
        return self._try_file() if self.kind == "file" else await self._try_pg()

    def _try_file(self) -> bool:
        self.settings.ensure_data_dir()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return True

    async def _try_pg(self) -> bool:
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        if self._engine is None:
            # NullPool: the connection is ours alone and really closes with us (a pooled one could keep the lock).
            self._engine = create_async_engine(self.settings.db_url, poolclass=NullPool)
        conn = await self._engine.connect()
        try:
            got = (await conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({SYNC_LOCK_KEY})")).scalar()
            await conn.commit()  # end the implicit transaction; the session-level lock outlives it
            if not got:
                await conn.close()
                return False
            await conn.exec_driver_sql(f"SET application_name = '{_APP_NAME_PREFIX}{os.getpid()}'")
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return True

    async def _pg_holder_pid(self) -> int | None:
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        engine = self._engine or create_async_engine(self.settings.db_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                name = (
                    await conn.exec_driver_sql(
                        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        f"WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = {SYNC_LOCK_KEY}"
                    )
                ).scalar()
        finally:
            if engine is not self._engine:
                await engine.dispose()
        if isinstance(name, str) and name.startswith(_APP_NAME_PREFIX) and name[len(_APP_NAME_PREFIX) :].isdigit():
            return int(name[len(_APP_NAME_PREFIX) :])
        return None
