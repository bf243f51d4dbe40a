"""Real git, run as subprocesses with a fixed identity (no dependence on the user's global config).

Credentials never go on a git command line: :class:`GitAuth` hands git an ``http.extraHeader`` through the
environment (``GIT_CONFIG_COUNT`` / ``GIT_CONFIG_KEY_n`` / ``GIT_CONFIG_VALUE_n``, git >= 2.31), so they are
neither in ``/proc/<pid>/cmdline`` nor in ``.git/config``, and every :class:`GitError` message is redacted.
"""

from __future__ import annotations

import os
import re
import subprocess
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
