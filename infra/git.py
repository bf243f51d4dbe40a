"""Real git, run as subprocesses with a fixed identity (no dependence on the user's global config).

Credentials never go on a git command line: :class:`GitAuth` hands git an ``http.extraHeader`` through the
environment (``GIT_CONFIG_COUNT`` / ``GIT_CONFIG_KEY_n`` / ``GIT_CONFIG_VALUE_n``, git >= 2.31), so they are
neither in ``/proc/<pid>/cmdline`` nor in ``.git/config``, and every :class:`GitError` message is redacted.

A git killed part-way (kill -9, a timeout) leaves its ``*.lock`` files behind, and every later git in that repository
fails on them: :func:`clear_stale_locks` removes the ones no live git process holds.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "orchestrator",
    "GIT_AUTHOR_EMAIL": "orchestrator@localhost",
    "GIT_COMMITTER_NAME": "orchestrator",
    "GIT_COMMITTER_EMAIL": "orchestrator@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}

REDACTED = "***"

STALE_LOCK_AGE_S = 600.0
"""Where no process table can be read: a lock older than this is stale (run_git kills git after 120 s by default)."""

PROC = Path("/proc")
"""Linux's process table, read to tell whether the git that made a lock file still runs."""

log = logging.getLogger(__name__)

# Second line of defence for text no GitAuth knows about: credentials of an HTTP Authorization header and the
# user:password part of a URL.
_AUTH_HEADER = re.compile(r"(?i)(authorization:\s*[a-z][a-z0-9._-]*\s+)\S+")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


@dataclass(frozen=True, repr=False)
class GitAuth:
    """Authentication for git over http(s): one ``http.extraHeader`` value, given to git only via environment.

    ``GitAuth()`` (``NO_AUTH``) authenticates nothing (local paths, public repositories). ``repr`` and ``str``
    never show the header.

    Attributes:
        header: the full header line, e.g. ``"Authorization: Basic <base64>"``; empty for none.
        secrets: further strings that must never appear in a message (e.g. the raw token the header encodes).
    """

    header: str = ""
    secrets: tuple[str, ...] = ()
    url: str = ""
    """Where the header goes: a URL prefix (``https://github.com/``) that git matches against each request, so
    the credential never reaches another host a clone URL might name; empty sends it everywhere."""

    def __bool__(self) -> bool:
        return bool(self.header)

    def __repr__(self) -> str:
        return "GitAuth(header=<redacted>)" if self.header else "GitAuth()"

    __str__ = __repr__

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return the variables that add the header to git's config, after any entries ``base`` already has.

        Args:
            base: the environment git will otherwise get (its ``GIT_CONFIG_COUNT`` entries are kept).

        Returns:
            ``GIT_CONFIG_COUNT``, ``GIT_CONFIG_KEY_n`` and ``GIT_CONFIG_VALUE_n``; empty without a header.
        """
        if not self.header:
            return {}
        try:
            n = max(int((base or {}).get("GIT_CONFIG_COUNT", "0")), 0)
        except ValueError:
            n = 0
        return {
            "GIT_CONFIG_COUNT": str(n + 1),
            f"GIT_CONFIG_KEY_{n}": self.config_key,
            f"GIT_CONFIG_VALUE_{n}": self.header,
        }

    @property
    def config_key(self) -> str:
        """Git's config key for the header: ``http.<url>.extraHeader`` (git-config "http.<url>.*"), or unscoped."""
        return f"http.{self.url}.extraHeader" if self.url else "http.extraHeader"

    def redact(self, text: str) -> str:
        """Return ``text`` without the header, its credential part, any of ``secrets`` or any auth-looking text."""
        known = set(self.secrets)
        if self.header:
            known.add(self.header.rsplit(None, 1)[-1])  # the credential, e.g. the base64 of a Basic header
        for secret in sorted((s for s in known if s), key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return redact_auth(text)


NO_AUTH = GitAuth()


def redact_auth(text: str) -> str:
    """Replace the credentials of ``Authorization:`` headers and of ``scheme://user:pass@`` URLs in ``text``."""
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    return _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)


class GitError(RuntimeError):
    """A git command failed; the message carries the command and git's stderr, with credentials redacted."""


def run_git(
    *args: str,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout_s: float = 120,
    auth: GitAuth = NO_AUTH,
) -> str:
    """Run ``git *args`` and return its stripped stdout.

    Args:
        *args: git's arguments; never put credentials here (they would show in ``/proc`` and in errors).
        cwd: working directory.
        stdin: text fed to git's standard input.
        timeout_s: kill git after this many seconds.
        auth: credentials for http(s) remotes, passed to git through its environment only.

    Raises:
        GitError: non-zero exit or timeout, with git's stderr (credentials redacted).
    """
    env = {**os.environ, **GIT_IDENTITY}
    env.update(auth.env(env))
    command = " ".join(args)
    try:
        proc: subprocess.CompletedProcess[str] | None = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        proc = None  # raised below, outside the handler: the TimeoutExpired (argv, partial output) is not chained
    if proc is None:
        raise GitError(auth.redact(f"git {command} timed out after {timeout_s}s"))
    if proc.returncode != 0:
        raise GitError(auth.redact(f"git {command} failed (rc {proc.returncode}): {proc.stderr.strip()}"))
    return proc.stdout.strip()


