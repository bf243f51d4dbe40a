"""Run the deploy playbook for one commit of one project on one server (the DevOps node and recovery share it)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from core.db import Database
from core.settings import Settings
from infra import workspace
from infra.ansible import PlaybookResult, inventory_for, run_playbook
from infra.forge.factory import make_forge
from infra.git import GitAuth, GitError, run_git
from infra.orphans import owned_mkdtemp
from infra.ssh import known_hosts_path
from infra.venvs import uv_binary
from models.enums import ServerStatus
from models.tables import Deployment, Project, Server
from services.live import live_deployment as live_deployment  # re-exported: callers import it from here
from services.secrets import ServiceEnv, service_env
from services.verification import Attestation, VerificationRefused, verify

REMOTE_RELEASE_ROOT = "/srv/orchestrator"
ROLLED_BACK = re.compile(r"rolled back to ([0-9a-f]{40}): it answers")
"""How deploy.yml's failure message says the previous release was brought back and passed its checks."""
REMOTE_PYTHON = "/usr/bin/python3"
REMOTE_UV = "/usr/local/bin/uv"
"""Where provision.yml installs uv on a remote host (a deploy falls back to venv and pip where it is missing)."""
_RAM_DIR = Path("/dev/shm")


REMOTE_URL_PREFIXES = ("https://", "http://", "ssh://", "git@")
"""Clone URLs a remote host can reach by itself; anything else (the local forge's paths) travels as a bundle."""


@contextmanager
def repository_bundle(repo: Path) -> Iterator[str]:
    """A ``git bundle`` of every branch of ``repo`` in a private temporary file; its path, removed afterwards.

    How the local forge's code reaches a remote host: deploy.yml copies the bundle over the Ansible connection and
    clones from it there, so the target never needs this machine's disk (git's bundle format,
    https://git-scm.com/docs/git-bundle).

    Raises:
        GitError: the bundle could not be made.
    """
    folder = owned_mkdtemp(prefix="orchestrator-bundle-")  # a kill's leftover is swept at the next start
    try:
        path = os.path.join(folder, "repo.bundle")
        run_git("bundle", "create", path, "--all", cwd=repo)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def rolled_back_to(result: PlaybookResult) -> str | None:
    """The commit a failed deploy rolled back to (it answers again, proven like a deploy), or None."""
    found = ROLLED_BACK.search(result.summary) if not result.ok else None
    return found.group(1) if found else None


def release_root(settings: Settings, server: Server) -> str:
    """Where releases live on ``server``: ``settings.release_root`` on this machine, /srv/orchestrator elsewhere."""
    return str(settings.release_root.resolve()) if server.connection == "local" else REMOTE_RELEASE_ROOT


async def run_on_server(
    settings: Settings, server: Server, playbook: str, extravars: dict[str, object], timeout_s: float | None = None
) -> PlaybookResult:
    """Run ``playbook`` against ``server`` (its connection, address and SSH user), work files in the data dir."""
    return await run_playbook(
        playbook,
        inventory=inventory_for(
            name=server.name,
            address=server.address,
            connection=server.connection,
            ssh_port=server.ssh_port,
            ssh_user=server.ssh_user,
            key_path=settings.ssh_key_path,
            known_hosts=known_hosts_path(settings),
        ),
        extravars=extravars,
        work_root=settings.data_dir.resolve() / "ansible",
        timeout_s=timeout_s if timeout_s is not None else settings.deploy_timeout_s,
    )


