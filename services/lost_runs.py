"""Runs whose process died before they ended: told apart from runs still going, and recorded as ``lost``.

A run's own process writes its outcome when it ends (:mod:`runtime.traces`). A process killed first (``kill -9``, a
crash, a power cut) never does, and its run would read as running forever. Each run row names its machine and
process (``run.host``, ``run.pid``); whoever reads a thread's runs next settles one whose process is gone
(:func:`settle_lost_runs`), as a reconcile on read: the CLI's ``runs``, ``GET /threads/{id}/runs``, the console.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from sqlmodel.ext.asyncio.session import AsyncSession

from models.tables import utcnow
from models.time_tables import Run


def process_gone(run: Run, host: str | None = None) -> bool:
    """Whether ``run`` has no outcome and the process that ran it is known to be gone.

    Known only on the run's own machine (``host``, default this one): no process has its pid. A run of another
    machine, of this process, or from before runs named their process is never judged gone. A pid the kernel gave
    to a new process since makes the run look alive until that process ends too.
    """
    if run.outcome is not None or run.pid is None or run.host != (host or socket.gethostname()):
        return False
    if run.pid == os.getpid():
        return False
    try:
        os.kill(run.pid, 0)  # signal 0: only whether the process exists (kill(2))
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's
        return False
    return False


async def settle_lost_runs(session: AsyncSession, runs: Iterable[Run]) -> list[Run]:
    """Record ``lost`` on each of ``runs`` whose process is gone (:func:`process_gone`); return those runs.

    A run ends with an outcome written by its own process; one killed (``kill -9``, a crash, a power cut) never
    writes it, and would read as running forever. Whoever reads it next settles it here, in their session (written
    with its commit): ``finished_at`` is when it was seen gone, the error says so and how to go on.
    """
    lost = [run for run in runs if process_gone(run)]
    for run in lost:
        run.outcome, run.finished_at = "lost", utcnow()
        run.error = (
            f"its process (pid {run.pid} on {run.host}) ended before the run did; continue the thread to finish it"
        )
        session.add(run)
    if lost:
        await session.flush()
    return lost
