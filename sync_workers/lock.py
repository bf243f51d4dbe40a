"""One sync process at a time: a lock that a crashed holder releases by itself.

- SQLite (the embedded default): an exclusive ``fcntl.flock`` on ``<data_dir>/sync.lock``. The kernel drops the lock
  when the holder's file descriptor closes, which a crash or ``kill -9`` does too, so a stale lock cannot exist. The
  holder writes its pid into the file so a waiting process can say who it waits for (the pid is information only:
  the flock, not the file's content, is the lock). Python opens the descriptor non-inheritable, so a child process
  (ansible-playbook) left behind by a crashed holder does not keep the lock.
- PostgreSQL: ``pg_try_advisory_lock(SYNC_LOCK_KEY)`` held on a dedicated connection for the life of the process.
  The server releases it when that connection ends, which a crashed holder's connection does. The holder tags its
  session's ``application_name`` with its pid, which a waiting process reads back through ``pg_locks``.
- A lock can be lost while its holder runs (the connection killed with ``pg_terminate_backend``, a server restart,
  a network cut, the lock file deleted). The holder's watchdog notices and sets ``SyncLock.lost`` and the
  ``on_lost`` event it was given, so the holder stops before, or as soon as, a second process takes the lock.

Why ``fcntl`` and not the ``filelock`` package (installed as a litellm dependency): on POSIX ``filelock.FileLock`` is
this same ``flock`` call, but it is not our declared dependency, it deletes/recreates lock files on some paths, and it
gives no place for the holder's pid. Twenty lines of ``fcntl`` say exactly what happens. (No Windows support: the
orchestrator deploys with Ansible, which needs a POSIX control node anyway.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.settings import Settings

SYNC_LOCK_KEY = 0x53594E43
"""ASCII "SYNC"; below 2**31, so ``pg_locks`` shows it as classid 0, objid SYNC_LOCK_KEY."""
POLL_S = 1.0
CHECK_S = 5.0
"""How often the holder's watchdog checks that it still holds the lock."""
CHECK_TIMEOUT_S = 10.0
"""A lock connection that does not answer a check (or an unlock) within this is taken as lost."""
_APP_NAME_PREFIX = "orchestrator-sync pid="

log = logging.getLogger(__name__)


def waiting_message(pid: int | None) -> str:
    """What a waiting process says about the holder."""
    who = f"pid {pid}" if pid is not None else "pid unknown"
    return f"another sync process ({who}) holds the lock; waiting"