async def run_deploy(
    settings: Settings,
    *,
    project: Project,
    server: Server,
    commit: str,
    port: int,
    entrypoint: str,
    health_path: str,
    env: ServiceEnv | None = None,
    tree: str = "",
) -> PlaybookResult:
    """Run playbooks/deploy.yml: fetch ``commit``, install, start it, prove it, and give it ``port``'s traffic.

    How the new release takes the port is ``settings.deploy_strategy``: ``blue_green`` starts it beside the live
    release on a port of its own and switches the project's deploy switch to it once it answers there;
    ``recreate`` stops the live release first (see the README, "How a new release takes the traffic").

    ``tree`` (the git tree the signed verification attests, see :func:`check_verification`) is checked on the
    target right after the checkout: a repository that serves other content under the same commit id fails the
    deploy before anything is installed or started.

    Idempotent: the same commit already running on the same port is left alone (no second copy).

    A private https repository (the GitHub forge) is fetched with the forge's Authorization header. The header is
    NOT an extravar: ansible-runner writes extravars (and envvars) into ``env/`` of its private data dir, which
    is kept after a failed run for inspection, so a token there would outlive the run. Instead the header goes
    into a file of its own (0600, in a fresh 0700 dir, in RAM under /dev/shm where there is one), outside the
    private data dir; only that file's path is an extravar. The playbook reads it with a controller-side lookup
    and hands it to git through the task's stdin (see deploy.yml), and the file is deleted when the run ends,
    whatever its outcome. A local repository gets no header and no file.

    The project's secrets (``env``, see services/secrets.py) travel the same way: their env file goes into a private
    file of its own whose path is the extravar ``secrets_file``; the playbook pipes it to the target, where it
    becomes ``run/service.env`` (0600), sourced by the service's start. Only ``env.digest`` (an HMAC, no value)
    is an extravar: a changed secret changes it, and the service restarts on the same commit; an unchanged one
    leaves a running service alone. Without ``env`` (or with none stored) the target's env file is removed.
    """
    local = server.connection == "local"
    url = project.clone_url or ""
    auth = make_forge(settings).git_auth() if url.startswith(("https://", "http://")) else GitAuth()
    env = env or ServiceEnv()
    with ExitStack() as files:
        auth_file = files.enter_context(auth_header_file(auth))
        env_file = files.enter_context(private_file(env.text, prefix="orchestrator-env-", name="service.env"))
        bundle = ""
        if not local and not url.startswith(REMOTE_URL_PREFIXES):  # the local forge: a path only this disk has
            bundle = files.enter_context(repository_bundle(Path(url)))
        return await run_on_server(
            settings,
            server,
            "deploy.yml",
            {
                "project": project.name,
                "repo_url": url,
                "commit": commit,
                "tree": tree,
                "port": port,
                "entrypoint": entrypoint,
                "health_path": health_path,
                "release_root": release_root(settings, server),
                "service_python": settings.sandbox_python if local else REMOTE_PYTHON,
                "service_user": settings.service_user,
                "health_timeout": int(settings.health_timeout_s),
                "git_auth_file": auth_file,
                "git_auth_key": auth.config_key,
                "secrets_file": env_file,
                "env_digest": env.digest,
                "uv_bin": uv_binary() if local else REMOTE_UV,
                "install_args": install_args(settings) if local else [],
                "keep_releases": settings.releases_kept,
                "deploy_strategy": settings.deploy_strategy,
                "drain_s": settings.deploy_drain_s,
                "repo_bundle": bundle,
            },
        )


async def redeploy(
    settings: Settings, db: Database, project: Project, dep: Deployment, server: Server
) -> PlaybookResult:
    """Deploy a recorded deployment's commit again (a start, a rollback, a recovery), under every check of a deploy.

    Its signed verification is checked again against the commit and its tree (not its expiry: it was valid when the
    commit was first deployed), and the project's secrets of now are handed over; a deployment without a
    verification is refused.

    Raises:
        VerificationRefused: the verification is missing or does not cover the commit. SecretsError: the secrets
            cannot be read (a wrong key).
    """
    assert project.id is not None
    attested = await check_verification(settings, project, dep.commit_sha, dep.verification, check_expiry=False)
    env = await service_env(settings, db, project.id)
    return await run_deploy(
        settings,
        project=project,
        server=server,
        commit=dep.commit_sha,
        port=dep.port,
        entrypoint=dep.entrypoint,
        health_path=dep.health_path,
        env=env,
        tree=attested.tree,
    )


