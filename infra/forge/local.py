"""A local forge: bare git repositories under ``<data_dir>/forge``, the embedded default.

It stands in for GitHub with the same contract: numeric immutable ids, an initial commit on ``main`` (like
GitHub's ``auto_init``), clone URLs that real git uses. Its ids are negative (the registry keeps the positive
counter ``n``, the repository's id is ``-n``): GitHub's are positive, so a project made here and later synced with
GitHub is never confirmed by id against GitHub (a false ``missing``) nor matched to someone else's repository.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path

from infra.forge.base import ForgeError, RepoInfo
from infra.git import NO_AUTH, GitAuth, run_git
from models.names import validate_slug

README = "# {name}\n\n{description}\n"


class LocalForge:
    """Bare repos in ``root/<name>.git``; ids from ``root/registry.json`` under an exclusive file lock.

    The registry is replaced whole (a temporary file renamed over it), so a reader in another process, which takes
    no lock, sees either the old registry or the new one, never a half-written file.

    Building one touches no disk: ``root`` (and any missing parent, such as the data dir) is created 0700 by the
    first :meth:`create_repo`, so the forge never leaves a data dir readable by others.
    """

    kind = "local"

    def __init__(self, root: Path, org: str = "local") -> None:
        """Name the forge's folder and org; nothing is created until the first repository."""
        self.root = root.resolve()
        self.org = org

    def _path(self, name: str) -> Path:
        return self.root / f"{validate_slug(name)}.git"

    def _info(self, name: str, counter: int) -> RepoInfo:
        path = self._path(name)
        return RepoInfo(
            id=-abs(counter),
            name=name,
            full_name=f"{self.org}/{name}",
            html_url=path.as_uri(),
            clone_url=str(path),
            default_branch="main",
        )

    def _registry(self) -> dict[str, int]:
        reg = self.root / "registry.json"
        try:
            return json.loads(reg.read_text())
        except FileNotFoundError:
            return {}

    def _write_registry(self, registry: dict[str, int]) -> None:
        """Replace the registry atomically: write a temporary file beside it, flush it to disk, rename it over."""
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".registry-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(registry, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / "registry.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_repo(self, name: str) -> RepoInfo | None:
        """Return the repository or None; a registry entry whose directory is gone counts as gone."""
        repo_id = self._registry().get(name)
        if repo_id is None or not self._path(name).exists():
            return None
        return self._info(name, repo_id)

    def create_repo(self, name: str, description: str) -> RepoInfo:
        """Create a bare repo with an initial README commit on ``main`` and a new (negative) id.

        Raises:
            ForgeError: the repository exists already.
        """
        path = self._path(name)
        make_private_dirs(self.root)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            registry = self._registry()
            if name in registry and path.exists():
                raise ForgeError(f"repository {self.org}/{name} already exists")
            run_git("init", "--bare", "--quiet", "--initial-branch=main", str(path))
            blob = run_git(
                "--git-dir",
                str(path),
                "hash-object",
                "-w",
                "--stdin",
                stdin=README.format(name=name, description=description),
            )
            tree = run_git("--git-dir", str(path), "mktree", stdin=f"100644 blob {blob}\tREADME.md\n")
            commit = run_git("--git-dir", str(path), "commit-tree", tree, "-m", "Initial commit")
            run_git("--git-dir", str(path), "update-ref", "refs/heads/main", commit)
            registry[name] = max(registry.values(), default=1000) + 1
            self._write_registry(registry)
            return self._info(name, registry[name])

    def archive_repo(self, name: str) -> None:
        """Refuse every push from now on (a ``pre-receive`` hook saying why), keeping the history as it is.

        Raises:
            ForgeError: no such repository.
        """
        path = self._path(name)
        if self.get_repo(name) is None:
            raise ForgeError(f"no repository {self.org}/{name} to archive")
        hook = path / "hooks" / "pre-receive"
        hook.parent.mkdir(exist_ok=True)
        hook.write_text(f"#!/bin/sh\necho 'repository {self.org}/{name} is archived (read-only)' >&2\nexit 1\n")
        hook.chmod(0o755)

    def git_auth(self) -> GitAuth:
        """Local paths need no authentication."""
        return NO_AUTH


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and each missing parent with mode 0700; folders that exist are left as they are."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # created meanwhile by another process
            continue
