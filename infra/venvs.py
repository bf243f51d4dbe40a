"""A project's own virtual environment: its declared requirements, installed with uv, wheels only, cached.

Generated code never runs in the orchestrator's interpreter: a project that imports Flask gets Flask because its
``requirements.txt`` says so, and one that forgets to declare FastAPI fails the way it would on a fresh machine.

* One venv per distinct (interpreter, requirements, tools), under ``cache_root/<digest>``: a second run with the
  same requirements reuses it at once; a changed requirements.txt makes a new one.
* ``uv pip install --only-binary :all:``: no package's build code runs at install time (an sdist would run its
  ``setup.py`` with the orchestrator's rights, outside any sandbox). The install is the only step with network, and it
  writes nothing but the new venv (built beside its final place, renamed into it when complete, so a crash never
  leaves a half-installed venv that looks ready).
* ``--compile-bytecode``: the venv is mounted read-only in the sandbox and test runs set
  ``PYTHONDONTWRITEBYTECODE``, so without it every run would compile pytest and the requirements from source again
  (pytest's own start-up went from 0.24 s to 0.10 s).
* The venv is made ``--relocatable`` and its interpreter is a system one (``/usr/bin/python3`` by default), outside
  any user's home, so the sandbox's unprivileged user can read and run it.

uv: https://docs.astral.sh/uv/pip/environments/ (``uv venv``, ``uv pip install --python``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REQUIREMENTS = "requirements.txt"
READY = ".orchestrator-ready"
LAYOUT = "bytecode"
"""Part of each venv's digest: venvs cached before they were byte-compiled are not reused."""
_TAIL = 2000


class DependencyError(RuntimeError):
    """The project's requirements could not be installed; the message says which and why (uv's own words)."""


@dataclass(frozen=True)
class ProjectEnv:
    """A ready venv: ``root`` (the venv dir), ``python`` (its interpreter) and the ``requirements`` it holds."""

    root: Path
    python: Path
    requirements: tuple[str, ...]
    reused: bool


def uv_binary() -> str:
    """The uv executable: the ``uv`` package's own binary (a dependency of this project), else ``uv`` on PATH.

    Raises:
        DependencyError: uv is not installed.
    """
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise DependencyError(
                "uv is not installed: pip install uv (it builds the projects' environments)"
            ) from None
        return found


def read_requirements(workdir: Path) -> tuple[str, ...]:
    """The requirement lines of ``workdir/requirements.txt`` (comments and blanks dropped); () without the file.

    Raises:
        DependencyError: a line asks pip for more than a requirement (``-e``, ``--index-url``, a local path...).
    """
    path = workdir / REQUIREMENTS
    if not path.is_file():
        return ()
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-") or line.startswith((".", "/", "file:")) or "://" in line:
            raise DependencyError(
                f"{REQUIREMENTS}: {line!r} is not a plain requirement (use names and version specifiers only)"
            )
        lines.append(line)
    return tuple(lines)


async def ensure_project_env(
    workdir: Path,
    cache_root: Path,
    *,
    python: str = "/usr/bin/python3",
    tools: Sequence[str] = ("pytest",),
    find_links: Path | None = None,
    offline: bool = False,
    timeout_s: float = 300.0,
) -> ProjectEnv:
    """Return the venv for ``workdir``'s requirements plus ``tools``, building it on first use.

    Args:
        workdir: the project's working copy (its ``requirements.txt``, if any, is read).
        cache_root: where venvs live, one folder per digest; created 0755 (the sandbox user must read them).
        python: the base interpreter (a system one: see the module docstring).
        tools: what the orchestrator itself runs in the venv (the test runner).
        find_links: a folder of wheels to install from; with ``offline`` it is the only source.
        offline: no package index at all (``--no-index``): only ``find_links``.
        timeout_s: limit on building one venv.

    Returns:
        The ready environment.

    Raises:
        DependencyError: a requirement cannot be resolved or has no wheel, uv failed or timed out, or the
            requirements file asks for more than requirements.
    """
    requirements = read_requirements(workdir)
    wanted = (*requirements, *tools)
    digest = hashlib.sha256("\n".join([LAYOUT, python, *wanted]).encode()).hexdigest()[:16]
    cache_root.mkdir(parents=True, exist_ok=True, mode=0o755)
    root = cache_root / digest
    if (root / READY).is_file():
        return ProjectEnv(root=root, python=root / "bin" / "python", requirements=requirements, reused=True)
    partial = cache_root / f".{digest}.{uuid.uuid4().hex[:8]}"
    uv = uv_binary()
    try:
        await _uv(uv, ["venv", "--relocatable", "--quiet", "--python", python, str(partial)], timeout_s)
        install = ["pip", "install", "--python", str(partial / "bin" / "python"), "--only-binary", ":all:", "--quiet"]
        install += ["--compile-bytecode"]
        if find_links is not None:
            install += ["--find-links", str(find_links)]
        if offline:
            install += ["--no-index"]
        await _uv(uv, [*install, *wanted], timeout_s)
        (partial / READY).write_text("\n".join(wanted) + "\n")
        try:
            partial.rename(root)
        except OSError:  # another run built the same venv meanwhile: theirs is as good
            if not (root / READY).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return ProjectEnv(root=root, python=root / "bin" / "python", requirements=requirements, reused=False)


async def _uv(uv: str, args: list[str], timeout_s: float) -> None:
    """Run uv with a clean environment (nothing of the orchestrator's settings); raise DependencyError on failure."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "UV_CACHE_DIR", "TMPDIR")}
    env["UV_NO_CONFIG"] = "1"  # no uv.toml of the caller's steers the install
    proc = await asyncio.create_subprocess_exec(
        uv, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DependencyError(f"installing the requirements took longer than {timeout_s:g}s") from None
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()
        raise DependencyError(f"the requirements could not be installed (uv {args[0]}): {text[-_TAIL:]}")
