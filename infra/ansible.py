"""Run the repo's Ansible playbooks through ansible-runner, off the event loop.

Extravars are passed to ansible-runner but never logged nor copied into a result summary.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.orphans import OWNER_ENV, end_marked, end_orphaned_runs, run_marker

PLAYBOOK_DIR: Path = Path(__file__).resolve().parent.parent / "playbooks"
_MAX_DETAIL = 1500


@dataclass(frozen=True)
class PlaybookResult:
    """Outcome of one playbook run: runner status, return code, short human summary and per-host stats."""

    status: str
    rc: int
    summary: str
    stats: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True when the run finished successfully with rc 0."""
        return self.status == "successful" and self.rc == 0


def inventory_for(
    *,
    name: str,
    address: str,
    connection: str,
    ssh_port: int = 22,
    ssh_user: str = "root",
    key_path: Path | None = None,
    known_hosts: Path | None = None,
) -> dict[str, Any]:
    """Build an ansible-runner inventory with a single host in the group ``targets``.

    An ``ssh`` host is reached the way the sync's checks reach it: with ``key_path`` (only that key), and its host
    key checked against ``known_hosts`` with ``StrictHostKeyChecking=yes`` (an unknown or changed host is refused,
    never added).

    Args:
        name: Inventory host name.
        address: Host address (ignored for ``local``).
        connection: ``"local"`` (run on this machine with this interpreter) or ``"ssh"``.
        ssh_port: SSH port, for ``ssh`` only.
        ssh_user: SSH user, for ``ssh`` only.
        key_path: the private key file, for ``ssh`` only (None: ssh's defaults and agent).
        known_hosts: the known_hosts file, for ``ssh`` only (None: ssh's default, still strict).

    Returns:
        The inventory dict, ready for ``ansible_runner.run(inventory=...)``.

    Raises:
        ValueError: Unknown connection type.
    """
    if connection == "local":
        host: dict[str, Any] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    elif connection == "ssh":
        options = ["-o StrictHostKeyChecking=yes"]
        if known_hosts is not None:
            options.append(f"-o UserKnownHostsFile={known_hosts}")
        host = {
            "ansible_host": address,
            "ansible_port": ssh_port,
            "ansible_user": ssh_user,
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": " ".join(options),
        }
        if key_path is not None:
            host["ansible_ssh_private_key_file"] = str(key_path)
            options.append("-o IdentitiesOnly=yes")
            host["ansible_ssh_common_args"] = " ".join(options)
    else:
        raise ValueError(f"unknown connection {connection!r} (expected 'local' or 'ssh')")
    return {"all": {"children": {"targets": {"hosts": {name: host}}}}}


def _stats_line(stats: dict[str, Any]) -> str:
    def total(key: str) -> int:
        return sum((stats.get(key) or {}).values())

    return (
        f"ok={total('ok')} changed={total('changed')} failed={total('failures')} "
        f"unreachable={total('dark')} skipped={total('skipped')}"
    )


def _failure_detail(events: list[dict[str, Any]]) -> str | None:
    """Describe the last failed/unreachable task from the runner events, or None if there is none."""
    failed = [e for e in events if e.get("event") in ("runner_on_failed", "runner_on_unreachable")]
    if not failed:
        return None
    data = failed[-1].get("event_data") or {}
    res = data.get("res") or {}
    parts = [str(res[k]).strip() for k in ("msg", "stderr", "stdout") if res.get(k)]
    detail = "\n".join(parts) or "no message"
    if len(detail) > _MAX_DETAIL:
        detail = detail[:_MAX_DETAIL] + "... [truncated]"
    kind = "unreachable" if failed[-1].get("event") == "runner_on_unreachable" else "failed"
    return f"task '{data.get('task', '?')}' on {data.get('host', '?')} {kind}: {detail}"