class SyncLock:
    """The process-wide sync lock; ``await acquire()``, then ``release()`` (or ``async with``).

    A held lock can be lost without the holder letting go: a PostgreSQL connection killed by an administrator
    (``pg_terminate_backend``), a server restart, a network cut, or the SQLite lock file deleted under a running
    holder. Another process can then take the lock, so the holder must stop. ``acquire()`` therefore starts a
    watchdog task that calls :meth:`still_held` every ``check_s`` seconds; on PostgreSQL (asyncpg) a closed lock
    connection is also noticed at once, without waiting for the next check. When the lock is lost, :attr:`lost` is
    set, ``on_lost`` (if given) is set too, and the reason is logged and kept in :attr:`lost_reason`. Pass the
    event that stops the workers as ``on_lost`` and a lost lock stops them like SIGTERM does. :meth:`release`
    works on a lost lock too (it never raises for a dead connection).

    Args:
        settings: chooses the kind (``settings.db_url`` starting with ``sqlite`` → file lock in ``data_dir``,
            anything else → PostgreSQL advisory lock on that database).
        poll_s: how often a waiting process tries again.
        check_s: how often the holder checks that it still holds the lock (0: no watchdog; call ``still_held``).
        on_lost: an event to set when a held lock is lost.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        poll_s: float = POLL_S,
        check_s: float = CHECK_S,
        on_lost: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.check_s = check_s
        self.kind = "file" if settings.db_url.startswith("sqlite") else "postgres"
        self.path: Path = settings.data_dir / "sync.lock"
        self.lost = asyncio.Event()
        """Set when a lock this object held was lost (cleared by the next successful ``acquire``)."""
        self.lost_reason: str | None = None
        self._on_lost = on_lost
        self._fd: int | None = None
        self._engine: Any = None
        self._conn: Any = None
        self._io = asyncio.Lock()  # one statement at a time on the lock connection (checks vs release)
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock, as far as it knows (:meth:`still_held` asks the kernel/server)."""
        return (self._fd is not None or self._conn is not None) and not self.lost.is_set()

    async def acquire(self, wait: bool = True, on_wait: Callable[[int | None], None] | None = None) -> bool:
        """Take the lock, and start the watchdog that notices its loss (see the class docs).

        Args:
            wait: keep trying every ``poll_s`` until the lock is free; False: try once.
            on_wait: called once, with the holder's pid (None if it cannot be read), when the lock is taken by
                another process; ``waiting_message(pid)`` words it.

        Returns:
            True once held; False only when ``wait`` is False and another process holds it.
        """
        if self.held:
            return True
        if self._fd is not None or self._conn is not None:
            await self.release()  # what is left of a lost lock
        told = False
        while True:
            if await self._try():
                self.lost.clear()
                self.lost_reason = None
                if self.check_s > 0:
                    self._watchdog = asyncio.create_task(self._watch(), name="sync-lock-watchdog")
                return True
            if not told and on_wait is not None:
                on_wait(await self.holder_pid())
                told = True
            if not wait:
                return False
            await asyncio.sleep(self.poll_s)

    async def still_held(self) -> bool:
        """Check that the lock is still this process's; on a loss, set the events (see the class docs).

        File lock: the locked descriptor is still the file at ``path`` (a deleted or replaced file is a lock
        another process can take). PostgreSQL: the lock connection answers, within ``CHECK_TIMEOUT_S``, that its
        own session holds the advisory lock.

        Returns:
            False if the lock was never taken, was released, or is lost.
        """
        if self.lost.is_set():
            return False
        if self._fd is not None:
            reason = self._file_lost_reason(self._fd)
        elif self._conn is not None:
            reason = await self._pg_lost_reason()
        else:
            return False
        if reason is not None:
            self._mark_lost(reason)
            return False
        return True

    async def release(self) -> None:
        """Give the lock back (idempotent; never raises for a lock already lost or a dead connection)."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if not self.lost.is_set():  # a lost file may be another holder's: leave its pid alone
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor drops the flock
        if self._conn is not None:
            conn, self._conn = self._conn, None
            async with self._io:
                if not self.lost.is_set():
                    try:
                        await asyncio.wait_for(self._pg_unlock(conn), CHECK_TIMEOUT_S)
                    except Exception as exc:  # closing the connection below releases it anyway
                        log.warning(
                            "sync lock: unlock failed (%s: %s); closing its connection", type(exc).__name__, exc
                        )
                try:
                    await asyncio.wait_for(conn.close(), CHECK_TIMEOUT_S)
                except Exception as exc:
                    log.debug("sync lock: closing the lock connection failed: %s", exc)
        if self._engine is not None:
            engine, self._engine = self._engine, None
            try:
                await asyncio.wait_for(engine.dispose(), CHECK_TIMEOUT_S)
            except Exception as exc:
                log.debug("sync lock: disposing the lock engine failed: %s", exc)

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
            await self._watch_termination(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return True

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.lost.wait(), self.check_s)
                return  # noticed elsewhere (the connection's termination listener, a caller's still_held)
            except TimeoutError:
                pass
            if not await self.still_held():
                return

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        if self._on_lost is not None:
            self._on_lost.set()
        log.error("sync lock lost: %s; stopping (another sync process may hold it now)", reason)

    def _file_lost_reason(self, fd: int) -> str | None:
        try:
            mine, there = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return f"the lock file {self.path} was deleted"
        except OSError as exc:
            return f"the lock file {self.path} cannot be read: {exc}"
        if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
            return f"the lock file {self.path} was replaced"
        return None

    async def _pg_lost_reason(self) -> str | None:
        async with self._io:
            conn = self._conn
            if conn is None:
                return "the lock was released"
            try:
                count = await asyncio.wait_for(self._pg_count(conn), CHECK_TIMEOUT_S)
            except TimeoutError:
                return f"the lock connection did not answer within {CHECK_TIMEOUT_S:g} s"
            except Exception as exc:
                return f"the lock connection failed ({type(exc).__name__}: {exc})"
        return None if count else "the lock connection no longer holds the advisory lock"

    @staticmethod
    async def _pg_count(conn: Any) -> int:
        count = (
            await conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() "
                f"AND classid = 0 AND objid = {SYNC_LOCK_KEY}"
            )
        ).scalar()
        await conn.commit()
        return int(count or 0)

    @staticmethod
    async def _pg_unlock(conn: Any) -> None:
        await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({SYNC_LOCK_KEY})")
        await conn.commit()

    async def _watch_termination(self, conn: Any) -> None:
        """On asyncpg, hear at once when the server closes the lock connection (it calls back from the loop)."""
        raw = await conn.get_raw_connection()
        add_listener = getattr(raw.driver_connection, "add_termination_listener", None)
        if add_listener is not None:

            def closed(_driver_conn: object) -> None:
                # Not our own release() closing it, nor a check timing out (asyncpg aborts the connection on
                # that cancellation; the check reports the better reason itself).
                if conn is self._conn and not self._io.locked():
                    self._mark_lost("the lock connection to PostgreSQL was closed by the server or the network")

            add_listener(closed)

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
