"""Run a project's tests for real, and only in the sandbox: its own venv, a throwaway copy, no network, limits.

One test run:

1. the project's venv is made ready (:mod:`infra.venvs`: its requirements.txt plus pytest, wheels only, cached);
   that install is the one step with network;
2. the working copy (without ``.git``) is copied into a fresh folder under ``sandbox_dir/runs``, owned by the
   sandbox's unprivileged user: the tests may write there and nowhere else, and the copy is deleted afterwards;
3. the test command runs in the sandbox (:mod:`infra.sandbox`): offline, a read-only system, the venv read-only, a
   clean environment, the limits from the settings; on timeout every process of it is killed.

A requirement that cannot be installed is a failed run whose output says why (the Engineering loop reads it), not a
crash. Bubblewrap missing is an error (:class:`~infra.sandbox.SandboxUnavailable`) unless ``ORCH_SANDBOX=none``,
which every run then reports in its output.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import Settings
from infra.sandbox import Limits, run_sandboxed
from infra.venvs import DependencyError, ensure_project_env

TAIL_CHARS = 4000
REPORT_CHARS = 200_000
"""How much output is read for the per-test report (pytest's ``-rA`` summary is at the end)."""
_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+::\S+)", re.MULTILINE)
UNCONFINED = "WARNING: generated code ran UNCONFINED (ORCH_SANDBOX=none): no sandbox, no limits but the timeout"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TestRun:
    """Outcome of one run.

    Attributes:
        command: the test command as run.
        rc: exit status; None when the run was killed (timeout) or never started (requirements not installable).
        output: the tail of stdout+stderr, with the reason for an abnormal end appended.
        duration_s: wall time, install included.
        sandboxed: False only with ``ORCH_SANDBOX=none``.
        reason: why the run ended abnormally (timeout, a limit, requirements), else None.
        outcomes: pytest test id -> ``PASSED`` | ``FAILED`` | ``ERROR`` | ``SKIPPED`` | ``XFAIL`` | ``XPASS``, read
            from pytest's ``-rA`` summary (added to pytest commands); empty for other commands.
    """

    command: str
    rc: int | None
    output: str
    duration_s: float
    sandboxed: bool = True
    reason: str | None = None
    outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Exit code 0 (pytest's 5, "no tests collected", is a failure)."""
        return self.rc == 0


def limits_from(settings: Settings) -> Limits:
    """The sandbox limits the settings ask for."""
    return Limits(
        timeout_s=settings.test_timeout_s,
        cpu_s=settings.sandbox_cpu_s,
        memory_bytes=settings.sandbox_memory_mb * 1024 * 1024,
        processes=settings.sandbox_processes,
        file_size_bytes=settings.sandbox_file_size_mb * 1024 * 1024,
        open_files=settings.sandbox_open_files,
    )


def prepare_sandbox_dir(settings: Settings) -> Path:
    """Create ``sandbox_dir`` (0755, with ``venvs/`` and ``runs/``) or check the existing one is safe to use.

    Raises:
        PermissionError: the folder belongs to another user or others may write to it (someone could plant a venv).
    """
    root = settings.sandbox_dir
    for folder in (root, root / "venvs", root / "runs"):
        folder.mkdir(parents=True, exist_ok=True, mode=0o755)
        info = folder.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise PermissionError(
                f"{folder} must be a folder owned by uid {os.geteuid()} and writable by nobody else "
                "(ORCH_SANDBOX_DIR); remove it or choose another"
            )
    return root


async def run_tests(root: Path, settings: Settings, command: str | None = None) -> TestRun:
    """Run the project's test ``command`` on the working copy ``root``, in the sandbox.

    ``command`` is the design's (``python`` and ``pytest`` resolve to the project venv's, first on PATH); None runs
    ``settings.test_command`` (``{python}``: the project venv's interpreter).

    Returns:
        The outcome; a failure to install the requirements is a failed run saying why.

    Raises:
        SandboxUnavailable: bubblewrap is missing and ``ORCH_SANDBOX`` is not ``none``.
        PermissionError: ``sandbox_dir`` is unsafe (see :func:`prepare_sandbox_dir`).
    """
    started = time.monotonic()
    base = prepare_sandbox_dir(settings)
    try:
        env = await ensure_project_env(
            root,
            base / "venvs",
            python=settings.sandbox_python,
            find_links=settings.sandbox_find_links,
            offline=settings.sandbox_offline,
            timeout_s=settings.install_timeout_s,
        )
    except DependencyError as exc:
        why = f"requirements not installed: {exc}"
        return TestRun(command="(install requirements.txt)", rc=None, output=why, duration_s=0.0, reason=why)
    command = _with_report(command or settings.test_command.format(python=env.python))
    uid = settings.sandbox_uid if os.geteuid() == 0 else os.geteuid()
    scratch = _throwaway_copy(root, base / "runs", uid)
    try:
        result = await run_sandboxed(
            shlex.split(command),
            workdir=scratch,
            env={
                "PATH": f"{env.root / 'bin'}:/usr/local/bin:/usr/bin:/bin",
                "HOME": "/tmp",
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONUNBUFFERED": "1",
            },
            limits=limits_from(settings),
            mode=settings.sandbox,
            read_only=[env.root],
            uid=uid,
            gid=uid,
            tail_chars=REPORT_CHARS,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    output = result.output
    if result.reason:
        output += f"\n[{result.reason}]"
    if not result.sandboxed:
        log.warning("%s: %s", UNCONFINED, command)
        output = f"{UNCONFINED}\n{output}"
    return TestRun(
        command=command,
        rc=result.rc,
        output=output[-TAIL_CHARS:],
        duration_s=time.monotonic() - started,
        sandboxed=result.sandboxed,
        reason=result.reason,
        outcomes={test_id: outcome for outcome, test_id in _OUTCOME.findall(output)},
    )


def is_pytest(argv: list[str]) -> bool:
    """Whether a command line runs pytest (``pytest ...``, ``python -m pytest ...``, a path to either)."""
    if not argv:
        return False
    if Path(argv[0]).name in ("pytest", "py.test"):
        return True
    return Path(argv[0]).name.startswith("python") and argv[1:3] == ["-m", "pytest"]


def _with_report(command: str) -> str:
    """Add ``-rA`` to a pytest command (a line per test outcome at the end, which gates read); others unchanged."""
    argv = shlex.split(command)
    return command + " -rA" if is_pytest(argv) and "-rA" not in argv else command


def _throwaway_copy(root: Path, runs: Path, uid: int) -> Path:
    """Copy ``root`` (without ``.git``) to a new 0700 folder under ``runs`` owned by ``uid``; return it."""
    scratch = runs / uuid.uuid4().hex
    shutil.copytree(root, scratch, ignore=shutil.ignore_patterns(".git"), symlinks=True)
    scratch.chmod(0o700)
    if uid != os.geteuid():
        for folder, dirs, files in os.walk(scratch):
            os.chown(folder, uid, uid)
            for name in dirs + files:
                os.lchown(os.path.join(folder, name), uid, uid)
    return scratch
