"""services.lost_runs: which runs with no outcome are known to have lost their process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from models.time_tables import Run
from services.lost_runs import process_gone


def run_of(pid: int | None, host: str | None = None, outcome: str | None = None) -> Run:
    return Run(
        id="r-000000000001",
        thread_id="t-1",
        kind="message",
        pid=pid,
        host=host or socket.gethostname(),
        outcome=outcome,
    )


def test_a_run_whose_process_ended_on_this_machine_is_gone() -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(ended.stdout)
    assert process_gone(run_of(pid))
    assert not process_gone(run_of(pid, outcome="done")), "a run that recorded its end is not judged"


def test_living_processes_other_machines_and_old_rows_are_never_judged_gone() -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as alive:
        try:
            assert not process_gone(run_of(alive.pid))
        finally:
            alive.kill()
    assert not process_gone(run_of(os.getpid()))
    assert not process_gone(run_of(1, host="another-machine"))
    assert not process_gone(run_of(None)), "a row from before runs named their process"
