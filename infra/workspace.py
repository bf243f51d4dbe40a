"""A project's git working copy, where the Developer writes files, and the path guard that keeps them inside it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from infra.git import NO_AUTH, GitAuth, clear_stale_locks, run_git


class PathOutsideWorkspace(ValueError):
    """A file path that would leave the working copy (absolute, ``..``, into ``.git``, or through a symlink)."""


def safe_path(root: Path, rel: str) -> Path:
    """Resolve ``rel`` inside ``root`` or raise.

    Raises:
        PathOutsideWorkspace: naming the offending path and why.
    """
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or "\\" in rel:
        raise PathOutsideWorkspace(f"file path {rel!r} must be relative to the repository root")
    if ".." in pure.parts or ".git" in pure.parts:
        raise PathOutsideWorkspace(f"file path {rel!r} may not contain '..' or '.git'")
    root = root.resolve()
    target = (root / pure).resolve()
    if not target.is_relative_to(root) or target == root:
        raise PathOutsideWorkspace(f"file path {rel!r} resolves outside the working copy")
    if ".git" in target.relative_to(root).parts:
        raise PathOutsideWorkspace(f"file path {rel!r} resolves into .git")
    return target


def prepare(root: Path, clone_url: str, auth: GitAuth = NO_AUTH, branch: str | None = None) -> Path:
    """Clone ``clone_url`` into ``root``, or bring an existing working copy to the remote's ``branch``; return it.

    An existing copy is fetched and reset to ``origin/<branch>`` (when the remote has it) and cleaned of untracked
    files: what a crashed attempt half-wrote, or committed without pushing, is dropped (the re-run writes it again),
    and work pushed by someone else since is the base of the next commit instead of a rejected push.

    A git killed part-way in an earlier attempt (kill -9 during a commit) leaves lock files that would fail every
    later git here: those whose owner is gone are removed first (see :func:`infra.git.clear_stale_locks` for how
    that is decided), and the reset then rewrites the index and the branch from the remote, whatever the dead git
    had done.

    ``auth`` reaches git through its environment only: the working copy's ``.git/config`` and remote URL hold no
    credentials.

    Raises:
        GitError: git failed, e.g. the remote is unreachable, or a live git process still holds a lock here.
    """
    if not (root / ".git").is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        run_git("clone", "--quiet", clone_url, str(root), auth=auth)
        return root
    clear_stale_locks(root)
    if branch is not None:
        run_git("fetch", "--quiet", "origin", cwd=root, auth=auth)
        if run_git("branch", "--remotes", "--list", f"origin/{branch}", cwd=root):  # an empty remote has none
            run_git("reset", "--quiet", "--hard", f"origin/{branch}", cwd=root)
    run_git("clean", "--quiet", "-fd", cwd=root)
    return root


def write_files(root: Path, files: list[tuple[str, str]]) -> list[str]:
    """Write ``(path, content)`` pairs; every path is checked before anything is written.

    Raises:
        PathOutsideWorkspace: for the first bad path; then no file has been written.
    """
    targets = [(safe_path(root, rel), content) for rel, content in files]
    paths = {target for target, _ in targets}
    for target, _ in targets:
        clash = next((p for p in target.parents if p in paths or (p.is_relative_to(root) and p.is_file())), None)
        if clash is not None or target.is_dir():
            raise PathOutsideWorkspace(
                f"file path {target.relative_to(root.resolve())} clashes with "
                f"{(clash or target).relative_to(root.resolve())}: a file cannot be a folder"
            )
    for target, content in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return [rel for rel, _ in files]


def commit_and_push(root: Path, message: str, auth: GitAuth = NO_AUTH, branch: str = "main") -> str:
    """Commit everything (if anything changed) and push ``branch``; return the HEAD sha.

    Idempotent: re-running after a crash with the same files commits nothing new and pushes the same sha. Lock
    files of a git that died here (e.g. killed by a timeout) are removed first, as in :func:`prepare`.

    Raises:
        GitError: git failed (a live git process holds a lock here, the push was rejected, the remote is down).
    """
    clear_stale_locks(root)
    run_git("add", "-A", cwd=root)
    if run_git("status", "--porcelain", cwd=root):
        run_git("commit", "--quiet", "-m", message, cwd=root)
    run_git("push", "--quiet", "origin", f"HEAD:{branch}", cwd=root, auth=auth)
    return run_git("rev-parse", "HEAD", cwd=root)


def listing(root: Path) -> list[str]:
    """Tracked files of the working copy, sorted."""
    out = run_git("ls-files", cwd=root)
    return sorted(line for line in out.splitlines() if line)


def head(root: Path) -> str:
    """The working copy's HEAD commit sha."""
    return run_git("rev-parse", "HEAD", cwd=root)


def working_files(root: Path) -> list[str]:
    """Every file of the working tree (committed or not, ``.git`` excluded), as sorted POSIX paths."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        rel = Path(folder).relative_to(root)
        out += [(rel / name).as_posix() for name in files]
    return sorted(out)


def read_text(root: Path, rel: str, max_chars: int = 20_000) -> str:
    """A file of the working copy as text (invalid UTF-8 replaced), cut to ``max_chars`` with a marker.

    Raises:
        PathOutsideWorkspace: the path leaves the working copy.
        FileNotFoundError: no such file.
    """
    text = safe_path(root, rel).read_text(errors="replace")
    return text if len(text) <= max_chars else text[:max_chars] + f"\n[... cut at {max_chars} of {len(text)} chars]"


def tree_of(root: Path, commit: str) -> str:
    """The git tree sha of ``commit`` (what its files are, whatever the history)."""
    return run_git("rev-parse", f"{commit}^{{tree}}", cwd=root)


def diff(root: Path, base: str | None, head: str, max_chars: int = 30_000) -> str:
    """``git diff base..head`` (the whole tree of ``head`` when ``base`` is None), cut to ``max_chars``."""
    base = base or run_git("hash-object", "-t", "tree", "/dev/null", cwd=root)  # git's empty tree
    text = run_git("diff", "--no-color", "--no-ext-diff", base, head, cwd=root)
    return text if len(text) <= max_chars else text[:max_chars] + f"\n[... diff cut at {max_chars} chars]"


def files_digest(root: Path, paths: list[str]) -> tuple[str, dict[str, str]]:
    """SHA-256 of each file in ``paths`` and one digest over all of them (path and content), in path order.

    Returns:
        ``(digest, {path: sha256})``; the digest changes when any file is added, removed, renamed or edited.
    """
    each = {rel: hashlib.sha256(safe_path(root, rel).read_bytes()).hexdigest() for rel in sorted(paths)}
    whole = hashlib.sha256("".join(f"{rel}\0{sha}\n" for rel, sha in each.items()).encode()).hexdigest()
    return whole, each
