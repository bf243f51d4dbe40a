"""Private key files in the data dir (the secrets key, the signing key): made once, 0600; read only while private.

The same rules for every key the orchestrator keeps on disk: the first process to make a key wins (a temporary 0600
file linked into place, so nobody reads a half-written key), and a key file that is not a regular file, that group
or others may read, or that another user owns is refused, with the command that fixes it.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
import tempfile
from pathlib import Path


class KeyFileError(ValueError):
    """A key file that is not safe to use; the message names it and the fix, never its content."""


def create_once(path: Path, content: str) -> None:
    """Write ``content`` (plus a newline) to ``path`` atomically with mode 0600, unless ``path`` exists already.

    Two processes racing both write a temporary file; the first ``link`` wins and the other's key is dropped.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if the file exists: the first creator wins, nobody reads a half-written key
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def read_private(path: Path, what: str) -> str:
    """The text of the key file ``path``, checked on the open file (never through a symlink).

    Args:
        path: the key file.
        what: its name in messages, e.g. ``"secrets key"``.

    Raises:
        KeyFileError: a symbolic link, not a regular file, readable by group or others, or owned by another user.
        OSError: it cannot be opened (missing, unreadable).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # the checks and the read apply to the same file
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyFileError(f"{what} {path} is a symbolic link; put the key file itself there") from exc
        raise
    st = os.fstat(fd)
    try:
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{what} {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"{what} {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"refusing to use it. Fix it with: chmod 600 {shlex.quote(str(path))}"
            )
        if st.st_uid != os.getuid():
            raise KeyFileError(f"{what} {path} belongs to another user (uid {st.st_uid}); refusing to use it")
    except KeyFileError:
        os.close(fd)
        raise
    with os.fdopen(fd) as f:
        return f.read()