async def check_verification(
    settings: Settings, project: Project, commit: str, token: str | None, **kw: Any
) -> Attestation:
    """Check the signed verification against the commit about to be deployed and that commit's tree.

    The tree is read from the project's repository (fetched into the orchestrator's working copy).

    Args:
        settings: the signing key and the data dir (the working copy).
        project: the project (its name, id, clone URL and branch).
        commit: the full sha the deploy will check out.
        token: the verification (a JWT) from the Engineering result or the Deployment row.
        **kw: passed to :func:`services.verification.verify` (``check_expiry=False`` for a redeploy).

    Returns:
        What the token attests (its ``tree`` goes to the playbook, which checks it again on the target).

    Raises:
        VerificationRefused: no token, a forged or expired one, another project's, another commit's (e.g. one pushed
            after verification), or a tree that differs from the repository's; or the commit is not in it.
    """
    assert project.id is not None
    root = settings.data_dir.resolve() / "workspaces" / project.name
    try:
        auth = (
            make_forge(settings).git_auth()
            if (project.clone_url or "").startswith(("https://", "http://"))
            else GitAuth()
        )
        await asyncio.to_thread(workspace.prepare, root, project.clone_url or "", auth, project.default_branch)
        tree = await asyncio.to_thread(workspace.tree_of, root, commit)
    except GitError as exc:
        raise VerificationRefused(f"commit {commit[:10]} is not in {project.name}'s repository: {exc}") from exc
    return verify(settings, token, project=project.name, project_id=project.id, commit=commit, tree=tree, **kw)


def local_release_problem(settings: Settings) -> str | None:
    """Why releases cannot run on this machine as ``settings.service_user``, or None.

    The service's user must reach its release: every existing folder on the way to ``settings.release_root`` must
    let others traverse it (a 0700 home or data dir on the way would fail the health check with "Permission
    denied" only after the whole deploy). Creating that user needs root.
    """
    if not settings.service_user:
        return None
    if os.geteuid() != 0:
        return (
            f"deploying to this machine runs the service as {settings.service_user!r}, which needs root: run as root, "
            "or set ORCH_SERVICE_USER='' to run services as yourself"
        )
    root = settings.release_root.resolve()
    for folder in [root, *root.parents]:
        if folder.exists() and not folder.stat().st_mode & 0o001:
            return (
                f"{folder} is closed to others, so {settings.service_user} could not reach releases under {root}: "
                "set ORCH_RELEASE_ROOT to a folder outside it (default /var/lib/orchestrator/releases)"
            )
    return None


def install_args(settings: Settings) -> list[str]:
    """Where a release's requirements come from besides the index: the wheels folder, and no index if offline."""
    args = ["--find-links", str(settings.sandbox_find_links)] if settings.sandbox_find_links else []
    return args + (["--no-index"] if settings.sandbox_offline else [])


@contextmanager
def auth_header_file(auth: GitAuth) -> Iterator[str]:
    """Yield the path of a private file holding ``auth``'s header ("" without one); remove it on exit.

    The file is created 0600 with O_EXCL in a new 0700 directory (in RAM under /dev/shm when it is writable,
    else the system temp dir), so no other user can read it and nothing is left behind once the block ends.
    """
    with private_file(auth.header, prefix="orchestrator-git-auth-", name="header") as path:
        yield path


@contextmanager
def private_file(content: str, *, prefix: str, name: str) -> Iterator[str]:
    """Yield the path of a file only this user can read, holding ``content`` ("" for no content); remove it on exit.

    The file ``name`` is created 0600 with O_EXCL in a new 0700 directory named ``prefix...`` (in RAM under
    /dev/shm when it is writable, else the system temp dir), and the directory is removed when the block ends,
    whatever its outcome.
    """
    if not content:
        yield ""
        return
    parent = str(_RAM_DIR) if _RAM_DIR.is_dir() and os.access(_RAM_DIR, os.W_OK) else None
    folder = owned_mkdtemp(prefix=prefix, dir=parent)  # names this process: a kill's leftover is swept at start-up
    try:
        path = os.path.join(folder, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def stop_service(settings: Settings, *, project: str, server: Server) -> PlaybookResult:
    """Run playbooks/stop.yml: stop the project's service on ``server`` if it runs (idempotent)."""
    return await run_on_server(
        settings, server, "stop.yml", {"project": project, "release_root": release_root(settings, server)}, 60
    )


def local_server() -> Server:
    """A Server row standing for this machine (connection ``local``), e.g. to stop what the demo deployed."""
    return Server(name="localhost", address="127.0.0.1", connection="local", status=ServerStatus.ready)
