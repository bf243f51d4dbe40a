"""Run a project's test command for real: a subprocess in its working copy, with a timeout."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

TAIL_CHARS = 4000


@dataclass(frozen=True)
class TestRun:
    """Outcome of one run. ``rc`` is None on timeout; ``output`` is the tail of stdout+stderr."""

    command: str
    rc: int | None
    output: str
    duration_s: float

    @property
    def passed(self) -> bool:
        """Exit code 0 (pytest's 5, "no tests collected", is a failure)."""
        return self.rc == 0


async def run_tests(root: Path, command_template: str, timeout_s: float) -> TestRun:
    """Run ``command_template`` (``{python}`` -> this interpreter) in ``root``; kill its process group on timeout."""
    command = command_template.format(python=sys.executable)
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Plugin autoload off: the project runs its tests under this interpreter, whose own plugins are not its.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(root),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "PYTHONUNBUFFERED": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        *shlex.split(command),
        cwd=root,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
        rc: int | None = proc.returncode
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = await proc.communicate()
        rc = None
        out += f"\n[timed out after {timeout_s:.0f}s]".encode()
    text = out.decode(errors="replace")
    return TestRun(command=command, rc=rc, output=text[-TAIL_CHARS:], duration_s=loop.time() - started)