async def run_playbook(
    playbook: str, *, inventory: dict[str, Any], extravars: dict[str, Any], work_root: Path, timeout_s: float
) -> PlaybookResult:
    """Run ``PLAYBOOK_DIR / playbook`` with ansible-runner in a worker thread.

    Each run gets a fresh private data dir under ``work_root`` (so concurrent runs do not collide).
    It is removed after a successful run and kept on any other outcome for inspection (the newest
    ``KEPT_FAILED_RUNS`` of them; older ones are pruned); note that it then holds the inventory and the
    extravars as written by ansible-runner (``env/extravars``), which therefore never carry a secret.

    The run's processes end with it, and with this process: every one of them inherits the environment variable
    ``ORCH_RUN_OWNER`` (this process as owner, and a run id; see infra/orphans.py), which outlasts the ``setsid()``
    calls of ansible-runner and of Ansible's workers that take them out of any process group. After the run, what
    still carries its run id is ended (e.g. a timed-out run's workers); before it, every run whose owner is gone (a
    killed orchestrator's) is. A process meant to outlive its run must start from a clean environment
    (``env -i``), as deploy.yml's service and switch do.

    Args:
        playbook: File name inside ``PLAYBOOK_DIR``, e.g. ``"deploy.yml"`` (an absolute path is taken as is).
        inventory: Inventory dict, see ``inventory_for``.
        extravars: Playbook variables; never logged nor put into the summary.
        work_root: Parent directory for the private data dirs (created if missing).
        timeout_s: Whole-run timeout in seconds (rounded up to at least 1 s).

    Returns:
        A ``PlaybookResult``; status is ``"successful"``, ``"failed"``, ``"timeout"`` or ``"canceled"``.

    Raises:
        FileNotFoundError: The playbook does not exist.
    """
    path = PLAYBOOK_DIR / playbook
    if not path.is_file():
        raise FileNotFoundError(f"playbook not found: {path}")
    work_root.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix=f"{path.stem}-", dir=work_root))
    venv_bin = str(Path(sys.executable).parent)
    marker = run_marker()
    envvars = {
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        # ansible-runner sets this to False unless told otherwise (ansible_runner/config/_base.py), and Ansible then
        # puts "-o StrictHostKeyChecking=no" before the inventory's own ssh options, where ssh takes the first one.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # Each module goes to the host over the ssh session's stdin instead of a temporary file copied first and
        # removed after: fewer round trips per task (https://docs.ansible.com/ansible/latest/reference_appendices/
        # config.html#ansible-pipelining). Its one condition, no `requiretty` for sudo, never applies: no task
        # becomes another user through sudo.
        "ANSIBLE_PIPELINING": "True",
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        OWNER_ENV: marker,
        **mitogen_strategy(),
    }
    import ansible_runner  # here, not at the top: only a process that runs a playbook pays for it

    timeout = max(1, int(timeout_s + 0.999))
    await asyncio.to_thread(end_orphaned_runs)
    runner = await asyncio.to_thread(
        ansible_runner.run,
        private_data_dir=str(data_dir),
        playbook=str(path),
        inventory=inventory,
        extravars=extravars,
        envvars=envvars,
        quiet=True,
        timeout=timeout,
    )
    await asyncio.to_thread(end_marked, marker.__eq__)  # what outlived the run: a timed-out run's workers
    status = str(runner.status)
    rc = runner.rc if isinstance(runner.rc, int) else -1
    stats: dict[str, Any] = dict(runner.stats or {})
    if status == "timeout":
        summary = f"{playbook} timed out after {timeout}s (artifacts kept in {data_dir})"
    elif status == "successful" and rc == 0:
        summary = _stats_line(stats)
    else:
        detail = _failure_detail(list(runner.events)) or f"{playbook} ended with status {status}, rc {rc}"
        summary = f"{detail}\n{_stats_line(stats)} (artifacts kept in {data_dir})"
    if status == "successful" and rc == 0:
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        prune_kept_runs(work_root)
    return PlaybookResult(status=status, rc=rc, summary=summary, stats=stats)


def mitogen_strategy() -> dict[str, str]:
    """The Ansible settings that run a playbook's tasks through Mitogen, or ``{}`` where it is not installed.

    Ansible starts a Python interpreter on the target for every task and ships it the module (0.2-0.6 s a task);
    Mitogen's ``mitogen_linear`` strategy keeps one interpreter per host for the run and sends it each task, with the
    same task semantics (https://mitogen.networkgenomics.com/ansible_detailed.html). It halves the deploy step.
    ``ORCH_ANSIBLE_MITOGEN=0`` turns it off (Ansible's own ``linear`` strategy).
    """
    if os.environ.get("ORCH_ANSIBLE_MITOGEN", "1").strip().lower() in {"0", "false", "no", "off"}:
        return {}
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        return {}
    plugins = Path(next(iter(spec.submodule_search_locations))) / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": "mitogen_linear"}


KEPT_FAILED_RUNS = 20
"""How many private data dirs of unsuccessful runs stay under a ``work_root`` for inspection (newest first)."""


def prune_kept_runs(work_root: Path, keep: int = KEPT_FAILED_RUNS) -> list[Path]:
    """Remove all but the ``keep`` newest private data dirs under ``work_root``; return the removed ones.

    Runs in flight are never among the removed: their dirs are the newest.
    """
    dirs = sorted((d for d in work_root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    for old in dirs[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return dirs[keep:]