def git_dir_of(repo: Path) -> Path:
    """The git directory of ``repo``: ``repo/.git`` for a working copy, ``repo`` itself for a bare repository."""
    return repo / ".git" if (repo / ".git").is_dir() else repo


def lock_files(repo: Path) -> list[Path]:
    """The ``*.lock`` files in ``repo``'s git directory and under its ``refs/``, sorted.

    These are git's lockfiles (``index.lock``, ``HEAD.lock``, ``ORIG_HEAD.lock``, ``config.lock``,
    ``packed-refs.lock``, ``shallow.lock``, ``refs/heads/<branch>.lock``, ``refs/remotes/...``): git creates each with
    O_EXCL, writes the new content into it and renames it over the real file, so one that is left means the git
    that made it died before finishing; the real file still holds the content from before.
    """
    git_dir = git_dir_of(repo)
    return sorted({*git_dir.glob("*.lock"), *git_dir.glob("refs/**/*.lock")})


def git_processes_in(repo: Path, proc: Path = PROC) -> list[int] | None:
    """The live git processes working in ``repo``, from the process table; None where there is none to read.

    A process counts when its name (``/proc/<pid>/comm``) starts with ``git`` (``git``, ``git-remote-http``,
    ``git-upload-pack``, ...) and either its working directory is ``repo`` or inside it (git changes into the
    repository it works on, ``-C`` included), or an argument (or the part after an ``=``), taken relative to that
    working directory, names ``repo`` or a path inside it (``clone URL DIR``, ``--git-dir=...``). Zombies,
    processes gone meanwhile and other users' processes (whose ``cwd`` cannot be read) are left out; nobody else can
    work in a repository under the 0700 data dir anyway.

    Args:
        repo: a working copy or bare repository.
        proc: where the process table is mounted (Linux's procfs).

    Returns:
        Their pids, sorted; ``None`` when ``proc`` is not a readable process table (not Linux).
    """
    if not (proc / "self" / "cwd").exists():
        return None
    repo = repo.resolve()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("git"):
                continue
            cwd = Path(os.readlink(entry / "cwd"))
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        named = (Path(os.path.normpath(cwd / arg.rpartition("=")[2])) for arg in args[1:] if arg)
        if cwd.is_relative_to(repo) or any(path.is_relative_to(repo) for path in named):
            found.append(int(entry.name))
    return sorted(found)


def clear_stale_locks(repo: Path, stale_after_s: float = STALE_LOCK_AGE_S, proc: Path = PROC) -> list[Path]:
    """Remove the lock files (see :func:`lock_files`) of ``repo`` whose owner is gone; return those removed.

    How "owner is gone" is decided: git's lockfiles carry no pid, so by the process table. When no live git
    process works in ``repo`` (:func:`git_processes_in`), nobody can hold its locks and every one is stale. When
    one does, nothing is removed: it may be the owner (git would refuse to run beside it anyway). Without a
    process table (not Linux), a lock is stale once older than ``stale_after_s``.

    Removing is safe because git writes a lock's content to the lock file and renames it over the real one as its
    last step: the repository is as it was before the dead git started (for a commit killed after moving the
    branch but before writing the index, the index is behind HEAD; :func:`infra.workspace.prepare` resets it).
    The caller must be the only one starting git in ``repo`` meanwhile (a working copy belongs to one thread).

    Args:
        repo: a working copy (its ``.git``) or a bare repository.
        stale_after_s: the age, in seconds, that makes a lock stale where there is no process table.
        proc: where the process table is mounted (see :func:`git_processes_in`).

    Returns:
        The removed lock files, each logged as a warning.
    """
    locks = lock_files(repo)
    if not locks:
        return []
    holders = git_processes_in(repo, proc)
    if holders:
        log.info("%s: git locks %s kept: git processes %s work there", repo, [p.name for p in locks], holders)
        return []
    if holders is None:
        now = time.time()
        locks = [p for p in locks if _age(p, now) > stale_after_s]
    removed = []
    for lock in locks:
        try:
            lock.unlink()
        except FileNotFoundError:  # its git finished meanwhile
            continue
        log.warning("%s: removed the stale git lock %s (no live git process works there)", repo, lock)
        removed.append(lock)
    return removed


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
