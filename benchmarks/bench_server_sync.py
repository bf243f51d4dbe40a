"""Benchmark: one server_sync pass over 500 server entries against ``ansible all -m ping`` over the same entries.

Both talk to a REAL OpenSSH sshd (Debian's openssh-server) that this benchmark starts on a free 127.0.0.1 port, with
a generated host key and an authorized client key in a temp dir; the 500 entries (s000..s499) all point at it.
If ``/usr/sbin/sshd`` is missing, the benchmark installs openssh-server with apt-get (and says so). Ansible runs
with its defaults (5 forks, its usual ssh arguments) from the venv, and is killed after 600 s. sshd, the SSH
control masters Ansible leaves behind, and the temp dir are cleaned up on every exit path.

Two things keep the figures about the tools rather than this machine: sshd's sessions see an empty home (see
:func:`isolated_home_command`; ``BENCH_SSH_KEEP_HOME=1`` to disable), and Ansible is told the system Python
(``ansible_python_interpreter``) instead of discovering it. Note that the 500 entries share one host:port:user, so
Ansible's default ControlMaster/ControlPersist multiplexes them all over one SSH connection (which favours it);
server_sync makes one connection per entry, as it would for 500 real hosts.

Run: ``.venv/bin/python -m benchmarks.bench_server_sync`` (or ``from benchmarks.bench_server_sync import main``).
Not a test: it prints figures, no pass/fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SSHD = Path("/usr/sbin/sshd")
N_SERVERS = 500
ANSIBLE_TIMEOUT_S = 600.0
PASS_TIMEOUT_S = 600.0
INSTALL_TIMEOUT_S = 600.0


def say(text: str) -> None:
    print(f"bench_server_sync: {text}", flush=True)


def ensure_sshd() -> None:
    """Install Debian's openssh-server if ``/usr/sbin/sshd`` is absent."""
    if SSHD.exists():
        return
    if os.geteuid() != 0:
        raise SystemExit(f"{SSHD} is missing and this is not root: run `sudo apt-get install -y openssh-server`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"]
    say(f"{SSHD} is missing: running `{' '.join(install)}`")
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    if done.returncode != 0:
        say("install failed; running `apt-get update` and trying again")
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=INSTALL_TIMEOUT_S, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    if done.returncode != 0 or not SSHD.exists():
        raise SystemExit(f"could not install openssh-server:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")
    say("openssh-server installed (no service started: the benchmark runs its own sshd)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, comment: str) -> str:
    """Generate an ed25519 key pair without passphrase; return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True, timeout=30
    )
    return Path(f"{path}.pub").read_text().strip()


def sshd_config(tmp: Path, port: int, extra: str = "") -> Path:
    cfg = tmp / "sshd_config"
    cfg.write_text(
        f"""ListenAddress 127.0.0.1
Port {port}
HostKey {tmp / "host_ed25519"}
AuthorizedKeysFile {tmp / "authorized_keys"}
PidFile {tmp / "sshd.pid"}
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
MaxStartups 1000:30:1000
MaxSessions 100
PrintMotd no
Subsystem sftp internal-sftp
LogLevel ERROR
{extra}"""
    )
    return cfg


def isolated_home_command(tmp: Path, sshd_cmd: list[str]) -> list[str] | None:
    """``sshd_cmd`` run in a private mount namespace where the login user's home is an empty temp dir, or None.

    Every SSH command runs through the user's shell, and bash sources ``~/.bashrc`` when started by sshd. On a
    developer machine that file may do real work (here root's runs ``pyenv init``: ~0.1 s of CPU per command and
    a lock all commands queue on), which would be measured instead of the two tools. A private mount namespace
    (``unshare --mount``, mounts private: nothing changes outside it) hides it from sshd's sessions only.
    ``BENCH_SSH_KEEP_HOME=1`` measures with the real home instead.
    """
    home = Path.home()
    if os.environ.get("BENCH_SSH_KEEP_HOME") == "1" or os.geteuid() != 0 or not shutil.which("unshare"):
        return None
    if tmp.resolve().is_relative_to(home.resolve()):
        return None
    empty = tmp / "home"
    empty.mkdir(mode=0o700, exist_ok=True)
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False).returncode != 0:
        return None
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(empty), str(home)] + [
        *sshd_cmd
    ]


def start_sshd(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    """Start ``sshd -D`` on 127.0.0.1:port (its pid is the Popen's) and wait until it greets."""
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # Debian's privilege separation directory
    cfg = sshd_config(tmp, port, "PerSourcePenalties no\n")  # OpenSSH >= 9.8 would throttle 500 logins from one IP
    if subprocess.run([str(SSHD), "-t", "-f", str(cfg)], capture_output=True, check=False).returncode != 0:
        cfg = sshd_config(tmp, port)  # older sshd: no such option (and no penalties)
        check = subprocess.run([str(SSHD), "-t", "-f", str(cfg)], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise SystemExit(f"sshd refuses the config: {check.stderr.strip()}")
    cmd = [str(SSHD), "-D", "-e", "-f", str(cfg)]
    isolated = isolated_home_command(tmp, cmd)
    if isolated is not None:
        say(f"sshd's sessions see an empty {Path.home()} (private mount namespace), not this machine's shell profile")
    else:
        say(f"sshd's sessions use the real {Path.home()} and its shell profile")
    with open(tmp / "sshd.log", "wb") as log:
        proc = subprocess.Popen(isolated or cmd, stdout=log, stderr=log)  # unshare and sh exec: same pid as sshd
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"sshd exited with {proc.returncode}: {(tmp / 'sshd.log').read_text()[-1000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            if sock.recv(64).startswith(b"SSH-2.0"):
                return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("sshd did not answer within 10 s")


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (sshd's per-connection processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def stop_sshd(proc: subprocess.Popen[bytes], control_dir: Path) -> None:
    """End Ansible's SSH control masters, then sshd's session processes and sshd itself (all started here)."""
    for sock in control_dir.glob("*"):
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench"], capture_output=True, timeout=10, check=False
        )
    for pid in children_of(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def our_pass(tmp: Path, port: int, user: str, key: Path, known_hosts: Path) -> float:
    """Two server_sync passes over the 500 entries (first: every server discovered -> ready); first pass time."""
    from sqlmodel import func, select

    from core.db import Database
    from core.settings import Settings
    from models import Server, ServerStatus
    from sync_workers import server_sync
    from sync_workers.base import SyncContext

    settings = Settings(data_dir=tmp / "data", register_localhost=False, ssh_key_path=key, ssh_known_hosts=known_hosts)
    settings.ensure_data_dir()
    db = Database(settings.db_url)
    try:
        await db.migrate()
        async with db.session() as s:
            s.add_all(
                Server(
                    name=f"s{i:03d}", address="127.0.0.1", ssh_port=port, ssh_user=user, status=ServerStatus.discovered
                )
                for i in range(N_SERVERS)
            )
        ctx = SyncContext(settings=settings, db=db)
        say(f"server_sync: one pass over {N_SERVERS} servers, ssh_concurrency={settings.ssh_concurrency}")
        cpu0 = time.process_time()
        first = await asyncio.wait_for(server_sync.run_pass(ctx), PASS_TIMEOUT_S)
        cpu = time.process_time() - cpu0
        second = await asyncio.wait_for(server_sync.run_pass(ctx), PASS_TIMEOUT_S)
        async with db.session() as s:
            ready = (await s.exec(select(func.count()).where(Server.status == ServerStatus.ready))).one()
    finally:
        await db.dispose()
    for label, summary in (("first pass ", first), ("second pass", second)):
        failures = f", {summary.transient_failures} failed" if summary.transient_failures else ""
        print(
            f"server_sync {label} {summary.duration_s:7.2f} s  {summary.requests} checks{failures}"
            f"{'  ERRORS: ' + '; '.join(summary.errors) if summary.errors else ''}"
        )
    print(f"servers ready after the passes: {ready}/{N_SERVERS}; CPU of this process in the first pass {cpu:.2f} s")
    failed = [note for note in first.notes if "check failed" in note]
    if failed:
        print(f"  first failures: {failed[:3]}")
    return first.duration_s


def ansible_ping(tmp: Path, port: int, user: str, key: Path, known_hosts: Path) -> tuple[float, str]:
    """Run ``ansible all -m ping`` over the 500 entries; return (wall time, outcome line)."""
    venv_bin = Path(sys.executable).parent
    ansible = venv_bin / "ansible"
    if not ansible.exists():
        ansible = Path(shutil.which("ansible") or "ansible")
    common = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
    # The "remote" is this machine: name its system Python rather than let discovery pick whatever is first on
    # root's PATH (here a pyenv shim that fails under a non-interactive shell).
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    inventory = tmp / "inventory.ini"
    inventory.write_text(
        "[all]\n"
        + "".join(
            f"s{i:03d} ansible_host=127.0.0.1 ansible_port={port} ansible_user={user} "
            f"ansible_ssh_private_key_file={key} ansible_ssh_common_args='{common}' "
            f"ansible_python_interpreter={python}\n"
            for i in range(N_SERVERS)
        )
    )
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"),  # Ansible's sockets in our temp dir, to clean them up
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
    }
    out = tmp / "ansible.out"
    say(f"{ansible} all -m ping -i {inventory}  (default forks, at most {ANSIBLE_TIMEOUT_S:.0f} s)")
    t0 = time.monotonic()
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [str(ansible), "all", "-m", "ping", "-i", str(inventory)],
            cwd=tmp,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc: int | str = proc.wait(ANSIBLE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # ansible and its forks: the process group started here
            proc.wait(10)
            rc = f"killed after {ANSIBLE_TIMEOUT_S:.0f} s"
    took = time.monotonic() - t0
    text = out.read_text(errors="replace")
    ok, unreachable, failed = text.count("| SUCCESS"), text.count("| UNREACHABLE!"), text.count("| FAILED!")
    outcome = f"rc {rc}: {ok} SUCCESS, {unreachable} UNREACHABLE, {failed} FAILED"
    if ok != N_SERVERS:
        first_bad = next((line for line in text.splitlines() if "UNREACHABLE" in line or "FAILED" in line), "")
        outcome += f"  (first problem: {first_bad[:200]})"
    return took, outcome


def main() -> None:
    """Start sshd, time one server_sync pass and ``ansible all -m ping`` over 500 entries, print both and the ratio."""
    ensure_sshd()
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "openssh-server"], capture_output=True, text=True, check=False
    ).stdout
    user = getpass.getuser()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sshd-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        (tmp / "cp").mkdir()
        host_pub = keygen(tmp / "host_ed25519", "bench-host")
        client_pub = keygen(tmp / "client_ed25519", "bench-client")
        (tmp / "authorized_keys").write_text(client_pub + "\n")
        port = free_port()
        known_hosts = tmp / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(host_pub.split()[:2])}\n")
        proc = start_sshd(tmp, port)
        say(f"sshd (openssh-server {version or '?'}) on 127.0.0.1:{port}, pid {proc.pid}, user {user}, temp {tmp}")
        say(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        key = tmp / "client_ed25519"

        ours = asyncio.run(our_pass(tmp, port, user, key, known_hosts))
        theirs, outcome = ansible_ping(tmp, port, user, key, known_hosts)
        print(f"ansible all -m ping {theirs:7.2f} s  {outcome}")
        print(
            f"ratio               ansible / server_sync = {theirs / ours:.1f}x "
            f"({N_SERVERS} entries on one loopback sshd)"
        )
    finally:
        if proc is not None:
            stop_sshd(proc, tmp / "cp")
            say("sshd stopped")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
